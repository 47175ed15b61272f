"""The tree-wide concurrency bound: how many child runs and sub-calls a run tree has in flight.

``max_concurrent_subcalls`` bounds one batched call; without more, every child of a batch may
start its own batch, and a tree of depth 3 with a limit of 16 runs 16 + 16² + 16³ environments
at once. :class:`TreeSlots` is shared by every run of one tree (the root makes it, children
inherit it) and bounds:

* **child runs working at once** (each with its environment) to the root's
  ``max_concurrent_subcalls``. A child run takes a slot before it starts and gives it back when it
  ends. A run that waits for its own children gives its slot back while it waits (it does no work
  then) and takes one again afterwards, so the bound never deadlocks: every slot is held by a run
  that is working, and each waiting run has a working descendant. Environments alive (working or
  waiting) are therefore at most ``max_concurrent_subcalls × (max_depth - 1)``.
* **plain model sub-calls in flight** (``llm_query``, ``llm_query_batched`` items, a recursive
  call past ``max_depth``) across the tree to the same number, on the tree's event loop.

Threading: :meth:`acquire` / :meth:`release` are called from child threads and cell threads;
:meth:`calls` returns an ``asyncio.Semaphore`` bound to the tree's one event loop (children share
their root's loop), created on first use from that loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from ._async import WAIT_SLICE


class TreeSlots:
    def __init__(self, limit: int):
        self.limit = limit
        self._free = limit
        self._cond = threading.Condition()
        self._calls: asyncio.Semaphore | None = None
        #: The most child runs ever working at once (for tests and benchmarks).
        self.peak = 0

    def acquire(self, stop: Callable[[], bool]) -> bool:
        """Take a slot for a child run; False (nothing taken) when ``stop()`` turns true while
        waiting (the run was cancelled or hit a limit)."""
        with self._cond:
            while self._free <= 0:
                if stop():
                    return False
                self._cond.wait(WAIT_SLICE)
            self._free -= 1
            self.peak = max(self.peak, self.limit - self._free)
            return True

    def release(self) -> None:
        with self._cond:
            self._free = min(self.limit, self._free + 1)
            self._cond.notify()

    @property
    def working(self) -> int:
        with self._cond:
            return self.limit - self._free

    def calls(self) -> asyncio.Semaphore:
        """The semaphore bounding plain sub-calls; call it on the tree's event loop."""
        if self._calls is None:
            self._calls = asyncio.Semaphore(self.limit)
        return self._calls
