"""Per-call overhead of every API backend above raw HTTP, at 200 messages (run on demand).

    .venv/bin/python benchmarks/bench_backend_overhead.py [--messages 200] [--rounds 9] [--calls 10]

Each backend talks to a scripted server of its wire format (rlm_testkit.servers's OpenAI-compatible or
Anthropic server) running in a child process, so client and server do not share a GIL. The
baseline for each backend is ``httpx.Client`` posting the same JSON body the backend sends (the
OpenAI body, or the translated Anthropic body) to the same server over a kept-alive connection.
Variants are interleaved round by round; the report gives the median per-call time of each and
the difference to its raw baseline (the overhead), for the sync path.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

SERVER_CODE = r"""
import sys
from rlm_testkit.servers import AnthropicCompatibleServer, OpenAICompatibleServer, Reply
cls = AnthropicCompatibleServer if sys.argv[1] == "anthropic" else OpenAICompatibleServer
srv = cls(responder=lambda m, b: Reply("ok", prompt_tokens=1000, completion_tokens=1)).start()
print(srv.port, flush=True)
try:
    sys.stdin.read()
finally:
    srv.stop()
"""


class ChildServer:
    def __init__(self, kind: str):
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER_CODE, kind],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.port = int(self.proc.stdout.readline())
        self.url = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


def messages(n: int) -> list[dict[str, str]]:
    out = [{"role": "system", "content": "You are a careful assistant. " * 20}]
    for i in range(n - 1):
        role = "user" if i % 2 == 0 else "assistant"
        out.append({"role": role, "content": f"message {i}: " + "lorem ipsum dolor sit amet " * 12})
    return out


def timed(fn, calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--only", nargs="*", default=None)
    args = ap.parse_args()

    import httpx

    from rlm_backend_anthropic.client import AnthropicBackend
    from rlm_backend_litellm.client import LiteLLMBackend
    from rlm_backend_openai.client import OpenAIBackend
    from rlm_backend_openrouter.client import OpenRouterBackend
    from rlm_backend_portkey.client import PortkeyBackend
    from rlm_backend_vllm.client import VLLMBackend

    msgs = messages(args.messages)
    oai, anth = ChildServer("openai"), ChildServer("anthropic")
    key = "sk-bench-0123456789"
    try:
        backends = {
            "openai": (OpenAIBackend("gpt-4o", base_url=f"{oai.url}/v1", api_key=key), oai),
            "vllm": (VLLMBackend("meta-llama/Llama-3-70b", base_url=f"{oai.url}/v1"), oai),
            "openrouter": (OpenRouterBackend("openai/gpt-4o", base_url=f"{oai.url}/v1", api_key=key), oai),
            "portkey": (PortkeyBackend("@openai/gpt-5-nano", base_url=f"{oai.url}/v1", api_key=key), oai),
            "anthropic": (AnthropicBackend("claude-sonnet-4-20250514", base_url=anth.url, api_key=key), anth),
            "litellm (openai/)": (LiteLLMBackend("openai/gpt-4o", api_base=f"{oai.url}/v1", api_key=key), oai),
            "litellm (anthropic/)": (LiteLLMBackend("anthropic/claude-sonnet-4-20250514", api_base=anth.url,
                                                    api_key=key), anth),
        }
        if args.only:
            backends = {k: v for k, v in backends.items() if any(o in k for o in args.only)}
        raw = httpx.Client(timeout=60)
        raw_calls = {}
        for name, (backend, srv) in backends.items():
            backend.completion(msgs)  # warm up: clients, connections, imports
            if srv is anth:
                body, _, _ = AnthropicBackend("claude-sonnet-4-20250514", base_url=anth.url,
                                              api_key=key)._build(msgs, {})
                url, headers = f"{anth.url}/v1/messages", {"x-api-key": key, "anthropic-version": "2023-06-01"}
            else:
                body = {"model": "gpt-4o", "messages": msgs}
                url, headers = f"{oai.url}/v1/chat/completions", {"authorization": f"Bearer {key}"}

            def post(url=url, body=body, headers=headers):  # encodes the body per call, as a client must
                r = raw.post(url, content=json.dumps(body).encode(),
                             headers={**headers, "content-type": "application/json"})
                r.raise_for_status()
                json.loads(r.content)

            post()
            raw_calls[name] = post
        results: dict[str, dict[str, list[float]]] = {n: {"backend": [], "raw": []} for n in backends}
        for _ in range(args.rounds):
            for name, (backend, _) in backends.items():
                results[name]["raw"].append(timed(raw_calls[name], args.calls))
                results[name]["backend"].append(timed(lambda b=backend: b.completion(msgs), args.calls))
        print(f"per-call time at {args.messages} messages, sync, median of {args.rounds} rounds x "
              f"{args.calls} calls (ms)")
        print(f"{'backend':24} {'backend':>9} {'raw http':>9} {'overhead':>9}")
        for name, r in results.items():
            b, w = statistics.median(r["backend"]), statistics.median(r["raw"])
            print(f"{name:24} {b:9.2f} {w:9.2f} {b - w:9.2f}")
        for backend, _ in backends.values():
            backend.close()
        raw.close()
    finally:
        oai.close()
        anth.close()


if __name__ == "__main__":
    main()
