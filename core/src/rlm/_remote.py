"""Child RLMs on an executor: ``RLM(subcall_executor="ray")``.

``rlm_query`` / ``rlm_query_batched`` normally run each child on a thread of the parent's
process, sharing its backend clients and event loop. With ``subcall_executor`` set, each child
is sent to that executor (Ray tasks with ``rlm-executor-ray``) as plain settings and rebuilt
where it runs, with an environment of its own. What stays on the parent's side:

* **limits**: each child starts with the budget, time and tokens the tree has left *at the
  moment it starts* (items are handed to the executor lazily, one per free slot); when a
  child's usage comes back it is recorded in the parent's tracker, which checks the root's
  limits and, once one is exceeded, cancels the children still in flight and refuses new ones.
  Concurrent remote siblings cannot see each other's spend while they run, so the overshoot is
  bounded by what the in-flight children spend (each capped by the budget left at its start);
* **usage**: a child's usage summary is merged into the parent's tracker under the backend the
  child used (the same rows as an in-process child), so the root's ``usage_summary`` covers it;
* **records and events**: ``on_subcall_start`` / ``on_subcall_complete`` fire on the parent, the
  sinks see ``SubcallStarted`` / ``SubcallCompleted``, the REPL's ``rlm_calls`` get the child's
  result (with its trajectory when the parent has a logger);
* **cancellation**: cancelling the parent (Ctrl+C, ``max_timeout``, budget) cancels the
  executor's in-flight jobs (for Ray, ``ray.cancel``).

Not carried over: callables that cannot be pickled (a ``custom_sub_tools`` entry closing over
local state fails that child with the pickling error), logger sinks and the
``on_iteration_*`` callbacks of the child's own turns. A remote child's own children run in its
process (threads), not on the executor again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ._text import error_text as _error_text
from ._text import preview as _preview
from ._usage import UsageKey
from .events import SubcallCompleted
from .types import RLMChatCompletion, Usage, UsageSummary

if TYPE_CHECKING:
    from ._host import RunHost


def _merge_usage(host: RunHost, usage: Mapping[str, Any] | None, backend: Any,
                 label: str) -> None:
    """Record a remote child's usage in the parent's tracker (and so the root's limits)."""
    run = host._run
    known = run.rlm._resources.instances()
    for model, s in ((usage or {}).get("model_usage_summaries") or {}).items():
        calls = int(s.get("total_calls") or 0)
        if not calls:
            continue
        b, lab = backend, label
        if getattr(backend, "model_name", None) != model:
            for other, other_label in known:
                if getattr(other, "model_name", None) == model:
                    b, lab = other, other_label
                    break
        cost = s.get("total_cost")
        run.tracker.record(UsageKey(id(b), lab, model),
                           Usage(int(s.get("total_input_tokens") or 0),
                                 int(s.get("total_output_tokens") or 0),
                                 None if cost is None else float(cost)), calls)
    run.enforce_spend()


def remote_children(host: RunHost, prompts: list[Any], model: str | None) -> list[str]:
    """``rlm_query_batched`` with every child sent to the RLM's ``subcall_executor``: each job is
    the child's :class:`rlm.settings.Settings` as plain keyword arguments (with the limits the
    tree has left when it starts) and ``RLM.run_child`` rebuilds the child where it runs."""
    run = host._run
    rlm = run.rlm
    n = len(prompts)
    texts: list[str | None] = [None] * n
    records: list[RLMChatCompletion | None] = [None] * n
    executor = rlm.settings.subcall_executor
    assert executor is not None  # RunHost sends children here only when one is set
    engine = rlm._resources.executor(executor, rlm.settings.subcall_executor_kwargs)
    child_settings, backend, label = rlm._child_settings(run, model)
    base = child_settings.to_kwargs()
    model_name = base["sampling_args"].get("model") or backend.model_name
    child_depth = run.depth + 1
    sent: list[int] = []
    started: dict[int, float] = {}
    call_ids: dict[int, str] = {}

    def jobs() -> Iterator[dict[str, Any]]:
        for i, prompt in enumerate(prompts):
            refusal = host._refusal()
            if refusal:
                texts[i] = refusal
                continue
            settings = dict(base, max_budget=run.limits.remaining_budget(),
                            max_timeout=run.limits.remaining_time(),
                            max_tokens=run.limits.remaining_tokens())
            host._fire("on_subcall_start", child_depth, model_name, _preview(prompt))
            call_ids[i] = host._started("rlm", model_name, prompt)
            started[i] = time.perf_counter()
            sent.append(i)
            yield {"settings": settings, "prompt": prompt, "logger": rlm.logger is not None}

    handle = engine.map(rlm.run_child, jobs(),
                        concurrency=max(1, min(rlm.settings.max_concurrent_subcalls, n)))
    run.track(handle)
    try:
        for pos, result, error in handle:
            i = sent[pos]
            dt = time.perf_counter() - started.get(i, time.perf_counter())
            err: str | None
            if error is not None:
                err = _error_text(error)
                out: dict[str, Any] = {"error": err, "error_type": type(error).__name__}
            else:
                out = dict(result)
                err = out.get("error")
            _merge_usage(host, out.get("usage"), backend, label)
            summary = UsageSummary.from_dict(out.get("usage") or {})
            partial = out.get("partial_answer")
            if err is None:
                texts[i] = str(out.get("response"))
            else:
                texts[i] = err if not partial else f"{err} (partial answer: {partial})"
            meta = out.get("metadata")
            if isinstance(meta, dict):
                meta = {**meta, "worker": out.get("worker")}
            records[i] = RLMChatCompletion(
                root_model=out.get("root_model") or model_name, prompt=prompts[i],
                response=str(out.get("response") if err is None else (partial or err)),
                usage_summary=summary, execution_time=float(out.get("execution_time") or dt),
                metadata=meta, error=err, error_type=out.get("error_type"), depth=child_depth,
                call_id=call_ids.get(i))
            host._fire("on_subcall_complete", child_depth, model_name, dt, err)
            run.emit(SubcallCompleted(
                run_id=run.run_id, depth=run.depth, parent_run_id=run.parent_run_id, kind="rlm",
                model=model_name, duration=dt, error=err,
                input_tokens=summary.total_input_tokens, output_tokens=summary.total_output_tokens,
                cost=summary.total_cost, call_id=call_ids.get(i)))
    except BaseException:
        handle.cancel()  # the cell was stopped while it waited: its children go with it
        raise
    finally:
        run.untrack(handle)
    for rec in records:
        if rec is not None:
            host._record(rec)
    return [t if t is not None else host._cancelled_text() for t in texts]


__all__ = ["remote_children"]
