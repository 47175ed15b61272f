"""The ``structlog`` sink: the run's events as structured log entries.

``RLM(sinks=["structlog"])`` logs through ``structlog.get_logger("rlm")``, so the entries go
wherever your structlog configuration sends them (console, JSON lines, stdlib ``logging``, ...).
Every entry carries ``run_id``, ``depth`` and ``parent_run_id``, so entries of child runs can be
told apart and joined. Event names and levels:

========================  =======  ==============================================================
event                     level    fields
========================  =======  ==============================================================
``rlm.run.started``       info     root_model, backend, environment, context_type, context_chars
``rlm.iteration``         info     iteration, cells, final_answer (bool), iteration_time, tokens
``rlm.cell``              debug    iteration, code, stdout, error, timed_out, execution_time
``rlm.subcall.started``   debug    kind ("llm" / "rlm"), model, prompt_preview
``rlm.subcall``           info     kind, model, duration, input/output tokens, cost, error
``rlm.compacted``         info     strategy, messages and tokens before and after
``rlm.limit``             warning  error_type, message, partial_answer
``rlm.final_answer``      info     status, response, execution_time, total tokens and cost
========================  =======  ==============================================================

A failed run ends with ``rlm.final_answer`` at level ``error`` and ``status`` other than ``completed``.
Long texts (code, output, answers) are cut at ``max_chars``.
"""

from __future__ import annotations

from typing import Any

import structlog

from rlm import events as E
from rlm.types import RunStatus


def _clip(text: Any, n: int) -> Any:
    if isinstance(text, str) and len(text) > n:
        return text[:n] + f"... [{len(text) - n:,} more chars]"
    return text


class StructlogSink:
    """Args:
        logger: a structlog logger (bound or not). Default: ``structlog.get_logger(name)``.
        name: the logger name used when ``logger`` is not given.
        max_chars: longest text logged for code, output and answers.
        include_code: log each cell's code in ``rlm.cell`` entries.
    """

    def __init__(self, logger: Any = None, name: str = "rlm", max_chars: int = 2000,
                 include_code: bool = True):
        self._logger = logger if logger is not None else structlog.get_logger(name)
        self.max_chars = max_chars
        self.include_code = include_code

    def handle(self, event: E.Event) -> None:
        log = self._logger.bind(run_id=event.run_id, depth=event.depth,
                                parent_run_id=event.parent_run_id)
        n = self.max_chars
        if isinstance(event, E.RunStarted):
            log.info("rlm.run.started", root_model=event.root_model, backend=event.backend,
                     environment=event.environment, context_type=event.context_type,
                     context_chars=sum(event.context_lengths), root_prompt=event.root_prompt)
        elif isinstance(event, E.IterationCompleted):
            usage = event.usage or {}
            log.info("rlm.iteration", iteration=event.iteration, cells=len(event.code_blocks),
                     final_answer=event.final_answer is not None,
                     iteration_time=round(event.iteration_time, 4),
                     input_tokens=usage.get("input_tokens"), output_tokens=usage.get("output_tokens"))
        elif isinstance(event, E.CellExecuted):
            res = event.result
            fields: dict[str, Any] = {
                "iteration": event.iteration, "stdout": _clip(res.get("stdout"), n),
                "error": _clip(res.get("error"), n), "timed_out": res.get("timed_out"),
                "execution_time": res.get("execution_time"),
                "subcalls": len(res.get("rlm_calls") or [])}
            if self.include_code:
                fields["code"] = _clip(event.code, n)
            log.debug("rlm.cell", **fields)
        elif isinstance(event, E.SubcallStarted):
            log.debug("rlm.subcall.started", kind=event.kind, model=event.model,
                      prompt_preview=_clip(event.prompt_preview, n))
        elif isinstance(event, E.SubcallCompleted):
            method = log.warning if event.error else log.info
            method("rlm.subcall", kind=event.kind, model=event.model,
                   duration=round(event.duration, 4), input_tokens=event.input_tokens,
                   output_tokens=event.output_tokens, cost=event.cost, error=event.error)
        elif isinstance(event, E.Compacted):
            log.info("rlm.compacted", strategy=event.strategy, messages_before=event.messages_before,
                     messages_after=event.messages_after, tokens_before=event.tokens_before,
                     tokens_after=event.tokens_after)
        elif isinstance(event, E.LimitExceeded):
            log.warning("rlm.limit", error_type=event.error_type, message=event.message,
                        partial_answer=_clip(event.partial_answer, n))
        elif isinstance(event, E.RunFinished):
            usage = event.usage_summary or {}
            method = log.info if RunStatus.parse(event.status).is_success else log.error
            method("rlm.final_answer", status=event.status, response=_clip(event.response, n),
                   error=event.error, execution_time=round(event.execution_time, 4),
                   total_calls=usage.get("total_calls"),
                   total_input_tokens=usage.get("total_input_tokens"),
                   total_output_tokens=usage.get("total_output_tokens"),
                   total_cost=usage.get("total_cost"))

    def close(self) -> None:
        return None
