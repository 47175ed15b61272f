"""The local environment's cell round trip: ``LocalREPL.execute()`` from call to result.

    .venv/bin/python benchmarks/bench_local_cell.py                 # 2,000 cells of each kind
    .venv/bin/python benchmarks/bench_local_cell.py --cells 500 --repeat 5

Each kind of cell runs ``--cells`` times in one REPL (after 50 warm-up cells), ``--repeat`` times
with a new REPL; the table shows the median time of one cell in microseconds, and its 90th
percentile, over every cell of every repetition. The host is an in-process object that answers
at once, so ``llm_query`` measures the helper's own path (the cell calls the host directly, no
serialization), not a model.

Kinds: ``pass`` (an empty cell: the REPL's fixed cost), ``assign`` (``x = i``), ``print`` (100
short lines captured), ``llm_query`` (one helper call), ``error`` (a cell that raises: the
traceback is formatted), ``answer`` (``FINAL(...)``: the answer is read back).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from rlm_plugins.local.repl import LocalREPL

CELLS: dict[str, str] = {
    "pass": "pass",
    "assign": "x = 1",
    "print": "for _i in range(100):\n    print('line', _i)",
    "llm_query": "r = llm_query('hi')",
    "error": "def f():\n    raise ValueError('boom')\nf()",
    "answer": "FINAL('done')",
}


class Host:
    """Answers at once, in process."""

    depth = 0

    def llm_query(self, prompt: Any, model: str | None = None) -> str:
        return "ok"

    def llm_query_batched(self, prompts: Any, model: str | None = None) -> list[str]:
        return ["ok" for _ in prompts]

    def rlm_query(self, prompt: Any, model: str | None = None) -> str:
        return "ok"

    def rlm_query_batched(self, prompts: Any, model: str | None = None) -> list[str]:
        return ["ok" for _ in prompts]


def measure(code: str, cells: int, repeat: int) -> list[float]:
    times: list[float] = []
    for _ in range(repeat):
        repl = LocalREPL()
        repl.start(Host(), {})
        try:
            for _ in range(50):
                repl.execute(code)
            for _ in range(cells):
                started = time.perf_counter()
                repl.execute(code)
                times.append(time.perf_counter() - started)
        finally:
            repl.shutdown()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=2000, help="cells per repetition")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions, each a new REPL")
    args = parser.parse_args()
    print(f"{'cell':<10} {'median us':>10} {'p90 us':>10}")
    for name, code in CELLS.items():
        times = sorted(measure(code, args.cells, args.repeat))
        p90 = times[int(len(times) * 0.9)]
        print(f"{name:<10} {statistics.median(times) * 1e6:>10.1f} {p90 * 1e6:>10.1f}")


if __name__ == "__main__":
    main()
