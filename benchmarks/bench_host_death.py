"""What each environment leaves behind when its host dies (issue 16, item 5).

    .venv/bin/python benchmarks/bench_host_death.py [--envs sandbox,sandbox-rlimits,docker,pyodide,local]

Per environment, a host process (``python -m rlm_testkit.hostdeath``) starts the environment in a
temporary directory of its own, loads a context and runs a cell that never ends. Then:

* ``SIGKILL``: the host is killed; 10 s later it counts the host's processes still running, the
  Docker containers of that host (running, and stopped), the entries left in its temporary
  directory and the sandbox cgroups named after it; then a second host starts and closes the same
  environment in that directory (the "next start") and what is left is counted again;
* ``SIGTERM``: the same host is sent SIGTERM; once it is gone, what is left.

Needs bubblewrap (sandbox), a Docker daemon and the test image (docker), Pyodide (pyodide): the
environments that cannot start are reported as skipped.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import time
from typing import Any

from rlm_testkit.hostdeath import alive, private_tmpdir, start_host

ENVS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "sandbox": ("rlm_env_sandbox.plugin", "sandbox", {"memory_limit": "512m"}),
    "sandbox-rlimits": ("rlm_env_sandbox.plugin", "sandbox",
                        {"memory_limit": "512m", "isolation": "rlimits"}),
    "docker": ("rlm_env_docker.plugin", "docker",
               {"image": "rlm-python:3.11-local", "pull": "never", "memory_limit": "512m"}),
    "pyodide": ("rlm_env_pyodide.plugin", "pyodide", {"memory_limit": "512m"}),
    "local": ("rlm_plugins.local.plugin", "local", {}),
}


def containers(host_pid: int) -> list[str]:
    try:
        import docker
    except ImportError:
        return []
    try:
        client = docker.from_env(version="auto")
        found = client.api.containers(filters={"label": f"org.rlm.host-pid={host_pid}"})
    except Exception:  # noqa: BLE001 - no daemon: nothing of docker's can be left
        return []
    return [c["Id"][:12] for c in found]


def containers_all(host_pid: int) -> int:
    """The containers of that host in any state (stopped ones too)."""
    try:
        import docker

        client = docker.from_env(version="auto")
        return len(client.api.containers(all=True, filters={
            "label": f"org.rlm.host-pid={host_pid}"}))
    except Exception:  # noqa: BLE001
        return 0


def cgroups(host_pid: int) -> int:
    """The sandbox cgroups named after that host still in the cgroup tree."""
    found = 0
    for _dirpath, dirnames, _ in os.walk("/sys/fs/cgroup"):
        found += sum(1 for d in dirnames if d.startswith(f"rlm-sandbox-{host_pid}-"))
        dirnames[:] = [d for d in dirnames if not d.startswith("rlm-sandbox-")]
    return found


def measure(key: str) -> dict[str, Any]:
    plugin, name, kwargs = ENVS[key]
    row: dict[str, Any] = {"env": key}
    for sig in (signal.SIGKILL, signal.SIGTERM):
        tmp = private_tmpdir()
        try:
            host = start_host(plugin, name, kwargs, tmpdir=tmp)
            host.kill(sig)
            time.sleep(10 if sig == signal.SIGKILL else 1)
            sname = signal.Signals(sig).name
            row[f"{sname} processes"] = len(alive(host.processes))
            row[f"{sname} containers"] = len(containers(host.pid))
            row[f"{sname} files"] = len(host.left_files())
            row[f"{sname} stopped containers"] = containers_all(host.pid) - len(
                containers(host.pid))
            row[f"{sname} cgroups"] = cgroups(host.pid)
            if sig == signal.SIGKILL:
                start_host(plugin, name, kwargs, tmpdir=tmp, mode="close").proc.wait(60)
                row["after next start: files"] = len(host.left_files())
                row["after next start: containers"] = containers_all(host.pid)
                row["after next start: cgroups"] = cgroups(host.pid)
        except Exception as exc:  # noqa: BLE001 - reported, the others still run
            row["skipped"] = f"{type(exc).__name__}: {str(exc)[:200]}"
            return row
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envs", default=",".join(ENVS))
    args = parser.parse_args()
    rows = [measure(key.strip()) for key in args.envs.split(",") if key.strip()]
    columns = ["env", "SIGKILL processes", "SIGKILL containers", "SIGKILL stopped containers",
               "SIGKILL files", "SIGKILL cgroups", "after next start: files",
               "after next start: containers", "after next start: cgroups", "SIGTERM processes",
               "SIGTERM containers", "SIGTERM stopped containers", "SIGTERM files",
               "SIGTERM cgroups"]
    print(" | ".join(columns))
    for row in rows:
        if "skipped" in row:
            print(f"{row['env']} | skipped: {row['skipped']}")
        else:
            print(" | ".join(str(row.get(c, "")) for c in columns))
    if os.environ.get("RLM_BENCH_JSON"):
        import json

        with open(os.environ["RLM_BENCH_JSON"], "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
