"""The host side of the REPL helpers: sub-calls, recursion, limits and their records.

An environment calls these methods (directly, in-process, or through its channel). Everything
that matters for safety is decided here, on the host: the depth of a child, the remaining budget,
the deadline. The depth a child gets is computed from the run that owns this host, never from
anything the cell passes or sets (environment variables, globals, rebound helpers).

Every model call is made on the tree's event loop (:mod:`rlm._async`) and registered with the run,
so cancelling the run (Ctrl+C, ``max_timeout``, an exhausted budget) cancels it in flight. A
child RLM runs on a thread of its own and is registered with its parent run the same way; the
thread that asked for it waits in short slices, so a cell stopped by its time limit lets go at
once and its pending children are cancelled.

Callbacks: ``on_subcall_start`` / ``on_subcall_complete`` fire for every recursive call
(``rlm_query`` and each item of ``rlm_query_batched``, including the plain model call they become
at ``max_depth``), with the depth of the child. Plain ``llm_query`` calls do not fire them; they
are reported to logger sinks as ``SubcallStarted`` / ``SubcallCompleted`` events (``kind="llm"``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._async import WAIT_SLICE, wait
from ._limits import StopReason
from ._remote import remote_children
from ._text import as_messages as _as_messages
from ._text import error_text as _error_text
from ._text import preview as _preview
from .events import SubcallCompleted, SubcallStarted
from .exceptions import RLMError
from .types import Message, ModelResponse, RLMChatCompletion, UsageSummary

if TYPE_CHECKING:
    from ._run import _Run

#: Extra seconds a sub-call waits past the run's deadline before giving up on its own: the run's
#: deadline watchdog normally cancels it first, so that finished items of a batch are kept.
_DEADLINE_GRACE = 1.0


#: Characters of a sub-call's prompt its record keeps (``rlm_calls[i].prompt``, the trajectory,
#: the log). The prompt itself is released as soon as its call is made: a cell sending forty 32 MB
#: prompts must not make the host hold 1.3 GB until the cell ends.
RECORDED_PROMPT_CHARS = 20_000


def _recorded(prompt: Any, limit: int = RECORDED_PROMPT_CHARS) -> Any:
    """``prompt`` as a sub-call's record keeps it: text cut to ``limit`` characters (saying how
    many were cut), a list of chat messages with each ``content`` cut alike."""
    if isinstance(prompt, str):
        if len(prompt) <= limit:
            return prompt
        return prompt[:limit] + f"... [{len(prompt) - limit:,} more characters not recorded]"
    if isinstance(prompt, list) and all(isinstance(m, dict) for m in prompt):
        return [{**m, "content": _recorded(m.get("content"), limit)}
                if isinstance(m.get("content"), str) else m for m in prompt[:100]]
    return prompt if isinstance(prompt, (int, float, bool, type(None))) else _recorded(
        str(prompt), limit)


#: Sub-call records one cell keeps (``CellResult.rlm_calls``); calls beyond are made and counted
#: in the usage as usual, but not recorded one by one (a warning says so).
MAX_RECORDED_CALLS = 10_000


async def _bounded(run: Any, call: Any) -> Any:
    """``await call()`` inside the tree-wide bound on sub-calls (rlm._tree); the coroutine is
    made only once a slot is free, so a call cancelled while it waits leaves nothing behind."""
    async with run.slots.calls():
        return await call()


def _wait_limit(run: _Run) -> float | None:
    left = run.limits.remaining_time()
    return None if left is None else left + _DEADLINE_GRACE


class _LLMBatch:
    """The tasks of one ``llm_query_batched`` call; ``cancel`` stops the ones not finished."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.tasks: list[asyncio.Task[Any]] = []
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

        def do() -> None:
            for task in self.tasks:
                task.cancel()

        try:
            self.loop.call_soon_threadsafe(do)
        except RuntimeError:  # the loop is closed: nothing runs any more
            pass


class _ChildBatch:
    """The child runs of one ``rlm_query`` / ``rlm_query_batched`` call."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.runs: set[Any] = set()
        self.cancelled = False

    def add(self, run: Any) -> bool:
        with self._lock:
            if self.cancelled:
                return False
            self.runs.add(run)
            return True

    def discard(self, run: Any) -> None:
        with self._lock:
            self.runs.discard(run)

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            runs = list(self.runs)
        for run in runs:
            run.cancel(StopReason.CANCELLED)


class RunHost:
    """Implements :class:`rlm.protocols.Host` for one run (re-pointed per run when persistent)."""

    def __init__(self, run: _Run):
        self._run = run
        self._calls: list[RLMChatCompletion] = []
        self._calls_lock = threading.Lock()

    @property
    def depth(self) -> int:
        """The depth of the run this host serves (read-only: a cell cannot change it)."""
        return self._run.depth

    # -- bookkeeping -------------------------------------------------------------------
    def drain_calls(self) -> list[RLMChatCompletion]:
        with self._calls_lock:
            calls, self._calls = self._calls, []
        return calls

    def _record(self, call: RLMChatCompletion) -> None:
        with self._calls_lock:
            kept = len(self._calls) < MAX_RECORDED_CALLS
            if kept:
                self._calls.append(call)
        if not kept:
            self._run.rlm._warn_once(
                f"a cell made more than {MAX_RECORDED_CALLS:,} sub-calls: the ones beyond are "
                "counted in the usage but not recorded one by one in the trajectory")

    def _refusal(self) -> str | None:
        """Why no new sub-call may start now (limits already hit, run cancelled), else None."""
        reason = self._run.limit_reason()
        return f"Error: sub-call refused: {reason}" if reason else None

    def _cancelled_text(self) -> str:
        reason = self._run.limit_reason() or "the call was cancelled"
        return f"Error: sub-call cancelled: {reason}"

    def _fire(self, name: str, *args: Any) -> None:
        cb = getattr(self._run.rlm, name)
        if cb is None:
            return
        try:
            cb(*args)
        except Exception:  # noqa: BLE001 - a user's callback must not break the run
            self._run.rlm._warn_once(f"callback {name} raised; it is ignored")

    # -- plain model calls -------------------------------------------------------------
    def _route(self, model: str | None) -> tuple[Any, str, dict[str, Any], str]:
        run = self._run
        backend, label, overrides = run.rlm._route(model, run.depth + 1)
        sampling = {**run.rlm.settings.sub_sampling_args, **overrides}
        return backend, label, sampling, overrides.get("model") or backend.model_name

    def _started(self, kind: str, model_name: str, prompt: Any, call_id: str | None = None) -> str:
        """Emit ``SubcallStarted``; returns the call's id (for its ``SubcallCompleted``)."""
        run = self._run
        call_id = call_id or run.new_call_id()
        run.emit(SubcallStarted(run_id=run.run_id, depth=run.depth, parent_run_id=run.parent_run_id,
                                kind=kind, model=model_name, prompt_preview=_preview(prompt),
                                call_id=call_id))
        return call_id

    def _completed(self, prompt: Any, model_name: str, label: str, backend: Any,
                   response: ModelResponse | None, error: str | None, dt: float,
                   call_id: str | None = None) -> RLMChatCompletion:
        """Record usage and emit the event of one finished plain call; returns its record."""
        run = self._run
        summary = UsageSummary()
        if response is not None:
            run.record_usage(backend, label, response)
            summary = run.rlm._usage_summary_of(backend, label, response)
        run.emit(SubcallCompleted(
            run_id=run.run_id, depth=run.depth, parent_run_id=run.parent_run_id, kind="llm",
            model=model_name, duration=dt, error=error,
            input_tokens=response.usage.input_tokens if response else 0,
            output_tokens=response.usage.output_tokens if response else 0,
            cost=response.usage.cost if response else None, call_id=call_id))
        text = response.text if response is not None else (error or "Error: no response")
        return RLMChatCompletion(
            root_model=model_name, prompt=_recorded(prompt), response=text, usage_summary=summary,
            execution_time=dt, error=error, error_type="BackendError" if error else None,
            depth=run.depth + 1, kind="llm", call_id=call_id)

    def _llm_call(self, prompt: Any, model: str | None) -> str:
        run = self._run
        refusal = self._refusal()
        if refusal:
            return refusal
        backend, label, sampling, model_name = self._route(model)
        call_id = self._started("llm", model_name, prompt)
        t0 = time.perf_counter()
        response: ModelResponse | None = None
        error: str | None = None
        fut = run.submit(_bounded(run, lambda: backend.acompletion(_as_messages(prompt), **sampling)))
        try:
            response = wait(fut, _wait_limit(run))
        except cf.CancelledError:
            error = self._cancelled_text()
        except TimeoutError as exc:
            error = (_error_text(exc) if fut.done() and not fut.cancelled()
                     else self._cancelled_text())
        except Exception as exc:  # noqa: BLE001 - the model code gets an error string
            error = _error_text(exc)
        except BaseException:
            # The cell was stopped while it waited (time limit, Ctrl+C): the call is cancelled
            # (by ``wait``), and the sinks hear how it ended.
            run.untrack(fut)
            self._completed(prompt, model_name, label, backend, None,
                            "Error: sub-call cancelled: the cell was stopped while it waited",
                            time.perf_counter() - t0, call_id)
            raise
        run.untrack(fut)
        call = self._completed(prompt, model_name, label, backend, response, error,
                               time.perf_counter() - t0, call_id)
        self._record(call)
        return call.response

    def _llm_batch(self, prompts: list[Any], model: str | None, *, recursive: bool) -> list[str]:
        """Plain calls for ``prompts``, concurrently on the loop, in input order.

        ``recursive`` marks the fallback of ``rlm_query_batched`` at ``max_depth``: its items fire
        the subcall callbacks like any recursive call.
        """
        run = self._run
        refusal = self._refusal()
        if refusal:
            return [refusal] * len(prompts)
        backend, label, sampling, model_name = self._route(model)
        loop = run.rlm._resources.loop.loop
        batch = _LLMBatch(loop)
        limit = run.rlm.settings.max_concurrent_subcalls
        child_depth = run.depth + 1
        records: list[RLMChatCompletion | None] = [None] * len(prompts)
        stopped = [False]

        async def one(i: int, prompt: Any) -> str:
            t0 = time.perf_counter()
            response: ModelResponse | None = None
            error: str | None = None
            started = False
            call_id: str | None = None
            try:
                if batch.cancelled or run.limit_reason():
                    return self._refusal() or self._cancelled_text()
                started = True
                if recursive:
                    self._fire("on_subcall_start", child_depth, model_name, _preview(prompt))
                call_id = self._started("llm", model_name, prompt)
                t0 = time.perf_counter()
                async with run.slots.calls():  # the tree-wide bound on sub-calls (rlm._tree)
                    response = await backend.acompletion(_as_messages(prompt), **sampling)
            except asyncio.CancelledError:
                stopped[0] = True  # the batch is being stopped: no runner takes another item
                error = self._cancelled_text()
            except Exception as exc:  # noqa: BLE001 - fails this item only
                error = _error_text(exc)
            if not started:
                return error or self._cancelled_text()
            dt = time.perf_counter() - t0
            call = self._completed(prompt, model_name, label, backend, response, error, dt,
                                   call_id)
            records[i] = call
            if recursive:
                self._fire("on_subcall_complete", child_depth, model_name, dt, error)
            return call.response

        results: list[Any] = [None] * len(prompts)  # an item never taken reads as cancelled
        indices = iter(range(len(prompts)))

        async def runner() -> None:
            # ``limit`` runners take the items in turn: a batch of 150,000 prompts costs the
            # host ``limit`` tasks, not one task (and its coroutine) per item. A runner that is
            # cancelled finishes its item with an error and the rest are refused at once.
            for i in indices:
                if stopped[0]:
                    return
                try:
                    results[i] = await one(i, prompts[i])
                except BaseException as exc:  # noqa: BLE001 - reported in the item's slot
                    results[i] = exc
                    stopped[0] = stopped[0] or isinstance(exc, asyncio.CancelledError)

        settled = threading.Event()  # every runner has finished (its items are recorded)

        async def gather() -> list[Any]:
            try:
                batch.tasks = [asyncio.ensure_future(runner())
                               for _ in range(max(1, min(limit, len(prompts))))]
                if batch.cancelled:  # cancelled before the tasks existed
                    for task in batch.tasks:
                        task.cancel()
                await asyncio.gather(*batch.tasks, return_exceptions=True)
                return results
            finally:
                settled.set()

        run.track(batch)
        fut = run.submit(gather())
        try:
            results = wait(fut, _wait_limit(run))
        except (cf.CancelledError, TimeoutError):
            # Stopped (a limit, a cancel): let the cancelled items finish so that every one
            # that started is recorded and its SubcallCompleted reaches the sinks.
            if batch.tasks:
                settled.wait(2.0)
            text = self._cancelled_text()
            results = [text] * len(prompts)
        except Exception as exc:  # noqa: BLE001
            results = [_error_text(exc)] * len(prompts)
        except BaseException:
            batch.cancel()
            run.untrack(batch)
            run.untrack(fut)
            raise
        run.untrack(batch)
        run.untrack(fut)
        for call in records:
            if call is not None:
                self._record(call)
        return [r if isinstance(r, str) else self._cancelled_text() if r is None
                or isinstance(r, asyncio.CancelledError) else _error_text(r) for r in results]

    def llm_query(self, prompt: str | list[Message], model: str | None = None) -> str:
        try:
            return self._llm_call(prompt, model)
        except Exception as exc:  # noqa: BLE001 - never raise into model code
            return _error_text(exc)

    def llm_query_batched(self, prompts: Sequence[Any], model: str | None = None) -> list[str]:
        if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence):
            return [f"Error: llm_query_batched takes a list of prompts, got {type(prompts).__name__}"]
        prompts = list(prompts)
        if not prompts:
            return []
        try:
            return self._llm_batch(prompts, model, recursive=False)
        except Exception as exc:  # noqa: BLE001
            return [_error_text(exc)] * len(prompts)

    # -- recursive calls ---------------------------------------------------------------
    def rlm_query(self, prompt: Any, model: str | None = None) -> str:
        try:
            if self._run.depth + 1 >= self._run.rlm.settings.max_depth:
                return self._llm_batch([prompt], model, recursive=True)[0]
            return self._children([prompt], model)[0]
        except Exception as exc:  # noqa: BLE001
            return _error_text(exc)

    def rlm_query_batched(self, prompts: Sequence[Any], model: str | None = None) -> list[str]:
        if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence):
            return [f"Error: rlm_query_batched takes a list of prompts, got {type(prompts).__name__}"]
        prompts = list(prompts)
        if not prompts:
            return []
        try:
            if self._run.depth + 1 >= self._run.rlm.settings.max_depth:
                # Past the recursion limit a recursive call is a plain model call.
                return self._llm_batch(prompts, model, recursive=True)
            return self._children(prompts, model)
        except Exception as exc:  # noqa: BLE001
            return [_error_text(exc)] * len(prompts)

    def _children(self, prompts: list[Any], model: str | None) -> list[str]:
        """One child RLM per prompt, at most ``max_concurrent_subcalls`` at a time, each on a
        thread of its own (or, with ``RLM(subcall_executor=...)``, on that executor: see
        :mod:`rlm._remote`); answers in input order."""
        if self._run.rlm.settings.subcall_executor is not None:
            return remote_children(self, prompts, model)
        run = self._run
        n = len(prompts)
        texts: list[str | None] = [None] * n
        records: list[RLMChatCompletion | None] = [None] * n
        batch = _ChildBatch()
        next_index = iter(range(n))
        lock = threading.Lock()
        workers = max(1, min(run.rlm.settings.max_concurrent_subcalls, n))
        remaining = [workers]
        all_done = threading.Event()

        def worker() -> None:
            try:
                while True:
                    with lock:
                        i = next(next_index, None)
                    if i is None:
                        return
                    try:
                        texts[i], records[i] = self._one_child(prompts[i], model, batch)
                    except BaseException as exc:  # noqa: BLE001 - reported in the item's slot
                        texts[i] = _error_text(exc)
            finally:
                with lock:
                    remaining[0] -= 1
                    if remaining[0] == 0:
                        all_done.set()

        run.track(batch)
        if run.holds_slot:  # a waiting run does no work: its slot goes to its children (rlm._tree)
            run.holds_slot = False
            run.slots.release()
        for k in range(workers):
            threading.Thread(target=worker, name=f"rlm-child-d{run.depth + 1}-{k}",
                             daemon=True).start()
        try:
            # Short waits: a cell stopped while it waits here is interrupted at once.
            while not all_done.wait(WAIT_SLICE):
                pass
        except BaseException:
            # The cell was stopped while it waited: its children are cancelled.
            batch.cancel()
            run.untrack(batch)
            raise
        finally:
            if run.parent is not None and not run.holds_slot:
                run.holds_slot = run.slots.acquire(lambda: run.limit_reason() is not None)
        run.untrack(batch)
        for rec in records:
            if rec is not None:
                self._record(rec)
        return [t if t is not None else self._cancelled_text() for t in texts]

    def _one_child(self, prompt: Any, model: str | None,
                   batch: _ChildBatch) -> tuple[str, RLMChatCompletion | None]:
        run = self._run
        rlm = run.rlm
        child_depth = run.depth + 1
        refusal = self._refusal()
        if refusal or batch.cancelled:
            return refusal or self._cancelled_text(), None
        # The tree-wide bound (rlm._tree): a child starts only when a slot is free.
        if not run.slots.acquire(lambda: batch.cancelled or run.limit_reason() is not None):
            return self._refusal() or self._cancelled_text(), None
        try:
            child = rlm._spawn_child(run, model)
        except BaseException:
            run.slots.release()
            raise
        child_run = None
        try:
            call_id = run.new_call_id()
            child_run = run.child(child, prompt, call_id)
            child_run.holds_slot = True
            if not batch.add(child_run):
                child_run.cancel(StopReason.CANCELLED)
            model_name = child.root_model_name
            self._fire("on_subcall_start", child_depth, model_name, _preview(prompt))
            self._started("rlm", model_name, prompt, call_id)
            t0 = time.perf_counter()
            error: str | None = None
            try:
                result = child_run.execute()
            except Exception as exc:  # noqa: BLE001 - RLMError (limits, config) or a plugin's bug
                error = _error_text(exc)
                partial = getattr(exc, "partial_answer", None)
                result = RLMChatCompletion(
                    root_model=model_name, prompt=prompt, response=partial or error,
                    usage_summary=child_run.tracker.summary(),
                    execution_time=time.perf_counter() - t0, error=error,
                    error_type=type(exc).__name__, depth=child_depth,
                    metadata=child_run.trajectory(), call_id=call_id)
                text = error if not partial else f"{error} (partial answer: {partial})"
                if not isinstance(exc, RLMError):
                    rlm._warn_once(f"a child RLM failed unexpectedly: {error}")
            else:
                text = result.response
                result.call_id = call_id
            finally:
                batch.discard(child_run)
        finally:
            child.close()
            # The slot is the child run's once it exists (it lends it out while it waits for
            # its own children); whoever holds it at the end gives it back.
            if child_run is None or child_run.holds_slot:
                run.slots.release()
            if child_run is not None:
                child_run.holds_slot = False
        dt = time.perf_counter() - t0
        self._fire("on_subcall_complete", child_depth, model_name, dt, error)
        run.emit(SubcallCompleted(run_id=run.run_id, depth=run.depth, parent_run_id=run.parent_run_id,
                                  kind="rlm", model=model_name, duration=dt, error=error,
                                  input_tokens=result.usage_summary.total_input_tokens,
                                  output_tokens=result.usage_summary.total_output_tokens,
                                  cost=result.usage_summary.total_cost, call_id=call_id))
        return text, result
