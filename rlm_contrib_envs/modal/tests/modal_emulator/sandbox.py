"""What a Modal sandbox is, on this machine: a private directory and processes confined to it.

Every process ``exec``'d into an emulated sandbox runs under bubblewrap, without network (its own
empty network namespace) when the sandbox was created with ``block_network=True``, the system's
``/usr`` read-only, and the sandbox's private directory as its writable ``/tmp`` (so the
processes of one sandbox share files, as in a Modal container, and nothing else on the host is
writable). ``python`` on the ``PATH`` is the system Python, as in Modal's default ``debian_slim``
image.

A process keeps its whole stdout and stderr so that readers can ask for them from any byte
offset, which is how the task command router's ``TaskExecStdioRead`` works; stdin is written at
explicit offsets (``TaskExecStdinWrite``), duplicates ignored.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
from dataclasses import dataclass, field
from typing import Any

from rlm_env_sandbox.bwrap import bwrap_command, find_bwrap

PYTHON = "/usr/bin/python3"


def bwrap_argv(root: str, argv: list[str], *, workdir: str | None, env: dict[str, str],
               block_network: bool) -> list[str]:
    """The bubblewrap command that runs ``argv`` inside the sandbox rooted at ``root`` (as root
    inside, like a Modal container's default user)."""
    bwrap = find_bwrap("the Modal emulator's sandboxes")
    base_env = {"PATH": "/opt/modal/bin:/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp",
                "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
    mounts = ["--dir", "/opt/modal/bin", "--symlink", PYTHON, "/opt/modal/bin/python",
              "--bind", root, "/tmp"]
    return bwrap_command(argv, bwrap=bwrap, hostname="modal", env={**base_env, **env},
                         chdir=workdir or "/tmp", mounts=mounts, network=not block_network,
                         uid=0)


@dataclass
class ExecProcess:
    """One ``exec`` in a sandbox: its output kept whole, its stdin written by offset."""

    exec_id: str
    argv: list[str]
    proc: asyncio.subprocess.Process
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    stdin_offset: int = 0
    stdin_closed: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    eof: dict[str, bool] = field(default_factory=lambda: {"stdout": False, "stderr": False})

    async def pump(self, name: str) -> None:
        stream = getattr(self.proc, name)
        buffer: bytearray = getattr(self, name)
        while True:
            chunk = await stream.read(65536)
            async with self.changed:
                if chunk:
                    buffer.extend(chunk)
                else:
                    self.eof[name] = True
                self.changed.notify_all()
            if not chunk:
                return

    async def write_stdin(self, offset: int, data: bytes, eof: bool) -> None:
        if self.stdin_closed:
            return
        skip = self.stdin_offset - offset
        if skip < 0:
            raise ValueError(f"stdin offset {offset} is past the {self.stdin_offset} bytes written")
        data = data[skip:]
        if data and self.proc.stdin is not None and self.proc.returncode is None:
            try:
                self.proc.stdin.write(data)
                await self.proc.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                pass
        self.stdin_offset += len(data)
        if eof and self.proc.stdin is not None:
            self.stdin_closed = True
            self.proc.stdin.close()

    def exit_status(self) -> tuple[str, int] | None:
        code = self.proc.returncode
        if code is None or not self.done.is_set():
            return None
        return ("signal", -code) if code < 0 else ("code", code)

    def kill(self) -> None:
        if self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass


class EmulatedSandbox:
    """A sandbox: its settings as the client sent them, a private root and its processes."""

    def __init__(self, sandbox_id: str, task_id: str, app_id: str, definition: Any):
        self.sandbox_id = sandbox_id
        self.task_id = task_id
        self.app_id = app_id
        self.definition = definition
        self.root = tempfile.mkdtemp(prefix=f"modal-emu-{sandbox_id}-")
        self.execs: dict[str, ExecProcess] = {}
        self.terminated = False
        self.result: tuple[int, str] | None = None  # (GenericStatus, message) once ended
        self.timeout_handle: asyncio.TimerHandle | None = None
        self.tasks: list[asyncio.Task[None]] = []  # one per exec: pumps its output, reaps it

    @property
    def block_network(self) -> bool:
        """No network unless the client asked for an open one (an allowlist, which the emulator
        cannot enforce, is treated as no network)."""
        access = self.definition.network_access
        open_type = type(access).NetworkAccessType.OPEN
        if self.definition.block_network:
            return True
        return self.definition.HasField("network_access") and \
            access.network_access_type != open_type

    async def exec(self, exec_id: str, argv: list[str], workdir: str | None,
                   env: dict[str, str]) -> ExecProcess:
        cmd = bwrap_argv(self.root, argv, workdir=workdir, env=env,
                         block_network=self.block_network)
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True,
            env={"PATH": "/usr/bin:/bin"})  # bwrap's own pid 1 inside keeps this environment
        process = ExecProcess(exec_id, argv, proc)
        self.execs[exec_id] = process

        async def run() -> None:
            await asyncio.gather(process.pump("stdout"), process.pump("stderr"))
            await proc.wait()
            process.done.set()
            async with process.changed:
                process.changed.notify_all()

        self.tasks.append(asyncio.get_running_loop().create_task(run()))
        return process

    def terminate(self, status: int, message: str) -> None:
        """Kill every process and remember how the sandbox ended."""
        if self.result is None:
            self.result = (status, message)
        self.terminated = True
        if self.timeout_handle is not None:
            self.timeout_handle.cancel()
        for process in self.execs.values():
            process.kill()
        shutil.rmtree(self.root, ignore_errors=True)
