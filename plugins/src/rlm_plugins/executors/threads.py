"""The ``threads`` executor: jobs on a bounded pool of threads in this process.

Model calls spend their time waiting on the network, so threads give all the concurrency a
batch of RLM completions needs on one machine; the REPL cells of concurrent runs are isolated
from each other by the environment (the local REPL captures output per thread).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from rlm.exceptions import ConfigurationError

_SLICE = 0.05  # the iteration wakes up this often to notice cancel()
_DONE = object()


class _ThreadRun:
    def __init__(self, fn: Callable[[Any], Any], items: Iterable[Any], concurrency: int,
                 name: str):
        self._fn = fn
        self._items = iter(items)
        self._items_lock = threading.Lock()
        self._results: queue.Queue[Any] = queue.Queue()
        self._cancelled = threading.Event()
        self._next = 0
        self._workers = concurrency
        self._name = name
        self._started = False

    def _take(self) -> tuple[int, Any] | None:
        with self._items_lock:
            if self._cancelled.is_set():
                return None
            try:
                item = next(self._items)
            except StopIteration:
                return None
            except BaseException as exc:  # noqa: BLE001 - the producer failed: report it once
                self._cancelled.set()
                self._results.put((-1, None, exc))
                return None
            index, self._next = self._next, self._next + 1
            return index, item

    def _worker(self) -> None:
        try:
            while True:
                got = self._take()
                if got is None:
                    return
                index, item = got
                try:
                    result = self._fn(item)
                except BaseException as exc:  # noqa: BLE001 - the item's error, not ours
                    self._results.put((index, None, exc))
                else:
                    self._results.put((index, result, None))
        finally:
            self._results.put(_DONE)

    def _start(self) -> None:
        self._started = True
        for k in range(self._workers):
            threading.Thread(target=self._worker, name=f"{self._name}-{k}", daemon=True).start()

    def __iter__(self) -> Iterator[tuple[int, Any, BaseException | None]]:
        if not self._started:
            self._start()
        try:
            yield from self._drain()
        finally:  # the consumer stopped early (break, an exception): start nothing new
            self._cancelled.set()

    def _drain(self) -> Iterator[tuple[int, Any, BaseException | None]]:
        running = self._workers
        while running:
            try:
                got = self._results.get(timeout=_SLICE)
            except queue.Empty:
                continue
            if got is _DONE:
                running -= 1
                continue
            index, result, error = got
            if index < 0:  # the items iterable raised: that is the caller's bug, raise it
                raise error
            yield index, result, error
            if self._cancelled.is_set() and self._results.empty():
                # In-flight jobs cannot be interrupted from outside a thread; their callers
                # cancel them through their own means (an RLM's cancel()). Stop waiting.
                return

    def cancel(self) -> None:
        self._cancelled.set()


class ThreadExecutor:
    """``ThreadExecutor(max_workers=None)``: ``map`` runs at most ``min(concurrency,
    max_workers)`` jobs at once, each on a daemon thread of its own pool."""

    in_process = True  # jobs share this process's objects (an isolated plugin manager)

    def __init__(self, max_workers: int | None = None):
        if max_workers is not None and (not isinstance(max_workers, int) or max_workers < 1):
            raise ConfigurationError(
                f"threads executor: max_workers must be an integer >= 1, got {max_workers!r}.")
        self.max_workers = max_workers

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any], *,
            concurrency: int) -> _ThreadRun:
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigurationError(
                f"concurrency must be an integer >= 1, got {concurrency!r}.")
        workers = min(concurrency, self.max_workers or concurrency)
        return _ThreadRun(fn, items, workers, "rlm-exec")

    def describe(self) -> str:
        return f"threads in this process (pid {__import__('os').getpid()})"

    def close(self) -> None:
        pass
