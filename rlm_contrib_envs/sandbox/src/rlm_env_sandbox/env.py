"""``SandboxREPL``: the REPL worker in a bubblewrap sandbox, started once per run.

Layers, outermost first (each one is reported in :attr:`SandboxREPL.isolation_report`):

* a separate process, run as an unprivileged user (``uid``, 65534 by default, when the host is
  root) with a minimal environment: none of the host's variables;
* a cgroup below the host's own with a memory cap (swap included) and a process cap, where the
  cgroup filesystem lets us make one;
* bubblewrap: new user, pid, network, IPC, UTS and cgroup namespaces (no network at all: only a
  loopback device nobody listens on), a fresh root with ``/usr`` and the interpreter read-only,
  ``/proc`` of its own, a minimal read-only ``/dev``, a read-only root; the only writable places
  are two size-limited private tmpfs, ``/tmp`` (the working directory, ``disk_limit``) and
  ``/dev/shm`` (64 MiB at most), whether the host is root or not; no further user namespaces,
  killed with its parent;
* a seccomp filter, the policy the docker environment applies too (:mod:`rlm_isolation.seccomp`):
  no ptrace, mount, module, BPF, keyring, clock, memfd or System V IPC syscalls, no sockets but
  AF_UNIX, no new processes (unless ``allow_subprocess=True``);
* rlimits set by the worker on itself before any model code runs (file size, open files, core
  dumps, CPU time, address space when no cgroup caps memory).

``isolation="rlimits"`` is the explicit opt-in for machines without bubblewrap: the same worker in
a separate process with the unprivileged user, cgroup and rlimits, but **no** filesystem or
network isolation and no seccomp. Its ``capabilities.isolated`` is False.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from typing import Any

from rlm.exceptions import ConfigurationError, RLMEnvironmentError
from rlm_isolation.repl import WORKER_FILE, IsolatedREPL, WorkerProcess, parse_size

from ._limits import CgroupCap, make_cgroup, seccomp_program
from .bwrap import INSTALL_HINT, bwrap_command, drop_root

# The worker's whole environment: none of the host's variables (API keys) reach it.
WORKER_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
              "PYTHONDONTWRITEBYTECODE": "1", "MALLOC_ARENA_MAX": "2"}
#: Size of the sandbox's ``/dev/shm`` tmpfs (Docker's default), or ``disk_limit`` when smaller.
SHM_BYTES = 64 * 2**20


class SandboxREPL(IsolatedREPL):
    """A persistent Python REPL in a bubblewrap sandbox (``environment="sandbox"``).

    Args (besides those of :class:`~rlm_isolation.repl.IsolatedREPL`: ``cell_timeout``,
    ``setup_code``, ``max_output_chars``, ``memory_limit`` (default ``"2g"``),
    ``startup_timeout``, ``timeout_grace``):
        isolation: ``"bwrap"`` (default) or ``"rlimits"``, the weaker opt-in described above.
        disk_limit: size of the private writable ``/tmp`` (and the largest file a cell may
            write), default ``"256m"``. ``/dev/shm`` is a tmpfs of its own of at most 64 MiB;
            nothing else is writable (``/``, ``/rlm`` and ``/dev`` are read-only). ``None``
            lifts the size of ``/tmp``: only the memory cgroup (a root host) then caps it.
        pids_limit: most processes and threads the worker may have at once (default 64).
        cpu_time: CPU seconds the worker may use over the whole run (``None``: no limit).
        cgroup: ``"auto"`` (use one where possible), ``True`` (fail when impossible) or
            ``False``.
        seccomp: install the seccomp filter (default True; needs the ``pyseccomp`` package and
            libseccomp).
        allow_subprocess: let cells start processes (default False).
        uid: the user the worker runs as when the host is root (default 65534, "nobody").
        python: the interpreter to run the worker with (default: this one); its installation
            prefix is mounted read-only.
        ro_paths: extra host paths to mount read-only at the same place (for example a
            ``site-packages`` directory; add it to ``sys.path`` in ``setup_code``).
    """

    environment_name = "sandbox"
    _worker_ctx_dir = "/rlm/ctx"

    def __init__(self, *, isolation: str = "bwrap", disk_limit: str | int | None = "256m",
                 pids_limit: int | None = 64, cpu_time: float | None = None,
                 cgroup: bool | str = "auto", seccomp: bool = True,
                 allow_subprocess: bool = False, uid: int = 65534, python: str | None = None,
                 ro_paths: tuple[str, ...] | list[str] = (), **base: Any):
        super().__init__(**base)
        if isolation not in ("bwrap", "rlimits"):
            raise ConfigurationError(f"isolation must be 'bwrap' or 'rlimits' (the weaker opt-in "
                                     f"without filesystem or network isolation), not {isolation!r}")
        self.isolation = isolation
        self.disk_limit = parse_size(disk_limit, "disk_limit")
        if pids_limit is not None and (isinstance(pids_limit, bool) or not isinstance(
                pids_limit, int) or pids_limit < 4):
            raise ConfigurationError(f"pids_limit must be an integer >= 4 or None, not "
                                     f"{pids_limit!r}")
        self.pids_limit = pids_limit
        if cpu_time is not None and (isinstance(cpu_time, bool) or not isinstance(
                cpu_time, (int, float)) or cpu_time <= 0):
            raise ConfigurationError(f"cpu_time must be a positive number of seconds or None, "
                                     f"not {cpu_time!r}")
        self.cpu_time = cpu_time
        if cgroup not in (True, False, "auto"):
            raise ConfigurationError(f"cgroup must be True, False or 'auto', not {cgroup!r}")
        self.cgroup = cgroup
        self.seccomp = bool(seccomp)
        self.allow_subprocess = bool(allow_subprocess)
        self.uid = int(uid)
        self.ro_paths = [os.path.abspath(p) for p in ro_paths]
        for p in self.ro_paths:
            if not os.path.exists(p):
                raise ConfigurationError(f"ro_paths entry {p!r} does not exist")
            self._check_reachable(p, "ro_paths entry")
        self.python, self._python_prefix = self._choose_python(python)
        self.bwrap = shutil.which("bwrap")
        if isolation == "bwrap":
            if self.bwrap is None:
                raise RLMEnvironmentError(
                    "the 'sandbox' environment needs bubblewrap (the 'bwrap' program), which is "
                    f"not installed. {INSTALL_HINT}. Or opt in to the weaker mode without "
                    "filesystem and network isolation: environment_kwargs={'isolation': "
                    "'rlimits'}.")
            if self.seccomp:
                try:
                    import pyseccomp  # noqa: F401
                except (ImportError, OSError) as exc:
                    raise RLMEnvironmentError(
                        f"the sandbox's seccomp filter needs the 'pyseccomp' package and "
                        f"libseccomp ({exc}): `pip install pyseccomp` and `apt-get install "
                        "libseccomp2`, or pass environment_kwargs={'seccomp': False}.") from exc
        else:
            self.capabilities = dataclasses.replace(self.capabilities, isolated=False)
            self._worker_ctx_dir = ""  # set per run: the host directory itself
        self._cgroup: CgroupCap | None = None
        self.isolation_report: dict[str, Any] = {}

    def _drops_root(self) -> bool:
        return os.geteuid() == 0

    def _check_reachable(self, path: str, what: str) -> None:
        """The sandbox user must be able to walk to ``path`` for bubblewrap to mount it."""
        if not self._drops_root() or self.uid == 0:
            return
        here = os.path.dirname(os.path.realpath(path))
        while True:
            st = os.stat(here)
            if st.st_uid != self.uid and not st.st_mode & 0o001:
                raise ConfigurationError(
                    f"the sandbox user (uid {self.uid}) cannot reach the {what} {path!r}: "
                    f"{here!r} is not searchable by others. Install it somewhere world-readable "
                    "or pass an interpreter under /usr, e.g. environment_kwargs={'python': "
                    "'/usr/bin/python3'}.")
            if here == "/":
                return
            here = os.path.dirname(here)

    def _choose_python(self, python: str | None) -> tuple[str, str]:
        """The worker's interpreter and the installation prefix to mount read-only.

        The worker uses the standard library only, so any CPython 3.8+ does. By default: this
        interpreter, or ``/usr/bin/python3`` when the sandbox user cannot reach this one (a
        Python under ``/root``).
        """
        if python is not None:
            path = os.path.realpath(python)
            if not os.access(path, os.X_OK):
                raise ConfigurationError(f"python={python!r} is not an executable interpreter")
            self._check_reachable(path, "interpreter")
            return path, os.path.dirname(os.path.dirname(path))
        path = os.path.realpath(sys.executable)
        prefix = os.path.realpath(sys.base_prefix)
        try:
            self._check_reachable(path, "interpreter")
            return path, prefix
        except ConfigurationError:
            fallback = shutil.which("python3", path="/usr/bin:/usr/local/bin")
            if fallback is None:
                raise
            return os.path.realpath(fallback), "/usr"

    # --- launching ---------------------------------------------------------------------------

    def _launch(self, run_dir: str, secret: bytes) -> WorkerProcess:
        root = os.geteuid() == 0
        ctl = os.path.join(run_dir, "ctl")
        ctx = os.path.join(run_dir, "ctx")
        work = os.path.join(run_dir, "work")
        for d in (ctl, ctx, work):  # private to the run: dirs 0700, files 0600 (secret 0400)
            os.makedirs(d, mode=0o700, exist_ok=True)
        shutil.copyfile(WORKER_FILE, os.path.join(ctl, "worker.py"))
        os.chmod(os.path.join(ctl, "worker.py"), 0o600)
        secret_path = os.path.join(ctl, "secret")
        fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o400)
        with os.fdopen(fd, "wb") as f:
            f.write(secret)
        if root:  # the run directory belongs to the sandbox user, and to nobody else
            for dirpath, dirnames, filenames in os.walk(run_dir):
                for name in [*dirnames, *filenames]:
                    os.chown(os.path.join(dirpath, name), self.uid, self.uid)
            os.chown(run_dir, self.uid, self.uid)
            os.chmod(run_dir, 0o700)
            self._file_owner = (self.uid, self.uid)  # and the context files written later
        self._shared_ctx_dir = ctx

        report: dict[str, Any] = {"isolation": self.isolation, "uid": self.uid if root else
                                  os.geteuid()}
        prefix: list[str] = []
        cg_name = f"rlm-sandbox-{os.getpid()}-{self._id}-{self.restarts}"
        if self.cgroup is not False and (self.memory_limit or self.pids_limit):
            cap, problem = make_cgroup(cg_name, self.memory_limit, self.pids_limit)
            if problem and self.cgroup is True:
                cap.remove()
                raise RLMEnvironmentError(f"cgroup=True but the sandbox's cgroup could not be "
                                          f"set up: {problem}. Use cgroup='auto' to fall back to "
                                          "rlimits.")
            self._cgroup = cap
            report["cgroup"] = dict(cap.applied)
            if problem:
                report["cgroup_problem"] = problem
            if cap.procs:
                prefix = ["/bin/sh", "-c", 'p=$$; while [ "$1" != "--" ]; do echo "$p" > "$1" '
                          '|| exit 97; shift; done; shift; exec "$@"', "rlm-sandbox",
                          *cap.procs, "--"]
        if root:
            prefix += drop_root(self.uid)

        limits = self._limits(report)
        env = {**WORKER_ENV, "HOME": "/tmp"}
        pass_fds: list[int] = []
        if self.isolation == "bwrap":
            argv, pass_fds = self._bwrap_argv(ctl, ctx, report)
            self._worker_ctx_dir = "/rlm/ctx"
            self._workdir_inside = "/tmp"
        else:
            env["HOME"] = work
            argv = [self.python, "-I", "-S", os.path.join(ctl, "worker.py"), "--stdio",
                    "--secret-file", secret_path]
            self._worker_ctx_dir = ctx
            self._workdir_inside = work
        self._limits_config = limits
        self.isolation_report = report
        try:
            return WorkerProcess(prefix + argv, env=env, pass_fds=tuple(pass_fds), cwd="/",
                                 what="sandbox worker")
        finally:
            for fd in pass_fds:
                os.close(fd)

    def _limits(self, report: dict[str, Any]) -> dict[str, Any]:
        applied = self._cgroup.applied if self._cgroup else {}
        limits: dict[str, Any] = {"core": 0, "open_files": 256}
        if self.disk_limit:
            limits["file_size"] = self.disk_limit
        if self.cpu_time:
            limits["cpu"] = int(self.cpu_time + 0.999)
        if self.memory_limit and "memory" not in applied:
            # No cgroup: cap the address space instead (cruder: it counts reservations too).
            limits["address_space"] = self.memory_limit + 512 * 2**20
        if self.pids_limit and "pids" not in applied and os.geteuid() == 0:
            # RLIMIT_NPROC counts every process of the user, so only for the dedicated uid.
            limits["processes"] = self.pids_limit
        report["rlimits"] = dict(limits)
        return limits

    def _bwrap_argv(self, ctl: str, ctx: str,
                    report: dict[str, Any]) -> tuple[list[str], list[int]]:
        assert self.bwrap is not None
        fds: list[int] = []
        mounts: list[str] = []
        ro_mounts: list[str] = []
        for path in [self._python_prefix, *self.ro_paths]:
            if path == "/usr" or path.startswith("/usr/"):
                continue
            mounts += ["--ro-bind", path, path]
            ro_mounts.append(path)
        # Every writable place is a tmpfs with a size: /tmp (disk_limit) and /dev/shm; the root
        # (and /rlm on it) and /dev are read-only once mounted. Root or not: without a memory
        # cgroup (a host that is not root) nothing else would cap what a cell parks there.
        shm = self.shm_bytes()
        if self.disk_limit:
            mounts += ["--size", str(self.disk_limit)]
        mounts += ["--perms", "1777", "--tmpfs", "/tmp", "--size", str(shm), "--perms", "1777",
                   "--tmpfs", "/dev/shm", "--dir", "/rlm",
                   "--ro-bind", ctl, "/rlm/ctl", "--ro-bind", ctx, "/rlm/ctx",
                   "--remount-ro", "/dev", "--remount-ro", "/"]
        sfd = None
        if self.seccomp:
            sfd = seccomp_program(allow_subprocess=self.allow_subprocess)
            fds.append(sfd)
        report.update({"bwrap": True, "network": "none", "seccomp": self.seccomp,
                       "subprocess": self.allow_subprocess, "tmpfs_bytes": self.disk_limit,
                       "writable": {"/tmp": self.disk_limit, "/dev/shm": shm},
                       "ro_mounts": ["/", "/dev", "/usr", *ro_mounts, "/rlm/ctl", "/rlm/ctx"]})
        argv = bwrap_command(
            [self.python, "-I", "-S", "/rlm/ctl/worker.py", "--stdio", "--secret-file",
             "/rlm/ctl/secret"], bwrap=self.bwrap, hostname="rlm-sandbox",
            env={**WORKER_ENV, "HOME": "/tmp"}, chdir="/tmp", mounts=mounts, seccomp_fd=sfd)
        return argv, fds

    def shm_bytes(self) -> int:
        """The size of the sandbox's ``/dev/shm``: :data:`SHM_BYTES`, at most ``disk_limit``."""
        return min(SHM_BYTES, self.disk_limit or SHM_BYTES)

    def _worker_config(self) -> dict[str, Any]:
        return {"limits": self._limits_config, "workdir": self._workdir_inside}

    def _cleanup(self) -> None:
        if self._cgroup is not None:
            self._cgroup.remove()
            self._cgroup = None

    def _stop_worker(self) -> None:
        super()._stop_worker()
        if self._cgroup is not None:  # a restart makes a new one
            self._cgroup.remove()
            self._cgroup = None

    def _describe_death(self, code: int | None) -> str:
        text = super()._describe_death(code)
        if code == 97:
            text += " (it could not join its cgroup; pass cgroup=False)"
        return text

    def usage_instructions(self) -> str:
        text = super().usage_instructions()
        if self.isolation == "bwrap":
            text += ("\nYour working directory is /tmp (private, at most "
                     f"{(self.disk_limit or 0) // 2**20} MiB) and /dev/shm holds at most "
                     f"{self.shm_bytes() // 2**20} MiB; the rest of the filesystem is "
                     "read-only and there is no network")
            text += "." if self.allow_subprocess else "; starting processes is not allowed."
        return text

