"""The local environment: a persistent Python REPL in the host process.

``LocalREPL`` runs each cell with ``exec`` in one globals dictionary that lives as long as the
REPL, on a dedicated executor thread (see :mod:`._executor`), with output captured per REPL and
per thread (see :mod:`._capture`).

It is **not a security boundary**: cells have the full builtins, can import anything, open any
file and reach the host through the helpers. Use an isolated environment for untrusted models.
"""

from __future__ import annotations

import builtins
import itertools
import keyword
import os
import re
import shutil
import sys
import threading
import time
import types
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rlm.plugin import (CellResult, ConfigurationError, EnvironmentCapabilities, Host, Message,
                        RLMEnvironmentError, Tool)
from rlm_isolation.leftovers import make_run_dir, reap_run_dirs, track_open
from rlm_isolation.repl import cell_limit, check_cell_options, check_index, check_timeout
from rlm_isolation.worker import answer_fields, restore_reserved

from . import _capture, _executor
from ._traceback import format_cell_exception, format_stack

HELPER_NAMES = ("llm_query", "llm_query_batched", "rlm_query", "rlm_query_batched", "SHOW_VARS",
                "FINAL", "FINAL_VAR")
RESERVED_NAMES = frozenset((*HELPER_NAMES, "answer", "context", "history"))
_NUMBERED = re.compile(r"(context|history)_\d+")
_MISSING = object()
_ids = itertools.count(1)


def _fresh_answer() -> dict[str, Any]:
    return {"content": "", "ready": False}


def _text(value: Any) -> str:
    try:
        return str(value)
    except Exception:  # noqa: BLE001 - a value whose __str__ fails is still an answer
        return f"<unprintable {type(value).__name__}>"


# --- builtins that would hang or hurt the host ---------------------------------------------


def _exit(code: Any = None) -> None:
    """``exit()`` / ``quit()``: end the current code block (the REPL keeps running)."""
    # site's versions close sys.stdin first, which would close the host's stdin.
    raise SystemExit() if code is None else SystemExit(code)


def _no_input(prompt: Any = "") -> str:
    raise RuntimeError("input() is not available in the REPL: nobody is there to type an answer. "
                       "Use the variables you have (context, ...) instead.")


def _no_breakpoint(*args: Any, **kwargs: Any) -> None:
    raise RuntimeError("breakpoint() is not available in the REPL: there is no debugger terminal.")


def _help(request: Any = _MISSING) -> None:
    """``help(obj)`` prints the documentation of ``obj``."""
    if request is _MISSING:
        print("help() needs an argument here (the interactive help reads from a terminal), "
              "e.g. help(str.split).")
        return
    import pydoc

    # An explicit output stream: never a pager, which could wait for a terminal.
    pydoc.Helper(output=sys.stdout).help(request)


_BUILTIN_OVERRIDES: dict[str, Any] = {"exit": _exit, "quit": _exit, "input": _no_input,
                                      "breakpoint": _no_breakpoint, "help": _help}


class _Resources:
    """What must be released even when a REPL is dropped without ``shutdown()``.

    Held by a ``weakref.finalize`` of the REPL, so it must not refer to the REPL itself.
    """

    def __init__(self) -> None:
        self.executor: _executor.Executor | None = None
        self.tmpdir: str | None = None  # removed on release (only when the REPL created it)
        self.lock: int | None = None  # holds tmpdir's owner lock (rlm_isolation.leftovers)
        self.workdir: str | None = None
        self.cwd: str | None = None  # the cell's working directory after the last cell

    def set_cwd(self, path: str) -> None:
        self.cwd = path

    def release(self) -> None:
        executor, self.executor = self.executor, None
        if executor is not None:
            executor.stop()
            if executor.thread is not threading.current_thread():
                executor.thread.join(timeout=1.0)
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
        self._capture = _capture.Capture(max_output_chars)
        self._res = _Resources()
        self._finalizer = weakref.finalize(self, self._res.release)
        self._state_lock = threading.Lock()
        self._exec_lock = threading.Lock()
        self._started = False
        self._closed = False
        self._host: Host | None = None
        self._ns: dict[str, Any] = {}
        self._builtins: dict[str, Any] = {}
        # Names restored after every cell: helpers, tools, context_N / history_N.
        self._fixed: dict[str, Any] = {}
        self._tool_names: set[str] = set()
        self._answer: dict[str, Any] = _fresh_answer()
        self._last_history_index = -1
        self._sources: dict[str, list[str]] = {}
        self._cell_index = 0
        self._job: _executor.Job | None = None
        self._cwd_isolated: bool | None = None

    @property
    def workdir(self) -> str | None:
        """The cells' working directory (``None`` before ``start``)."""
        return self._res.workdir

    @property
    def cwd_isolated(self) -> bool | None:
        """Whether cells have a working directory of their own (``None`` before ``start``)."""
        return self._cwd_isolated

    # --- lifecycle -------------------------------------------------------------------------

    def start(self, host: Host, tools: Mapping[str, Tool]) -> None:
        with self._state_lock:
            if self._closed:
                raise RLMEnvironmentError("this LocalREPL was shut down; create a new one")
            if self._started:
                raise RLMEnvironmentError("LocalREPL.start() was already called")
            injected = _check_tools(tools)
            self._host = host
            if self._workdir_arg is not None:
                try:
                    os.makedirs(self._workdir_arg, exist_ok=True)
                except OSError as exc:
                    raise RLMEnvironmentError(
                        f"cannot create the local REPL's workdir {self._workdir_arg!r}: {exc}"
                    ) from exc
                self._res.workdir = self._workdir_arg
            else:
                reap_run_dirs()  # those of hosts killed outright (SIGKILL, out of memory)
                self._res.tmpdir, self._res.lock = make_run_dir(f"rlm-local-{self._id}-")
                track_open(self)  # shut down (temp dir removed) at exit and on SIGTERM
                self._res.workdir = self._res.tmpdir
            self._res.cwd = self._res.workdir

            bi = dict(vars(builtins))
            bi.update(_BUILTIN_OVERRIDES)
            self._builtins = bi
            helpers = self._make_helpers(host)
            self._ns.update({"__name__": "__main__", "__doc__": None, "__builtins__": bi})
            self._ns.update(helpers)
            self._ns.update(injected)
            self._ns["answer"] = self._answer
            self._fixed = {**helpers, **injected, **self._fixed}  # contexts added before start
            self._tool_names = set(injected)
            self._ns.update({k: v for k, v in self._fixed.items() if k not in self._ns})
            _capture.install()
            self._get_executor()
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
            names = [f"context_{index}"] + (["context"] if index == 0 else [])
            for name in names:
                self._fixed[name] = value
                if self._started:
                    self._ns[name] = value
            self._answer = _fresh_answer()
            if self._started:
                self._ns["answer"] = self._answer

    def add_history(self, messages: list[Message], index: int) -> None:
        """Bind ``history_{index}`` and ``history`` (the latest) to a copy of ``messages``."""
        check_index(index)
        copied = [dict(m) if isinstance(m, dict) else m for m in messages]
        with self._exec_lock:
            self._require_open()
            names = [f"history_{index}"]
            if index >= self._last_history_index:
                self._last_history_index = index
                names.append("history")
            for name in names:
                self._fixed[name] = copied
                if self._started:
                    self._ns[name] = copied

    def shutdown(self) -> None:
        """Stop a running cell, drop every reference the REPL holds and remove its temp dir.

        Idempotent. A cell thread that could not be stopped (blocked in C) may still hold its own
        frames until it finishes.
        """
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
        job, executor = self._job, self._res.executor
        if job is not None and executor is not None and not job.done:
            try:
                self._stop(job, executor, _executor.CellCancelled)
            except KeyboardInterrupt:  # pragma: no cover - the release below still happens
                pass
        self._ns.clear()
        self._fixed.clear()
        self._builtins = {}
        self._answer = _fresh_answer()
        self._sources.clear()
        self._host = None
        self._finalizer()  # stops the executor thread and removes the temp dir

    # --- cells -----------------------------------------------------------------------------

    def execute(self, code: str, *, timeout: float | None = None) -> CellResult:
        if not isinstance(code, str):
            raise TypeError(f"code must be a string, not {type(code).__name__}")
        limit = self.cell_timeout if timeout is None else cell_limit(timeout)
        executor = self._res.executor
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
        _executor.install_recursion_cap()
        self._restore_reserved()
        if filename is None:
            self._cell_index += 1
            filename = f"<cell {self._cell_index}>"
        self._sources[filename] = code.splitlines()
        started = time.perf_counter()
        try:
            compiled = compile(code, filename, "exec", dont_inherit=True)
        except Exception as exc:  # noqa: BLE001 - SyntaxError, null bytes, too deeply nested
            return self._result(started, format_cell_exception(exc, self._sources), False)

        job = _executor.Job(compiled, self._ns)
        executor = self._get_executor()
        self._job = job
        abandoned = False
        try:
            executor.submit(job)
            if not job.event.wait(limit):
                abandoned = not self._stop(job, executor, _executor.CellTimeout)
        except KeyboardInterrupt:
            # A real Ctrl+C while we wait: stop the cell, then let the caller see the interrupt.
            try:
                if not job.done:
                    self._stop(job, executor, _executor.CellCancelled)
            finally:
                self._job = None
                self._capture.take()
            raise
        finally:
            self._job = None

        exc, job.exc = job.exc, None
        timed_out = abandoned or job.stop_reason is _executor.CellTimeout
        if self._closed:
            error = "RLMEnvironmentError: the REPL was shut down while this cell was running"
        elif timed_out:
            error = self._timeout_error(limit, exc, abandoned)
        elif job.stop_reason is _executor.CellCancelled and not job.done:
            error = ("Cancelled: the cell was interrupted while blocked in a call Python cannot "
                     "interrupt; its thread was abandoned and may still finish in the background")
        elif job.stop_reason is not None:  # even where the cell's own runner caught it (IPython)
            error = "Cancelled: the cell was interrupted"
        elif exc is not None:
            error = format_cell_exception(exc, self._sources)
        else:
            error = None
        del exc
        return self._result(started, error, timed_out, job.answer)

    def _timeout_error(self, limit: float | None, exc: BaseException | None,
                       abandoned: bool) -> str:
        seconds = f"{limit:g}" if limit is not None else "?"
        if abandoned:
            return (f"TimeoutError: the cell exceeded its time limit of {seconds} seconds and did "
                    f"not stop within {self.timeout_grace:g} s more: it is blocked in a call "
                    "Python cannot interrupt (time.sleep, a lock, network or disk I/O). Its "
                    "thread was abandoned and may still finish in the background; the next cell "
                    "runs in a fresh thread with the same variables.")
        where = format_stack(exc, self._sources)
        message = (f"TimeoutError: the cell exceeded its time limit of {seconds} seconds and was "
                   "stopped; variables set before that point are kept.")
        if exc is not None and not isinstance(exc, _executor.CellInterrupt):
            # The cell caught the stop and failed differently while stopping.
            return message + "\nWhile stopping, the cell raised:\n" + format_cell_exception(
                exc, self._sources)
        return where + message

    def _result(self, started: float, error: str | None, timed_out: bool,
                answer: tuple[str | None, str | None] | None = None) -> CellResult:
        """The cell's result. ``answer`` is the answer as text, made on the cell's thread; without
        it (the cell never ran, or was stopped first) only an answer that is already plain text
        is read here: model objects are never turned into text on the host's thread."""
        if not self._closed:
            self._restore_reserved()
        out, err = self._capture.take()
        if error is not None:
            if err.total and not err.value().endswith("\n"):
                err.write("\n")
            err.write(error + "\n")
        if answer is None:
            current = self._ns.get("answer")
            plain = isinstance(current, dict) and type(current.get("content")) in (str, type(None))
            answer = answer_fields(current) if plain else (None, None)
        final_answer, answer_content = answer
        return CellResult(stdout=out.value(), stderr=err.value(), error=error,
                          variables=self._user_variables(),
                          execution_time=time.perf_counter() - started,
                          final_answer=final_answer, answer_content=answer_content,
                          timed_out=timed_out)

    def _get_executor(self) -> _executor.Executor:
        executor = self._res.executor
        if executor is None or executor.abandoned or not executor.thread.is_alive():
            candidates = [d for d in (self._res.cwd, self._res.workdir) if d]
            executor = _executor.Executor(f"rlm-local-{self._id}", self._capture, candidates,
                                          self._res.set_cwd)
            self._res.executor = executor
            self._cwd_isolated = executor.cwd_isolated
        return executor

    def interrupt(self) -> bool:
        """Stop the cell running now, from any thread (a cancelled run's cell in a persistent
        REPL). It ends with ``Cancelled: the cell was interrupted``, variables kept; a cell
        blocked in a call Python cannot interrupt is abandoned after ``timeout_grace`` like a
        timed-out one. False when no cell was running."""
        job, executor = self._job, self._res.executor
        if job is None or executor is None or job.event.is_set():
            return False
        if not self._stop(job, executor, _executor.CellCancelled):
            job.event.set()  # the waiting execute() returns now; the thread ends in the background
        return True

    def _stop(self, job: _executor.Job, executor: _executor.Executor,
              reason: type[_executor.CellInterrupt]) -> bool:
        """Stop the running cell. True when it stopped; False when its thread was abandoned."""
        deadline = time.monotonic() + self.timeout_grace
        job.interrupt(reason)
        while not job.event.wait(0.05):
            if time.monotonic() >= deadline:
                executor.abandoned = True
                executor.thread.name += " (abandoned)"
                executor.stop()  # if it finishes after all, the thread exits instead of idling
                if self._res.executor is executor:
                    self._res.executor = None
                _executor.abandon(job)
                return job.event.is_set()
            job.interrupt(reason)
        return True

    # --- the namespace ---------------------------------------------------------------------

    def _make_helpers(self, host: Host) -> dict[str, Callable[..., Any]]:
        ns = self._ns
        repl = weakref.ref(self)

        def via_host(method: Callable[..., Any], *args: Any) -> Any:
            # Whatever the host prints or starts while serving the call is the host's, not the
            # cell's: its output is not captured and its threads get the process's directory.
            capture_token = _capture.CAPTURE.set(None)
            r = repl()
            cwd_token = _capture.HOST_CWD.set(bool(r is not None and r._cwd_isolated))
            del r
            try:
                return method(*args)
            finally:
                _capture.HOST_CWD.reset(cwd_token)
                _capture.CAPTURE.reset(capture_token)

        def llm_query(prompt: Any, model: str | None = None) -> str:
            """Ask a language model: one plain completion of ``prompt`` (a string or a list of
            chat messages). Returns the reply text, or a string starting with "Error: "."""
            return via_host(host.llm_query, prompt, model)

        def llm_query_batched(prompts: Sequence[Any], model: str | None = None) -> list[str]:
            """``llm_query`` for many prompts at once, run concurrently; replies in order."""
            return via_host(host.llm_query_batched, prompts, model)

        def rlm_query(prompt: Any, model: str | None = None) -> str:
            """Hand ``prompt`` to a child RLM that gets its own REPL (a plain model call at the
            maximum depth). Returns its answer, or a string starting with "Error: "."""
            return via_host(host.rlm_query, prompt, model)

        def rlm_query_batched(prompts: Sequence[Any], model: str | None = None) -> list[str]:
            """``rlm_query`` for many prompts at once; answers in order."""
            return via_host(host.rlm_query_batched, prompts, model)

        def current_answer() -> dict[str, Any]:
            answer = ns.get("answer")
            if not isinstance(answer, dict):
                answer = _fresh_answer()
                ns["answer"] = answer
            return answer

        def FINAL(value: Any) -> str:  # the name models are trained on
            """Finish: ``str(value)`` becomes the final answer."""
            answer = current_answer()
            answer["content"] = _text(value)
            answer["ready"] = True
            return answer["content"]

        def FINAL_VAR(name_or_value: Any) -> str:
            """Finish with the value of the variable named ``name_or_value`` (a string).

            Any other argument is used as the answer itself.
            """
            if not isinstance(name_or_value, str):
                return FINAL(name_or_value)
            name = name_or_value.strip().strip("'\"`")
            value = ns.get(name, _MISSING) if name else _MISSING
            if value is not _MISSING:
                return FINAL(value)
            if name.isidentifier():
                message = (f"Error: Variable '{name}' not found. Create it first (for example "
                           f"`{name} = ...` in a code block), then call FINAL_VAR('{name}'). "
                           "No final answer was set.")
            else:
                message = ("Error: FINAL_VAR expects the name of an existing variable, got "
                           f"{name_or_value[:80]!r}. To answer with text, use FINAL(text). "
                           "No final answer was set.")
            print(message)
            return message

        def SHOW_VARS() -> str:
            """Print and return the variables you created, with their types."""
            r = repl()
            names = r._user_variables() if r is not None else []
            loaded = r._loaded_names() if r is not None else []
            del r
            if names:
                text = "Available variables: " + repr(
                    {n: type(ns[n]).__name__ for n in names if n in ns})
            else:
                text = "No variables created yet. Variables you assign persist across code blocks."
            if loaded:
                text += "\nLoaded data: " + repr(
                    {n: type(ns[n]).__name__ for n in loaded if n in ns})
            print(text)
            return text

        return {"llm_query": llm_query, "llm_query_batched": llm_query_batched,
                "rlm_query": rlm_query, "rlm_query_batched": rlm_query_batched,
                "SHOW_VARS": SHOW_VARS, "FINAL": FINAL, "FINAL_VAR": FINAL_VAR}

    def _restore_reserved(self) -> None:
        self._answer = restore_reserved(self._ns, self._builtins or None, self._fixed, self._answer)

    def _loaded_names(self) -> list[str]:
        return [n for n in self._fixed if n not in HELPER_NAMES and n not in self._tool_names]

    def _user_variables(self) -> list[str]:
        hidden = self._fixed.keys() | {"answer"}
        out = []
        for name, value in list(self._ns.items()):
            if name.startswith("__") and name.endswith("__"):
                continue
            if name in hidden or isinstance(value, types.ModuleType):
                continue
            out.append(name)
        return out

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
        if self._cwd_isolated is not False and sys.platform.startswith("linux"):
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
