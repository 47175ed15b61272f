"""Base classes plugin authors may subclass. They fill in the optional parts of the protocols."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from .types import Message, ModelResponse


def estimate_tokens(messages: Sequence[Message] | str) -> int:
    """A provider-neutral token estimate: about four characters per token, plus framing."""
    if isinstance(messages, str):
        return max(1, (len(messages) + 3) // 4)
    total = 0
    for m in messages:
        content = m.get("content", "")
        if not isinstance(content, str):
            content = str(content)
        total += (len(content) + 3) // 4 + 4
    return max(1, total)


class BaseBackend:
    """Convenience base for backends: subclasses implement ``completion``.

    ``acompletion`` defaults to running ``completion`` in a worker thread; override it with a real
    async client for concurrency without threads. ``context_window`` and ``count_tokens`` feed
    compaction; override them when the provider knows better than the estimates.
    """

    model_name: str = "unknown"
    default_context_window: int = 128_000
    #: The sampling-argument names this backend accepts (name -> description), checked by
    #: ``rlm run -o``; None: not declared, every option is passed as given.
    sampling_options: Mapping[str, str] | None = None

    def completion(self, messages: Sequence[Message], **sampling: Any) -> ModelResponse:
        raise NotImplementedError

    async def acompletion(self, messages: Sequence[Message], **sampling: Any) -> ModelResponse:
        return await asyncio.to_thread(self.completion, messages, **sampling)

    def context_window(self, model: str | None = None) -> int | None:
        return self.default_context_window

    def count_tokens(self, messages: Sequence[Message]) -> int:
        return estimate_tokens(messages)

    def close(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} model={self.model_name!r}>"
