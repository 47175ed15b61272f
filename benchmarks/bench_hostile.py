"""Host memory against hostile cells: peak RSS of the host process for one RLM completion.

    .venv/bin/python benchmarks/bench_hostile.py [--envs sandbox,docker,pyodide,local]

Scenarios (each in a fresh host interpreter, the model scripted in-process):

* ``prompts40``: one cell calls ``llm_query`` 40 times with a 32 MB prompt, one after another;
* ``batch150k``: one cell calls ``llm_query_batched`` with 150,000 short prompts (one frame
  under 2 MB);
* ``stdout64m``: one cell prints 64 MB (the host keeps ``max_output_chars`` of it).

The scripted backend's own record of requests is cleared as it goes (it is a test instrument that
keeps every request). Prints, per environment, the host's peak RSS above its RSS just before the completion (MB), the
time, and what the cell saw (the first 80 characters of its last output). Issue 16 measured the
first two at 1,249 MB and 260 MB above baseline before the fix, in every isolated environment.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time

CELLS = {
    "prompts40": "s = 'x' * (32 << 20)\nfor i in range(40):\n    r = llm_query(s)\nprint(i, r[:60])\n",
    "batch150k": ("rs = llm_query_batched(['p%d' % i for i in range(150000)])\n"
                  "print(len(rs), rs[0][:60], rs[-1][:60])\n"),
    "stdout64m": "import sys\nfor _ in range(64):\n    sys.stdout.write('y' * (1 << 20))\nprint()\n",
}


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def run_one(env: str, scenario: str) -> dict[str, object]:
    from rlm import RLM
    from rlm_testkit.helpers import is_root_turn, isolated_plugin_manager

    plugins = {"sandbox": "rlm_env_sandbox.plugin", "docker": "rlm_env_docker.plugin",
               "pyodide": "rlm_env_pyodide.plugin", "local": "rlm_plugins.local.plugin"}
    turns = iter(["```repl\n" + CELLS[scenario] + "```",
                  "```repl\nanswer['content'] = 'done'\nanswer['ready'] = True\n```"])
    seen: list[str] = []
    backends: list = []

    def respond(messages):
        for backend in backends:  # the scripted backend records every request: not the host's
            backend.calls.clear()
            backend.sampling.clear()
        if is_root_turn(messages):
            if len(messages) > 2:
                text = "\n".join(str(m.get("content")) for m in messages[2:])
                seen.append(text[text.rfind("REPL output:") + 12:][:300])
            return next(turns)
        return "ok"

    kwargs: dict[str, object] = {"memory_limit": "3g"} if env != "local" else {}
    if env == "docker":  # the image scripts/ci/docker.sh builds offline (no registry here)
        kwargs["image"] = os.environ.get("RLM_DOCKER_IMAGE", "rlm-python:3.11-local")
    rlm = RLM(backend="scripted", backend_kwargs={"responder": respond}, environment=env,
              environment_kwargs=kwargs, max_iterations=3,
              plugin_manager=isolated_plugin_manager(plugins[env], first_party=("scripted",)))
    backends.append(rlm._default_backend()[0])
    try:
        base = _rss_mb()
        t = time.perf_counter()
        result = rlm.completion("hostile")
        took = time.perf_counter() - t
    finally:
        rlm.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"env": env, "scenario": scenario, "peak_above_mb": round(peak - base),
            "seconds": round(took, 1), "answer": result.response,
            "cell_saw": " ".join((seen[-1] if seen else "").split())[:80]}


def available() -> list[str]:
    envs = []
    if shutil.which("bwrap"):
        envs.append("sandbox")
    try:
        from rlm_env_docker.testing import ready

        if ready()[1] is None:
            envs.append("docker")
    except ImportError:
        pass
    if shutil.which("deno"):
        envs.append("pyodide")
    return envs + ["local"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--envs", default=None, help="comma-separated (default: every one available)")
    ap.add_argument("--only", nargs="*", default=list(CELLS), choices=list(CELLS))
    ap.add_argument("--one", nargs=2, metavar=("ENV", "SCENARIO"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(*args.one)))
        return
    envs = args.envs.split(",") if args.envs else available()
    print(f"{'env':8s} {'scenario':10s} {'peak MB':>8s} {'s':>6s}  cell saw")
    for env in envs:
        for scenario in args.only:
            proc = subprocess.run([sys.executable, __file__, "--one", env, scenario],
                                  capture_output=True, text=True, env=os.environ)
            try:
                row = json.loads(proc.stdout.strip().splitlines()[-1])
            except (IndexError, ValueError):
                print(f"{env:8s} {scenario:10s} failed: {proc.stderr.strip()[-300:]}")
                continue
            print(f"{env:8s} {scenario:10s} {row['peak_above_mb']:8d} {row['seconds']:6.1f}  "
                  f"{row['cell_saw']}")


if __name__ == "__main__":
    main()
