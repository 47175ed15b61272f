"""Environment costs, printed as a table: start time, per-cell overhead, llm_query round trip
from inside a cell, and the time and peak memory to load a large context.

    .venv/bin/python benchmarks/bench_environments.py                 # local and sandbox
    .venv/bin/python benchmarks/bench_environments.py \\
        --envs local,ipython,ipython-kernel,modal,e2b,daytona
    .venv/bin/python benchmarks/bench_environments.py --envs sandbox --context-mb 1024
    DOCKER_HOST=unix:///tmp/rlm-ci-docker/docker.sock \\
        .venv/bin/python benchmarks/bench_environments.py --envs docker,docker-runsc

Every environment is measured in a fresh interpreter of its own (so its first start pays its own
imports, and the peak memory of one does not carry into the next), ``--repeat`` times, each time
with a new REPL; the table shows medians over the repetitions ("1st start" is the first one, in
the fresh interpreter; "start" the median of the others).

``modal``, ``e2b`` and ``daytona`` run the providers' real SDKs against the local emulators of
``rlm_contrib_envs/*/tests/*_emulator`` (served from a process of their own by ``_bench_emulators.py``, on 127.0.0.1
only; sandboxes are bubblewrap jails on this machine). Their numbers are the SDK, the
environment, the emulated API and the local sandbox -- not the network, nor the provider's
scheduling. ``pyodide`` needs ``rlm-env-pyodide install`` once; its peak memory is the Deno
process's. ``docker`` runs the image ``RLM_DOCKER_IMAGE`` (default ``rlm-python:3.11-local``, built
by ``scripts/ci/docker.sh``); ``docker-runsc`` is the same under gVisor.

"peak MB" is the REPL's own peak while it loads the context: the host process for ``local`` and
``ipython`` (in-process), the process cells run in for the others (the kernel, the worker: VmHWM
read from /proc inside it; gVisor's has none, its getrusage does). "host MB" is the host
process's peak over the same load (its VmHWM reset just before), "host +MB" that peak above the
host's RSS before the context string was built: 1x the context is the caller's own string, more
is a copy.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Beside this script: run by its path, Python puts the script's directory first on sys.path.
from _bench_emulators import EMULATED, PROVIDER_PREFIXES

HERE = Path(__file__).resolve().parent

#: What each environment needs installed, as import names, and whether it needs ``bwrap``.
NEEDS: dict[str, tuple[tuple[str, ...], bool]] = {
    "local": ((), False), "sandbox": (("rlm_env_sandbox",), True),
    "docker": (("rlm_env_docker",), False), "pyodide": (("rlm_env_pyodide",), False),
    "ipython": (("rlm_env_ipython", "IPython"), False),
    "ipython-kernel": (("rlm_env_ipython", "IPython", "ipykernel", "jupyter_client"), False),
    **{name: ((dist, sdk), True) for name, (sdk, dist) in EMULATED.items()},
}

#: A cell timing ``n`` llm_query calls one by one and printing their median, in seconds.
HELPER_CELL = ("import statistics as _s, time as _t\n_d = []\nfor _ in range({n}):\n"
               "    _a = _t.perf_counter()\n    llm_query('hi')\n"
               "    _d.append(_t.perf_counter() - _a)\nprint(_s.median(_d))")
#: A cell printing its own process's peak RSS in KiB (VmHWM; gVisor has none: getrusage).
PEAK_CELL = ("_h = [l for l in open('/proc/self/status') if l.startswith('VmHWM')]\n"
             "import resource as _r\n"
             "print(_h[0].split()[1] if _h else _r.getrusage(_r.RUSAGE_SELF).ru_maxrss)")


def settings(name: str, context_mb: int) -> dict[str, Any]:
    """``environment_kwargs`` for ``name`` with room for a ``context_mb`` context."""
    cap = f"{max(2048, context_mb * 3)}m"
    docker = {"memory_limit": cap, "pull": "never",
              "image": os.environ.get("RLM_DOCKER_IMAGE", "rlm-python:3.11-local")}
    return {"sandbox": {"memory_limit": cap}, "docker": docker,
            "docker-runsc": {**docker, "environment": "docker", "runtime": "runsc",
                             "context_limit": f"{max(2048, context_mb * 2)}m"},
            "pyodide": {"memory_limit": f"{min(4096, max(2048, context_mb * 3))}m"},
            **{e: {"memory_limit": cap} for e in EMULATED}}.get(name, {})


def missing(name: str) -> str | None:
    """Why ``name`` cannot run here, or None."""
    modules, bwrap = NEEDS.get("docker" if name == "docker-runsc" else name, ((), False))
    absent = [m for m in modules if importlib.util.find_spec(m) is None]
    if absent:
        return f"not installed: {', '.join(absent)}"
    if bwrap and shutil.which("bwrap") is None:
        return "needs bwrap (scripts/ci/sandbox.sh)"
    return None


# --- the measuring process -----------------------------------------------------------------------


class Host:
    """Answers every helper call at once, so a round trip is the environment's own cost."""

    depth = 0

    def llm_query(self, prompt, model=None):
        return "ok"

    def llm_query_batched(self, prompts, model=None):
        return ["ok"] * len(prompts)

    def rlm_query(self, prompt, model=None):
        return "ok"

    def rlm_query_batched(self, prompts, model=None):
        return ["ok"] * len(prompts)


def proc_status(field: str, pid: str | int = "self") -> int:
    """A memory field of /proc/PID/status (VmHWM: peak RSS, VmRSS: current RSS) in bytes."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) * 1024


def reset_peak() -> None:
    """Reset this process's VmHWM to its current RSS (Linux's ``clear_refs`` 5)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def checked(env: Any, code: str) -> str:
    """Run ``code``; its stdout, or RuntimeError with the cell's error."""
    result = env.execute(code)
    if result.error is not None:
        raise RuntimeError(f"cell {code!r} failed: {result.error}")
    return result.stdout


def run_once(pm: Any, name: str, kwargs: dict, context_mb: int, cells: int, calls: int) -> dict:
    """One fresh REPL: start, cells, helper calls, a context; times in seconds, memory in bytes."""
    from rlm.types import Tool

    t0 = time.perf_counter()
    env = pm.create("environment", name, **kwargs)
    try:
        env.start(Host(), {"K": Tool("K", 1)})
        env.add_context("warm", 0)
        checked(env, "pass")
        start = time.perf_counter() - t0
        durations = []
        for _ in range(cells):
            t = time.perf_counter()
            env.execute("x = 1")
            durations.append(time.perf_counter() - t)
        rtt = float(checked(env, HELPER_CELL.format(n=calls)).strip().splitlines()[-1])
        host_before = proc_status("VmRSS")
        text = "x" * (context_mb * 2**20)
        reset_peak()
        t = time.perf_counter()
        env.add_context(text, 0)
        out = checked(env, "print(len(context))")
        load = time.perf_counter() - t
        host_peak = proc_status("VmHWM")
        if out.strip() != str(len(text)):
            raise RuntimeError(f"the context arrived as {out.strip()!r} characters, "
                               f"not {len(text)}")
        del text
        if name in ("local", "ipython"):  # cells run in this process
            peak = host_peak
        elif name == "pyodide":  # no /proc inside WebAssembly: the Deno process's, from outside
            peak = proc_status("VmHWM", env._proc.proc.pid)
        else:
            peak = int(checked(env, PEAK_CELL).strip().splitlines()[-1]) * 1024
    finally:
        env.shutdown()
    return {"start_s": start, "cell_s": statistics.median(durations), "llm_query_s": rtt,
            "load_s": load, "peak_b": peak, "host_peak_b": host_peak,
            "host_growth_b": host_peak - host_before}


def child(name: str, kwargs: dict, context_mb: int, repeat: int, cells: int, calls: int) -> dict:
    """Measure ``name`` ``repeat`` times in this (fresh) process; medians and ranges."""
    from rlm import PluginManager

    pm = PluginManager()
    env_name = kwargs.pop("environment", name)
    runs = [run_once(pm, env_name, dict(kwargs), context_mb, cells, calls)
            for _ in range(repeat)]
    later = runs[1:] or runs
    row: dict[str, Any] = {"first_start_s": runs[0]["start_s"],
                           "start_s": statistics.median(r["start_s"] for r in later)}
    for key in ("cell_s", "llm_query_s", "load_s", "peak_b", "host_peak_b", "host_growth_b"):
        row[key] = statistics.median(r[key] for r in runs)
    row["runs"] = runs
    return row


# --- the orchestrating process -------------------------------------------------------------------


@contextlib.contextmanager
def emulator(name: str) -> Iterator[dict[str, dict[str, str]]]:
    """Serve the emulator of ``name`` from a process of its own for the block."""
    proc = subprocess.Popen([sys.executable, str(HERE / "_bench_emulators.py"), name],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {name} emulator did not start (exit status {proc.wait()})")
        yield json.loads(line)
    finally:
        proc.stdin.close()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def measure(name: str, context_mb: int, args: argparse.Namespace) -> dict:
    """Run the measuring process for ``name`` (with its emulator, if emulated)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(PROVIDER_PREFIXES)}
    kwargs = settings(name, context_mb)
    with contextlib.ExitStack() as stack:
        if name in EMULATED:
            emu = stack.enter_context(emulator(name))
            env.update(emu["env"])
            kwargs.update(emu["kwargs"])
        cmd = [sys.executable, __file__, "--child", name, "--kwargs", json.dumps(kwargs),
               "--context-mb", str(context_mb), "--repeat", str(args.repeat),
               "--cells", str(args.cells), "--calls", str(args.calls)]
        # A session of its own: on a timeout, the REPL's own processes (kernel, worker) go too.
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise RuntimeError(f"took more than --timeout {args.timeout:g} s") from None
    results = [line[7:] for line in out.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not results:
        tail = (err.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"exit status {proc.returncode}: {tail}")
    return json.loads(results[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--envs", default="local,sandbox",
                    help="comma-separated: local, sandbox, docker, docker-runsc, pyodide, "
                         "ipython, ipython-kernel, modal, e2b, daytona (default: %(default)s)")
    ap.add_argument("--context-mb", type=int, default=200,
                    help="context size for the environments on this machine (default: "
                         "%(default)s)")
    ap.add_argument("--emulated-context-mb", type=int, default=64,
                    help="context size for modal, e2b, daytona (default: %(default)s)")
    ap.add_argument("--repeat", type=int, default=5,
                    help="fresh REPLs per environment; medians over them (default: %(default)s)")
    ap.add_argument("--cells", type=int, default=200,
                    help="trivial cells per REPL for the per-cell median (default: %(default)s)")
    ap.add_argument("--calls", type=int, default=200,
                    help="llm_query calls per REPL for the round-trip median (default: "
                         "%(default)s)")
    ap.add_argument("--timeout", type=float, default=900,
                    help="seconds one environment may take in all (default: %(default)s)")
    ap.add_argument("--json", metavar="PATH", help="also write the rows, every run included")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--kwargs", default="{}", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.repeat < 1 or args.cells < 1 or args.calls < 1:
        ap.error("--repeat, --cells and --calls must be at least 1")
    if args.child:
        row = child(args.child, json.loads(args.kwargs), args.context_mb, args.repeat,
                    args.cells, args.calls)
        print("RESULT " + json.dumps(row), flush=True)
        return

    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average "
          f"{os.getloadavg()[0]:.2f}, medians of {args.repeat} fresh REPLs, {args.cells} cells, "
          f"{args.calls} llm_query calls each")
    print(f"{'env':20} {'ctx MB':>6} {'1st start s':>11} {'start s':>8} {'cell ms':>8} "
          f"{'llm_query ms':>12} {'load s':>7} {'peak MB':>8} {'host MB':>8} {'host +MB':>8}", flush=True)
    rows = []
    for name in [n.strip() for n in args.envs.split(",") if n.strip()]:
        label = f"{name} (emulator)" if name in EMULATED else name
        context_mb = args.emulated_context_mb if name in EMULATED else args.context_mb
        reason = missing(name)
        if reason is None:
            try:
                m = measure(name, context_mb, args)
            except RuntimeError as exc:
                reason = f"failed: {exc}"
        if reason is not None:
            print(f"{label:20} skipped: {reason}", flush=True)
            rows.append({"env": label, "skipped": reason})
            continue
        rows.append({"env": label, "context_mb": context_mb, **m})
        print(f"{label:20} {context_mb:6d} {m['first_start_s']:11.3f} {m['start_s']:8.3f} "
              f"{m['cell_s'] * 1e3:8.3f} {m['llm_query_s'] * 1e3:12.3f} {m['load_s']:7.3f} "
              f"{m['peak_b'] / 2**20:8.0f} {m['host_peak_b'] / 2**20:8.0f} "
              f"{m['host_growth_b'] / 2**20:8.0f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
