"""Where a sub-call's time goes: one chat-completions request to a local server, by client.

    .venv/bin/python benchmarks/bench_http_client.py [--n 300]

The scripted server runs in another process (as in ``compare_rlms.py``). Each line is the median
over 5 runs of ``--n`` sequential requests, in µs per request:

* ``asyncio streams``: a bare keep-alive HTTP/1.1 exchange on the loop: the server's own time
  plus the loopback round trip, the floor every client pays;
* ``http.client`` / ``httpx sync`` / ``httpx async``: the same request from the usual clients;
* ``openai SDK async post``: what the ``openai`` backend sent before it had a plain-HTTP path;
* ``backend.acompletion``: the ``openai`` backend (its plain-HTTP path for ``http://`` URLs;
  ``RLM_OPENAI_PLAIN_HTTP=0`` for the SDK path), on the loop and through ``LoopRunner.run``
  from another thread (how a cell's ``llm_query`` reaches it);
* ``llm_query in a cell``: the whole path, from a local REPL cell through the host to the server.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
SERVER = """
import sys, time
sys.path.insert(0, {here!r})
from compare_rlms import ScenarioServer
from rlm_testkit.servers import OpenAICompatibleServer
with OpenAICompatibleServer(responder=ScenarioServer(), model="bench-model") as srv:
    print(srv.base_url, flush=True)
    sys.stdin.read()
"""


def per_call(fn, n: int) -> float:
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(runs)


def per_call_async(runner, make, n: int) -> float:
    async def many() -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            await make()
        return (time.perf_counter() - t0) / n * 1e6

    return statistics.median(runner.run(many()) for _ in range(5))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    n = ap.parse_args().n
    proc = subprocess.Popen([sys.executable, "-c", SERVER.format(here=str(HERE))],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    url = proc.stdout.readline().strip()
    rows: list[tuple[str, float]] = []
    try:
        import httpx
        import openai
        from rlm import RLM
        from rlm._async import LoopRunner

        u = urlsplit(url)
        body = json.dumps({"model": "bench-model", "messages": [{"role": "user", "content": "ping"}]}).encode()
        runner = LoopRunner()

        async def connect():
            return await asyncio.open_connection(u.hostname, u.port)

        reader, writer = runner.run(connect())
        request = (f"POST {u.path}/chat/completions HTTP/1.1\r\nHost: {u.netloc}\r\n"
                   f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body

        async def bare():
            writer.write(request)
            await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            return await reader.readexactly(length)

        rows.append(("asyncio streams, on the loop", per_call_async(runner, bare, n)))
        conn = http.client.HTTPConnection(u.hostname, u.port)

        def stdlib():
            conn.request("POST", u.path + "/chat/completions", body, {"Content-Type": "application/json"})
            conn.getresponse().read()

        rows.append(("http.client (sync)", per_call(stdlib, n)))
        client = httpx.Client(base_url=url)
        rows.append(("httpx sync", per_call(lambda: client.post("/chat/completions", content=body), n)))
        aclient = httpx.AsyncClient(base_url=url)
        rows.append(("httpx async, on the loop",
                     per_call_async(runner, lambda: aclient.post("/chat/completions", content=body), n)))
        sdk = openai.AsyncOpenAI(base_url=url, api_key="k", max_retries=0)
        payload = json.loads(body)
        rows.append(("openai SDK async post, on the loop", per_call_async(
            runner, lambda: sdk.post("/chat/completions", body=payload, cast_to=bytes), n)))
        kw = {"model_name": "bench-model", "base_url": url, "api_key": "k"}
        rlm = RLM(backend="openai", backend_kwargs=kw, environment="local", max_iterations=40)
        backend, _ = rlm._default_backend()
        msgs = [{"role": "user", "content": "ping"}]
        path = "plain-HTTP" if backend._plain_target else "SDK"
        rows.append((f"backend.acompletion ({path}), on the loop",
                     per_call_async(runner, lambda: backend.acompletion(msgs), n)))
        rows.append((f"backend.acompletion ({path}), via LoopRunner.run",
                     per_call(lambda: runner.run(backend.acompletion(msgs)), n)))
        rlm.completion("warm", root_prompt="SCENARIO:llm300")
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            rlm.completion("x", root_prompt="SCENARIO:llm300")
            runs.append((time.perf_counter() - t0) / 300 * 1e6)
        rows.append(("llm_query in a local cell (300 per run)", statistics.median(runs)))
        rlm.close()
        runner.close()
    finally:
        proc.kill()
    floor = rows[0][1]
    print(f"{'client':48} {'us/request':>10} {'above floor':>12}")
    for name, us in rows:
        print(f"{name:48} {us:10.0f} {us - floor:12.0f}")


if __name__ == "__main__":
    main()
