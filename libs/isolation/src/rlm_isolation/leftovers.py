"""What isolated environments release when the program ends without shutting them down.

Two registries, both emptied by ``atexit`` and by ``SIGTERM`` (when the program has no handler
of its own for it, one is installed by the first :func:`track_open` in the main thread: it
releases everything, then ends the process by SIGTERM as before):

* every :class:`~rlm_isolation.repl.IsolatedREPL` that was started and not yet shut down
  (:func:`track_open` / :func:`untrack_open`): at exit each is shut down, so a sandbox, container or
  worker process and its run directory do not outlive a program that never called
  ``RLM.close()`` (persistent mode) or was interrupted between runs;
* :class:`Leftovers`, per provider, for remote resources whose deletion may fail while the
  program runs (a Docker container, a Daytona sandbox): the environment registers a release
  function when it creates one and discards it once deleted; what is still there at exit is
  released then, once more.

What a process killed outright (SIGKILL, the out-of-memory killer) cannot release is reaped by
the next one: every run directory is made by :func:`make_run_dir`, which holds an ``flock`` on a
file in it for as long as the process lives; :func:`reap_run_dirs` (called by every start)
removes the run directories whose lock nobody holds any more.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import shutil
import signal
import tempfile
import threading
import weakref
from collections.abc import Callable, Hashable
from typing import Any

_open: weakref.WeakSet[Any] = weakref.WeakSet()
_open_lock = threading.RLock()  # reentrant: the SIGTERM handler may interrupt its holder
_sigterm_installed = False
OWNER_FILE = ".rlm-owner"  # in every run directory; locked by the process that uses it


def track_open(repl: Any) -> None:
    """``repl`` (anything with ``shutdown()``) is shut down at exit unless untracked first."""
    with _open_lock:
        _open.add(repl)
    _install_sigterm()


def _install_sigterm() -> None:
    """Release everything on SIGTERM too, when the program left SIGTERM's default action (which
    ends the process without ``atexit``); from the main thread only (where Python allows it)."""
    global _sigterm_installed
    if _sigterm_installed or threading.current_thread() is not threading.main_thread():
        return
    _sigterm_installed = True
    with contextlib.suppress(ValueError, OSError):
        if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)


#: Seconds SIGTERM waits for the open REPLs to shut down before the process dies anyway.
SIGTERM_GRACE = 5.0


def _on_sigterm(signum: int, frame: Any) -> None:
    # The release runs here, on the main thread (a REPL whose cell this thread is running can
    # only be shut down from it), watched: if it hangs past SIGTERM_GRACE seconds (a REPL's
    # shutdown that never returns), the process is killed outright rather than ignoring SIGTERM.
    watchdog = threading.Timer(SIGTERM_GRACE, os.kill, (os.getpid(), signal.SIGKILL))
    watchdog.daemon = True
    watchdog.start()
    try:
        _at_exit()
    finally:  # then die of SIGTERM, as the default action would have
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def make_run_dir(prefix: str) -> tuple[str, int]:
    """A new private (0700) directory under the temporary directory and an open descriptor that
    holds an ``flock`` on its :data:`OWNER_FILE`: the lock lasts as long as this process (or until
    the descriptor is closed), so :func:`reap_run_dirs` never takes a live run's directory."""
    path = tempfile.mkdtemp(prefix=prefix)
    staging = os.path.join(path, OWNER_FILE + ".new")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.rename(staging, os.path.join(path, OWNER_FILE))  # visible to reapers only once locked
    return path, fd


def reap_run_dirs(directory: str | None = None) -> list[str]:
    """Remove the run directories (``rlm-*`` with an :data:`OWNER_FILE`) in ``directory``
    (default: the temporary directory) whose owner is gone: a process killed without a chance to
    clean up. Directories this user cannot open are left alone. Returns what was removed."""
    base = directory or tempfile.gettempdir()
    removed: list[str] = []
    try:
        names = [n for n in os.listdir(base) if n.startswith("rlm-")]
    except OSError:
        return removed
    for name in names:
        path = os.path.join(base, name)
        try:
            fd = os.open(os.path.join(path, OWNER_FILE), os.O_RDONLY | os.O_CLOEXEC |
                         os.O_NOFOLLOW)
        except OSError:
            continue  # not a run directory, not ours to read, or still being made
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # its owner is alive
        try:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        finally:
            os.close(fd)
    return removed


def untrack_open(repl: Any) -> None:
    with _open_lock:
        _open.discard(repl)


_registries: list[Leftovers] = []


@atexit.register
def _at_exit() -> None:
    """Open REPLs are shut down first (the graceful path), then what is left is released."""
    # Bounded: SIGTERM may land while this very thread holds the lock.
    locked = _open_lock.acquire(timeout=1.0)
    try:
        repls = list(_open)
        _open.clear()
    finally:
        if locked:
            _open_lock.release()
    for repl in repls:
        try:
            repl.shutdown()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass
    for registry in list(_registries):
        registry.release_all()


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def _start_time(pid: int) -> str:
    """The process's start time (clock ticks since boot), ``""`` when there is no such process."""
    stat_line = _read(f"/proc/{pid}/stat")
    fields = stat_line.rsplit(") ", 1)[-1].split()
    return fields[19] if len(fields) > 19 else ""


def _machine() -> str:
    """This boot of this kernel, and this process's pid namespace: where a pid means a process."""
    try:
        pidns = os.readlink("/proc/self/ns/pid")
    except OSError:
        pidns = ""
    return f"{_read('/proc/sys/kernel/random/boot_id')}/{pidns}"


def host_identity(pid: int | None = None) -> str:
    """A label naming this process (or ``pid``) uniquely on this machine across pid reuse, for
    resources that live outside the process tree (a container): see :func:`host_is_gone`."""
    pid = os.getpid() if pid is None else pid
    return f"{_machine()}/{pid}/{_start_time(pid)}"


def host_is_gone(identity: str) -> bool:
    """Whether the process named by a :func:`host_identity` label is certainly dead: it ran on
    this machine (same boot, same pid namespace) and its pid is free or now another process.
    False for a label of another machine or namespace: there is no telling from here."""
    head, _, start = identity.rpartition("/")
    machine, _, pid = head.rpartition("/")
    if not machine or machine != _machine() or not pid.isdigit() or not start:
        return False
    return _start_time(int(pid)) != start


class Leftovers:
    """Release functions of remote resources still alive, run at exit (each at most once)."""

    def __init__(self) -> None:
        self._items: dict[Hashable, Callable[[], Any]] = {}
        self._lock = threading.RLock()  # reentrant: the SIGTERM handler may interrupt its holder
        _registries.append(self)

    def add(self, key: Hashable, release: Callable[[], Any]) -> None:
        with self._lock:
            self._items[key] = release

    def discard(self, key: Hashable) -> None:
        with self._lock:
            self._items.pop(key, None)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items

    def release_all(self) -> None:
        with self._lock:
            items = list(self._items.values())
            self._items.clear()
        for release in items:
            try:
                release()
            except Exception:  # noqa: BLE001 - best effort at exit
                pass


__all__ = ["OWNER_FILE", "Leftovers", "host_identity", "host_is_gone", "make_run_dir",
           "reap_run_dirs", "track_open", "untrack_open"]
