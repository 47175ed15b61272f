"""What a cell thread of the local REPL changes in the host process: where its output goes, its
working directory, its recursion limit. (The cells themselves run on the REPL core shared with
every isolated worker, :mod:`rlm_isolation.worker`.)

How output is routed
--------------------
``sys.stdout`` and ``sys.stderr`` are process-wide, so swapping them per cell (what the reference
library does) makes concurrent REPLs in different threads steal each other's output. Instead, a
:class:`StreamProxy` is installed once on each stream. Every write looks at the context variable
:data:`CAPTURE`: when the writing thread belongs to a REPL it holds that REPL's core
(:class:`~rlm_isolation.worker.REPLCore`) and the text goes to the cell's bounded buffers;
otherwise it goes to the stream that was in place before (the terminal, pytest's capture, ...).
Nothing is ever swapped back and forth, so two REPLs can never exchange output, whatever the
timing.

A new thread starts with an empty context, so ``threading.Thread.start`` is wrapped (once, for
the whole process) to carry the starter's capture target into the new thread. A thread a cell
starts (directly, or through ``concurrent.futures`` / ``asyncio``'s default executor) therefore
writes into the REPL that started it. The wrapper does nothing for threads started outside a
REPL. Threads made with the low-level ``_thread.start_new_thread`` are not followed.

Working directories
-------------------
The working directory is process-wide too. On Linux a thread can get a private one: after
``unshare(CLONE_FS)`` its ``chdir`` no longer affects other threads (threads it then starts share
its directory with it). Each REPL's executor thread does this and moves into the REPL's own
directory, so a cell's relative paths and ``os.chdir`` stay inside that REPL. Where ``unshare`` is
unavailable (other systems, seccomp filters) :func:`isolate_cwd` returns False and cells run in
the process's working directory, where ``os.chdir`` is process-wide.

Recursion
---------
Deep recursion through C code (``repr`` of a list nested 200,000 deep, with the recursion limit
raised) overflows a default 8 MB thread stack and kills the whole host with SIGSEGV. Cell threads
get a :data:`CELL_STACK_BYTES` stack (pages are only used as the recursion reaches them) and
``sys.setrecursionlimit`` called on one is clamped to :data:`MAX_CELL_RECURSION`, so that going
deeper is a ``RecursionError`` in the cell, never a dead host.
"""

from __future__ import annotations

import contextvars
import ctypes
import os
import sys
import threading
from collections.abc import Sequence
from typing import Any

from rlm_isolation.worker import _THREAD_START, REPLCore, _Stream

# The REPL whose cell the current thread runs (None outside REPL cells): its output goes there.
CAPTURE: contextvars.ContextVar[REPLCore | None] = contextvars.ContextVar(
    "rlm_local_capture", default=None)

# True while a cell thread with a private working directory calls back into the host: threads
# started then belong to the host (the kernel), so they are moved back to the process's directory.
HOST_CWD: contextvars.ContextVar[bool] = contextvars.ContextVar("rlm_local_host_cwd", default=False)


# --- the stream proxies ---------------------------------------------------------------


class StreamProxy:
    """Stands in for ``sys.stdout`` / ``sys.stderr`` and routes each write by thread.

    Anything not defined here is looked up on the wrapped stream, so code that asks for
    ``encoding``, ``fileno()`` and the like keeps working.
    """

    def __init__(self, wrapped: Any, stream: str):
        self._rlm_wrapped = wrapped
        self._rlm_stream = stream

    def write(self, text: str) -> int:
        capture = CAPTURE.get()
        if capture is not None:
            if not isinstance(text, str):
                raise TypeError(f"write() argument must be str, not {type(text).__name__}")
            capture.write(self._rlm_stream, text)
            return len(text)
        wrapped = self._rlm_wrapped
        if wrapped is None:
            return len(text)
        return wrapped.write(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if CAPTURE.get() is not None:
            return
        wrapped = self._rlm_wrapped
        if wrapped is not None:
            wrapped.flush()

    def isatty(self) -> bool:
        # Captured output is not a terminal: libraries must not send colour codes or pagers.
        if CAPTURE.get() is not None or self._rlm_wrapped is None:
            return False
        try:
            return bool(self._rlm_wrapped.isatty())
        except Exception:  # noqa: BLE001 - a closed stream is not a terminal
            return False

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    @property
    def closed(self) -> bool:
        return False

    @property
    def buffer(self) -> Any:
        capture = CAPTURE.get()
        if capture is not None:
            return _Stream(capture, self._rlm_stream).buffer
        return self._rlm_wrapped.buffer

    @property
    def encoding(self) -> str:
        return getattr(self._rlm_wrapped, "encoding", None) or "utf-8"

    @property
    def errors(self) -> str:
        return getattr(self._rlm_wrapped, "errors", None) or "strict"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_rlm_"):
            raise AttributeError(name)
        return getattr(self._rlm_wrapped, name)

    def __repr__(self) -> str:
        return f"<rlm local-REPL proxy for sys.{self._rlm_stream} -> {self._rlm_wrapped!r}>"


# --- installation -----------------------------------------------------------------------

_install_lock = threading.Lock()
_thread_start_patched = False
_original_thread_start = _THREAD_START


def _start_with_capture(self: threading.Thread) -> None:
    capture = CAPTURE.get()
    host_cwd = HOST_CWD.get()
    if capture is None and not host_cwd:
        _original_thread_start(self)
        return
    run = self.run

    def run_in_scope() -> None:
        if host_cwd:
            move_to_process_cwd()
        if capture is not None:
            CAPTURE.set(capture)
        try:
            run()
        finally:
            # Drop the instance attribute: it refers to the thread and would keep a cycle.
            self.__dict__.pop("run", None)

    self.run = run_in_scope  # type: ignore[method-assign]
    _original_thread_start(self)


def install() -> None:
    """Put the proxies on ``sys.stdout`` / ``sys.stderr`` and wrap ``Thread.start``.

    Idempotent and cheap when already done. It is called before every cell because some code
    (pytest, ``contextlib.redirect_stdout`` in the host) replaces ``sys.stdout`` from time to time;
    the new stream is then wrapped in turn.
    """
    global _thread_start_patched
    if (isinstance(sys.stdout, StreamProxy) and isinstance(sys.stderr, StreamProxy)
            and _thread_start_patched):
        return
    with _install_lock:
        if not isinstance(sys.stdout, StreamProxy):
            sys.stdout = StreamProxy(sys.stdout, "stdout")
        if not isinstance(sys.stderr, StreamProxy):
            sys.stderr = StreamProxy(sys.stderr, "stderr")
        if not _thread_start_patched:
            threading.Thread.start = _start_with_capture  # type: ignore[method-assign]
            _thread_start_patched = True


# --- per-thread working directories (Linux) -----------------------------------------------

_CLONE_FS = 0x00000200
_libc: Any = None
_unshare_works: bool | None = None


def _unshare_fs() -> bool:
    global _libc, _unshare_works
    if _unshare_works is False or not sys.platform.startswith("linux"):
        return False
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        ok = _libc.unshare(_CLONE_FS) == 0
    except Exception:  # noqa: BLE001 - no libc symbol, no unshare: fall back
        ok = False
    if not ok:
        _unshare_works = False
    return ok


def isolate_cwd(directories: Sequence[str]) -> bool:
    """Give the calling thread a private working directory and enter the first of
    ``directories`` that exists.

    Returns False (and changes nothing) where threads cannot have their own directory.
    """
    if not _unshare_fs():
        return False
    for directory in directories:
        try:
            os.chdir(directory)
            break
        except OSError:
            continue
    return True


def move_to_process_cwd() -> None:
    """From a thread that shares a REPL's directory: take a private one at the process's own."""
    try:
        target = os.readlink("/proc/self/cwd")  # the main thread's directory
    except OSError:
        return
    if _unshare_fs():
        try:
            os.chdir(target)
        except OSError:
            pass


# --- the recursion cap of cell threads ----------------------------------------------------

#: C stack of a cell's thread.
CELL_STACK_BYTES = 512 * 2**20
#: The highest recursion limit a cell may set (``sys.setrecursionlimit`` called on a cell's
#: thread is clamped to it): deep enough for real code, shallow enough for CELL_STACK_BYTES.
MAX_CELL_RECURSION = 50_000
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


def enter_cell_thread(capture: REPLCore, directories: Sequence[str]) -> bool:
    """Make the calling thread a cell thread of ``capture``'s REPL: its output goes there, its
    recursion limit is capped, and it gets a private working directory (the first of
    ``directories`` that exists; see :func:`isolate_cwd`, whose result this returns)."""
    _CELL_THREAD.active = True
    CAPTURE.set(capture)
    return isolate_cwd(directories) if directories else False
