"""Typed events the kernel sends to logger sinks, in the order they happen.

Every event carries ``run_id`` (one per ``completion()``; children have their own) and
``depth``; child runs also carry ``parent_run_id``. Each sub-call has a ``call_id``, unique within
its run, on both its ``SubcallStarted`` and ``SubcallCompleted``; the ``RunStarted`` of the child
run an ``rlm`` sub-call started carries that id as ``parent_call_id``, so a sink links a child to
the exact call, even among many concurrent ones with the same prompt.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from .types import to_jsonable


@dataclass(kw_only=True)
class Event:
    run_id: str
    depth: int = 0
    parent_run_id: str | None = None
    timestamp: float = field(default_factory=time.time)

    @property
    def type(self) -> str:
        return _TYPE_NAMES[type(self)]

    def to_dict(self) -> dict[str, Any]:
        d = {k: to_jsonable(v) for k, v in asdict(self).items()}
        d["type"] = self.type
        return d


@dataclass(kw_only=True)
class RunStarted(Event):
    root_model: str
    backend: str
    environment: str
    settings: dict[str, Any]
    context_type: str
    context_lengths: list[int]
    root_prompt: str | None = None
    parent_call_id: str | None = None  # the parent's sub-call that started this child run


@dataclass(kw_only=True)
class IterationStarted(Event):
    iteration: int


@dataclass(kw_only=True)
class CellExecuted(Event):
    iteration: int
    code: str
    result: dict[str, Any]


@dataclass(kw_only=True)
class IterationCompleted(Event):
    iteration: int
    response: str
    code_blocks: list[dict[str, Any]]
    final_answer: str | None
    iteration_time: float
    usage: dict[str, Any] | None = None


@dataclass(kw_only=True)
class SubcallStarted(Event):
    kind: str  # "llm" or "rlm"
    model: str
    prompt_preview: str
    call_id: str | None = None  # unique within the run; the same on the SubcallCompleted


@dataclass(kw_only=True)
class SubcallCompleted(Event):
    kind: str
    model: str
    duration: float
    error: str | None
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float | None = None
    call_id: str | None = None


@dataclass(kw_only=True)
class Compacted(Event):
    messages_before: int
    messages_after: int
    tokens_before: int
    tokens_after: int = 0
    strategy: str = ""


@dataclass(kw_only=True)
class LimitExceeded(Event):
    error_type: str
    message: str
    partial_answer: str | None


@dataclass(kw_only=True)
class RunFinished(Event):
    response: str | None
    execution_time: float
    usage_summary: dict[str, Any]
    status: str  # a rlm.types.RunStatus value: "completed", "max_iterations", "timeout", ...
    error: str | None = None
    #: a rlm.types.AnswerSource value: how ``response`` was obtained
    answer_source: str | None = None


_TYPE_NAMES: dict[type, str] = {
    RunStarted: "run_started",
    IterationStarted: "iteration_started",
    CellExecuted: "cell_executed",
    IterationCompleted: "iteration_completed",
    SubcallStarted: "subcall_started",
    SubcallCompleted: "subcall_completed",
    Compacted: "compacted",
    LimitExceeded: "limit_exceeded",
    RunFinished: "run_finished",
}
