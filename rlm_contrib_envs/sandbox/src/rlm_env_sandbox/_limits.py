"""cgroup caps and the seccomp filter of the sandbox (the policy: :mod:`rlm_isolation.seccomp`)."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field

from rlm_isolation.seccomp import program_fd


def seccomp_program(*, allow_subprocess: bool) -> int:
    """A file descriptor holding the compiled BPF program for ``bwrap --seccomp FD``: the policy
    of :mod:`rlm_isolation.seccomp`, the same one the ``docker`` environment installs."""
    return program_fd(allow_subprocess=allow_subprocess)


@dataclass
class CgroupCap:
    """A cgroup (v1 or v2) made for one worker, below the host process's own cgroup.

    Nested below our own cgroup, so whatever limits already apply to the host still apply.
    ``paths`` are the ``cgroup.procs`` files to write the worker's pid into.
    """

    dirs: list[str] = field(default_factory=list)
    procs: list[str] = field(default_factory=list)
    applied: dict[str, int] = field(default_factory=dict)

    def members(self) -> set[int]:
        pids: set[int] = set()
        for path in self.procs:
            try:
                with open(path) as f:
                    pids.update(int(line) for line in f if line.strip())
            except (OSError, ValueError):
                pass
        return pids

    def remove(self, wait: float = 5.0) -> None:
        """Kill whatever is still in the cgroup, wait for it to be empty, remove it."""
        deadline = time.monotonic() + wait
        while True:
            members = self.members()
            for pid in members:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            if not members or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        left = []
        for d in reversed(self.dirs):
            for _ in range(100):
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:  # EBUSY while the last member is being reaped
                    time.sleep(0.02)
            else:
                left.append(d)
        self.dirs = left


def _own_cgroups() -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                for c in controllers.split(",") if controllers else [""]:
                    out[c] = path
    except OSError:
        pass
    return out


def make_cgroup(name: str, memory: int | None, pids: int | None) -> tuple[CgroupCap, str | None]:
    """Create the cgroup(s). Returns the cap and, when something could not be applied, why."""
    cap = CgroupCap()
    own = _own_cgroups()
    problems: list[str] = []
    root = "/sys/fs/cgroup"
    v1 = os.path.isdir(os.path.join(root, "memory")) or os.path.isdir(os.path.join(root, "pids"))
    wanted = [("memory", memory), ("pids", pids)]
    if v1:
        for controller, value in wanted:
            if value is None:
                continue
            base = os.path.join(root, controller) + own.get(controller, "/")
            reap_cgroups(base)
            d = os.path.join(base, name)
            try:
                os.mkdir(d)
                cap.dirs.append(d)
                if controller == "memory":
                    _write(d, "memory.limit_in_bytes", value)
                    if os.path.exists(os.path.join(d, "memory.memsw.limit_in_bytes")):
                        _write(d, "memory.memsw.limit_in_bytes", value)
                else:
                    _write(d, "pids.max", value)
                cap.procs.append(os.path.join(d, "cgroup.procs"))
                cap.applied[controller] = value
            except OSError as exc:
                problems.append(f"cgroup v1 {controller}: {exc.strerror or exc}")
    elif os.path.exists(os.path.join(root, "cgroup.controllers")):
        reap_cgroups(root + own.get("", "/"))
        d = os.path.join(root + own.get("", "/"), name)
        try:
            os.mkdir(d)
            cap.dirs.append(d)
            if memory is not None:
                _write(d, "memory.max", memory)
                if os.path.exists(os.path.join(d, "memory.swap.max")):
                    _write(d, "memory.swap.max", 0)
                cap.applied["memory"] = memory
            if pids is not None:
                _write(d, "pids.max", pids)
                cap.applied["pids"] = pids
            cap.procs.append(os.path.join(d, "cgroup.procs"))
        except OSError as exc:
            problems.append(f"cgroup v2: {exc.strerror or exc}")
    else:
        problems.append("no cgroup filesystem at /sys/fs/cgroup")
    return cap, "; ".join(problems) or None


#: The name of every sandbox cgroup starts so; then the host's pid (``rlm-sandbox-PID-ID-N``).
CGROUP_PREFIX = "rlm-sandbox-"


def reap_cgroups(base: str, min_age: float = 5.0) -> list[str]:
    """Remove the empty sandbox cgroups in ``base`` left by hosts killed outright (their pid is
    gone) and older than ``min_age`` seconds (a host of another pid namespace sharing the cgroup
    tree may be setting one up). A cgroup with processes in it cannot be removed, so nothing
    running is touched."""
    removed: list[str] = []
    try:
        names = [n for n in os.listdir(base) if n.startswith(CGROUP_PREFIX)]
    except OSError:
        return removed
    for name in names:
        pid = name[len(CGROUP_PREFIX):].split("-")[0]
        path = os.path.join(base, name)
        try:
            if not pid.isdigit() or time.time() - os.stat(path).st_mtime < min_age:
                continue
            os.kill(int(pid), 0)
            continue  # its host is alive
        except ProcessLookupError:
            pass
        except OSError:
            continue
        try:
            os.rmdir(path)
            removed.append(path)
        except OSError:
            pass
    return removed


def _write(d: str, name: str, value: int) -> None:
    with open(os.path.join(d, name), "w") as f:
        f.write(str(value))
