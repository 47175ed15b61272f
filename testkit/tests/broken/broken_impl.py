"""A correct in-process backend, sink, strategy and tool provider, and copies with one bug each.

The kit must pass the correct ones and fail exactly the named standard tests on each broken one
(``testkit/tests/test_kit_catches_bugs.py``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Sequence
from typing import Any

from rlm.exceptions import BackendError, BackendTimeoutError
from rlm.plugin import ModelResponse, Tool, Usage
from rlm.plugin import BaseBackend
from rlm_plugins.compaction.summarize import SummarizeCompaction


def _in_thread(fn: Any, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
    fut: concurrent.futures.Future = concurrent.futures.Future()

    def run() -> None:
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001
            fut.set_exception(exc)

    threading.Thread(target=run, daemon=True).start()
    return fut


class GoodBackend(BaseBackend):
    """Calls ``responder(messages, **sampling) -> ModelResponse``; honours ``timeout``."""

    def __init__(self, responder: Any, model_name: str = "good", timeout: float | None = None):
        self.responder = responder
        self.model_name = model_name
        self.timeout = timeout

    def _call(self, messages: Sequence[Any], sampling: dict[str, Any]) -> ModelResponse:
        return self.responder(list(messages), **sampling)

    def completion(self, messages: Sequence[Any], **sampling: Any) -> ModelResponse:
        fut = _in_thread(self._call, messages, sampling)
        try:
            return fut.result(self.timeout)
        except concurrent.futures.TimeoutError:
            raise BackendTimeoutError(f"no reply within {self.timeout} s", backend="good") from None

    async def acompletion(self, messages: Sequence[Any], **sampling: Any) -> ModelResponse:
        fut = _in_thread(self._call, messages, sampling)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(fut), self.timeout)
        except TimeoutError:
            raise BackendTimeoutError(f"no reply within {self.timeout} s", backend="good") from None


class SwappedUsageBackend(GoodBackend):
    """Bug: input and output token counts are swapped."""

    def _call(self, messages: Sequence[Any], sampling: dict[str, Any]) -> ModelResponse:
        r = super()._call(messages, sampling)
        return ModelResponse(r.text, Usage(r.usage.output_tokens, r.usage.input_tokens,
                                           r.usage.cost, r.usage.estimated), r.model,
                             r.finish_reason)


class DropsSamplingBackend(GoodBackend):
    """Bug: sampling arguments never reach the provider."""

    def _call(self, messages: Sequence[Any], sampling: dict[str, Any]) -> ModelResponse:
        return super()._call(messages, {})


class WrapsErrorsBackend(GoodBackend):
    """Bug: every provider failure becomes a plain BackendError (nothing is retryable)."""

    def _call(self, messages: Sequence[Any], sampling: dict[str, Any]) -> ModelResponse:
        try:
            return super()._call(messages, sampling)
        except Exception as exc:  # noqa: BLE001
            raise BackendError(f"call failed: {exc}") from None


class IgnoresTimeoutBackend(GoodBackend):
    """Bug: the timeout is accepted and ignored."""

    def completion(self, messages: Sequence[Any], **sampling: Any) -> ModelResponse:
        return self._call(messages, sampling)

    async def acompletion(self, messages: Sequence[Any], **sampling: Any) -> ModelResponse:
        return await asyncio.to_thread(self._call, messages, sampling)


class SharedStateBackend(GoodBackend):
    """Bug: the reply is kept on the instance, so concurrent calls see each other's replies."""

    def _call(self, messages: Sequence[Any], sampling: dict[str, Any]) -> ModelResponse:
        self.last = super()._call(messages, sampling)
        time.sleep(0.02)
        return self.last


class BlocksLoopBackend(GoodBackend):
    """acompletion calls the blocking completion directly (plugins.md's echo shape, with a wait)."""

    async def acompletion(self, messages: Sequence[Any], **sampling: Any) -> ModelResponse:
        return self.completion(messages, **sampling)


class GoodSink:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self._lock = threading.Lock()

    def handle(self, event: Any) -> None:
        with self._lock:
            self.lines.append(f"{event.type} {event.to_dict()}")

    def close(self) -> None:
        pass


class RaisesOnCompactedSink(GoodSink):
    """Bug: an event type it does not know makes it raise."""

    def handle(self, event: Any) -> None:
        if event.type == "compacted":
            raise KeyError(event.type)
        super().handle(event)


class MutatingCompaction(SummarizeCompaction):
    """Bug: compact() empties the caller's list while building the new one."""

    def compact(self, messages: Any, *, summarize: Any) -> list[Any]:
        out = super().compact(list(messages), summarize=summarize)
        del messages[2:]
        return out


def shout(text: str) -> str:
    return text.upper()


class GoodTools:
    def tools(self, run: Any) -> dict[str, Tool]:
        return {"shout": Tool("shout", shout, "shout(text) -> text in capitals")}


class ReservedNameTools:
    """Bug: a tool named like a REPL reserved name, and no description."""

    def tools(self, run: Any) -> dict[str, Tool]:
        return {"shout": Tool("shout", shout, "shout(text)"), "context": Tool("context", shout)}
