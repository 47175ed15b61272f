"""Shared helpers of the test_semantics_*.py files: a scripted OpenAI-compatible server on
127.0.0.1 whose replies are billed with known usage, so usage totals can be checked exactly."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rlm import RLM
from rlm_testkit.servers import OpenAICompatibleServer, Reply

_CTX = re.compile(r"is a (\w+) with (\d+) total characters")


def repl(code: str, prose: str = "Next step.") -> str:
    return f"{prose}\n```repl\n{code}\n```"


def is_rlm_turn(messages: list[dict[str, Any]]) -> bool:
    """A request made by an RLM loop (system prompt about the REPL), not a plain sub-call."""
    return bool(messages) and messages[0].get("role") == "system" and "REPL" in messages[0]["content"]


def context_chars(messages: list[dict[str, Any]]) -> int:
    """The context length an RLM turn describes in its first user message."""
    m = _CTX.search(messages[1]["content"])
    assert m, messages[1]["content"]
    return int(m.group(2))


def turn_no(messages: list[dict[str, Any]]) -> int:
    """0 for the first turn of a run, 1 for the second, ..."""
    return sum(1 for m in messages if m["role"] == "assistant")


@dataclass
class Billed:
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost: float
    kind: str  # "turn" or "plain"
    text: str


@dataclass
class Ledger:
    """A responder wrapper that gives every reply distinct, known usage and records it."""

    answer: Callable[[list[dict[str, Any]], dict[str, Any]], str]
    cost_per_call: float | None = 0.001
    billed: list[Billed] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _n: int = 0

    def __call__(self, messages: list[dict[str, Any]], body: dict[str, Any]) -> Reply:
        text = self.answer(messages, body)
        if isinstance(text, Reply):
            reply = text
        else:
            reply = Reply(text)
        with self._lock:
            self._n += 1
            k = self._n
        if reply.prompt_tokens is None:
            reply.prompt_tokens = 100 + 7 * k
        if reply.completion_tokens is None:
            reply.completion_tokens = 10 + 3 * k
        if reply.cost is None and self.cost_per_call is not None:
            reply.cost = self.cost_per_call * k
        with self._lock:
            self.billed.append(Billed(body.get("model", ""), reply.prompt_tokens,
                                      reply.completion_tokens, reply.cost or 0.0,
                                      "turn" if is_rlm_turn(messages) else "plain", reply.text))
        return reply

    def totals(self, model: str | None = None) -> tuple[int, int, int, float]:
        rows = [b for b in self.billed if model is None or b.model == model]
        return (len(rows), sum(b.prompt_tokens for b in rows), sum(b.completion_tokens for b in rows),
                sum(b.cost for b in rows))


def openai_kwargs(server: OpenAICompatibleServer, model: str, **extra: Any) -> dict[str, Any]:
    return {"base_url": server.base_url, "api_key": "test-key", "model_name": model,
            "max_retries": 0, **extra}


def make_rlm(server: OpenAICompatibleServer, responder: Any, model: str = "root-model",
             **kw: Any) -> RLM:
    server.responder = responder
    kw.setdefault("max_iterations", 6)
    return RLM(backend="openai", backend_kwargs=openai_kwargs(server, model), **kw)


def pending_tasks(r: RLM) -> list[asyncio.Task[Any]]:
    """Tasks still alive on the RLM tree's event loop (in-flight model calls)."""
    runner = r._resources.loop
    if not runner.active:
        return []
    loop = runner.loop

    async def collect() -> list[asyncio.Task[Any]]:
        me = asyncio.current_task()
        return [t for t in asyncio.all_tasks() if t is not me and not t.done()]

    return asyncio.run_coroutine_threadsafe(collect(), loop).result(5)


def wait_until(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def child_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("rlm-child")]
