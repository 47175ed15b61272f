"""rlm serve: its overhead per request next to calling RLM in-process, and the concurrent
requests it holds (run on demand).

    .venv/bin/python benchmarks/bench_serve.py [--calls 40] [--concurrent 64] [--slots 16]

The model is the scripted backend answering at once (``FINAL('42')``: one turn, no sub-call), so
what is measured is the framework around one turn:

* in-process, one RLM reused for every call;
* in-process, a fresh RLM per call (``rlm_cli.surface.ProfileRun``: what the server does per request);
* ``rlm serve`` in a child process (its own GIL), the ``openai`` SDK as the client, plain and
  streamed, runs not logged (``--no-log``), one kept-alive connection.

Then the hold test: ``--concurrent`` requests at once against a profile whose model takes
``--latency`` seconds, with ``--slots`` runs at a time and room for the rest in the queue; it
reports how many were answered, the wall time against the ideal, the most requests the server
held at once (``/health``), and how long ``GET /v1/models`` took meanwhile. A burst beyond
slots + queue shows the 429s.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

FAST = "```repl\\nFINAL('42')\\n```"


def config(latency: float) -> str:
    return (f'[profiles.fast]\nbackend = "scripted"\nbackend_kwargs = {{ replies = ["{FAST}"] }}\n'
            f'[profiles.slow]\nbackend = "scripted"\n'
            f'backend_kwargs = {{ replies = ["{FAST}"], latency = {latency} }}\n')


def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def ms(xs: list[float]) -> str:
    return f"{statistics.median(xs):7.2f} ms (p90 {sorted(xs)[int(len(xs) * 0.9) - 1]:.2f})"


def start_server(env: dict[str, str], *flags: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "rlm", "serve", "--port", "0", "--no-log",
                             *flags], stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stderr.readline()
    match = re.search(r"at (http://127\.0\.0\.1:\d+/v1)", line)
    if not match:
        proc.kill()
        raise SystemExit(f"rlm serve did not start: {line}{proc.stderr.read()}")
    return proc, match.group(1)


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(2)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=40)
    ap.add_argument("--concurrent", type=int, default=64)
    ap.add_argument("--slots", type=int, default=16)
    ap.add_argument("--latency", type=float, default=1.0)
    args = ap.parse_args()

    import httpx
    import openai

    from rlm import RLM
    from rlm_cli.surface import Profile, ProfileRun, load_profiles

    user = Path(tempfile.mkdtemp(prefix="rlm-bench-serve-"))
    (user / "config.toml").write_text(config(args.latency))
    os.environ["RLM_USER_DIR"] = str(user)
    env = {**os.environ}
    fast: Profile = load_profiles()["fast"]
    msg = [{"role": "user", "content": "What is the answer?"}]

    print(f"rlm serve overhead: {args.calls} calls each, scripted backend, one turn, no logging")
    kwargs = fast.rlm_kwargs()  # a responder, not a list of replies: the backend is reused too
    kwargs["backend_kwargs"] = {"responder": lambda m: FAST.replace("\\n", "\n")}
    reused = RLM(**kwargs)
    for _ in range(3):
        reused.completion("What is the answer?")
    a = timed(lambda: reused.completion("What is the answer?"), args.calls)
    reused.close()
    b = timed(lambda: ProfileRun(fast, "What is the answer?", log=False).execute(), args.calls)
    proc, url = start_server(env, "--profile", "fast")
    try:
        client = openai.OpenAI(base_url=url, api_key="x", max_retries=0)
        for _ in range(3):
            client.chat.completions.create(model="fast", messages=msg)
        c = timed(lambda: client.chat.completions.create(model="fast", messages=msg), args.calls)
        d = timed(lambda: list(client.chat.completions.create(model="fast", messages=msg,
                                                              stream=True)), args.calls)
        e = timed(lambda: client.models.list(), args.calls)
        with httpx.Client() as h:
            body = {"model": "fast", "messages": msg}
            f = timed(lambda: h.post(url + "/chat/completions", json=body).read(), args.calls)
    finally:
        stop(proc)
    print(f"  in-process, one RLM reused        {ms(a)}")
    print(f"  in-process, a fresh RLM per call  {ms(b)}")
    print(f"  rlm serve, openai SDK, plain      {ms(c)}")
    print(f"  rlm serve, openai SDK, streamed   {ms(d)}")
    print(f"  rlm serve, httpx (no SDK), plain  {ms(f)}")
    print(f"  rlm serve, GET /v1/models         {ms(e)}  (HTTP + SDK alone)")
    print(f"  overhead of serve over a fresh in-process RLM: "
          f"{statistics.median(c) - statistics.median(b):.2f} ms plain, "
          f"{statistics.median(d) - statistics.median(b):.2f} ms streamed, "
          f"{statistics.median(f) - statistics.median(b):.2f} ms plain without the SDK's parsing")

    queued = args.concurrent - args.slots
    print(f"\nhold: {args.concurrent} concurrent requests, model latency {args.latency}s, "
          f"--max-concurrent {args.slots} --max-queued {queued}")
    proc, url = start_server(env, "--profile", "slow", "--max-concurrent", str(args.slots),
                             "--max-queued", str(queued))
    try:
        def burst(n: int) -> tuple[int, int, float, int, list[float]]:
            ok, busy, peak, probes = [0], [0], [0], []
            lock = threading.Lock()
            done = threading.Event()

            gate = threading.Barrier(n)

            def one(c: openai.OpenAI) -> None:
                gate.wait()
                try:
                    r = c.chat.completions.create(model="slow", messages=msg)
                    with lock:
                        ok[0] += r.choices[0].message.content == "42"
                except openai.RateLimitError:
                    with lock:
                        busy[0] += 1

            def watch() -> None:
                with httpx.Client() as h:
                    while not done.is_set():
                        t0 = time.perf_counter()
                        held = h.get(url.removesuffix("/v1") + "/health").json()["running_or_queued"]
                        h.get(url + "/models")
                        probes.append((time.perf_counter() - t0) * 1000)
                        peak[0] = max(peak[0], held)
                        time.sleep(0.05)

            watcher = threading.Thread(target=watch)
            watcher.start()
            clients = [openai.OpenAI(base_url=url, api_key="x", max_retries=0, timeout=300)
                       for _ in range(n)]  # built first: one client each is a connection each
            threads = [threading.Thread(target=one, args=(c,)) for c in clients]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
            done.set()
            watcher.join()
            return ok[0], busy[0], wall, peak[0], probes

        ok, busy, wall, peak, probes = burst(args.concurrent)
        ideal = -(-args.concurrent // args.slots) * args.latency
        print(f"  answered {ok}/{args.concurrent}, 429s {busy}, wall {wall:.2f}s (ideal {ideal:.1f}s), "
              f"held at once {peak}, /health + /v1/models meanwhile {ms(probes)}")
        n = args.concurrent + args.slots
        ok, busy, wall, peak, _ = burst(n)
        print(f"  burst of {n} (room for {args.concurrent}): answered {ok}, 429s {busy}, "
              f"held at once {peak}, wall {wall:.2f}s")
    finally:
        stop(proc)


if __name__ == "__main__":
    main()
