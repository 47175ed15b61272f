"""Small text forms shared by the run and the helpers' host side."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .types import Message


def as_messages(prompt: str | Sequence[Message] | Any) -> list[Message]:
    """A sub-call's prompt as chat messages (a list of messages is kept as it is)."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, Sequence) and all(isinstance(m, dict) and "role" in m for m in prompt):
        return list(prompt)
    return [{"role": "user", "content": str(prompt)}]


def preview(prompt: Any, n: int = 200) -> str:
    """The start of a prompt, as callbacks and events show it."""
    text = prompt if isinstance(prompt, str) else str(prompt)
    return text[:n]


def error_text(exc: BaseException) -> str:
    """A failed call as the REPL sees it (the text a helper returns instead of raising)."""
    return f"Error: {type(exc).__name__}: {exc}"
