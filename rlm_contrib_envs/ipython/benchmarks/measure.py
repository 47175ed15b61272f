"""Start time, per-cell overhead and one llm_query round trip, for local / ipython /
ipython-kernel. Run: .venv/bin/python rlm_contrib_envs/ipython/benchmarks/measure.py

"1st start" includes importing IPython / jupyter_client in this process. Medians otherwise; the host answers llm_query at once (RecordingHost), so the round
trip is the environment's own cost.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from rlm_env_ipython.inprocess import IPythonREPL
from rlm_env_ipython.kernel import IPythonKernelREPL
from rlm_plugins.local.repl import LocalREPL
from rlm_testkit.environments import RecordingHost

STARTS = 3
CELLS = 50


def timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(name: str, factory: Any) -> dict[str, float]:
    starts = []
    for _ in range(STARTS):
        env = factory()
        starts.append(timed(lambda env=env: env.start(RecordingHost(), {})))
        env.shutdown()
    env = factory()
    env.start(RecordingHost(), {})
    try:
        env.execute("x = 0")
        empty = [timed(lambda: env.execute("x += 1")) for _ in range(CELLS)]
        llm = [timed(lambda: env.execute("r = llm_query('ping')")) for _ in range(CELLS)]
    finally:
        env.shutdown()
    cell = statistics.median(empty)
    return {"first_ms": starts[0] * 1000, "start_ms": statistics.median(starts) * 1000, "cell_ms": cell * 1000,
            "llm_query_ms": (statistics.median(llm) - cell) * 1000}


def main() -> None:
    rows = {"local": measure("local", LocalREPL), "ipython": measure("ipython", IPythonREPL),
            "ipython-kernel": measure("ipython-kernel", IPythonKernelREPL)}
    print(f"{'environment':16} {'1st start (ms)':>15} {'start (ms)':>11} {'cell (ms)':>10} "
          f"{'llm_query (ms)':>15}")
    for name, row in rows.items():
        print(f"{name:16} {row['first_ms']:15.1f} {row['start_ms']:11.1f} {row['cell_ms']:10.2f} "
              f"{row['llm_query_ms']:15.2f}")


if __name__ == "__main__":
    main()
