"""The local environment: a persistent Python REPL in the host process.

``LocalREPL`` runs on the REPL core every isolated worker runs on
(:class:`rlm_isolation.worker.REPLCore` and its :class:`~rlm_isolation.worker.CellRunner`): the
namespace, the helpers, ``answer`` / ``FINAL`` / ``FINAL_VAR`` / ``SHOW_VARS``, the restoring of
reserved names, the builtins that refuse ``input()``, the bounded output, the tracebacks and the
time limits are theirs. What is local is the in-process character: helpers call the host's
methods directly, contexts and tools are the caller's live objects (never copies), output is
captured per REPL and per thread and each REPL's cells get a working directory of their own
(see :mod:`._capture`).

It is **not a security boundary**: cells have the full builtins, can import anything, open any
file and reach the host through the helpers. Use an isolated environment for untrusted models.
"""

from __future__ import annotations

import functools
import itertools
import keyword
import os
import re
import shutil
import sys
import threading
import weakref
from collections.abc import Mapping
from typing import Any

from rlm.plugin import (CellResult, ConfigurationError, EnvironmentCapabilities, Host, Message,
                        RLMEnvironmentError, Tool)
from rlm_isolation.leftovers import make_run_dir, reap_run_dirs, track_open
from rlm_isolation.repl import cell_limit, check_cell_options, check_index, check_timeout
from rlm_isolation.worker import HELPER_NAMES, RESERVED_NAMES, CellRunner, REPLCore

from . import _capture

__all__ = ["HELPER_NAMES", "RESERVED_NAMES", "LocalREPL"]

_NUMBERED = re.compile(r"(context|history)_\d+")
_MISSING = object()
_OWN_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_ids = itertools.count(1)


def _help(request: Any = _MISSING) -> None:
    """``help(obj)`` prints the documentation of ``obj``."""
    if request is _MISSING:
        # The interactive help reads the host's terminal.
        print("help() needs an argument here (the interactive help reads from a terminal), "
              "e.g. help(str.split).")
        return
    import pydoc

    # An explicit output stream: never a pager, which could wait for a terminal.
    pydoc.Helper(output=sys.stdout).help(request)


class _Resources:
    """What must be released even when a REPL is dropped without ``shutdown()``.

    Held by a ``weakref.finalize`` of the REPL and by the core's ``call_host``, so it must not
    refer to the REPL itself.
    """

    def __init__(self) -> None:
        self.runner: CellRunner | None = None
        self.host: Host | None = None
        self.tmpdir: str | None = None  # removed on release (only when the REPL created it)
        self.lock: int | None = None  # holds tmpdir's owner lock (rlm_isolation.leftovers)
        self.workdir: str | None = None
        self.cwd: str | None = None  # the cell's working directory after the last cell
        self.cwd_isolated: bool | None = None

    def call_host(self, method: str, args: list[Any]) -> Any:
        """The core's ``call_host``: the host's own method, with the cell's own objects.

        Whatever the host prints or starts while serving the call is the host's, not the cell's:
        its output is not captured and its threads get the process's directory.
        """
        host = self.host
        if host is None:
            return "Error: the REPL was shut down"
        capture_token = _capture.CAPTURE.set(None)
        cwd_token = _capture.HOST_CWD.set(bool(self.cwd_isolated))
        try:
            return getattr(host, method)(*args)
        finally:
            _capture.HOST_CWD.reset(cwd_token)
            _capture.CAPTURE.reset(capture_token)

    def enter_cell_thread(self, core: REPLCore) -> None:
        """On a new executor thread: it becomes one of the REPL's cell threads."""
        self.cwd_isolated = _capture.enter_cell_thread(
            core, [d for d in (self.cwd, self.workdir) if d])

    def after_cell(self) -> None:
        """On the cell's thread: remember its working directory for the next executor."""
        if self.cwd_isolated:
            try:
                self.cwd = os.getcwd()
            except OSError:  # a deleted directory: keep the last known one
                pass

    def release(self) -> None:
        self.host = None
        runner, self.runner = self.runner, None
        if runner is not None:
            runner.close()
        tmpdir, self.tmpdir = self.tmpdir, None
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
        lock, self.lock = self.lock, None
        if lock is not None:
            os.close(lock)


class LocalREPL:
    """A Python REPL in the host process, persistent across cells and ``completion()`` calls.

    Args:
        cell_timeout: default time limit of one cell in seconds (``None``: no limit unless
            ``execute(timeout=...)`` gives one). A cell over its limit is stopped and reported
            with ``timed_out=True``; the namespace is kept.
        setup_code: Python run once when the REPL starts (imports, helper functions, ...).
        workdir: the cells' working directory. Default: a new temporary directory, removed at
            ``shutdown()``. A given directory is created if needed and never removed.
        max_output_chars: stdout and stderr of one cell are each cut to this many characters
            (the first and last halves are kept, with a marker saying how much was cut).
    """

    capabilities = EnvironmentCapabilities(isolated=False, persistent=True, cell_timeout=True,
                                           threads=True, callables_as_tools=True)

    #: Seconds a stopped cell gets to let go before its thread is abandoned.
    timeout_grace: float = 1.0
    #: The REPL core's class (a subclass of :class:`~rlm_isolation.worker.REPLCore`).
    _core_class: type[REPLCore] = REPLCore

    def __init__(self, *, cell_timeout: float | None = None, setup_code: str | None = None,
                 workdir: str | os.PathLike[str] | None = None, max_output_chars: int = 20000,
                 **unknown: Any):
        if unknown:
            name = sorted(unknown)[0]
            raise TypeError(
                f"LocalREPL got an unexpected keyword argument {name!r}; the local environment "
                "accepts cell_timeout, setup_code, workdir and max_output_chars")
        self.cell_timeout = check_timeout(cell_timeout, "cell_timeout")
        check_cell_options(setup_code, max_output_chars)
        self.setup_code = setup_code
        self.max_output_chars = max_output_chars
        self._workdir_arg = os.path.abspath(os.fspath(workdir)) if workdir is not None else None

        self._id = next(_ids)
        self._res = _Resources()
        self._finalizer = weakref.finalize(self, self._res.release)
        self._core = self._core_class(self._res.call_host, max_output_chars,
                                      extra_builtins={"help": _help}, machinery=(_OWN_DIR,))
        self._ns: dict[str, Any] = self._core.ns
        self._state_lock = threading.Lock()
        self._exec_lock = threading.Lock()
        self._started = False
        self._closed = False

    @property
    def workdir(self) -> str | None:
        """The cells' working directory (``None`` before ``start``)."""
        return self._res.workdir

    @property
    def cwd_isolated(self) -> bool | None:
        """Whether cells have a working directory of their own (``None`` before ``start``)."""
        return self._res.cwd_isolated

    # --- lifecycle -------------------------------------------------------------------------

    def start(self, host: Host, tools: Mapping[str, Tool]) -> None:
        with self._state_lock:
            if self._closed:
                raise RLMEnvironmentError("this LocalREPL was shut down; create a new one")
            if self._started:
                raise RLMEnvironmentError("LocalREPL.start() was already called")
            injected = _check_tools(tools)
            res = self._res
            res.host = host
            if self._workdir_arg is not None:
                try:
                    os.makedirs(self._workdir_arg, exist_ok=True)
                except OSError as exc:
                    raise RLMEnvironmentError(
                        f"cannot create the local REPL's workdir {self._workdir_arg!r}: {exc}"
                    ) from exc
                res.workdir = self._workdir_arg
            else:
                reap_run_dirs()  # those of hosts killed outright (SIGKILL, out of memory)
                res.tmpdir, res.lock = make_run_dir(f"rlm-local-{self._id}-")
                track_open(self)  # shut down (temp dir removed) at exit and on SIGTERM
                res.workdir = res.tmpdir
            res.cwd = res.workdir

            core = self._core
            core.set_tools({name: {"value": value} for name, value in injected.items()})
            core.install()
            _capture.install()
            res.runner = CellRunner(core, self.timeout_grace, f"rlm-local-{self._id}",
                                    setup=functools.partial(res.enter_cell_thread, core),
                                    after=res.after_cell, stack_size=_capture.CELL_STACK_BYTES)
            res.runner.get_executor()  # the cells' thread, in its directory (cwd_isolated)
            self._started = True
        if self.setup_code:
            with self._exec_lock:
                result = self._execute(self.setup_code, self.cell_timeout, "<setup_code>")
            if result.error is not None:
                self.shutdown()
                raise RLMEnvironmentError(f"the local REPL's setup_code failed:\n{result.error}")

    def add_context(self, value: Any, index: int) -> None:
        """Bind ``context_{index}`` (and ``context`` for index 0) to ``value`` itself, never a copy.

        A new context means a new task, so the ``answer`` dict starts over.
        """
        check_index(index)
        with self._exec_lock:
            self._require_open()
            self._core.bind_context(index, value)

    def add_history(self, messages: list[Message], index: int) -> None:
        """Bind ``history_{index}`` and ``history`` (the latest) to a copy of ``messages``."""
        check_index(index)
        copied = [dict(m) if isinstance(m, dict) else m for m in messages]
        with self._exec_lock:
            self._require_open()
            self._core.load_history(index, copied)

    def shutdown(self) -> None:
        """Stop a running cell, drop every reference the REPL holds and remove its temp dir.

        Idempotent. A cell thread that could not be stopped (blocked in C) may still hold its own
        frames until it finishes.
        """
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
        self._core.closed = True
        runner = self._res.runner
        if runner is not None:
            try:
                runner.interrupt(wait=True)
            except KeyboardInterrupt:  # pragma: no cover - the release below still happens
                pass
        self._core.clear()
        self._finalizer()  # stops the executor thread and removes the temp dir

    # --- cells -----------------------------------------------------------------------------

    def execute(self, code: str, *, timeout: float | None = None) -> CellResult:
        if not isinstance(code, str):
            raise TypeError(f"code must be a string, not {type(code).__name__}")
        limit = self.cell_timeout if timeout is None else cell_limit(timeout)
        runner = self._res.runner
        executor = runner.executor if runner is not None else None
        if executor is not None and threading.current_thread() is executor.thread:
            raise RLMEnvironmentError("execute() was called from inside one of this REPL's cells")
        with self._exec_lock:
            self._require_open()
            if not self._started:
                raise RLMEnvironmentError("call start(host, tools) before execute()")
            return self._execute(code, limit)

    def _execute(self, code: str, limit: float | None, filename: str | None = None
                 ) -> CellResult:
        _capture.install()
        _capture.install_recursion_cap()
        runner = self._res.runner
        if runner is None:  # shut down meanwhile
            error = "RLMEnvironmentError: the REPL was shut down while this cell was running"
            return CellResult(stdout="", stderr=error + "\n", error=error)
        result = runner.run(code, limit, filename)
        del result["t"]
        return CellResult(**result)

    def interrupt(self) -> bool:
        """Stop the cell running now, from any thread (a cancelled run's cell in a persistent
        REPL). It ends with ``Cancelled: the cell was interrupted``, variables kept; a cell
        blocked in a call Python cannot interrupt is abandoned after ``timeout_grace`` like a
        timed-out one. False when no cell was running."""
        runner = self._res.runner
        return runner is not None and runner.interrupt(wait=True)

    def _require_open(self) -> None:
        if self._closed:
            raise RLMEnvironmentError("this LocalREPL was shut down; create a new one")

    # --- prompt text -----------------------------------------------------------------------

    def usage_instructions(self) -> str:
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        lines = [
            f"The REPL is a local Python {version} interpreter running inside the host process "
            "(not a sandbox).",
            "Variables, functions, classes and imports persist from one code block to the next "
            "(and across completion() calls in persistent mode: context_0, context_1, ... and "
            "history_0, history_1, ...).",
            "Only what you print is shown back to you (stdout and stderr, each cut to "
            f"{self.max_output_chars:,} characters per block); a bare expression on the last line "
            "is not echoed.",
        ]
        if self.cell_timeout is not None:
            lines.append(f"A code block may run for at most {self.cell_timeout:g} seconds; a "
                         "longer one is stopped and its variables are kept.")
        if self.cwd_isolated is not False and sys.platform.startswith("linux"):
            lines.append("Relative file paths resolve inside a private scratch directory.")
        lines.append("input() is unavailable; exit() or sys.exit() only ends the current block.")
        return "\n".join(lines)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running" if self._started else "new"
        return f"<LocalREPL #{self._id} {state}>"


# --- argument checks ------------------------------------------------------------------------


def _check_tools(tools: Mapping[str, Any] | None) -> dict[str, Any]:
    injected: dict[str, Any] = {}
    for key, tool in (tools or {}).items():
        name, value = (tool.name, tool.value) if isinstance(tool, Tool) else (key, tool)
        if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
            raise ConfigurationError(f"tool name {name!r} is not a valid Python identifier")
        if name in RESERVED_NAMES or _NUMBERED.fullmatch(name):
            raise ConfigurationError(
                f"tool name {name!r} is reserved by the REPL; reserved names are "
                f"{', '.join(sorted(RESERVED_NAMES))}, context_N and history_N")
        if name.startswith("__") and name.endswith("__"):
            raise ConfigurationError(f"tool name {name!r} must not be a dunder name")
        injected[name] = value
    return injected
