"""Fan-out, recursion and cancellation of the RLM loop, over HTTP, with numbers to compare with the
reference library's measured on this machine (``shared/design/facts.md``).

Run on demand (not part of the test suite):

    .venv/bin/python benchmarks/bench_semantics.py [--quick]

The scripted OpenAI-compatible server runs in a child process (its own GIL) and answers every
request after ``latency`` seconds; the real ``openai`` backend and the real local REPL do the rest.

Measured:

* ``turns``: 21 root turns with a trivial cell each (framework cost per turn);
* ``sequential``: 300 ``llm_query`` calls in one cell (cost per sub-call);
* ``batched``: 64 prompts through one ``llm_query_batched``, 0.2 s server latency, 16 at a time
  (ideal: 4 waves = 0.8 s);
* ``children``: 50 child RLMs through one ``rlm_query_batched`` (each one turn), 50 at a time;
* ``cancel``: how long ``max_timeout`` takes to stop a cell blocked in 16 slow sub-calls (the
  server would answer after 30 s): the time past the deadline.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

SERVER_CODE = r"""
import sys, re, time
from rlm_testkit.servers import OpenAICompatibleServer

SCRIPTS = {
    "turns": lambda k: "FINAL(done)" if k >= 20 else "```repl\nx = 1\n```",
    "sequential": lambda k: "```repl\nfor i in range(300):\n    llm_query('q')\nFINAL('done')\n```",
    "batched": lambda k: "```repl\nr = llm_query_batched([str(i) for i in range(64)])\nFINAL(len(r))\n```",
    "children": lambda k: ("```repl\nr = rlm_query_batched([f'child-{i:02d}' for i in range(50)])\n"
                           "answer.update(content=' '.join(r), ready=True)\n```"),
    "cancel": lambda k: "```repl\nr = llm_query_batched(['slow'] * 16)\n```",
}
latency = {"batched": 0.2}

def responder(messages, body):
    mode = body["model"]
    root = messages[0]["role"] == "system" and "REPL" in messages[0]["content"]
    if root and mode == "children" and "8 total characters" in messages[1]["content"]:
        return "```repl\nanswer.update(content=context, ready=True)\n```"
    if root:
        return SCRIPTS[mode](sum(1 for m in messages if m["role"] == "assistant"))
    if mode == "cancel":
        time.sleep(30)
    time.sleep(latency.get(mode, 0.0))
    return "ok"

srv = OpenAICompatibleServer(responder=responder).start()
print(srv.port, flush=True)
try:
    sys.stdin.read()
finally:
    srv.stop()
"""


EXPECTED = {"children": " ".join(f"child-{i:02d}" for i in range(50)), "batched": "64", "turns": "done",
            "sequential": "done"}


def run(mode: str, port: int, **kw) -> float:
    from rlm import RLM

    r = RLM(backend="openai", backend_kwargs={"base_url": f"http://127.0.0.1:{port}/v1",
                                              "api_key": "k", "model_name": mode, "max_retries": 0},
            max_iterations=30, **kw)
    t0 = time.perf_counter()
    try:
        response = r.completion("ctx").response
    except Exception as exc:  # the cancel case raises by design
        if mode != "cancel":
            raise
        response = type(exc).__name__
    want = EXPECTED.get(mode, "TimeoutExceededError")
    if response != want:
        raise SystemExit(f"{mode}: unexpected answer {response[:200]!r}, wanted {want[:60]!r}")
    dt = time.perf_counter() - t0
    r.close()
    return dt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="skip the slowest measurement")
    args = parser.parse_args()
    proc = subprocess.Popen([sys.executable, "-c", SERVER_CODE], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        run("turns", port)  # warm up: imports, the first connection
        results = {}
        results["turns (21 turns)"] = run("turns", port)
        if not args.quick:
            results["sequential (300 llm_query)"] = run("sequential", port)
        results["batched (64 x 0.2 s, 16 at a time)"] = run("batched", port,
                                                           max_concurrent_subcalls=16)
        results["children (50 child RLMs at once)"] = run("children", port, max_depth=2,
                                                          max_concurrent_subcalls=50)
        results["cancel (max_timeout=1.0)"] = run("cancel", port, max_timeout=1.0)
    finally:
        proc.stdin.close()
        proc.wait(10)
    print(f"{'measurement':40s} {'seconds':>8s}")
    for name, dt in results.items():
        print(f"{name:40s} {dt:8.2f}")
    print("\nreference library on this machine (facts.md): 21 turns 4.2 s, 300 llm_query 6 s, "
          "64 batched 5 s (16-way ideal 0.8 s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
