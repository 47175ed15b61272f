"""The emulator's sandboxes: a private filesystem per sandbox and its processes under bubblewrap.

Each emulated sandbox owns a directory on this machine with ``home/`` (seen inside as
``/home/daytona``, the working directory, as in Daytona's default snapshot) and ``tmp/`` (seen as
``/tmp``). Every session command runs as ``/bin/sh -c COMMAND`` in its own bubblewrap sandbox over
those two directories: all namespaces unshared (no network: only a loopback nobody listens on),
the host's ``/usr``, ``/bin`` and ``/lib*`` read-only, a fresh ``/proc`` and ``/dev``, no other
host path. The command is pid 1 of its pid namespace, as a sandbox's init would be: the kernel
delivers it only the signals it handles, so a cell's ``kill(1, SIGUSR1)`` cannot end the
sandbox. As root the command runs under a uid of its own (one per sandbox); rlimits cap the
sandbox's memory, disk and (as root) process count, so the escape suite run through the
emulator tests a real boundary.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rlm.exceptions import RLMEnvironmentError
from rlm_env_sandbox.bwrap import bwrap_command, drop_root, find_bwrap

HOME = "/home/daytona"
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
_uids = itertools.count(0)
UID_BASE = 3_100_000  # far above any uid the machine hands out: one per sandbox


class SandboxFault(Exception):
    """An error a toolbox call reports to the client (status code and message)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Command:
    """One command of a session: its process, its output log and its exit code."""

    id: str
    command: str
    echo_input: bool
    proc: subprocess.Popen[bytes] | None = None
    exit_code: int | None = None
    log: list[tuple[str, bytes]] = field(default_factory=list)  # ("stdout"|"stderr", data)
    cond: threading.Condition = field(default_factory=threading.Condition)
    inputs: int = 0
    stdin_lock: threading.Lock = field(default_factory=threading.Lock)
    watchers: list[Callable[[], None]] = field(default_factory=list)  # woken on output / exit

    def append(self, kind: str, data: bytes) -> None:
        with self.cond:
            self.log.append((kind, data))
            self._wake()

    def _wake(self) -> None:  # call with self.cond held
        self.cond.notify_all()
        for notify in list(self.watchers):
            notify()

    def text(self, kind: str | None = None) -> str:
        with self.cond:
            data = b"".join(d for k, d in self.log if kind is None or k == kind)
        return data.decode("utf-8", "replace")

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "command": self.command, "exitCode": self.exit_code}


@dataclass
class Session:
    id: str
    commands: dict[str, Command] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"sessionId": self.id, "commands": [c.to_json() for c in self.commands.values()]}


class Box:
    """The machine side of one emulated sandbox (its files and processes)."""

    def __init__(self, root: str, sandbox_id: str, *, env: dict[str, str], cpu: int,
                 memory_gib: int, disk_gib: int):
        self.id = sandbox_id
        self.root = os.path.join(root, sandbox_id)
        self.home = os.path.join(self.root, "home")
        self.tmp = os.path.join(self.root, "tmp")
        self.env = dict(env)
        self.cpu = cpu
        self.memory = memory_gib * 2**30
        self.disk = disk_gib * 2**30
        self.sessions: dict[str, Session] = {}
        self.lock = threading.Lock()
        self.root_user = os.geteuid() == 0
        self.uid = UID_BASE + next(_uids) if self.root_user else os.geteuid()
        os.makedirs(self.root)
        for d in (root, self.root):  # traversable by the sandbox's uid, not listable
            os.chmod(d, 0o711)
        for d in (self.home, self.tmp):
            os.makedirs(d)
            os.chmod(d, 0o700 if d == self.home else 0o1777)
            self._own(d)

    # --- files ---------------------------------------------------------------------------

    def host_path(self, path: str) -> str:
        """Where the sandbox path ``path`` lives on this machine (relative: under the home)."""
        inside = os.path.normpath(path if path.startswith("/") else os.path.join(HOME, path))
        for prefix, base in ((HOME, self.home), ("/tmp", self.tmp)):
            if inside == prefix or inside.startswith(prefix + "/"):
                return os.path.join(base, os.path.relpath(inside, prefix))
        raise SandboxFault(403, f"permission denied: {path} is outside the sandbox user's "
                                f"writable directories ({HOME}, /tmp)")

    def _own(self, path: str) -> None:
        if self.root_user:
            os.chown(path, self.uid, self.uid)

    def write_file(self, path: str, data: bytes) -> None:
        target = self.host_path(path)
        parent = os.path.dirname(target)
        if not os.path.isdir(parent):
            os.makedirs(parent)
            walk = parent
            while walk not in (self.home, self.tmp) and walk.startswith(self.root):
                self._own(walk)
                walk = os.path.dirname(walk)
        with open(target, "wb") as f:
            f.write(data)
        os.chmod(target, 0o644)
        self._own(target)

    def read_file(self, path: str) -> bytes:
        target = self.host_path(path)
        try:
            with open(target, "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise SandboxFault(404, f"file not found: {path}") from None
        except IsADirectoryError:
            raise SandboxFault(400, f"{path} is a directory") from None

    def set_mode(self, path: str, mode: str) -> None:
        target = self.host_path(path)
        if not os.path.exists(target):
            raise SandboxFault(404, f"file not found: {path}")
        try:
            os.chmod(target, int(mode, 8))
        except ValueError:
            raise SandboxFault(400, f"invalid mode {mode!r}") from None

    # --- processes -----------------------------------------------------------------------

    def create_session(self, session_id: str) -> None:
        with self.lock:
            if session_id in self.sessions:
                raise SandboxFault(409, f"session {session_id} already exists")
            self.sessions[session_id] = Session(session_id)

    def session(self, session_id: str) -> Session:
        try:
            return self.sessions[session_id]
        except KeyError:
            raise SandboxFault(404, f"session {session_id} not found") from None

    def command(self, session_id: str, command_id: str) -> Command:
        try:
            return self.session(session_id).commands[command_id]
        except KeyError:
            raise SandboxFault(404, f"command {command_id} not found") from None

    def execute(self, session_id: str, command: str, echo_input: bool) -> Command:
        session = self.session(session_id)
        cmd = Command(str(uuid.uuid4()), command, echo_input)
        argv = self._argv(command)
        try:
            cmd.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, cwd="/",
                                        env={"PATH": SANDBOX_PATH}, start_new_session=True,
                                        bufsize=0)
        except OSError as exc:
            raise SandboxFault(500, f"cannot start the command: {exc}") from exc
        session.commands[cmd.id] = cmd
        pumps = [threading.Thread(target=self._pump, args=(cmd, stream, kind), daemon=True)
                 for stream, kind in ((cmd.proc.stdout, "stdout"), (cmd.proc.stderr, "stderr"))]
        for t in pumps:
            t.start()
        threading.Thread(target=self._reap, args=(cmd, pumps), daemon=True).start()
        return cmd

    @staticmethod
    def _pump(cmd: Command, stream: Any, kind: str) -> None:
        try:
            while data := os.read(stream.fileno(), 65536):
                cmd.append(kind, data)
        except (OSError, ValueError):  # closed by the reaper after the command ended
            return

    @staticmethod
    def _reap(cmd: Command, pumps: list[threading.Thread]) -> None:
        assert cmd.proc is not None
        code = cmd.proc.wait()
        for t in pumps:
            t.join(5)
        with cmd.cond:
            cmd.exit_code = code if code >= 0 else 128 - code
            cmd._wake()
        with cmd.stdin_lock:
            for stream in (cmd.proc.stdin, cmd.proc.stdout, cmd.proc.stderr):
                if stream is not None:
                    stream.close()

    def send_input(self, session_id: str, command_id: str, data: str) -> None:
        cmd = self.command(session_id, command_id)
        if cmd.exit_code is not None or cmd.proc is None or cmd.proc.stdin is None:
            raise SandboxFault(410, f"command {command_id} has already completed")
        raw = data.encode("utf-8")
        try:
            with cmd.stdin_lock:  # one input's bytes are never interleaved with another's
                if cmd.proc.stdin.closed:
                    raise OSError("its input is closed")
                view = memoryview(raw)
                while view:
                    view = view[os.write(cmd.proc.stdin.fileno(), view):]
        except (OSError, ValueError) as exc:
            raise SandboxFault(410, f"command {command_id} does not read its input: {exc}") \
                from exc
        cmd.inputs += 1
        if cmd.echo_input:
            cmd.append("stdout", raw)

    def delete_session(self, session_id: str) -> None:
        with self.lock:
            session = self.sessions.pop(session_id, None)
        if session is None:
            raise SandboxFault(404, f"session {session_id} not found")
        for cmd in session.commands.values():
            self._kill(cmd)

    def kill_all(self) -> None:
        with self.lock:
            sessions = list(self.sessions.values())
        for session in sessions:
            for cmd in session.commands.values():
                self._kill(cmd)

    @staticmethod
    def _kill(cmd: Command) -> None:
        proc = cmd.proc
        if proc is None or proc.poll() is not None:
            return
        try:
            proc.send_signal(signal.SIGKILL)
        except OSError:
            pass
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass

    def destroy(self) -> None:
        self.kill_all()
        shutil.rmtree(self.root, ignore_errors=True)

    def _limits(self) -> list[str]:
        """``prlimit`` arguments for the sandbox's memory, disk and process caps."""
        prlimit = shutil.which("prlimit")
        if prlimit is None:
            raise SandboxFault(500, "the emulator caps sandboxes with 'prlimit' (util-linux), "
                                    "which is not installed")
        caps = [f"--as={self.memory + 512 * 2**20}", f"--fsize={self.disk}", "--core=0"]
        if self.root_user:  # RLIMIT_NPROC counts the uid's processes: only for a uid of its own
            caps.append(f"--nproc={128 * max(1, self.cpu)}")
        return [prlimit, *caps, "--"]

    def _argv(self, command: str) -> list[str]:
        try:
            bwrap = find_bwrap("the Daytona emulator's sandboxes")
            argv = self._limits()
            if self.root_user:
                argv += drop_root(self.uid)
        except RLMEnvironmentError as exc:
            raise SandboxFault(500, str(exc)) from None
        mounts: list[str] = []
        prefix = os.path.realpath(sys.base_prefix)
        if not os.path.exists("/usr/bin/python3") and not prefix.startswith("/usr"):
            mounts += ["--ro-bind", prefix, "/usr/local"]  # a python3 for the sandbox's PATH
        mounts += ["--bind", self.tmp, "/tmp", "--dir", "/home", "--bind", self.home, HOME]
        env = {"PATH": SANDBOX_PATH, "HOME": HOME, "LANG": "C.UTF-8", "USER": "daytona",
               **self.env}
        return argv + bwrap_command(["/bin/sh", "-c", command], bwrap=bwrap,
                                    hostname=f"daytona-{self.id[:8]}", env=env, chdir=HOME,
                                    mounts=mounts, as_pid_1=True)


__all__ = ["HOME", "Box", "Command", "SandboxFault", "Session"]
