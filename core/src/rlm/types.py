"""Plain data types shared by the kernel and every plugin.

They are dataclasses with ``to_dict`` / ``from_dict`` so trajectories round-trip through JSON.
Field names follow the reference library where it has them, so code and logs written for it
keep working.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from .status import AnswerSource as AnswerSource  # re-exported: rlm.types has always had them
from .status import RunStatus as RunStatus

Message = dict[str, Any]
"""A chat message: ``{"role": "system" | "user" | "assistant", "content": str}``."""


def to_jsonable(value: Any) -> Any:
    """A JSON-safe rendering of ``value`` (modules and callables become short descriptions)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, ModuleType):
        return f"<module '{value.__name__}'>"
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if hasattr(value, "to_dict"):
        try:
            return value.to_dict()
        except Exception:  # noqa: BLE001 - a broken to_dict must not break logging
            pass
    if callable(value):
        return f"<{type(value).__name__} '{getattr(value, '__name__', type(value).__name__)}'>"
    try:
        return repr(value)
    except Exception:  # noqa: BLE001
        return f"<{type(value).__name__}>"


# --- one model call ---------------------------------------------------------------------


@dataclass(slots=True)
class Usage:
    """Tokens and cost of one model call. ``cost`` is USD, ``None`` when unknown."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost: float | None = None
    estimated: bool = False  # True when the server omitted usage and the backend estimated it

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(slots=True)
class ModelResponse:
    """What a backend returns for one chat completion."""

    text: str
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    finish_reason: str | None = None


# --- usage over a run -------------------------------------------------------------------


@dataclass
class ModelUsageSummary:
    total_calls: int = 0
    total_input_tokens: int = 0
    total_output_tokens: int = 0
    total_cost: float | None = None

    def add(self, usage: Usage, calls: int = 1) -> None:
        self.total_calls += calls
        self.total_input_tokens += usage.input_tokens
        self.total_output_tokens += usage.output_tokens
        if usage.cost is not None:
            self.total_cost = (self.total_cost or 0.0) + usage.cost

    def merge(self, other: ModelUsageSummary) -> None:
        self.total_calls += other.total_calls
        self.total_input_tokens += other.total_input_tokens
        self.total_output_tokens += other.total_output_tokens
        if other.total_cost is not None:
            self.total_cost = (self.total_cost or 0.0) + other.total_cost

    def to_dict(self) -> dict[str, Any]:
        return {
            "total_calls": self.total_calls,
            "total_input_tokens": self.total_input_tokens,
            "total_output_tokens": self.total_output_tokens,
            "total_cost": self.total_cost,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelUsageSummary:
        cost = data.get("total_cost")
        return cls(
            total_calls=int(data.get("total_calls", 0)),
            total_input_tokens=int(data.get("total_input_tokens", 0)),
            total_output_tokens=int(data.get("total_output_tokens", 0)),
            total_cost=None if cost is None else float(cost),
        )


@dataclass
class UsageSummary:
    """Usage per model over a whole run, children included.

    Keys are model names; when two backend instances serve the same model name their usage is
    kept apart under ``"<model> [<backend label>]"`` so it is never merged.
    """

    model_usage_summaries: dict[str, ModelUsageSummary] = field(default_factory=dict)

    @property
    def total_calls(self) -> int:
        return sum(s.total_calls for s in self.model_usage_summaries.values())

    @property
    def total_input_tokens(self) -> int:
        return sum(s.total_input_tokens for s in self.model_usage_summaries.values())

    @property
    def total_output_tokens(self) -> int:
        return sum(s.total_output_tokens for s in self.model_usage_summaries.values())

    @property
    def total_tokens(self) -> int:
        return self.total_input_tokens + self.total_output_tokens

    @property
    def total_cost(self) -> float | None:
        costs = [s.total_cost for s in self.model_usage_summaries.values() if s.total_cost is not None]
        return sum(costs) if costs else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_usage_summaries": {m: s.to_dict() for m, s in self.model_usage_summaries.items()},
            "total_calls": self.total_calls,
            "total_input_tokens": self.total_input_tokens,
            "total_output_tokens": self.total_output_tokens,
            "total_cost": self.total_cost,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UsageSummary:
        return cls({m: ModelUsageSummary.from_dict(s)
                    for m, s in data.get("model_usage_summaries", {}).items()})


# --- results ----------------------------------------------------------------------------


@dataclass
class RLMChatCompletion:
    """The result of ``RLM.completion()`` (and the record of one sub-call made from a REPL)."""

    root_model: str
    prompt: Any
    response: str
    usage_summary: UsageSummary
    execution_time: float
    metadata: dict[str, Any] | None = None
    error: str | None = None
    error_type: str | None = None
    depth: int = 0
    kind: str = "rlm"  # "rlm" (a completion or child RLM) or "llm" (a plain sub-call)
    #: A sub-call's id within its parent run (the ``call_id`` of its Subcall events).
    call_id: str | None = None
    #: How the run ended; only ``RunStatus.COMPLETED`` is a success.
    status: RunStatus = RunStatus.COMPLETED
    #: How ``response`` was obtained (set by the model, or asked for after a limit).
    answer_source: AnswerSource = AnswerSource.MODEL

    @property
    def ok(self) -> bool:
        """True when the model set its answer within every limit."""
        return self.status is RunStatus.COMPLETED

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "root_model": self.root_model,
            "prompt": to_jsonable(self.prompt),
            "response": self.response,
            "usage_summary": self.usage_summary.to_dict(),
            "execution_time": self.execution_time,
            "depth": self.depth,
            "kind": self.kind,
            "status": self.status.value,
            "answer_source": self.answer_source.value,
        }
        if self.error is not None:
            d["error"] = self.error
            d["error_type"] = self.error_type
        if self.metadata is not None:
            d["metadata"] = self.metadata
        if self.call_id is not None:
            d["call_id"] = self.call_id
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RLMChatCompletion:
        return cls(
            root_model=str(data.get("root_model", "")),
            prompt=data.get("prompt", ""),
            response=data.get("response", ""),
            usage_summary=UsageSummary.from_dict(data.get("usage_summary", {})),
            execution_time=float(data.get("execution_time", 0.0)),
            metadata=data.get("metadata"),
            error=data.get("error"),
            error_type=data.get("error_type"),
            depth=int(data.get("depth", 0)),
            kind=str(data.get("kind", "rlm")),
            call_id=data.get("call_id"),
            status=RunStatus.parse(data.get("status", RunStatus.COMPLETED)),
            answer_source=AnswerSource(data.get("answer_source", AnswerSource.MODEL)),
        )


@dataclass
class CellResult:
    """What one executed cell produced. Environments fill everything but ``rlm_calls``."""

    stdout: str = ""
    stderr: str = ""
    error: str | None = None  # the formatted exception, None when the cell succeeded
    variables: list[str] = field(default_factory=list)  # user-visible names after the cell
    execution_time: float = 0.0
    final_answer: str | None = None  # set when the cell finished the run (answer ready / FINAL)
    answer_content: str | None = None  # answer["content"] so far, even when not ready
    timed_out: bool = False
    rlm_calls: list[RLMChatCompletion] = field(default_factory=list)

    @property
    def locals(self) -> dict[str, Any]:  # reference-library name: names only, values stay in the REPL
        return dict.fromkeys(self.variables)

    def to_dict(self) -> dict[str, Any]:
        return {
            "stdout": self.stdout,
            "stderr": self.stderr,
            "error": self.error,
            "variables": list(self.variables),
            "execution_time": self.execution_time,
            "final_answer": self.final_answer,
            "timed_out": self.timed_out,
            "rlm_calls": [c.to_dict() for c in self.rlm_calls],
        }


REPLResult = CellResult


@dataclass
class CodeBlock:
    code: str
    result: CellResult

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "result": self.result.to_dict()}


@dataclass
class RLMIteration:
    """One turn of the root loop: the model's reply and the cells it ran."""

    iteration: int
    response: str
    code_blocks: list[CodeBlock] = field(default_factory=list)
    final_answer: str | None = None
    iteration_time: float = 0.0
    usage: Usage | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "iteration": self.iteration,
            "response": self.response,
            "code_blocks": [b.to_dict() for b in self.code_blocks],
            "final_answer": self.final_answer,
            "iteration_time": self.iteration_time,
        }
        if self.usage is not None:
            d["usage"] = {"input_tokens": self.usage.input_tokens,
                          "output_tokens": self.usage.output_tokens, "cost": self.usage.cost}
        return d


@dataclass(frozen=True, slots=True)
class Tool:
    """A value or callable placed in the REPL under ``name``, with an optional description."""

    name: str
    value: Any
    description: str | None = None
    source: str = "user"  # "user", or the plugin that provided it


@dataclass(frozen=True, slots=True)
class EnvironmentCapabilities:
    """What an environment can do; the kernel and the conformance kit read these flags."""

    isolated: bool = False  # a security boundary between model code and the host
    persistent: bool = True  # can keep state across completion() calls
    cell_timeout: bool = True  # can stop a running cell
    threads: bool = True  # cells may start threads that call helpers concurrently
    callables_as_tools: bool = True  # Python callables can be passed as custom tools
    memory_limit: bool = False


def context_shape(context: Any) -> tuple[str, list[int]]:
    """The type name and chunk lengths of a context, as the first user message describes it."""
    if isinstance(context, str):
        return "str", [len(context)]
    if isinstance(context, dict):
        return "dict", [_chunk_len(v) for v in context.values()] or [0]
    if isinstance(context, (list, tuple)):
        if not context:
            return "list", [0]
        return "list", [_chunk_len(c.get("content", c) if isinstance(c, dict) and "content" in c else c)
                        for c in context]
    return type(context).__name__, [_chunk_len(context)]


def context_depth_text() -> str:
    """What a context nested deeper than Python can encode gets told (a ConfigurationError)."""
    import sys

    return (f"the context is nested too deeply: its lists and dicts go past about "
            f"{sys.getrecursionlimit():,} levels (Python's recursion limit, which encoding a "
            "context needs); flatten it, or pass it as a str (e.g. json.dumps of a flatter form)")


def _chunk_len(chunk: Any) -> int:
    if isinstance(chunk, str):
        return len(chunk)
    try:
        return len(json.dumps(chunk, default=str))
    except RecursionError:
        from .exceptions import ConfigurationError

        raise ConfigurationError(context_depth_text()) from None
    except (TypeError, ValueError):
        return len(repr(chunk))
