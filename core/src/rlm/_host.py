"""The host side of the REPL helpers: sub-calls, recursion, limits and their records.

An environment calls these methods (directly, in-process, or through its channel). Everything
that matters for safety is decided here, on the host: the depth of a child, the remaining budget,
the deadline. Nothing a cell does can change them.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from .events import SubcallCompleted, SubcallStarted
from .exceptions import RLMError
from .types import Message, ModelResponse, RLMChatCompletion, UsageSummary

if TYPE_CHECKING:
    from ._rlm import _Run


def _as_messages(prompt: str | Sequence[Message] | Any) -> list[Message]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, Sequence) and all(isinstance(m, dict) and "role" in m for m in prompt):
        return list(prompt)  # type: ignore[arg-type]
    return [{"role": "user", "content": str(prompt)}]


def _preview(prompt: Any, n: int = 200) -> str:
    text = prompt if isinstance(prompt, str) else str(prompt)
    return text[:n]


def _error_text(exc: BaseException) -> str:
    return f"Error: {type(exc).__name__}: {exc}"


class RunHost:
    """Implements :class:`rlm.protocols.Host` for one run."""

    def __init__(self, run: _Run):
        self._run = run
        self.depth = run.depth
        self._calls: list[RLMChatCompletion] = []
        self._calls_lock = threading.Lock()

    # -- bookkeeping -------------------------------------------------------------------
    def drain_calls(self) -> list[RLMChatCompletion]:
        with self._calls_lock:
            calls, self._calls = self._calls, []
        return calls

    def _record(self, call: RLMChatCompletion) -> None:
        with self._calls_lock:
            self._calls.append(call)

    def _refusal(self) -> str | None:
        """Why no new sub-call may start now (limits already hit, run cancelled), else None."""
        reason = self._run.limit_reason()
        return f"Error: sub-call refused: {reason}" if reason else None

    # -- plain model calls -------------------------------------------------------------
    def _llm_call_sync(self, prompt: Any, model: str | None) -> str:
        run = self._run
        refusal = self._refusal()
        if refusal:
            return refusal
        backend, label, overrides = run.rlm._route(model, run.depth + 1)
        sampling = {**run.rlm.sub_sampling_args, **overrides}
        model_name = overrides.get("model") or backend.model_name
        run.emit(SubcallStarted(run_id=run.run_id, depth=run.depth, parent_run_id=run.parent_run_id,
                                kind="llm", model=model_name, prompt_preview=_preview(prompt)))
        t0 = time.perf_counter()
        error: str | None = None
        response: ModelResponse | None = None
        try:
            response = backend.completion(_as_messages(prompt), **sampling)
        except Exception as exc:  # noqa: BLE001 - the model code gets an error string
            error = _error_text(exc)
        return self._finish_llm(prompt, model_name, label, backend, response, error, t0)

    async def _llm_call_async(self, prompt: Any, model: str | None, sem: asyncio.Semaphore) -> str:
        run = self._run
        refusal = self._refusal()
        if refusal:
            return refusal
        backend, label, overrides = run.rlm._route(model, run.depth + 1)
        sampling = {**run.rlm.sub_sampling_args, **overrides}
        model_name = overrides.get("model") or backend.model_name
        async with sem:
            run.emit(SubcallStarted(run_id=run.run_id, depth=run.depth,
                                    parent_run_id=run.parent_run_id, kind="llm", model=model_name,
                                    prompt_preview=_preview(prompt)))
            t0 = time.perf_counter()
            error: str | None = None
            response: ModelResponse | None = None
            try:
                response = await backend.acompletion(_as_messages(prompt), **sampling)
            except Exception as exc:  # noqa: BLE001
                error = _error_text(exc)
        return self._finish_llm(prompt, model_name, label, backend, response, error, t0)

    def _finish_llm(self, prompt: Any, model_name: str, label: str, backend: Any,
                    response: ModelResponse | None, error: str | None, t0: float) -> str:
        run = self._run
        dt = time.perf_counter() - t0
        summary = UsageSummary()
        if response is not None:
            run.record_usage(backend, label, response)
            summary = run.rlm._usage_summary_of(backend, label, response)
        run.emit(SubcallCompleted(
            run_id=run.run_id, depth=run.depth, parent_run_id=run.parent_run_id, kind="llm",
            model=model_name, duration=dt, error=error,
            input_tokens=response.usage.input_tokens if response else 0,
            output_tokens=response.usage.output_tokens if response else 0,
            cost=response.usage.cost if response else None))
        text = response.text if response is not None else (error or "Error: no response")
        self._record(RLMChatCompletion(
            root_model=model_name, prompt=prompt, response=text, usage_summary=summary,
            execution_time=dt, error=error, error_type="BackendError" if error else None,
            depth=run.depth + 1, kind="llm"))
        return text

    def llm_query(self, prompt: str | list[Message], model: str | None = None) -> str:
        try:
            return self._llm_call_sync(prompt, model)
        except Exception as exc:  # noqa: BLE001 - never raise into model code
            return _error_text(exc)

    def llm_query_batched(self, prompts: Sequence[Any], model: str | None = None) -> list[str]:
        if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence):
            return [f"Error: llm_query_batched takes a list of prompts, got {type(prompts).__name__}"]
        prompts = list(prompts)
        if not prompts:
            return []
        limit = self._run.rlm.max_concurrent_subcalls

        async def gather() -> list[Any]:
            sem = asyncio.Semaphore(limit)
            return await asyncio.gather(*(self._llm_call_async(p, model, sem) for p in prompts),
                                        return_exceptions=True)

        try:
            results = self._run.rlm._resources.loop.run(gather(), timeout=self._run.remaining_time())
        except Exception as exc:  # noqa: BLE001
            return [_error_text(exc)] * len(prompts)
        return [r if isinstance(r, str) else _error_text(r) for r in results]

    # -- recursive calls ---------------------------------------------------------------
    def rlm_query(self, prompt: Any, model: str | None = None) -> str:
        try:
            return self._rlm_call(prompt, model)
        except Exception as exc:  # noqa: BLE001
            return _error_text(exc)

    def _rlm_call(self, prompt: Any, model: str | None) -> str:
        run = self._run
        rlm = run.rlm
        child_depth = run.depth + 1
        if child_depth >= rlm.max_depth:
            # Past the recursion limit a recursive call is a plain model call.
            self._fire("on_subcall_start", child_depth, model or rlm._route(model, child_depth)[0].model_name,
                       _preview(prompt))
            t0 = time.perf_counter()
            text = self._llm_call_sync(prompt, model)
            self._fire("on_subcall_complete", child_depth, model or "", time.perf_counter() - t0,
                       text if text.startswith("Error:") else None)
            return text
        refusal = self._refusal()
        if refusal:
            return refusal
        child = rlm._spawn_child(run, model)
        model_name = child.root_model_name
        self._fire("on_subcall_start", child_depth, model_name, _preview(prompt))
        run.emit(SubcallStarted(run_id=run.run_id, depth=run.depth, parent_run_id=run.parent_run_id,
                                kind="rlm", model=model_name, prompt_preview=_preview(prompt)))
        t0 = time.perf_counter()
        error: str | None = None
        try:
            result = child._completion_as_child(prompt, parent=run)
        except RLMError as exc:
            error = _error_text(exc)
            partial = getattr(exc, "partial_answer", None)
            result = RLMChatCompletion(root_model=model_name, prompt=prompt,
                                       response=partial or error, usage_summary=UsageSummary(),
                                       execution_time=time.perf_counter() - t0, error=error,
                                       error_type=type(exc).__name__, depth=child_depth)
            text = error if not partial else f"{error} (partial answer: {partial})"
        else:
            text = result.response
        finally:
            child.close()
        dt = time.perf_counter() - t0
        self._fire("on_subcall_complete", child_depth, model_name, dt, error)
        run.emit(SubcallCompleted(run_id=run.run_id, depth=run.depth, parent_run_id=run.parent_run_id,
                                  kind="rlm", model=model_name, duration=dt, error=error,
                                  input_tokens=result.usage_summary.total_input_tokens,
                                  output_tokens=result.usage_summary.total_output_tokens,
                                  cost=result.usage_summary.total_cost))
        self._record(result)
        return text

    def rlm_query_batched(self, prompts: Sequence[Any], model: str | None = None) -> list[str]:
        if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence):
            return [f"Error: rlm_query_batched takes a list of prompts, got {type(prompts).__name__}"]
        prompts = list(prompts)
        if not prompts:
            return []
        if self._run.depth + 1 >= self._run.rlm.max_depth:
            return self.llm_query_batched(prompts, model)
        workers = max(1, min(self._run.rlm.max_concurrent_subcalls, len(prompts)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rlm-child") as pool:
            return list(pool.map(lambda p: self.rlm_query(p, model), prompts))

    def _fire(self, name: str, *args: Any) -> None:
        cb = getattr(self._run.rlm, name)
        if cb is None:
            return
        try:
            cb(*args)
        except Exception:  # noqa: BLE001 - a user's callback must not break the run
            self._run.rlm._warn_once(f"callback {name} raised; it is ignored")
