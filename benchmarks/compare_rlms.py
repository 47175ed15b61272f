"""rlm against the reference library `rlms==0.1.3`, side by side, on one scripted server.

    .venv/bin/python benchmarks/compare_rlms.py            # everything (≈ 9 min on 2 cores)
    .venv/bin/python benchmarks/compare_rlms.py --quick    # one round, 20 MB, 50 leak completions

Flags are documented in ``benchmarks/README.md``. The script installs `rlms==0.1.3` into its own
virtual environment (`benchmarks/.venv-rlms`, made with uv on first use), starts one
OpenAI-compatible server on 127.0.0.1 (rlm_testkit.servers's, in this process: its replies come from the
scenario script below, sub-calls can be given a fixed latency), and runs every scenario in a fresh
interpreter of each library, alternating rlm / rlms round by round. It prints a table of medians
and the ratio rlms/rlm per scenario and writes the table as JSON.

Scenarios (the `SCENARIO:<name>` root prompt tells the server which script to follow):

* ``turns20``: 20 turns of a trivial cell, then FINAL. The framework's time per turn is the gap
  between the server's reply and the next request (everything the library does between two
  model calls), at turns 2, 3 and 20 and the median over all turns (turn 2 also starts the
  environment, which rlm does on the first code block).
* ``llm300``: one cell making 300 sequential ``llm_query`` calls; µs per call above the same 300
  requests sent over one raw keep-alive ``http.client`` socket (the server's own time plus the
  loopback round trip), and above a raw keep-alive ``httpx`` client.
* ``batch64``: 64 prompts in ``llm_query_batched``, each answered after 200 ms, at 16-way
  concurrency (ideal 0.8 s); ``rbatch64``: the same through ``rlm_query_batched`` with
  ``max_depth=2``, so every item is a child RLM whose one model call takes 200 ms.
* ``bigctx``: a string context of each ``--big-mb`` size: three cells each printing
  ``len(context)`` and the REPL process's peak RSS; time to the first cell, peak RSS of the host
  process and of the worker, and the worker's growth from cell 1 to cell 3 (a copy per cell
  would show there). ``local`` for both libraries; ``sandbox``, ``docker`` and ``pyodide`` for
  rlm only (rlms has no bubblewrap or Pyodide environment; its docker environment needs its own
  image with pip access and re-pickles the context every cell, see facts.md).
* ``leak`` (rlm only): 1,000 completions of a 3-level tree of 111 runs in one process; slope of
  RSS, live gc objects and allocated blocks over the second half.
* start-up: ``import rlm`` (both), ``rlm --help`` and ``rlm plugins`` (rlm only).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import re
import shutil
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
DOCKER_SOCK = "/tmp/rlm-ci-docker/docker.sock"

REPL = "```repl\n{}\n```"
SCENARIOS = ("turns20", "llm300", "batch64", "rbatch64", "bigctx")
SUB_LATENCY = 0.2  # seconds per reply of the batch scenarios' sub-calls and children

# A cell that reports len(context), the peak RSS of the process it runs in and the wall clock.
BIG_CELL = """import time
try:
    hwm = int([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])
except Exception:
    try:
        import resource
        hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except Exception:
        hwm = -1
print('CTXLEN', len(context), 'HWMKB', hwm, 'T', repr(time.time()))"""
BIG_RE = re.compile(r"CTXLEN (\d+) HWMKB (-?\d+) T ([\d.]+)")


class ScenarioServer:
    """The responder: root turns follow the scenario named in the messages; timings are kept."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, float, float]] = []  # (kind, arrival, departure)
        self.big_reports: list[tuple[int, int, float]] = []  # (len, peak KB, wall time)

    def reset(self) -> None:
        with self.lock:
            self.events = []
            self.big_reports = []

    def __call__(self, messages, body):
        arrival = time.perf_counter()
        text = json.dumps(messages[:3]) + json.dumps(messages[-1:])
        is_root = bool(messages) and messages[0].get("role") == "system"
        scenario = next((s for s in SCENARIOS if f"SCENARIO:{s}" in text), None)
        if not is_root:
            if "BATCHPROMPT" in messages[-1].get("content", ""):
                time.sleep(SUB_LATENCY)
            reply, kind = "pong", "sub"
        elif scenario is None:
            # A child RLM of rbatch64 (its prompt is its context, not in the messages): one
            # model call of SUB_LATENCY, answering at once.
            time.sleep(SUB_LATENCY)
            reply, kind = "FINAL(child)", "sub"
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
            elif scenario == "rbatch64":
                reply = (REPL.format("rs = rlm_query_batched(['CHILDPROMPT %d' % i for i in range(64)])\n"
                                     "print(sum(r == 'child' for r in rs))") if turn == 0
                         else "FINAL(done)")
            else:  # bigctx
                # The REPL output of the last cell is in one of the last user messages.
                recent = json.dumps([m.get("content") for m in messages[-3:]]) if turn else ""
                m = BIG_RE.search(recent)
                if m:
                    with self.lock:
                        self.big_reports.append((int(m[1]), int(m[2]), float(m[3])))
                reply = REPL.format(BIG_CELL) if turn < 3 else "FINAL(done)"
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
        return [b[1] - a[2] for a, b in itertools.pairwise(roots)]


def ensure_rlms() -> Path:
    py = RLMS_VENV / "bin" / "python"
    if not py.exists():
        uv = ROOT / ".venv" / "bin" / "uv"
        uv_cmd = [str(uv)] if uv.exists() else ["uv"]
        subprocess.run([*uv_cmd, "venv", "-q", "--python", sys.executable, str(RLMS_VENV)], check=True)
        subprocess.run([*uv_cmd, "pip", "install", "-q", "-p", str(py), "rlms==0.1.3"], check=True)
    return py


def run_client(python: str, scenario: str, base_url: str, extra: list[str],
               env: dict[str, str] | None = None) -> dict:
    out = subprocess.run([python, str(CLIENT), scenario, base_url, *extra], capture_output=True,
                         text=True, timeout=1800, cwd=str(HERE), env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{python} {scenario} {extra} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def time_cmd(cmd: list[str], n: int = 7) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def available_envs() -> dict[str, str | None]:
    """Isolated environments this machine can run, each with why not when it cannot."""
    why: dict[str, str | None] = {}
    why["sandbox"] = None if shutil.which("bwrap") else "bwrap not on PATH"
    sock = os.environ.get("DOCKER_HOST", f"unix://{DOCKER_SOCK}").removeprefix("unix://")
    why["docker"] = None if os.path.exists(sock) else f"no Docker socket at {sock}"
    try:
        from rlm_env_pyodide.install import find_pyodide

        find_pyodide()
        why["pyodide"] = None
    except ImportError:
        why["pyodide"] = "rlm-env-pyodide is not installed"
    except Exception as exc:  # noqa: BLE001 - RLMEnvironmentError naming the fix
        why["pyodide"] = str(exc)
    return why


def machine() -> dict[str, str]:
    def first(path: str, prefix: str) -> str | None:
        try:
            with open(path) as f:
                return next((line.split(":", 1)[1].strip() for line in f if line.startswith(prefix)), None)
        except OSError:
            return None

    cpu = first("/proc/cpuinfo", "model name") or "unknown"
    kb = first("/proc/meminfo", "MemTotal")
    mem = f"{int(kb.split()[0]) / 2**20:.1f} GiB" if kb else "unknown"
    return {"cpu": cpu, "cores": str(os.cpu_count()), "ram": mem, "python": sys.version.split()[0],
            "os": platform.platform(), "load_avg_at_start": " ".join(f"{x:.2f}" for x in os.getloadavg())}


def slope_per_1000(samples: list[dict], key: str) -> float:
    """Least-squares slope of ``key`` per 1,000 completions over the second half of the samples."""
    half = samples[len(samples) // 2:]
    if len(half) < 2:
        return 0.0
    xs = [s["completion"] for s in half]
    ys = [s[key] for s in half]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den * 1000 if den else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description="rlm vs rlms==0.1.3 benchmark suite")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (medians over them)")
    ap.add_argument("--big-mb", default="200,1024", help="context sizes in MB, comma-separated")
    ap.add_argument("--envs", default=None,
                    help="isolated environments for bigctx (default: every one available)")
    ap.add_argument("--leak-completions", type=int, default=1000)
    ap.add_argument("--quick", action="store_true",
                    help="one round, a 20 MB context, 50 leak completions")
    ap.add_argument("--json", default=str(HERE / "results.json"))
    ap.add_argument("--only", nargs="*", default=None,
                    help="scenarios to run, among: " + " ".join((*SCENARIOS, "leak", "startup")))
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.big_mb, args.leak_completions = 1, "20", 50
    sizes = [float(s) for s in str(args.big_mb).split(",") if s.strip()]
    sys.path.insert(0, str(ROOT / "core" / "src"))
    from rlm_testkit.servers import OpenAICompatibleServer

    libs = {"rlm": str(ROOT / ".venv" / "bin" / "python"), "rlms": str(ensure_rlms())}
    wanted = args.only or [*SCENARIOS, "leak", "startup"]
    scenarios = [s for s in SCENARIOS if s in wanted]
    avail = available_envs()
    envs = [e for e in (args.envs.split(",") if args.envs is not None else avail) if e and e != "local"]
    child_env = dict(os.environ)
    if "docker" in envs and not os.environ.get("DOCKER_HOST"):
        child_env["DOCKER_HOST"] = f"unix://{DOCKER_SOCK}"
    responder = ScenarioServer()
    rows: dict[str, dict[str, list[float]]] = {}
    notes: list[str] = []

    def add(metric: str, lib: str, value: float) -> None:
        rows.setdefault(metric, {}).setdefault(lib, []).append(value)

    def big(lib: str, env: str, size: float, base_url: str) -> None:
        responder.reset()
        try:
            res = run_client(libs[lib], "bigctx", base_url,
                             ["--size-mb", str(size), "--env", env], child_env)
        except RuntimeError as exc:
            notes.append(f"bigctx {env} {size:g} MB ({lib}) failed: {str(exc).strip().splitlines()[-1]}")
            print(notes[-1], file=sys.stderr)
            return
        with responder.lock:
            reports = list(responder.big_reports)
        tag = f"bigctx {size:g} MB {env}"
        add(f"{tag}: time to first cell s", lib,
            (reports[0][2] - res["t0_wall"]) if reports else res["wall"])
        add(f"{tag}: host peak RSS MB", lib, res["peak_rss_mb"])
        add(f"{tag}: host peak RSS above start / context", lib,
            (res["peak_rss_mb"] - res["rss_before_mb"]) / size if size else 0.0)
        if env != "local":
            worker = reports[-1][1] / 1024 if reports and reports[-1][1] > 0 else res["children_peak_rss_mb"]
            add(f"{tag}: worker peak RSS MB", lib, worker)
            if len(reports) >= 3 and reports[0][1] > 0:
                add(f"{tag}: worker growth cell 1->3 MB", lib, (reports[2][1] - reports[0][1]) / 1024)
        if reports and reports[0][0] != int(size * 2**20):
            notes.append(f"{tag} ({lib}): the cell saw len(context)={reports[0][0]}")

    with OpenAICompatibleServer(responder=responder, model="bench-model") as server:
        floor: list[float] = []
        raw: list[float] = []
        for rnd in range(args.rounds):
            if "llm300" in scenarios:
                responder.reset()
                run_client(libs["rlm"], "socket300", server.base_url, [])
                floor.append(responder.sub_span())
                responder.reset()
                run_client(libs["rlm"], "raw300", server.base_url, [])
                raw.append(responder.sub_span())
            order = ["rlm", "rlms"] if rnd % 2 == 0 else ["rlms", "rlm"]
            for scenario in scenarios:
                for lib in order:
                    if scenario == "bigctx":
                        for size in sizes:
                            big(lib, "local", size, server.base_url)
                        continue
                    responder.reset()
                    res = run_client(libs[lib], scenario, server.base_url, [], child_env)
                    if scenario == "turns20":
                        gaps = responder.root_gaps()
                        add("turns20: total s", lib, res["wall"])
                        add("turns20: framework ms/turn (median)", lib, statistics.median(gaps) * 1000)
                        add("turns20: framework ms at turn 2", lib, gaps[0] * 1000)
                        add("turns20: framework ms at turn 3", lib, gaps[1] * 1000)
                        add("turns20: framework ms at turn 20", lib, gaps[-2] * 1000)
                    elif scenario == "llm300":
                        span = responder.sub_span()
                        add("llm300: 300 calls s", lib, span)
                        add("llm300: us/call above raw socket", lib,
                            (span - statistics.median(floor)) / 300 * 1e6)
                        add("llm300: us/call above raw httpx", lib,
                            (span - statistics.median(raw)) / 300 * 1e6)
                    elif scenario == "batch64":
                        add("batch64 (200 ms, 16-way; ideal 0.8): s", lib, responder.sub_span())
                    elif scenario == "rbatch64":
                        add("rbatch64 children (200 ms, 16-way; ideal 0.8): s", lib, responder.sub_span())
            print(f"round {rnd + 1}/{args.rounds} done", file=sys.stderr)
        if floor:
            add("llm300: raw socket baseline us/call", "rlm", statistics.median(floor) / 300 * 1e6)
            add("llm300: raw httpx baseline us/call", "rlm", statistics.median(raw) / 300 * 1e6)
        if "bigctx" in scenarios:
            for env in envs:
                if avail.get(env):
                    notes.append(f"bigctx {env}: skipped, {avail[env]}")
                    continue
                for size in sizes:
                    big("rlm", env, size, server.base_url)
            print("isolated bigctx done", file=sys.stderr)
    if "leak" in wanted:
        res = run_client(libs["rlm"], "leak", "-", ["--completions", str(args.leak_completions)],
                         child_env)
        s = res["samples"]
        add(f"leak {args.leak_completions}x111 runs: s per completion", "rlm", res["wall"] / args.leak_completions)
        add("leak: RSS MB at end", "rlm", s[-1]["rss_mb"])
        add("leak: RSS MB slope / 1000 completions", "rlm", slope_per_1000(s, "rss_mb"))
        add("leak: gc objects slope / 1000 completions", "rlm", slope_per_1000(s, "gc_objects"))
        add("leak: alloc blocks slope / 1000 completions", "rlm", slope_per_1000(s, "blocks"))
        leak_samples = s
    else:
        leak_samples = []
    if "startup" in wanted:
        for lib, py in libs.items():
            add("start-up: import rlm s", lib, time_cmd([py, "-c", "import rlm"]))
        rlm_bin = str(ROOT / ".venv" / "bin" / "rlm")
        add("start-up: rlm --help s", "rlm", time_cmd([rlm_bin, "--help"]))
        add("start-up: rlm plugins s", "rlm", time_cmd([rlm_bin, "plugins"]))

    table = []
    print(f"\n{'metric':58} {'rlm':>10} {'rlms 0.1.3':>11} {'rlms/rlm':>9}")
    for metric, by in rows.items():
        a = statistics.median(by["rlm"]) if "rlm" in by else None
        b = statistics.median(by["rlms"]) if "rlms" in by else None
        ratio = (b / a) if a and b and a > 0 else None
        spread = {lib: [min(v), max(v)] for lib, v in by.items() if len(v) > 1}
        table.append({"metric": metric, "rlm": a, "rlms": b, "ratio": ratio, "range": spread})

        def fmt(v: float | None) -> str:
            return f"{v:10.3f}" if v is not None else f"{'-':>10}"

        print(f"{metric:58} {fmt(a)} {fmt(b):>11} {'-' if ratio is None else f'{ratio:9.1f}':>9}")
    for note in notes:
        print("note:", note)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), **machine(),
            "rounds": args.rounds, "big_mb": sizes, "envs": envs,
            "leak_completions": args.leak_completions, "command": " ".join(sys.argv)}
    Path(args.json).write_text(json.dumps({"meta": meta, "table": table, "notes": notes,
                                           "leak_samples": leak_samples}, indent=2))
    print(f"\nwritten: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
