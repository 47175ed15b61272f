"""What the emulator runs in place of E2B's microVMs: a private directory per sandbox, and each
process started in it confined with bubblewrap.

The confinement mirrors what a model's code meets in a real sandbox, so the escape suite run
against the emulator means something: no network (new network namespace), its own pid, IPC and
user namespaces, a root filesystem of read-only host ``/usr`` (and the ``/bin``, ``/lib``
links) plus the sandbox's own writable ``/home/user`` and ``/tmp``, no host environment
variables, no further user namespaces, and, when the emulator runs as root, the unprivileged
uid 65534 inside. Processes may fork (an E2B sandbox is a whole VM).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from typing import Any

from rlm_env_sandbox.bwrap import bwrap_command, drop_root, find_bwrap

SANDBOX_UID = 65534
HOME = "/home/user"
BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
            "HOME": HOME, "USER": "user", "PYTHONDONTWRITEBYTECODE": "1"}


class SandboxProcess:
    """A process in a sandbox; its output is fanned out to every attached stream.

    Events put on each subscriber's list: ``("stdout"|"stderr", bytes)``, then ``("end", code,
    status)`` when it exits, or ``("abort",)`` when its sandbox is killed under it.
    """

    def __init__(self, pid: int, popen: subprocess.Popen, cmd: str, stdin: bool):
        self.pid = pid
        self.popen = popen
        self.cmd = cmd
        self.stdin_open = stdin
        self.exit: tuple[int, str] | None = None
        self._cond = threading.Condition()
        self._stdin_lock = threading.Lock()
        #: the starter's own stream, subscribed before any output can be missed
        self.first_events: list[tuple[Any, ...]] = []
        self._subscribers: list[list[tuple[Any, ...]]] = [self.first_events]
        self._open_streams = 2
        for name, stream in (("stdout", popen.stdout), ("stderr", popen.stderr)):
            threading.Thread(target=self._pump, args=(name, stream), daemon=True,
                             name=f"e2b-emu-{name}-{pid}").start()

    def subscribe(self) -> list[tuple[Any, ...]]:
        events: list[tuple[Any, ...]] = []
        with self._cond:
            if self.exit is not None:
                events.append(("end", *self.exit))
            self._subscribers.append(events)
        return events

    def unsubscribe(self, events: list[tuple[Any, ...]]) -> None:
        with self._cond:
            if events in self._subscribers:
                self._subscribers.remove(events)

    def next_event(self, events: list[tuple[Any, ...]], timeout: float) -> tuple[Any, ...] | None:
        with self._cond:
            if not events:
                self._cond.wait(timeout)
            return events.pop(0) if events else None

    def _publish(self, event: tuple[Any, ...]) -> None:
        with self._cond:
            for events in self._subscribers:
                events.append(event)
            self._cond.notify_all()

    def _pump(self, name: str, stream: Any) -> None:
        fd = stream.fileno()
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:
                data = b""
            if not data:
                break
            self._publish((name, data))
        with self._cond:
            self._open_streams -= 1
            last = self._open_streams == 0
        if last:
            code = self.popen.wait()
            status = (f"signal: {signal.Signals(-code).name.lower().removeprefix('sig')}"
                      if code < 0 else f"exit status {code}")
            with self._cond:
                # envd (Go) reports -1 for a process ended by a signal
                self.exit = (-1 if code < 0 else code, status)
            self._publish(("end", *self.exit))

    def write_stdin(self, data: bytes) -> None:
        with self._stdin_lock:  # concurrent SendInput calls never interleave their bytes
            if not self.stdin_open or self.popen.stdin is None:
                raise BrokenPipeError("stdin is closed")
            self.popen.stdin.write(data)
            self.popen.stdin.flush()

    def close_stdin(self) -> None:
        self.stdin_open = False
        if self.popen.stdin is not None:
            try:
                self.popen.stdin.close()
            except OSError:
                pass

    def signal(self, sig: int) -> None:
        try:
            os.killpg(self.popen.pid, sig)
        except OSError:
            pass

    def abort(self) -> None:
        """The sandbox is gone: kill the process, cut every stream without an end event."""
        self._publish(("abort",))
        self.signal(signal.SIGKILL)


class LocalSandbox:
    """One emulated sandbox: a directory tree and the processes started in it."""

    def __init__(self, base: str, template: str, timeout: float, env_vars: dict[str, str],
                 metadata: dict[str, str], allow_internet: bool | None):
        self.sandbox_id = "i" + secrets.token_hex(10)
        self.access_token = secrets.token_hex(16)
        self.template = template
        self.env_vars = dict(env_vars)
        self.metadata = dict(metadata)
        self.allow_internet = allow_internet
        self.created = time.time()
        self.deadline = time.monotonic() + timeout
        self.alive = True
        self.root = os.path.join(base, self.sandbox_id)
        self.processes: dict[int, SandboxProcess] = {}
        self._next_pid = 100
        self._lock = threading.Lock()
        self._as_root = os.geteuid() == 0
        for sub in ("home/user", "tmp"):
            os.makedirs(os.path.join(self.root, sub))
        os.chmod(os.path.join(self.root, "tmp"), 0o1777)
        if self._as_root:
            for dirpath, dirnames, _ in os.walk(self.root):
                for name in dirnames:
                    os.chown(os.path.join(dirpath, name), SANDBOX_UID, SANDBOX_UID)
            os.chown(self.root, SANDBOX_UID, SANDBOX_UID)
        os.chmod(self.root, 0o700)

    # --- files --------------------------------------------------------------------------

    def host_path(self, path: str) -> str | None:
        """The host path behind a sandbox path, or ``None`` outside ``/home/user`` and ``/tmp``."""
        if not path.startswith("/"):
            path = f"{HOME}/{path}"
        norm = os.path.normpath(path)
        for top in (HOME, "/tmp"):
            if norm == top or norm.startswith(top + "/"):
                inside = os.path.join(self.root, norm.lstrip("/"))
                real = os.path.realpath(inside)
                if real == os.path.realpath(self.root) or \
                        real.startswith(os.path.realpath(self.root) + os.sep):
                    return inside
        return None

    def write_file(self, path: str, data: bytes) -> str:
        host = self.host_path(path)
        if host is None:
            raise PermissionError(f"permission denied: {path} is outside /home/user and /tmp")
        os.makedirs(os.path.dirname(host), exist_ok=True)
        with open(host, "wb") as f:
            f.write(data)
        if self._as_root:
            here = os.path.dirname(host)
            while here.startswith(self.root):
                os.chown(here, SANDBOX_UID, SANDBOX_UID)
                here = os.path.dirname(here)
            os.chown(host, SANDBOX_UID, SANDBOX_UID)
        return os.path.normpath(path if path.startswith("/") else f"{HOME}/{path}")

    def read_file(self, path: str) -> bytes:
        host = self.host_path(path)
        if host is None or not os.path.isfile(host):
            raise FileNotFoundError(path)
        with open(host, "rb") as f:
            return f.read()

    # --- processes ----------------------------------------------------------------------

    def _argv(self, cmd: str, args: list[str], cwd: str, envs: dict[str, str]) -> list[str]:
        bwrap = find_bwrap("the E2B emulator's sandboxes")
        prefix = drop_root(SANDBOX_UID) if self._as_root else []
        mounts = ["--bind", os.path.join(self.root, "home"), "/home",
                  "--bind", os.path.join(self.root, "tmp"), "/tmp"]
        # per-process variables over the sandbox's over the base ones
        env = {**BASE_ENV, **self.env_vars, **envs}
        return prefix + bwrap_command([cmd, *args], bwrap=bwrap, hostname=self.sandbox_id,
                                      env=env, chdir=cwd or HOME, mounts=mounts)

    def start(self, cmd: str, args: list[str], envs: dict[str, str], cwd: str,
              stdin: bool) -> SandboxProcess:
        argv = self._argv(cmd, args, cwd, envs)
        popen = subprocess.Popen(argv, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 start_new_session=True, cwd="/", env={"PATH": BASE_ENV["PATH"]},
                                 bufsize=0)
        with self._lock:
            self._next_pid += 1
            proc = SandboxProcess(self._next_pid, popen, " ".join([cmd, *args]), stdin)
            self.processes[proc.pid] = proc
        return proc

    def kill(self) -> None:
        """End the sandbox: every process is killed and its streams cut, the files removed."""
        with self._lock:
            if not self.alive:
                return
            self.alive = False
            procs = list(self.processes.values())
        for proc in procs:
            proc.abort()
        for proc in procs:
            try:
                proc.popen.wait(5)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass
            for stream in (proc.popen.stdin, proc.popen.stdout, proc.popen.stderr):
                try:
                    if stream is not None:
                        stream.close()
                except OSError:
                    pass
        shutil.rmtree(self.root, ignore_errors=True)


def make_base_dir() -> str:
    base = tempfile.mkdtemp(prefix="rlm-e2b-emulator-")
    os.chmod(base, 0o711)  # the sandbox user walks through it to its own directory
    return base
