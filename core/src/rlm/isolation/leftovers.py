"""What isolated environments release when the program ends without shutting them down.

Two registries, both emptied by ``atexit``:

* every :class:`~rlm.isolation.repl.IsolatedREPL` that was started and not yet shut down
  (:func:`track_open` / :func:`untrack_open`): at exit each is shut down, so a sandbox, container or
  worker process and its run directory do not outlive a program that never called
  ``RLM.close()`` (persistent mode) or was interrupted between runs;
* :class:`Leftovers`, per provider, for remote resources whose deletion may fail while the
  program runs (a Docker container, a Daytona sandbox): the environment registers a release
  function when it creates one and discards it once deleted; what is still there at exit is
  released then, once more.
"""

from __future__ import annotations

import atexit
import threading
import weakref
from collections.abc import Callable, Hashable
from typing import Any

_open: weakref.WeakSet[Any] = weakref.WeakSet()
_open_lock = threading.Lock()


def track_open(repl: Any) -> None:
    """``repl`` (anything with ``shutdown()``) is shut down at exit unless untracked first."""
    with _open_lock:
        _open.add(repl)


def untrack_open(repl: Any) -> None:
    with _open_lock:
        _open.discard(repl)


_registries: list[Leftovers] = []


@atexit.register
def _at_exit() -> None:
    """Open REPLs are shut down first (the graceful path), then what is left is released."""
    with _open_lock:
        repls = list(_open)
        _open.clear()
    for repl in repls:
        try:
            repl.shutdown()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass
    for registry in list(_registries):
        registry.release_all()


class Leftovers:
    """Release functions of remote resources still alive, run at exit (each at most once)."""

    def __init__(self) -> None:
        self._items: dict[Hashable, Callable[[], Any]] = {}
        self._lock = threading.Lock()
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


__all__ = ["Leftovers", "track_open", "untrack_open"]
