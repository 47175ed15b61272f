"""A batch of N lines (default 200) against a model with fixed latency (default 100 ms per call):
the threads executor versus the ray executor (a local 2-CPU cluster) on this machine.

    .venv/bin/python benchmarks/bench_batch.py [--lines 200] [--latency 0.1] [--concurrency 16]

Each line is a real RLM run (one root turn that sets the answer in the local REPL) over the real
openai backend against rlm_testkit.servers.OpenAICompatibleServer on 127.0.0.1. Prints the wall time of
each executor; for Ray also the cluster start-up, which a batch pays once.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def responder(messages, body):
    return "```repl\nFINAL(str(len(context)))\n```"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=200)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--skip-ray", action="store_true")
    a = ap.parse_args()

    import rlm
    from rlm_testkit.servers import OpenAICompatibleServer

    items = [{"prompt": "x" * (i + 1)} for i in range(a.lines)]
    with OpenAICompatibleServer(responder=responder, latency=a.latency) as srv:
        settings = {"backend": "openai", "backend_kwargs": {"model_name": "m", "api_key": "t",
                                                          "base_url": srv.base_url}}
        ideal = a.lines * a.latency / a.concurrency
        print(f"{a.lines} lines, {a.latency * 1000:.0f} ms per model call, concurrency "
              f"{a.concurrency} (ideal {ideal:.2f}s), {os.cpu_count()} CPUs")
        with tempfile.TemporaryDirectory() as d:
            rep = rlm.batch(items, output=os.path.join(d, "t.jsonl"), concurrency=a.concurrency,
                            **settings)
            assert rep.succeeded == a.lines, rep.summary()
            print(f"threads: {rep.elapsed:.2f}s  ({a.lines / rep.elapsed:.1f} lines/s)")
            if a.skip_ray:
                return
            import ray

            t0 = time.perf_counter()
            ray.init(num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=False,
                     log_to_driver=False, configure_logging=False)
            startup = time.perf_counter() - t0
            try:
                rep = rlm.batch(items, output=os.path.join(d, "r.jsonl"), executor="ray",
                                concurrency=a.concurrency, **settings)
                assert rep.succeeded == a.lines, rep.summary()
                workers = len({r["worker"] for r in rep.results})
                print(f"ray:     {rep.elapsed:.2f}s  ({a.lines / rep.elapsed:.1f} lines/s, "
                      f"{workers} worker processes) + {startup:.1f}s cluster start-up")
            finally:
                ray.shutdown()


if __name__ == "__main__":
    main()
