"""`rlm logs` on 10,000 runs: generate them directly into a fresh database, then time the command.

    .venv/bin/python benchmarks/bench_logs.py [--runs 10000]

Prints the time to generate, `rlm logs` (the default list, newest 20), `rlm logs -n 0` (all of
them), filtered lists, and `rlm logs show` of one run. Each command is a real subprocess, so
interpreter start-up and plugin loading are included.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time


def generate(db, n: int) -> None:
    rnd = random.Random(7)
    models = ["gpt-4o", "gpt-4o-mini", "claude-sonnet", "qwen2.5-coder"]
    statuses = ["ok"] * 8 + ["limit", "error"]
    t0 = time.time() - n * 60
    with db.transaction() as c:
        for i in range(n):
            rid = f"{i:012x}"
            start = t0 + i * 60
            model = rnd.choice(models)
            c.execute("INSERT INTO runs (id, root_id, status, started_at, finished_at, updated_at, "
                      "root_model, backend, environment, prompt, response, execution_time, "
                      "iterations, calls, input_tokens, output_tokens, cost, settings, "
                      "context_lengths) VALUES (?, ?, ?, ?, ?, ?, ?, 'openai', 'local', ?, ?, ?, ?, "
                      "?, ?, ?, ?, '{}', '[100]')",
                      (rid, rid, rnd.choice(statuses), start, start + 5, start + 5, model,
                       f"question number {i} about the logs " * 3, f"answer {i}", 5.0,
                       rnd.randint(1, 10), rnd.randint(1, 50), rnd.randint(1000, 90000),
                       rnd.randint(100, 5000), rnd.random()))
            for it in range(1, 3):
                c.execute("INSERT INTO iterations (run_id, iteration, started_at, finished_at, "
                          "response) VALUES (?, ?, ?, ?, ?)", (rid, it, start, start + 2, "```repl\nprint(1)\n```"))
                c.execute("INSERT INTO cells (run_id, iteration, idx, code, stdout) VALUES (?, ?, 0, "
                          "'print(1)', '1\n')", (rid, it))
            c.execute("INSERT INTO usage (run_id, model, calls, input_tokens, output_tokens) VALUES "
                      "(?, ?, 3, 100, 10)", (rid, model))


def timed(cmd: list[str], env: dict[str, str], repeat: int) -> tuple[float, str]:
    times, out = [], ""
    for _ in range(repeat):
        t = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
        times.append(time.perf_counter() - t)
        out = p.stdout
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    from rlm_plugins.store.db import Database

    with tempfile.TemporaryDirectory() as d:
        env = {**os.environ, "RLM_USER_DIR": d}
        db = Database(os.path.join(d, "logs.db"))
        t = time.perf_counter()
        generate(db, args.runs)
        print(f"generated {args.runs:,} runs in {time.perf_counter() - t:.2f}s "
              f"({os.path.getsize(db.path) / 1e6:.1f} MB)")
        from rlm_plugins.store.query import list_runs

        for label, kw in (("newest 20", {}), ("all", {"limit": None})):
            t = time.perf_counter()
            rows = list_runs(db, **kw)
            print(f"in-process list_runs ({label}): {(time.perf_counter() - t) * 1000:.1f} ms, {len(rows):,} rows")
        rlm = [sys.executable, "-m", "rlm"]
        base, _ = timed([sys.executable, "-c", "import rlm_cli.cli"], env, args.repeat)
        print(f"python -c 'import rlm_cli.cli' (start-up floor): {base * 1000:.0f} ms")
        for label, extra in (("rlm logs", []), ("rlm logs -n 0 (all)", ["-n", "0"]),
                             ("rlm logs --model mini --status ok", ["--model", "mini", "--status", "ok"]),
                             ("rlm logs --since 1d", ["--since", "1d"]),
                             ("rlm logs -q 'number 4242'", ["-q", "number 4242"])):
            secs, out = timed([*rlm, "logs", *extra], env, args.repeat)
            print(f"{label}: {secs * 1000:.0f} ms median of {args.repeat} ({len(out.splitlines()):,} lines)")
        secs, _ = timed([*rlm, "logs", "show", f"{args.runs // 2:012x}"], env, args.repeat)
        print(f"rlm logs show ID: {secs * 1000:.0f} ms")
        secs, out = timed([*rlm, "logs", "--json", "-n", "0"], env, 1)
        assert len(json.loads(out)) == args.runs


if __name__ == "__main__":
    main()
