"""Environment costs, printed as a table: start time, per-cell overhead, llm_query round trip
from inside a cell, and the time and peak memory to load a large context.

    .venv/bin/python benchmarks/bench_environments.py                 # local and sandbox
    .venv/bin/python benchmarks/bench_environments.py --envs sandbox --context-mb 1024
    DOCKER_HOST=unix:///tmp/rlm-ci-docker/docker.sock \
        .venv/bin/python benchmarks/bench_environments.py --envs docker,docker-runsc

``pyodide`` needs ``rlm-env-pyodide install`` once; its peak memory is the Deno process's.
``docker`` runs the image ``RLM_DOCKER_IMAGE`` (default ``rlm-python:3.11-local``, built by
``scripts/ci/docker.sh``); ``docker-runsc`` is the same under gVisor.

The peak memory of the context load is the REPL's own: the host process for ``local`` (its
RSS grows), the worker process for isolated environments (VmHWM read from /proc inside it).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time

from rlm import PluginManager
from rlm.types import Tool


class Host:
    depth = 0

    def llm_query(self, prompt, model=None):
        return "ok"

    def llm_query_batched(self, prompts, model=None):
        return ["ok"] * len(prompts)

    def rlm_query(self, prompt, model=None):
        return "ok"

    def rlm_query_batched(self, prompts, model=None):
        return ["ok"] * len(prompts)


def measure(label: str, kwargs: dict, context_mb: int) -> dict:
    name = kwargs.pop("environment", label)
    pm = PluginManager()
    env = pm.create("environment", name, **kwargs)
    t0 = time.perf_counter()
    env.start(Host(), {"K": Tool("K", 1)})
    env.add_context("warm", 0)
    env.execute("pass")
    start = time.perf_counter() - t0
    try:
        cells = []
        for _ in range(200):
            t = time.perf_counter()
            env.execute("x = 1")
            cells.append(time.perf_counter() - t)
        r = env.execute("import time\nt = time.perf_counter()\nfor _ in range(500):\n"
                        "    llm_query('hi')\nprint((time.perf_counter() - t) / 500)")
        rtt = float(r.stdout)
        text = "x" * (context_mb * 2**20)
        t = time.perf_counter()
        env.add_context(text, 0)
        r = env.execute("print(len(context))")
        load = time.perf_counter() - t
        assert r.stdout.strip() == str(len(text)), r
        del text
        if name == "local":
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        elif name == "pyodide":  # no /proc inside WebAssembly: the Deno process's, from outside
            with open(f"/proc/{env._proc.proc.pid}/status") as f:
                peak = next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) * 1024
        else:
            # VmHWM where /proc has it; gVisor's does not, its getrusage does.
            r = env.execute("hwm = [l for l in open('/proc/self/status') if "
                            "l.startswith('VmHWM')]\nimport resource\n"
                            "print(hwm[0].split()[1] if hwm else "
                            "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
            peak = int(r.stdout) * 1024
    finally:
        env.shutdown()
    return {"env": label, "start_s": start, "cell_ms": statistics.median(cells) * 1e3,
            "llm_query_ms": rtt * 1e3, "context_mb": context_mb, "load_s": load,
            "peak_mb": peak / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--envs", default="local,sandbox")
    ap.add_argument("--context-mb", type=int, default=200)
    args = ap.parse_args()
    settings = {"local": {}, "sandbox": {"memory_limit": f"{max(2048, args.context_mb * 3)}m"},
                "docker": {"memory_limit": f"{max(2048, args.context_mb * 3)}m", "pull": "never",
                           "image": os.environ.get("RLM_DOCKER_IMAGE", "rlm-python:3.11-local")},
                "pyodide": {"memory_limit": f"{min(4096, max(2048, args.context_mb * 3))}m"}}
    settings["docker-runsc"] = {**settings["docker"], "environment": "docker", "runtime": "runsc",
                                "context_limit": f"{max(2048, args.context_mb * 2)}m"}
    print(f"{'env':10} {'start s':>8} {'cell ms':>8} {'llm_query ms':>13} {'ctx MB':>7} "
          f"{'load s':>7} {'peak MB':>8}")
    for name in args.envs.split(","):
        m = measure(name, dict(settings.get(name, {})), args.context_mb)
        print(f"{m['env']:10} {m['start_s']:8.3f} {m['cell_ms']:8.3f} {m['llm_query_ms']:13.3f} "
              f"{m['context_mb']:7d} {m['load_s']:7.2f} {m['peak_mb']:8.0f}")


if __name__ == "__main__":
    main()
