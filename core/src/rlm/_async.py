"""One event loop per RLM tree, on a daemon thread, for the backends' async paths.

Every model call the kernel makes (root turns, ``llm_query``, batches, children's turns) is
scheduled on this loop, so the whole tree shares one loop and the backends' async connection
pools, instead of a new loop (and new clients) per batch. Waiting for a call happens on the
caller's thread with :func:`wait`, which wakes up regularly: a cell stopped by its time limit or by
Ctrl+C is interrupted *in the wait*, and the call it was waiting for is cancelled on the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

#: How often a waiting thread wakes up. Exceptions raised asynchronously in the thread (a cell's
#: time limit, Ctrl+C) are delivered at the next wake-up, so this bounds how long they wait.
WAIT_SLICE = 0.05

#: Worker threads of the loop's default executor: backends without a native async client run
#: their blocking ``completion`` there (``BaseBackend.acompletion``), so it must allow as many
#: concurrent calls as a wide ``rlm_query_batched`` makes.
EXECUTOR_THREADS = 64


class LoopRunner:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=EXECUTOR_THREADS, thread_name_prefix="rlm-async-worker")
                loop.set_default_executor(executor)
                started = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(started.set)
                    loop.run_forever()

                thread = threading.Thread(target=run, name="rlm-async", daemon=True)
                thread.start()
                started.wait()
                self._loop, self._thread, self._executor = loop, thread, executor
            return self._loop

    @property
    def active(self) -> bool:
        """True once the loop has been started (and not closed)."""
        loop = self._loop
        return loop is not None and not loop.is_closed()

    def in_loop_thread(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the loop; cancelling the returned future cancels the task."""
        if self.in_loop_thread():
            coro.close()
            raise RuntimeError("LoopRunner.submit called from its own loop thread; await instead")
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop from any other thread and wait for its result."""
        return wait(self.submit(coro), timeout)

    def call_later(self, delay: float, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` on the loop thread after ``delay`` seconds (it must not block).

        Returns a function that cancels the call (safe from any thread, idempotent).
        """
        loop = self.loop
        holder: dict[str, asyncio.TimerHandle | None] = {"handle": None}
        cancelled = threading.Event()

        def schedule() -> None:
            if not cancelled.is_set():
                holder["handle"] = loop.call_later(max(0.0, delay), callback)

        def cancel() -> None:
            cancelled.set()

            def do() -> None:
                handle = holder["handle"]
                if handle is not None:
                    handle.cancel()

            if not loop.is_closed():
                try:
                    loop.call_soon_threadsafe(do)
                except RuntimeError:  # the loop closed in between
                    pass

        loop.call_soon_threadsafe(schedule)
        return cancel

    def close(self) -> None:
        with self._lock:
            loop, thread, executor = self._loop, self._thread, self._executor
            self._loop = self._thread = self._executor = None
        if loop is None:
            return

        def stop() -> None:
            # Cancel what is still running and let the cancellations run before stopping (a
            # task that ignores its cancellation gets 2 s).
            tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in tasks:
                task.cancel()
            if not tasks:
                loop.stop()
                return
            done = asyncio.gather(*tasks, return_exceptions=True)
            done.add_done_callback(lambda _: loop.stop())
            loop.call_later(2.0, loop.stop)

        try:
            loop.call_soon_threadsafe(stop)
        except RuntimeError:
            pass
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        if not loop.is_running():
            # Async generators get their finally blocks run, as asyncio.run does (not possible
            # from inside another running loop: they are then dropped, as before).
            if asyncio._get_running_loop() is None:
                finalize = loop.shutdown_asyncgens()
                try:
                    loop.run_until_complete(finalize)
                except Exception:  # noqa: BLE001 - closing must not raise
                    finalize.close()
            loop.close()
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)


def wait(fut: concurrent.futures.Future[T], timeout: float | None = None) -> T:
    """The result of ``fut``, waiting at most ``timeout`` seconds (``TimeoutError`` after that).

    The wait wakes up every :data:`WAIT_SLICE` seconds, so an exception raised in this thread
    asynchronously (a REPL stopping its cell) lands promptly. Whenever the wait ends without a
    result (timeout, interruption, Ctrl+C), ``fut`` is cancelled.
    """
    end = None if timeout is None else time.monotonic() + timeout
    ok = False
    try:
        while True:
            step = WAIT_SLICE
            if end is not None:
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no result within {timeout:g} s")
                step = min(step, left)
            try:
                result = fut.result(step)
            except concurrent.futures.TimeoutError:
                if fut.done():  # the call itself raised TimeoutError: that is its result
                    raise
                continue
            ok = True
            return result
    finally:
        if not ok and not fut.done():
            fut.cancel()
