"""The thread a REPL's cells run in, and how a running cell is stopped.

Each REPL owns one long-lived executor thread (:class:`Executor`). ``execute`` hands it a
:class:`Job` and waits. To stop a cell (time limit, Ctrl+C, shutdown) the waiting thread raises
an exception inside the executor thread with ``PyThreadState_SetAsyncExc``, again and again
until the cell lets go. That works for pure-Python code (``while True: pass``) but not for a
thread blocked in C (``time.sleep(1000)``, a socket read): the exception is only delivered when
the call returns. After a grace period such an executor is *abandoned*: the cell is reported as
timed out, a fresh executor serves the next cell with the same namespace, and a reaper keeps
re-raising in the abandoned thread until it finishes, after which it exits.

Races are settled by ``Job.lock``: the waiting side only raises while the job is running, and
the executor marks the job done and clears any exception still pending while holding that lock.
Once a job is done no exception can reach its thread any more, so a stop aimed at one cell never
lands in the next.
"""

from __future__ import annotations

import ctypes
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import CodeType
from typing import Any

from rlm_isolation.worker import answer_fields

from . import _capture

_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = [ctypes.c_ulong, ctypes.py_object]
_set_async_exc.restype = ctypes.c_int


class CellInterrupt(BaseException):  # not an error of the cell's own making
    """Raised inside a cell's thread to stop it. A ``BaseException`` so that ``except Exception``
    in model code does not swallow it."""


class CellTimeout(CellInterrupt):
    """The cell ran past its time limit."""


class CellCancelled(CellInterrupt):
    """The caller was interrupted (Ctrl+C) or the REPL is shutting down."""


def _raise_in(ident: int, exc_type: type[BaseException] | None) -> None:
    _set_async_exc(ident, ctypes.py_object(exc_type) if exc_type is not None
                   else ctypes.py_object())


class Job:
    """One cell handed to an executor thread."""

    __slots__ = ("code", "namespace", "lock", "event", "ident", "started", "done", "cancelled",
                 "stop_reason", "exc", "answer")

    def __init__(self, code: CodeType, namespace: dict[str, Any]):
        self.code = code
        self.namespace = namespace
        self.lock = threading.Lock()
        self.event = threading.Event()
        self.ident: int | None = None
        self.started = False
        self.done = False
        self.cancelled = False
        self.stop_reason: type[CellInterrupt] | None = None
        self.exc: BaseException | None = None
        # ``(final_answer, answer_content)`` as text, made on the cell's thread inside its time
        # limit (a hostile ``__str__`` cannot run on the host outside every limit); None if the
        # cell was stopped first.
        self.answer: tuple[str | None, str | None] | None = None

    def interrupt(self, exc_type: type[CellInterrupt]) -> bool:
        """Raise ``exc_type`` in the running cell. False when there is nothing left to stop."""
        with self.lock:
            if self.done:
                return False
            if self.stop_reason is None:
                self.stop_reason = exc_type
            if not self.started:
                self.cancelled = True
                self.event.set()
                return False
            assert self.ident is not None
            _raise_in(self.ident, exc_type)
            return True


#: C stack of a cell's thread. Deep recursion through C code (``repr`` of a list nested 200,000
#: deep, with the recursion limit raised) overflows a default 8 MB thread stack and kills the
#: whole host with SIGSEGV; pages are only used as the recursion reaches them.
CELL_STACK_BYTES = 512 * 2**20
#: The highest recursion limit a cell may set (``sys.setrecursionlimit`` called on a cell's
#: thread is clamped to it): deep enough for real code, shallow enough for CELL_STACK_BYTES, so
#: that going deeper is a ``RecursionError`` in the cell, never a dead host.
MAX_CELL_RECURSION = 50_000
_STACK_LOCK = threading.Lock()
_CELL_THREAD = threading.local()
_original_setrecursionlimit = sys.setrecursionlimit


def _setrecursionlimit(limit: int) -> None:
    if getattr(_CELL_THREAD, "active", False) and isinstance(limit, int) and \
            limit > MAX_CELL_RECURSION:
        limit = MAX_CELL_RECURSION
    _original_setrecursionlimit(limit)


_setrecursionlimit.__doc__ = _original_setrecursionlimit.__doc__


def install_recursion_cap() -> None:
    """Clamp ``sys.setrecursionlimit`` on cell threads (idempotent; other threads unchanged)."""
    if sys.setrecursionlimit is not _setrecursionlimit:
        sys.setrecursionlimit = _setrecursionlimit


class Executor:
    """A daemon thread that runs the jobs put into its queue, one after another."""

    def __init__(self, name: str, capture: _capture.Capture, cwd: Sequence[str],
                 on_cwd: Callable[[str], None]):
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._capture = capture
        self._cwd = cwd
        self._on_cwd = on_cwd
        self.abandoned = False
        self.cwd_isolated = False
        self._ready = threading.Event()
        with _STACK_LOCK:  # threading.stack_size is process-wide: set it for this thread only
            previous = threading.stack_size(CELL_STACK_BYTES)
            try:
                self.thread = threading.Thread(target=self._main, name=name, daemon=True)
                self.thread.start()
            finally:
                threading.stack_size(previous)
        self._ready.wait()

    def submit(self, job: Job) -> None:
        self._queue.put(job)

    def stop(self) -> None:
        """Ask the thread to exit once it is idle."""
        self._queue.put(None)

    def _main(self) -> None:
        _CELL_THREAD.active = True
        _capture.CAPTURE.set(self._capture)
        try:
            if self._cwd:
                self.cwd_isolated = _capture.isolate_cwd(self._cwd)
        finally:
            self._ready.set()
        while True:
            job = self._queue.get()
            if job is None:
                return
            self._run(job)
            job = None  # do not keep the last cell's frames alive while idle
            if self.abandoned:
                return

    def _run(self, job: Job) -> None:
        exc: BaseException | None = None
        try:
            try:
                with job.lock:
                    if job.cancelled:
                        return
                    job.ident = threading.get_ident()
                    job.started = True
                # From here on a stop may be raised at any point; both handlers catch it.
                _capture.CAPTURE.set(self._capture)
                exec(job.code, job.namespace)  # running model code is the point
            except BaseException as e:  # noqa: BLE001 - every exit of a cell is a cell result
                exc = e
            current = job.namespace.get("answer")
            # A cell that rebound ``answer`` to something else gets its dict back afterwards
            # (restore_reserved): that dict is then read on the host, as plain text only.
            job.answer = answer_fields(current) if isinstance(current, dict) else None
        except BaseException as e:  # noqa: BLE001 - a stop landing inside the handlers above
            exc = exc or e
        # Mark the job done and clear any stop still pending, so that it cannot hit whatever
        # this thread does next. A stop raised before the clear is caught and we try again.
        while True:
            try:
                with job.lock:
                    job.done = True
                    _raise_in(job.ident, None)  # type: ignore[arg-type]
                break
            except CellInterrupt as e:
                if exc is None:
                    exc = e
        if self.cwd_isolated and not self.abandoned:
            try:
                self._on_cwd(_getcwd())
            except Exception:  # noqa: BLE001 - a deleted directory: keep the last known one
                pass
        job.exc = exc
        del exc
        job.event.set()


def _getcwd() -> str:
    return os.getcwd()


# --- the reaper of abandoned cells ------------------------------------------------------------

_reaper_lock = threading.Lock()
_abandoned: list[Job] = []
_reaper: threading.Thread | None = None
REAPER_INTERVAL = 0.5


def abandon(job: Job) -> None:
    """Keep raising in an abandoned cell's thread until it finishes."""
    global _reaper
    with _reaper_lock:
        _abandoned.append(job)
        if _reaper is None or not _reaper.is_alive():
            # Started outside any REPL scope so that it neither captures nor moves directories.
            ctx_thread = threading.Thread(target=_reap, name="rlm-local-reaper", daemon=True)
            _reaper = ctx_thread
            _capture._original_thread_start(ctx_thread)


def _reap() -> None:
    global _reaper
    while True:
        time.sleep(REAPER_INTERVAL)
        with _reaper_lock:
            pending = [j for j in _abandoned if not j.done]
            _abandoned[:] = pending
            if not pending:
                _reaper = None
                return
        for job in pending:
            job.interrupt(job.stop_reason or CellTimeout)
