"""rlm against the reference library `rlms==0.1.3`, side by side, on one scripted server.

    .venv/bin/python benchmarks/compare_rlms.py [--rounds 3] [--quick] [--json benchmarks/results.json]

The script installs `rlms==0.1.3` into its own virtual environment (`benchmarks/.venv-rlms`, made
with uv on first use), starts one OpenAI-compatible server on 127.0.0.1 (rlm.testing's, in this
process: its replies come from the scenario script below), and runs every scenario in a fresh
interpreter of each library, alternating rlm / rlms round by round. It prints a table of medians
and the ratio rlms/rlm per scenario and writes the table as JSON.

Scenarios (the `SCENARIO:<name>` root prompt tells the server which script to follow):

* ``turns20``: 20 turns of a trivial cell, then FINAL. Reports the framework's time per turn (the
  gap between the server's reply and the next request, i.e. everything the library does between
  two model calls) at turn 2 and turn 20, and the median over all turns.
* ``llm300``: one cell making 300 sequential ``llm_query`` calls; reports µs per call above the
  same 300 requests sent by a raw keep-alive httpx client to the same server (the baseline that
  holds the server's own time and the loopback round trip).
* ``batch64``: one cell with 64 prompts in ``llm_query_batched``, each sub-call answered after
  200 ms; the ideal at 16-way concurrency is 0.8 s.
* ``bigctx``: a 200 MB string context (``--big-mb`` to change): time to the first cell and peak RSS.
* start-up: ``import rlm`` (both), ``rlm --help`` and ``rlm plugins`` (rlm only).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RLMS_VENV = HERE / ".venv-rlms"
CLIENT = HERE / "_bench_client.py"

REPL = "```repl\n{}\n```"


class ScenarioServer:
    """The responder: root turns follow the scenario named in the messages; timings are kept."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, float, float]] = []  # (kind, arrival, departure)

    def reset(self) -> None:
        with self.lock:
            self.events = []

    def __call__(self, messages, body):
        arrival = time.perf_counter()
        text = json.dumps(messages[:3]) + json.dumps(messages[-1:])
        is_root = messages and messages[0].get("role") == "system"
        scenario = next((s for s in ("turns20", "llm300", "batch64", "bigctx") if f"SCENARIO:{s}" in text), None)
        if not is_root:
            if "BATCHPROMPT" in messages[-1].get("content", ""):
                time.sleep(0.2)
            reply, kind = "pong", "sub"
        else:
            turn = sum(1 for m in messages if m.get("role") == "assistant")
            kind = "root"
            if scenario == "turns20":
                reply = REPL.format(f"x{turn} = {turn}") if turn < 20 else "FINAL(done)"
            elif scenario == "llm300":
                reply = (REPL.format("for i in range(300):\n    r = llm_query('ping')\nprint(r)")
                         if turn == 0 else "FINAL(done)")
            elif scenario == "batch64":
                reply = (REPL.format("rs = llm_query_batched(['BATCHPROMPT %d' % i for i in range(64)])\n"
                                     "print(len(rs))") if turn == 0 else "FINAL(done)")
            elif scenario == "bigctx":
                reply = REPL.format("print(len(context))") if turn == 0 else "FINAL(done)"
            else:
                reply = "FINAL(unknown scenario)"
        with self.lock:
            self.events.append((kind, arrival, time.perf_counter()))
        return reply

    def sub_span(self) -> float:
        """First sub-call arrival to last sub-call departure: the time the cell's calls took."""
        with self.lock:
            subs = [e for e in self.events if e[0] == "sub"]
        return max(e[2] for e in subs) - min(e[1] for e in subs) if subs else 0.0

    def root_gaps(self) -> list[float]:
        """Framework time before each root call after the first: previous departure -> arrival."""
        with self.lock:
            ev = sorted(self.events, key=lambda e: e[1])
        roots = [e for e in ev if e[0] == "root"]
        return [b[1] - a[2] for a, b in zip(roots, roots[1:])]


def ensure_rlms() -> Path:
    py = RLMS_VENV / "bin" / "python"
    if not py.exists():
        uv = ROOT / ".venv" / "bin" / "uv"
        uv_cmd = [str(uv)] if uv.exists() else ["uv"]
        subprocess.run([*uv_cmd, "venv", "-q", "--python", sys.executable, str(RLMS_VENV)], check=True)
        subprocess.run([*uv_cmd, "pip", "install", "-q", "-p", str(py), "rlms==0.1.3"], check=True)
    return py


def run_client(python: str, scenario: str, base_url: str, extra: list[str]) -> dict:
    out = subprocess.run([python, str(CLIENT), scenario, base_url, *extra], capture_output=True,
                         text=True, timeout=900, cwd=str(HERE))
    if out.returncode != 0:
        raise RuntimeError(f"{python} {scenario} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def time_cmd(cmd: list[str], n: int = 7) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--big-mb", type=float, default=200)
    ap.add_argument("--quick", action="store_true", help="one round, 20 MB context")
    ap.add_argument("--json", default=str(HERE / "results.json"))
    ap.add_argument("--only", nargs="*", default=None)
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.big_mb = 1, 20
    sys.path.insert(0, str(ROOT / "core" / "src"))
    from rlm.testing import OpenAICompatibleServer

    libs = {"rlm": str(ROOT / ".venv" / "bin" / "python"), "rlms": str(ensure_rlms())}
    scenarios = args.only or ["turns20", "llm300", "batch64", "bigctx"]
    responder = ScenarioServer()
    rows: dict[str, dict[str, list[float]]] = {}

    def add(metric: str, lib: str, value: float) -> None:
        rows.setdefault(metric, {}).setdefault(lib, []).append(value)

    with OpenAICompatibleServer(responder=responder, model="bench-model") as server:
        raw: list[float] = []
        for rnd in range(args.rounds):
            if "llm300" in scenarios:
                responder.reset()
                run_client(libs["rlm"], "raw300", server.base_url, [])
                raw.append(responder.sub_span())
            order = ["rlm", "rlms"] if rnd % 2 == 0 else ["rlms", "rlm"]
            for scenario in scenarios:
                for lib in order:
                    responder.reset()
                    extra = ["--size-mb", str(args.big_mb)] if scenario == "bigctx" else []
                    res = run_client(libs[lib], scenario, server.base_url, extra)
                    if scenario == "turns20":
                        gaps = responder.root_gaps()
                        add("turns20: total s", lib, res["wall"])
                        add("turns20: framework ms/turn (median)", lib, statistics.median(gaps) * 1000)
                        add("turns20: framework ms at turn 2", lib, gaps[0] * 1000)
                        add("turns20: framework ms at turn 20", lib, gaps[-2] * 1000)
                    elif scenario == "llm300":
                        span = responder.sub_span()
                        add("llm300: 300 calls s", lib, span)
                        add("llm300: us/call above raw httpx", lib,
                            (span - statistics.median(raw)) / 300 * 1e6)
                    elif scenario == "batch64":
                        add("batch64 (200 ms replies): batch s", lib, responder.sub_span())
                    elif scenario == "bigctx":
                        add(f"bigctx {args.big_mb:g} MB: total s", lib, res["wall"])
                        add(f"bigctx {args.big_mb:g} MB: peak RSS MB", lib, res["peak_rss_mb"])
            print(f"round {rnd + 1}/{args.rounds} done", file=sys.stderr)
    for lib, py in libs.items():
        add("start-up: import rlm s", lib, time_cmd([py, "-c", "import rlm"]))
    rlm_bin = str(ROOT / ".venv" / "bin" / "rlm")
    add("start-up: rlm --help s", "rlm", time_cmd([rlm_bin, "--help"]))
    add("start-up: rlm plugins s", "rlm", time_cmd([rlm_bin, "plugins"]))

    table = []
    print(f"\n{'metric':45} {'rlm':>12} {'rlms 0.1.3':>12} {'rlms/rlm':>9}")
    for metric, by in rows.items():
        a = statistics.median(by["rlm"]) if "rlm" in by else None
        b = statistics.median(by["rlms"]) if "rlms" in by else None
        ratio = (b / a) if a and b else None
        table.append({"metric": metric, "rlm": a, "rlms": b, "ratio": ratio})
        fmt = lambda v: f"{v:12.3f}" if v is not None else f"{'-':>12}"  # noqa: E731
        print(f"{metric:45} {fmt(a)} {fmt(b)} {ratio if ratio is None else f'{ratio:9.1f}'}")
    meta = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{os.cpu_count()} cores",
            "python": sys.version.split()[0], "rounds": args.rounds}
    Path(args.json).write_text(json.dumps({"meta": meta, "table": table}, indent=2))
    print(f"\nwritten: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
