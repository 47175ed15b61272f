"""Lines per second per core, threads versus Ray, and where Ray's overhead goes.

    .venv/bin/python benchmarks/bench_ray.py [--lines 60] [--concurrency 8] [--context-mb 4]

Throughput: a batch of ``--lines`` real RLM lines (one root turn that answers from the local
REPL, the openai backend against rlm_testkit.servers.OpenAICompatibleServer on 127.0.0.1 with no model
latency, so only rlm's and the executor's own work counts) on the ``threads`` executor and on a
private 2-CPU Ray cluster. Per core: lines per wall second divided by the machine's cores, and
for threads also lines per CPU second (the driver's CPU time, the model server included), which
stays honest on a shared machine.

Overhead, on the same cluster: an empty task's round trip (one at a time and 200 at once), the
pickled size and time of a batch line's job (its settings included), and a ``--context-mb``
context shared by 20 jobs sent per task (``share_bytes=0``) versus once through the object store
(the default). Run on demand; prints numbers only.
"""

from __future__ import annotations

import argparse
import os
import pickle
import time

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def responder(messages, body):
    return "```repl\nFINAL(str(len(context)))\n```"


def cpu_seconds(pids: list[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            continue
    return total


def cluster_pids() -> list[int]:
    """This process and every process of the private Ray cluster it started (its descendants)."""
    import psutil

    me = psutil.Process()
    return [me.pid] + [c.pid for c in me.children(recursive=True)]


def noop(x):
    return x


def length(job):
    return len(job["context"])


def run_batch(executor: str, items, settings, concurrency: int) -> tuple[float, float, int]:
    import rlm

    pids = cluster_pids()
    c0 = cpu_seconds(pids)
    t0 = time.perf_counter()
    report = rlm.batch(items, executor=executor, concurrency=concurrency, **settings)
    wall = time.perf_counter() - t0
    cpu = cpu_seconds(cluster_pids()) - c0
    return wall, cpu, report.succeeded


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=60)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--context-mb", type=float, default=4)
    a = ap.parse_args()

    import ray

    from rlm_testkit.servers import OpenAICompatibleServer
    from rlm_executor_ray.executor import RayExecutor

    cores = os.cpu_count() or 1
    items = [{"prompt": "x" * (i + 1)} for i in range(a.lines)]
    with OpenAICompatibleServer(responder=responder) as srv:
        settings = {"backend": "openai", "backend_kwargs": {"model_name": "m", "api_key": "t",
                                                          "base_url": srv.base_url}}
        run_batch("threads", items[:8], settings, a.concurrency)  # warm imports
        wall, cpu, ok = run_batch("threads", items, settings, a.concurrency)
        print(f"threads: {ok}/{a.lines} lines in {wall:.2f}s: {ok / wall:.1f} lines/s, "
              f"{ok / wall / cores:.1f} lines/s/core ({cores} cores), "
              f"{ok / cpu:.1f} lines per CPU-second")

        t0 = time.perf_counter()
        engine = RayExecutor(num_cpus=2)  # the private cluster; batches below reuse it
        start = time.perf_counter() - t0
        list(engine.map(noop, range(8), concurrency=8))  # workers up
        run_batch("ray", items[:8], settings, a.concurrency)  # workers import rlm, build RLMs
        wall, _, ok = run_batch("ray", items, settings, a.concurrency)
        # (no CPU-seconds for Ray: worker processes that exit take their CPU time with them)
        print(f"ray:     {ok}/{a.lines} lines in {wall:.2f}s: {ok / wall:.1f} lines/s, "
              f"{ok / wall / cores:.1f} lines/s/core (cluster start {start:.1f}s, paid once)")

        # -- where the overhead goes ----------------------------------------------------------
        f = ray.remote(num_cpus=0.25)(noop)
        ray.get(f.remote(0))
        t0 = time.perf_counter()
        for i in range(50):
            ray.get(f.remote(i))
        serial = (time.perf_counter() - t0) / 50
        t0 = time.perf_counter()
        ray.get([f.remote(i) for i in range(200)])
        parallel = (time.perf_counter() - t0) / 200
        print(f"task start: {serial * 1e3:.2f} ms per empty task one at a time, "
              f"{parallel * 1e3:.2f} ms each with 200 in flight")

        from rlm_cli.batching import _line_settings

        job = {"index": 0, "line": 1, "id": None, "sha": "0" * 16, "prompt": "x" * 100,
               "root_prompt": None, "settings": _line_settings(settings, {}, set())}
        t0 = time.perf_counter()
        for _ in range(1000):
            blob = pickle.dumps(job)
        print(f"a line's job (settings included): {len(blob)} bytes pickled, "
              f"{(time.perf_counter() - t0) * 1e3:.3f} ms per 1000")

        ctx = "c" * int(a.context_mb * 2**20)
        jobs = [{"context": ctx, "i": i} for i in range(20)]
        for label, share in (("per task (share_bytes=0)", 0), ("once (object store)", 65536)):
            engine.share_bytes = share
            c0, t0 = time.process_time(), time.perf_counter()
            out = [r for _, r, _ in engine.map(length, jobs, concurrency=8)]
            dt, cpu = time.perf_counter() - t0, time.process_time() - c0
            assert out == [len(ctx)] * 20
            sent = (20 if share == 0 else 1) * len(ctx) / 2**20
            print(f"{a.context_mb:g} MB context x 20 jobs, {label}: {dt:.2f}s wall "
                  f"({dt / 20 * 1e3:.0f} ms per job), driver CPU {cpu:.2f}s, "
                  f"{sent:g} MB serialised into the object store")
    engine.close()


if __name__ == "__main__":
    main()
