"""``environment="ipython-kernel"``: the REPL in an ipykernel subprocess, one per run.

The host starts ``python -m ipykernel_launcher`` (this venv's ``sys.executable``) with
``jupyter_client``'s :class:`KernelManager` over the ``ipc`` transport; the connection file, the
IPC sockets, the per-run secret and the host's Unix socket all live in a private run directory
(mode 0700) that is removed at shutdown. Cells are ``execute_request`` messages; their stream,
``execute_result``, ``display_data`` and ``error`` messages on iopub make the cell's output.

Helper calls from inside the kernel (any thread) reach the host over the isolation worker's
authenticated channel (see :mod:`._inkernel`), served concurrently by
:class:`rlm_isolation.channel.Channel`. Contexts are written once into the run directory and
loaded by the kernel; histories and tools travel over the same channel.

A cell over its time limit is interrupted (``SIGINT``: ``KeyboardInterrupt`` in the kernel, the
namespace is kept). If the kernel does not come back within ``interrupt_grace`` seconds it is
killed and restarted (variables lost, contexts / histories / tools / setup code loaded again), and
the cell's error says so; a kernel that dies mid-cell is restarted the same way.

Not a security boundary: the kernel runs as the host's user with the host's environment.
"""

from __future__ import annotations

import os
import queue
import socket
import sys
import threading
import time
import weakref
from collections.abc import Mapping
from typing import Any

from rlm_isolation.leftovers import track_open, untrack_open
from rlm_isolation.channel import Channel, ChannelClosed, new_secret
from rlm_isolation.repl import (cell_limit, check_cell_options, check_index, check_timeout,
                                context_chunks, tool_specs)
from rlm_isolation.worker import ProtocolError
from rlm.plugin import (
    CellResult,
    ConfigurationError,
    EnvironmentCapabilities,
    Host,
    Message,
    RLMEnvironmentError,
    Tool,
)

from ._iopub import CellOutput, reply_error
from ._kernel_process import KernelProcess, import_jupyter, make_manager
from ._options import check_shell_options
from ._prompt import usage_text

_ENVIRONMENT = "ipython-kernel"
_BOOT = "__import__('rlm_env_ipython._inkernel', fromlist=['attach']).attach({run_dir!r})"


class IPythonKernelREPL:
    """An IPython kernel subprocess, persistent across cells and ``completion()`` calls.

    Args:
        cell_timeout: default time limit of one cell in seconds (``None``: no limit).
        setup_code: Python run once in the kernel after it starts (and after a restart).
        workdir: the kernel's working directory. Default: ``work/`` in the run's private
            directory (removed at shutdown). A given directory is created if needed and kept.
        max_output_chars: stdout and stderr of one cell are each cut to this many characters.
        xmode: IPython's traceback mode (``"Plain"``, ``"Context"``, ``"Verbose"``,
            ``"Minimal"``).
        ast_node_interactivity: which bare expressions are echoed as ``Out[n]: ...``
            (IPython's setting; default ``"last_expr"``).
        startup_timeout: seconds the kernel gets to start and attach.
        interrupt_grace: seconds an interrupted cell gets to stop before the kernel is
            restarted.
    """

    capabilities = EnvironmentCapabilities(isolated=False, persistent=True, cell_timeout=True,
                                           threads=True, callables_as_tools=False)
    environment_name = _ENVIRONMENT

    def __init__(self, *, cell_timeout: float | None = None, setup_code: str | None = None,
                 workdir: str | os.PathLike[str] | None = None, max_output_chars: int = 20000,
                 xmode: str = "Plain", ast_node_interactivity: str = "last_expr",
                 startup_timeout: float = 60.0, interrupt_grace: float = 3.0):
        self.cell_timeout = check_timeout(cell_timeout, "cell_timeout")
        self.startup_timeout = check_timeout(startup_timeout, "startup_timeout") or 60.0
        self.interrupt_grace = check_timeout(interrupt_grace, "interrupt_grace") or 3.0
        check_cell_options(setup_code, max_output_chars)
        check_shell_options(xmode, ast_node_interactivity, "ipython-kernel")
        self.setup_code = setup_code
        self.max_output_chars = max_output_chars
        self.xmode = xmode
        self.ast_node_interactivity = ast_node_interactivity
        self._workdir_arg = os.path.abspath(os.fspath(workdir)) if workdir is not None else None
        self._lock = threading.RLock()  # one cell or control message at a time
        self._state_lock = threading.Lock()  # the closed flag (shutdown never waits for a cell)
        self._started = False
        self._closed = False
        self._cancel: threading.Event | None = None  # set while a cell runs: interrupt()
        self._host: Host | None = None
        self._tools: dict[str, dict[str, Any]] = {}
        self._contexts: dict[int, tuple[str, str]] = {}  # index -> (format, file name)
        self._histories: dict[int, list[Any]] = {}
        self._pending_contexts: dict[int, Any] = {}  # given before start(), written at start
        self._kernel: KernelProcess | None = None
        self._finalizer: weakref.finalize | None = None
        #: How many times the kernel was restarted (after a stuck cell or a death).
        self.restarts = 0

    @property
    def kernel_pid(self) -> int | None:
        """The kernel process id (``None`` when not running)."""
        kernel = self._kernel
        manager = kernel.manager if kernel is not None else None
        provisioner = getattr(manager, "provisioner", None)
        return getattr(getattr(provisioner, "process", None), "pid", None)

    @property
    def run_dir(self) -> str | None:
        """The private run directory (connection file, sockets, contexts)."""
        return self._kernel.run_dir if self._kernel is not None else None

    # --- lifecycle -------------------------------------------------------------------------

    def start(self, host: Host, tools: Mapping[str, Tool]) -> None:
        with self._lock:
            self._require_open()
            if self._started:
                raise RLMEnvironmentError(f"{type(self).__name__}.start() was already called")
            self._tools = tool_specs(tools, _ENVIRONMENT)
            import_jupyter()
            self._host = host
            self._kernel = KernelProcess()
            self._finalizer = weakref.finalize(self, self._kernel.release)
            track_open(self)  # shut down (kernel killed, run directory removed) on exit and SIGTERM
            try:
                for index in sorted(self._pending_contexts):
                    self._write_context(index, self._pending_contexts[index])
                self._pending_contexts.clear()
                self._boot()
            except BaseException:
                self.shutdown()
                self._release()  # (if another thread had shut it down first)
                raise
            self._started = True
            if self._closed:  # shut down from another thread meanwhile
                self._release()

    def _boot(self) -> None:
        """Start the kernel, attach it to the host, load tools, contexts, histories, setup."""
        kernel = self._kernel
        assert kernel is not None
        _, KernelSpec = import_jupyter()
        workdir = self._workdir_arg or os.path.join(kernel.run_dir, "work")
        try:
            os.makedirs(workdir, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise RLMEnvironmentError(
                f"cannot create the ipython-kernel REPL's workdir {workdir!r}: {exc}") from exc
        secret = new_secret()
        secret_path = os.path.join(kernel.run_dir, "secret")
        fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secret)
        spec = KernelSpec(
            # umask 077: every file and socket the kernel makes in the run directory is private.
            argv=["/bin/sh", "-c", 'umask 077 && exec "$0" "$@"',
                  sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                  "--HistoryManager.enabled=False", "--InteractiveShell.colors=nocolor",
                  f"--InteractiveShell.xmode={self.xmode}",
                  f"--InteractiveShell.ast_node_interactivity={self.ast_node_interactivity}"],
            display_name="rlm ipython-kernel", language="python")
        manager = make_manager(spec, transport="ipc", ip=os.path.join(kernel.run_dir, "kernel"),
                           connection_file=os.path.join(kernel.run_dir, "kernel.json"))
        env = dict(os.environ)
        env.update({"IPYTHONDIR": os.path.join(kernel.run_dir, "ipython"),
                    "JUPYTER_PLATFORM_DIRS": "1", "PYDEVD_DISABLE_FILE_VALIDATION": "1"})
        env.pop("RLM_WORKER_SECRET", None)
        kernel.manager = manager
        try:
            manager.start_kernel(env=env, cwd=workdir)
        except Exception as exc:
            raise RLMEnvironmentError(f"cannot start the IPython kernel ({sys.executable} -m "
                                      f"ipykernel_launcher): {exc}") from exc
        client = manager.blocking_client()
        kernel.client = client
        client.start_channels()
        try:
            client.wait_for_ready(timeout=self.startup_timeout)
        except RuntimeError as exc:
            raise RLMEnvironmentError(
                f"the IPython kernel did not start within {self.startup_timeout:g} s: {exc}"
            ) from exc
        self._attach(kernel, secret)
        # IPython copied its profile's README with the source's mode: the run's files are private.
        for root, dirs, files in os.walk(os.path.join(kernel.run_dir, "ipython")):
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o700)
            for name in files:
                os.chmod(os.path.join(root, name), 0o600)
        for index in sorted(self._contexts):
            self._load_context(index)
        for index in sorted(self._histories):
            self._control({"t": "history", "index": index, "messages": self._histories[index]})
        if self.setup_code:
            result = self._run(self.setup_code, self.cell_timeout, restart_on_stuck=False)
            if result.error is not None:
                raise RLMEnvironmentError(
                    f"the ipython-kernel REPL's setup_code failed:\n{result.error}")

    def _attach(self, kernel: KernelProcess, secret: bytes) -> None:
        client = kernel.client
        msg_id = client.execute(_BOOT.format(run_dir=kernel.run_dir), silent=True,
                                store_history=False, allow_stdin=False)
        conn = self._accept(kernel, msg_id)
        kernel.conn = conn
        channel = Channel(conn.recv, conn.sendall, self._host, secret, name="rlm-ipykernel")
        kernel.channel = channel
        timer = threading.Timer(self.startup_timeout, _shut, args=(conn,))
        timer.start()
        try:
            ready = channel.handshake({"tools": self._tools})
        except (ProtocolError, EOFError, OSError) as exc:
            reply = self._reply(client, msg_id, 1.0)
            raise RLMEnvironmentError(f"the IPython kernel failed to attach: {exc}"
                                      f"{reply_error(reply)}") from exc
        finally:
            timer.cancel()
        reply = self._reply(client, msg_id, self.startup_timeout)
        if reply is None or reply["content"].get("status") != "ok":
            raise RLMEnvironmentError(f"the IPython kernel failed to attach{reply_error(reply)}")
        if ready.get("error"):
            raise ConfigurationError(f"a custom tool failed to load in the kernel:\n"
                                     f"{ready['error']}")

    def _accept(self, kernel: KernelProcess, msg_id: str) -> socket.socket:
        """The kernel's connection to the host socket; fails fast if the bootstrap failed."""
        kernel.listener.settimeout(0.25)
        deadline = time.monotonic() + self.startup_timeout
        while True:
            try:
                conn, _ = kernel.listener.accept()
            except TimeoutError:
                pass
            else:
                conn.settimeout(None)
                return conn
            reply = self._reply(kernel.client, msg_id, 0.01)
            if reply is not None or not self._alive(kernel) or time.monotonic() > deadline:
                why = ("its bootstrap cell failed" if reply is not None else
                       "it died" if not self._alive(kernel) else
                       f"it did not within {self.startup_timeout:g} s")
                raise RLMEnvironmentError(
                    f"the IPython kernel did not connect back to the host: {why}"
                    f"{reply_error(reply)}")

    @staticmethod
    def _reply(client: Any, msg_id: str, timeout: float) -> dict[str, Any] | None:
        """The shell reply to ``msg_id`` (older replies are dropped), or None."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                msg = client.get_shell_msg(timeout=remaining)
            except queue.Empty:
                return None
            if msg.get("parent_header", {}).get("msg_id") == msg_id:
                return msg

    def add_context(self, value: Any, index: int) -> None:
        """Write ``context_{index}`` into the run directory once; the kernel loads it."""
        check_index(index)
        with self._lock:
            self._require_open()
            if not self._started:
                self._pending_contexts[index] = value
                return
            try:
                self._write_context(index, value)
                self._load_context(index)
            finally:
                if self._closed:  # shut down from another thread meanwhile
                    self._release()

    def _write_context(self, index: int, value: Any) -> None:
        assert self._kernel is not None
        fmt, chunks = context_chunks(value)
        name = f"context_{index}.{'txt' if fmt == 'text' else 'json'}"
        path = os.path.join(self._kernel.run_dir, name)
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
            f.writelines(chunks)
        self._contexts[index] = (fmt, name)

    def _load_context(self, index: int) -> None:
        fmt, name = self._contexts[index]
        self._control({"t": "context", "index": index, "path": name, "format": fmt})

    def add_history(self, messages: list[Message], index: int) -> None:
        check_index(index)
        import json

        copied = json.loads(json.dumps([dict(m) if isinstance(m, dict) else m for m in messages],
                                       default=str))
        with self._lock:
            self._require_open()
            self._histories[index] = copied
            if self._started:
                try:
                    self._control({"t": "history", "index": index, "messages": copied})
                finally:
                    if self._closed:  # shut down from another thread meanwhile
                        self._release()

    def _control(self, message: dict[str, Any]) -> None:
        kernel = self._kernel
        channel = kernel.channel if kernel is not None else None
        if channel is None:
            raise RLMEnvironmentError("the IPython kernel is not attached")
        try:
            ack = channel.request(message, timeout=max(60.0, self.startup_timeout))
        except (ChannelClosed, TimeoutError) as exc:
            raise RLMEnvironmentError(f"the IPython kernel did not take {message['t']} "
                                      f"{message.get('index')}: {exc}") from exc
        if ack is not None and ack.get("error"):
            raise RLMEnvironmentError(f"the IPython kernel could not load {message['t']} "
                                      f"{message.get('index')}: {ack['error']}")

    def shutdown(self) -> None:
        """Stop the kernel and remove the run directory. Idempotent.

        Does not wait for a running cell: the kernel is killed and that cell reports it.
        """
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
            self._host = None
        untrack_open(self)
        if self._lock.acquire(blocking=False):
            try:
                self._release()
            finally:
                self._lock.release()
        else:
            # Another thread runs a cell (or starts the kernel) and uses the client: kill the
            # process only; that thread sees the REPL closed and releases the rest.
            kernel = self._kernel
            if kernel is not None:
                kernel.kill_process()

    def _release(self) -> None:
        finalizer, self._finalizer = self._finalizer, None
        if finalizer is not None:
            finalizer()
        self._kernel = None

    # --- cells -----------------------------------------------------------------------------

    def execute(self, code: str, *, timeout: float | None = None) -> CellResult:
        if not isinstance(code, str):
            raise TypeError(f"code must be a string, not {type(code).__name__}")
        limit = self.cell_timeout if timeout is None else cell_limit(timeout)
        with self._lock:
            self._require_open()
            if not self._started:
                raise RLMEnvironmentError("call start(host, tools) before execute()")
            try:
                return self._run(code, limit)
            finally:
                if self._closed:  # shut down from another thread meanwhile
                    self._release()

    def _run(self, code: str, limit: float | None, restart_on_stuck: bool = True) -> CellResult:
        kernel = self._kernel
        assert kernel is not None and kernel.client is not None
        client = kernel.client
        started = time.perf_counter()
        cell = CellOutput(self.max_output_chars)
        msg_id = client.execute(code, silent=False, store_history=True, allow_stdin=False,
                                stop_on_error=False)
        deadline = None if limit is None else time.monotonic() + limit
        interrupted_at: float | None = None
        cancelled = False
        lost: str | None = None
        cancel = threading.Event()
        if restart_on_stuck:  # a caller's cell, not setup_code: interrupt() may stop it
            self._cancel = cancel
        try:
            while True:
                now = time.monotonic()
                if self._closed:
                    lost = "closed"
                    break
                if interrupted_at is None and cancel.is_set():  # interrupt() was called
                    interrupted_at, cancelled = now, True
                    self._interrupt(kernel)
                if deadline is not None and interrupted_at is None and now >= deadline:
                    interrupted_at = now
                    self._interrupt(kernel)
                if interrupted_at is not None and now - interrupted_at >= self.interrupt_grace:
                    lost = (f"the cell did not stop within {self.interrupt_grace:g} s of the "
                            "interrupt, so the kernel was killed")
                    break
                wait = 0.1
                if deadline is not None and interrupted_at is None:
                    wait = min(wait, max(deadline - now, 0.0))
                try:
                    msg = client.get_iopub_msg(timeout=max(wait, 0.01))
                except queue.Empty:
                    if not self._alive(kernel):
                        lost = "the kernel died while running the cell"
                        break
                    continue
                if msg.get("parent_header", {}).get("msg_id") == msg_id and cell.take(msg):
                    break
        except KeyboardInterrupt:
            # A real Ctrl+C in the host while it waits: stop the cell too, then let it through.
            self._interrupt(kernel)
            raise
        finally:
            if restart_on_stuck:
                self._cancel = None
        timed_out = interrupted_at is not None and not cancelled
        error = cell.error
        if lost == "closed":
            error = "RLMEnvironmentError: the REPL was shut down while this cell was running"
        elif lost is not None:
            error = self._recover(lost, restart_on_stuck)
        else:
            self._reply(client, msg_id, 1.0)
            if cancelled:
                error = "Cancelled: the cell was interrupted"
            elif timed_out:
                seconds = f"{limit:g}" if limit is not None else "?"
                where = error + "\n" if error else ""
                error = (f"{where}TimeoutError: the cell exceeded its time limit of {seconds} "
                         "seconds and was interrupted; variables set before that point are kept.")
        return cell.result(error, timed_out, time.perf_counter() - started)

    def interrupt(self) -> bool:
        """Stop the cell running now, from any thread (a cancelled run's cell in a persistent
        REPL): the kernel gets SIGINT, the cell ends with ``Cancelled: ...``, variables kept
        (killed and restarted after ``interrupt_grace`` if it does not stop). False when no cell
        was running (``setup_code``, also when a restart runs it, is not stopped)."""
        cancel = self._cancel
        if cancel is None:
            return False
        cancel.set()
        return True

    def _interrupt(self, kernel: KernelProcess) -> None:
        try:
            kernel.manager.interrupt_kernel()
        except Exception:  # noqa: BLE001 - a dead kernel is noticed by the loop
            pass

    @staticmethod
    def _alive(kernel: KernelProcess) -> bool:
        try:
            return bool(kernel.manager.is_alive())
        except Exception:  # noqa: BLE001
            return False

    def _recover(self, what: str, restart: bool) -> str:
        """Restart the kernel after it died or got stuck; the error text for the cell."""
        kernel = self._kernel
        if kernel is None or self._closed:
            return "RLMEnvironmentError: the REPL was shut down while this cell was running"
        code = None
        manager = kernel.manager
        provisioner = getattr(manager, "provisioner", None)
        process = getattr(provisioner, "process", None)
        if process is not None:
            code = process.poll()
        detail = f" (exit status {code})" if code is not None else ""
        kernel.stop_process()
        if not restart:
            return f"RLMEnvironmentError: {what}{detail}"
        self.restarts += 1
        try:
            self._boot()
        except Exception as exc:  # noqa: BLE001
            self.shutdown()
            return (f"RLMEnvironmentError: {what}{detail}, and a new kernel could not be started: "
                    f"{exc}. The REPL is closed.")
        return (f"RLMEnvironmentError: {what}{detail}. A new kernel was started: the contexts, "
                "history and tools are loaded again, but variables you created are gone; "
                "recreate what you still need.")

    def _require_open(self) -> None:
        if self._closed:
            raise RLMEnvironmentError(f"this {type(self).__name__} was shut down; create a new one")

    # --- prompt text -----------------------------------------------------------------------

    def usage_instructions(self) -> str:
        return usage_text(
            "kernel (Python {version}) in a separate process on the host",
            on_timeout="is interrupted (KeyboardInterrupt)",
            max_output_chars=self.max_output_chars, cell_timeout=self.cell_timeout,
            ast_node_interactivity=self.ast_node_interactivity)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running" if self._started else "new"
        return f"<IPythonKernelREPL {state} pid={self.kernel_pid}>"


def _shut(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
