"""A host process that holds one environment, for the tests of what outlives the host.

``python -m rlm_testkit.hostdeath PLUGIN NAME KWARGS_JSON MODE`` creates the environment ``NAME``
registered by ``PLUGIN`` (a module name) with ``KWARGS_JSON``, starts it with a
:class:`~rlm_testkit.environments.RecordingHost`, loads a context, runs one cell, prints one JSON
line (its pid, the files under its temporary directory with their modes and owners) and then:

* ``busy``: runs a cell that never ends (no time limit), the worst case for a host that dies;
* ``close``: shuts the environment down and exits (a clean start after a dead host: whatever the
  dead host left in the shared temporary directory must be gone after it).

:func:`start_host` runs it with ``TMPDIR`` set to a directory of the caller's, so that what a host
leaves behind is exactly what is left in that directory; :func:`descendants` and :func:`alive`
tell which of its processes outlived it. Used by :class:`rlm_testkit.environments.EnvironmentTests`
and by ``benchmarks/bench_host_death.py``. Linux only (it reads ``/proc``).
"""

from __future__ import annotations

import json
import os
import select
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any


def listing(root: str) -> dict[str, list[int]]:
    """``{relative path: [mode, uid]}`` of everything below ``root`` (not following links)."""
    out: dict[str, list[int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            out[os.path.relpath(path, root)] = [stat.S_IMODE(st.st_mode) | (
                stat.S_IFDIR if stat.S_ISDIR(st.st_mode) else 0), st.st_uid]
    return out


def descendants(pid: int) -> set[int]:
    """The processes below ``pid`` now (children, their children...)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(") ", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pids: set[int]) -> list[str]:
    """``"pid command"`` of the processes of ``pids`` still running (zombies count as gone)."""
    out = []
    for pid in sorted(pids):
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(") ", 1)[1].split()[0]
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace")[:120]
        except (OSError, IndexError):
            continue
        if state not in ("Z", "X"):
            out.append(f"{pid} {cmd}")
    return out


@dataclass
class Host:
    """A running host process (:func:`start_host`) and what it reported."""

    proc: subprocess.Popen[bytes]
    tmpdir: str
    info: dict[str, Any]
    processes: set[int] = field(default_factory=set)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def left_files(self) -> list[str]:
        return sorted(os.listdir(self.tmpdir))

    def kill(self, sig: int, wait: float = 30.0) -> None:
        """Note the host's processes, send ``sig``, wait for the host (only) to be gone."""
        self.processes = descendants(self.pid)
        os.kill(self.pid, sig)
        self.proc.wait(wait)


def start_host(plugin: str, name: str, kwargs: dict[str, Any], *, tmpdir: str,
               mode: str = "busy", timeout: float = 120.0) -> Host:
    """Start a host process (see the module's docstring) and wait for its JSON line."""
    env = {**os.environ, "TMPDIR": tmpdir, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "rlm_testkit.hostdeath", plugin, name,
                             json.dumps(kwargs), mode], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        ready = select.select([proc.stdout], [], [], max(left, 0))[0] if left > 0 else []
        if not ready:
            proc.kill()
            raise TimeoutError(f"the host did not report within {timeout:g} s: "
                               f"{proc.stderr.read().decode(errors='replace')[-2000:]}")
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            proc.wait(10)
            raise RuntimeError(f"the host exited with {proc.returncode}: "
                               f"{proc.stderr.read().decode(errors='replace')[-2000:]}")
        line += chunk
    if mode == "busy":
        time.sleep(0.5)  # the busy cell is running in the worker now
    return Host(proc, tmpdir, json.loads(line))


def private_tmpdir() -> str:
    """A fresh directory for :func:`start_host`'s ``TMPDIR``, searchable by every user (a
    sandbox's unprivileged user must reach the run directory inside)."""
    path = tempfile.mkdtemp(prefix="rlm-hostdeath-")
    os.chmod(path, 0o711)
    return path


def main(argv: list[str]) -> int:
    from .helpers import RecordingHost, isolated_plugin_manager

    plugin, name, kwargs, mode = argv[0], argv[1], json.loads(argv[2]), argv[3]
    env = isolated_plugin_manager(plugin).create("environment", name, **kwargs)
    env.start(RecordingHost(), {})
    env.add_context("a context private to this run", 0)
    result = env.execute("print(len(context))")
    info = {"pid": os.getpid(), "stdout": result.stdout, "error": result.error,
            "files": listing(tempfile.gettempdir())}
    if mode == "close":
        env.shutdown()
    sys.stdout.write(json.dumps(info) + "\n")
    sys.stdout.flush()
    if mode == "busy":
        env.execute("while True:\n    pass")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
