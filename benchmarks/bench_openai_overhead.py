"""Per-call overhead of the `openai` backend above raw httpx, and the scripted server's concurrency.

Run on demand (not part of the test suite):

    .venv/bin/python benchmarks/bench_openai_overhead.py [--messages 200] [--rounds 15] [--calls 20]

The scripted server (rlm_testkit.servers.OpenAICompatibleServer) runs in a child process, so client and
server do not share a GIL. Every variant sends the same request body to the same server over a
kept-alive connection; the variants are interleaved round by round and the median per-call time
of each is reported, with the difference to raw httpx (the same JSON body posted with
``httpx.Client``) as the overhead. Also measured, for reference: the SDK's own
``client.chat.completions.create`` (the path the backend avoids) and 64 concurrent requests
against a server with 0.2 s latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

SERVER_CODE = r"""
import sys, time
from rlm_testkit.servers import OpenAICompatibleServer, Reply
latency = float(sys.argv[1])
srv = OpenAICompatibleServer(responder=lambda m, b: Reply("ok", prompt_tokens=1000, completion_tokens=1),
                             latency=latency).start()
print(srv.port, flush=True)
try:
    sys.stdin.read()  # until the parent closes our stdin
finally:
    srv.stop()
"""


class ChildServer:
    def __init__(self, latency: float = 0.0):
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER_CODE, str(latency)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.strip():
            self.proc.kill()
            raise RuntimeError("the benchmark server did not start")
        self.port = int(line)
        self.base_url = f"http://127.0.0.1:{self.port}/v1"

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except Exception:  # noqa: BLE001
            self.proc.kill()

    def __enter__(self) -> ChildServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_messages(n: int) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": "You are the root of a recursive language model. " * 20}]
    for i in range(n - 1):
        role = "assistant" if i % 2 else "user"
        msgs.append({"role": role, "content": f"turn {i}: " + "some REPL output and reasoning. " * 12})
    return msgs


def time_calls(fn, calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls * 1000.0


def bench_sync(base_url: str, messages: list, rounds: int, calls: int) -> dict[str, float]:
    import httpx
    import openai

    from rlm_backend_openai.client import OpenAIBackend

    body = {"model": "gpt-4o", "messages": messages, "temperature": 0}
    raw = httpx.Client(base_url=base_url, headers={"Authorization": "Bearer sk-bench"}, timeout=60)
    sdk = openai.OpenAI(base_url=base_url, api_key="sk-bench", max_retries=0)
    backend = OpenAIBackend("gpt-4o", base_url=base_url, api_key="sk-bench")

    def f_raw():
        r = raw.post("/chat/completions", content=json.dumps(body, ensure_ascii=False).encode(),
                     headers={"Content-Type": "application/json"})
        r.raise_for_status()
        data = json.loads(r.content)
        return data["choices"][0]["message"]["content"], data["usage"]

    def f_backend():
        return backend.completion(messages, temperature=0)

    def f_sdk_create():
        return sdk.chat.completions.create(model="gpt-4o", messages=messages, temperature=0)

    variants = {"raw httpx": f_raw, "backend.completion": f_backend, "sdk create()": f_sdk_create}
    for fn in variants.values():  # warm up: connections, imports, caches
        for _ in range(5):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            samples[name].append(time_calls(fn, calls if name != "sdk create()" else max(2, calls // 5)))
    raw.close()
    sdk.close()
    backend.close()
    return {k: statistics.median(v) for k, v in samples.items()}


def bench_async(base_url: str, messages: list, rounds: int, calls: int) -> dict[str, float]:
    import httpx

    from rlm_backend_openai.client import OpenAIBackend

    body = {"model": "gpt-4o", "messages": messages, "temperature": 0}

    async def main() -> dict[str, float]:
        raw = httpx.AsyncClient(base_url=base_url, headers={"Authorization": "Bearer sk-bench"}, timeout=60)
        backend = OpenAIBackend("gpt-4o", base_url=base_url, api_key="sk-bench")

        async def f_raw():
            r = await raw.post("/chat/completions", content=json.dumps(body, ensure_ascii=False).encode(),
                               headers={"Content-Type": "application/json"})
            r.raise_for_status()
            return json.loads(r.content)

        async def f_backend():
            return await backend.acompletion(messages, temperature=0)

        variants = {"raw httpx (async)": f_raw, "backend.acompletion": f_backend}
        for fn in variants.values():
            for _ in range(5):
                await fn()
        samples: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(rounds):
            for name, fn in variants.items():
                t0 = time.perf_counter()
                for _ in range(calls):
                    await fn()
                samples[name].append((time.perf_counter() - t0) / calls * 1000.0)
        await raw.aclose()
        await backend.aclose()
        return {k: statistics.median(v) for k, v in samples.items()}

    return asyncio.run(main())


def bench_concurrency(n: int = 64, latency: float = 0.2) -> dict[str, float]:
    import httpx

    from rlm_backend_openai.client import OpenAIBackend

    out: dict[str, float] = {}
    with ChildServer(latency=latency) as srv:
        with httpx.Client(base_url=srv.base_url, timeout=30, limits=httpx.Limits(max_connections=n)) as client:
            def one(i: int) -> str:
                return client.post("/chat/completions", json={
                    "model": "m", "messages": [{"role": "user", "content": str(i)}]}).json()["id"]

            with ThreadPoolExecutor(n) as pool:
                list(pool.map(one, range(n)))  # open the connections
                t0 = time.perf_counter()
                ids = list(pool.map(one, range(n)))
                out[f"{n} concurrent httpx requests, server latency {latency}s"] = time.perf_counter() - t0
            assert len(set(ids)) == n

        backend = OpenAIBackend("gpt-4o", base_url=srv.base_url)

        async def gather() -> float:
            await asyncio.gather(*[backend.acompletion(f"q{i}") for i in range(n)])  # warm
            t0 = time.perf_counter()
            await asyncio.gather(*[backend.acompletion(f"q{i}") for i in range(n)])
            elapsed = time.perf_counter() - t0
            await backend.aclose()
            return elapsed

        out[f"{n} concurrent backend.acompletion (gather), latency {latency}s"] = asyncio.run(gather())
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, nargs="+", default=[10, 200])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()

    with ChildServer() as srv:
        for n in args.messages:
            messages = make_messages(n)
            size = len(json.dumps(messages))
            print(f"\n== {n} messages ({size / 1024:.0f} KiB of JSON), median ms per call "
                  f"({args.rounds} rounds x {args.calls} calls) ==")
            sync = bench_sync(srv.base_url, messages, args.rounds, args.calls)
            for name, ms in sync.items():
                print(f"  {name:24s} {ms:8.3f} ms")
            print(f"  overhead of backend.completion over raw httpx: "
                  f"{sync['backend.completion'] - sync['raw httpx']:+.3f} ms per call")
            print(f"  (the SDK's create() path costs {sync['sdk create()'] - sync['raw httpx']:+.3f} ms)")
            asy = bench_async(srv.base_url, messages, args.rounds, args.calls)
            for name, ms in asy.items():
                print(f"  {name:24s} {ms:8.3f} ms")
            print(f"  overhead of backend.acompletion over raw async httpx: "
                  f"{asy['backend.acompletion'] - asy['raw httpx (async)']:+.3f} ms per call")

    print("\n== concurrency against the scripted server ==")
    for name, seconds in bench_concurrency().items():
        print(f"  {name}: {seconds:.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
