"""An asyncio server (the Modal emulator's grpclib server, the Daytona emulator's aiohttp app)
served from a daemon thread of its own, for emulators whose server is asynchronous (aiohttp,
grpclib) while the tests that use them are not."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """An event loop running in a daemon thread named ``name``.

    :meth:`start` runs the server's setup coroutine there and returns its result (the port it
    listens on) or raises its error; :meth:`call` runs a plain function on the loop;
    :meth:`stop` runs a teardown coroutine, then stops and closes the loop.
    """

    def __init__(self, name: str):
        self.name = name
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    def start(self, setup: Callable[[], Awaitable[T]], timeout: float = 30.0) -> T:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(_awaited(setup), self.loop)
        try:
            return future.result(timeout)
        except BaseException:
            self.stop()
            raise

    def call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        """``fn()`` run on the loop (where the server's objects live); its result."""
        async def run() -> T:
            return fn()
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, teardown: Callable[[], Awaitable[Any]] | None = None,
             timeout: float = 10.0) -> None:
        if not self._thread.is_alive():
            return
        try:
            if teardown is not None:
                asyncio.run_coroutine_threadsafe(_awaited(teardown), self.loop).result(timeout)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)


async def _awaited(make: Callable[[], Awaitable[T]]) -> T:
    return await make()


__all__ = ["LoopThread"]
