"""One ``completion()`` as a node of the run tree: :class:`_Run`.

A run owns three named parts:

* **the tree and cancellation** (here): every model call and child run in flight is registered
  with its run, so :meth:`_Run.cancel` (Ctrl+C, the deadline watchdog, an exhausted budget,
  ``RLM.cancel()``) stops all of it, children's children included;
* **its limits** (:class:`rlm._limits.RunLimits`, ``run.limits``): the clock, the spend, what is
  left; a run is also bound by every ancestor's limits (:meth:`_Run.limit_state`);
* **the loop** (:class:`rlm._loop.TurnLoop`): turns, cells, the final answer, compaction.

Threading: ``cancel``, ``track``/``untrack``, ``emit`` and the limit checks may be called from
any thread (cells' threads, the tree's event loop, the caller's); the loop itself runs on the
thread that called ``execute``.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ._async import wait
from ._limits import RunLimits, StopReason
from ._loop import TurnLoop
from ._text import as_messages
from ._tree import TreeSlots
from ._usage import UsageKey, UsageTracker
from .events import Event, LimitExceeded, RunFinished, RunStarted
from .exceptions import (BudgetExceededError, CancellationError, ErrorThresholdExceededError,
                         RLMError, TimeoutExceededError, TokenLimitExceededError, _LimitError)
from .logger import RLMLogger
from .protocols import Backend, Environment
from .types import (AnswerSource, Message, ModelResponse, RLMChatCompletion, RunStatus,
                    context_shape, to_jsonable)

if TYPE_CHECKING:
    from ._rlm import RLM

_SENSITIVE = ("key", "token", "secret", "password", "authorization")

#: Seconds a cancelled run's cell may go on (its sub-calls already cancelled) before it is
#: stopped: enough to finish and keep its partial answer, short enough for Ctrl+C.
CANCEL_GRACE_ROOT = 1.0
CANCEL_GRACE_CHILD = 0.5


def _redact(kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """Settings as logged: values under a sensitive-looking key are masked, at any nesting depth
    (a key inside ``default_headers={"Authorization": ...}`` included)."""
    out: dict[str, Any] = {}
    for k, v in (kwargs or {}).items():
        if any(s in str(k).lower() for s in _SENSITIVE) and v:
            out[k] = "***"
        elif isinstance(v, Mapping):
            out[k] = _redact(v)
        else:
            out[k] = to_jsonable(v)
    return out


class _Run:
    """One ``completion()``: a node of the run tree, with its limits, its loop and its events."""

    def __init__(self, rlm: RLM, prompt: Any, root_prompt: str | None, parent: _Run | None,
                 parent_call_id: str | None = None):
        self.rlm = rlm
        self.prompt = prompt
        self.root_prompt = root_prompt
        self.parent = parent
        self.depth = rlm.settings.depth
        self.run_id = uuid.uuid4().hex[:12]
        self.parent_run_id = parent.run_id if parent else None
        self.parent_call_id = parent_call_id
        self._call_ids = itertools.count(1)
        self.tracker: UsageTracker = UsageTracker(parent.tracker if parent else None)
        self.limits = RunLimits(rlm.settings, self.tracker)
        self.sinks: list[Any] = ([rlm.logger] if rlm.logger is not None else []) + rlm._extra_sinks
        self.best_partial: str | None = None
        self.last_response: str | None = None
        self.cancelled = threading.Event()
        self.cancel_reason: StopReason | None = None
        self._cancel_source: _Run = self
        self.env: Environment | None = None
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._inflight: set[Any] = set()  # objects with cancel(): futures, batches
        self._children: set[_Run] = set()
        self._stop_watchdog: Callable[[], None] | None = None
        self._done = threading.Event()
        #: The tree's concurrency bound (rlm._tree); ``holds_slot`` while this child run works.
        self.slots: TreeSlots = (parent.slots if parent
                                 else TreeSlots(rlm.settings.max_concurrent_subcalls))
        self.holds_slot = False
        if parent is not None:
            parent._adopt(self)

    def child(self, rlm: RLM, prompt: Any, call_id: str) -> _Run:
        """The run of a child RLM (``rlm_query``) under this one, adopted by it."""
        return _Run(rlm, prompt, None, parent=self, parent_call_id=call_id)

    # -- the run tree and cancellation -------------------------------------------------
    def _adopt(self, child: _Run) -> None:
        with self._lock:
            self._children.add(child)
            reason, source = self.cancel_reason, self._cancel_source
        if reason is not None:
            child.cancel(StopReason.CANCELLED if reason is StopReason.FINISHED else reason,
                         source=source)

    def _disown(self, child: _Run) -> None:
        with self._lock:
            self._children.discard(child)
            self._idle.notify_all()

    def track(self, item: Any) -> None:
        """Register an in-flight call (anything with ``cancel()``); cancelled at once if the
        run is already cancelled or finished."""
        with self._lock:
            reason = self.cancel_reason
            if reason is None:
                self._inflight.add(item)
        if reason is not None:
            item.cancel()

    def untrack(self, item: Any) -> None:
        with self._lock:
            self._inflight.discard(item)
            self._idle.notify_all()

    def submit(self, coro: Any) -> concurrent.futures.Future[Any]:
        """Schedule a model call on the tree's loop, registered with this run."""
        fut = self.rlm._resources.loop.submit(coro)
        self.track(fut)
        return fut

    def cancel(self, reason: StopReason = StopReason.CANCELLED, *,
               source: _Run | None = None) -> None:
        """Cancel the run: in-flight calls and children now, the loop at its next check.

        ``reason`` says why (:class:`StopReason`); ``FINISHED`` means the run returned: calls
        that outlive it, from threads a cell left behind, are stopped, and it is not an error.
        """
        with self._lock:
            first = self.cancel_reason is None
            if first:
                self.cancel_reason = reason
                self._cancel_source = source or self
        if reason is not StopReason.FINISHED:
            self.cancelled.set()
        self.cancel_pending(StopReason.CANCELLED if reason is StopReason.FINISHED else reason,
                            source=source or self)
        if first and reason is StopReason.CANCELLED:
            self._stop_env()

    def cancel_pending(self, reason: StopReason = StopReason.CANCELLED, *,
                       source: _Run | None = None) -> None:
        """Cancel what is in flight (a stopped cell's calls and children), not the run itself;
        the children are cancelled for ``reason``."""
        with self._lock:
            items, children = list(self._inflight), list(self._children)
        for item in items:
            try:
                item.cancel()
            except Exception:  # noqa: BLE001
                pass
        for child in children:
            child.cancel(reason, source=source)

    def _stop_env(self) -> None:
        """Stop the cell still running in this run's (throw-away) environment.

        With its sub-calls cancelled a cell usually ends by itself at once, keeping what it
        wrote into ``answer`` (the partial answer). One that is still running after a short
        grace is interrupted (``env.interrupt()`` when the environment has it) or the
        environment is shut down. Off the caller's thread: stopping may take a while.
        """
        env = self.env
        if env is None:
            return
        grace = CANCEL_GRACE_CHILD if self.parent is not None else CANCEL_GRACE_ROOT

        def stop() -> None:
            if self._done.wait(grace):
                return
            try:
                interrupt = getattr(env, "interrupt", None)
                if callable(interrupt):
                    interrupt()
                elif not self.rlm.settings.persistent:  # a persistent REPL is kept, state and all
                    env.shutdown()
            except Exception:  # noqa: BLE001
                pass

        threading.Thread(target=stop, name="rlm-cancel-env", daemon=True).start()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no call and no child of this run is in flight (at most ``timeout`` s)."""
        end = time.monotonic() + timeout
        with self._lock:
            while self._inflight or self._children:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(min(left, 0.05))
        return True

    def _on_deadline(self) -> None:  # runs on the loop thread: must not block
        self.cancel(StopReason.TIMEOUT)

    # -- limits (this run's own are ``self.limits``; an ancestor's bind it too) ---------------
    def limit_state(self) -> tuple[_Run, StopReason] | None:
        """The first limit hit by this run or an ancestor (whose limits cover this run too)."""
        run: _Run | None = self
        while run is not None:
            if run.cancel_reason is not None:
                return run._cancel_source, run.cancel_reason
            reason = run.limits.exceeded()
            if reason is not None:
                return run, reason
            run = run.parent
        return None

    def limit_reason(self) -> str | None:
        """What stops this run, in the user's terms (``None`` while it may go on)."""
        state = self.limit_state()
        if state is None:
            return None
        run, reason = state
        where = "" if run is self else f" (by the run at depth {run.depth})"
        return run.limits.describe(reason) + where

    def partial(self) -> str | None:
        return self.best_partial if self.best_partial else self.last_response

    def _limit_error(self, run: _Run, reason: StopReason) -> _LimitError:
        return run.limits.error(reason, self.partial(), elapsed=self.limits.elapsed(),
                                own_timeout=self.rlm.settings.max_timeout)

    def check_limits(self) -> None:
        state = self.limit_state()
        if state is not None and state[1] is not StopReason.FINISHED:
            raise self._limit_error(*state)

    def record_usage(self, backend: Backend, label: str, response: ModelResponse) -> None:
        self.tracker.record(UsageKey(id(backend), label, response.model or backend.model_name),
                            response.usage)
        self.enforce_spend()

    def enforce_spend(self) -> None:
        """A run over its budget or tokens stops spending at once: its in-flight calls and
        children (and those of every descendant) are cancelled."""
        run: _Run | None = self
        while run is not None:
            if run.cancel_reason is None:
                reason = run.limits.exceeded()
                if reason in (StopReason.BUDGET, StopReason.TOKENS):
                    run.cancel(reason)
            run = run.parent

    # -- events ------------------------------------------------------------------------
    def new_call_id(self) -> str:
        """An id for the next sub-call of this run (``c1``, ``c2``, ...; unique within the run)."""
        return f"c{next(self._call_ids)}"

    def emit(self, event: Event) -> None:
        for sink in self.sinks:
            try:
                sink.handle(event)
            except Exception as exc:  # noqa: BLE001 - a broken sink never breaks the run
                self.rlm._warn_once(f"logger sink {type(sink).__name__} failed ({exc!r}); "
                                    "its later failures are not reported")

    def _fire(self, name: str, *args: Any) -> None:
        cb = getattr(self.rlm, name)
        if cb is not None:
            try:
                cb(*args)
            except Exception:  # noqa: BLE001
                self.rlm._warn_once(f"callback {name} raised; it is ignored")

    def _call_model(self, backend: Backend, label: str, messages: list[Message],
                    sampling: Mapping[str, Any] | None = None) -> ModelResponse:
        """One model call of this run's own (a turn, a summary), cancellable like a sub-call."""
        self.check_limits()
        args = self.rlm.settings.sampling_args if sampling is None else sampling
        fut = self.submit(backend.acompletion(messages, **args))
        try:
            left = self.limits.remaining_time()
            response: ModelResponse = wait(fut, None if left is None else left + 1.0)
        except concurrent.futures.CancelledError:
            self.check_limits()
            raise CancellationError(self.partial()) from None
        except TimeoutError:
            if fut.done() and not fut.cancelled():
                raise  # the backend's own timeout error
            self.check_limits()
            raise TimeoutExceededError(self.limits.elapsed(), self.rlm.settings.max_timeout or 0.0,
                                       self.partial()) from None
        finally:
            self.untrack(fut)
        self.record_usage(backend, label, response)
        return response

    def trajectory(self) -> dict[str, Any] | None:
        logger = self.rlm.logger
        return logger.get_trajectory() if isinstance(logger, RLMLogger) else None

    def _result(self, response: str, backend: Backend, status: RunStatus = RunStatus.COMPLETED,
                source: AnswerSource = AnswerSource.MODEL) -> RLMChatCompletion:
        dt = self.limits.elapsed()
        summary = self.tracker.summary()
        self.emit(RunFinished(run_id=self.run_id, depth=self.depth, parent_run_id=self.parent_run_id,
                              response=response, execution_time=dt, usage_summary=summary.to_dict(),
                              status=status.value, answer_source=source.value))
        return RLMChatCompletion(root_model=self.rlm.settings.sampling_args.get("model") or backend.model_name,
                                 prompt=self.prompt, response=response, usage_summary=summary,
                                 execution_time=dt, metadata=self.trajectory(), depth=self.depth,
                                 status=status, answer_source=source)

    # -- running ------------------------------------------------------------------------
    def execute(self) -> RLMChatCompletion:
        rlm = self.rlm
        try:
            if rlm.settings.persistent and self.parent is None:
                # One REPL, one conversation: completions of a persistent RLM run one at a time
                # (concurrent acompletion() calls queue up in call order).
                with rlm._serial:
                    self.limits.restart()
                    return self._execute()
            return self._execute()
        finally:
            if self._stop_watchdog is not None:
                self._stop_watchdog()
            # Nothing outlives the run: calls still in flight (threads a cell left behind) and
            # children are cancelled, and later helper calls are refused.
            self.cancel(StopReason.FINISHED)
            self._done.set()
            if self.parent is not None:
                self.parent._disown(self)
            rlm._run_done(self)

    def _execute(self) -> RLMChatCompletion:
        rlm = self.rlm
        backend, label = rlm._root_backend()
        s = rlm.settings
        ctype, lengths = context_shape(self.prompt)
        self.emit(RunStarted(
            run_id=self.run_id, depth=self.depth, parent_run_id=self.parent_run_id,
            root_model=s.sampling_args.get("model") or backend.model_name, backend=s.backend,
            environment=s.environment, context_type=ctype, context_lengths=lengths[:1000],
            root_prompt=self.root_prompt, parent_call_id=self.parent_call_id,
            settings={"prompt": self.prompt, "max_depth": s.max_depth,
                      "max_iterations": s.max_iterations, "max_budget": s.max_budget,
                      "max_timeout": s.max_timeout, "max_tokens": s.max_tokens,
                      "max_errors": s.max_errors, "backend_kwargs": _redact(s.backend_kwargs),
                      "environment_kwargs": _redact(s.environment_kwargs),
                      "other_backends": s.other_backends, "persistent": s.persistent}))
        try:
            if self.limits.deadline is not None:
                self._stop_watchdog = rlm._resources.loop.call_later(
                    self.limits.deadline - time.perf_counter(), self._on_deadline)
            self.check_limits()
            if self.depth >= s.max_depth:
                return self._plain_call(backend, label)
            return TurnLoop(self, backend, label).execute()
        except KeyboardInterrupt:
            self.cancel(StopReason.CANCELLED)
            self.wait_idle(2.0)
            exc: RLMError = CancellationError(self.partial())
            self._finish_error(exc, RunStatus.CANCELLED)
            raise exc from None
        except (TimeoutExceededError, BudgetExceededError, TokenLimitExceededError,
                ErrorThresholdExceededError, CancellationError) as limit:
            self._unwind(limit)
            if not isinstance(limit, CancellationError):
                self.emit(LimitExceeded(run_id=self.run_id, depth=self.depth,
                                        parent_run_id=self.parent_run_id,
                                        error_type=type(limit).__name__, message=str(limit),
                                        partial_answer=limit.partial_answer))
            self._finish_error(limit, limit.status)
            raise
        except Exception as other:
            if self.cancel_reason not in (None, StopReason.FINISHED):
                # The environment was stopped under a cancelled run: report the cancellation.
                state = self.limit_state()
                stop = self._limit_error(*state) if state else CancellationError(self.partial())
                self._unwind(stop)
                self._finish_error(stop, stop.status)
                raise stop from other
            self._unwind(other)
            if hasattr(other, "__dict__") and getattr(other, "partial_answer", None) is None:
                try:
                    other.partial_answer = self.partial()  # type: ignore[attr-defined]
                except Exception:  # noqa: BLE001
                    pass
            self._finish_error(other, RunStatus.ERROR)
            raise

    def _unwind(self, exc: BaseException) -> None:
        """On the way out with an error: cancel what is in flight and let it finish briefly, so
        children's records and logs are complete when the exception reaches the caller."""
        reason = StopReason.of(exc)
        with self._lock:
            busy = bool(self._inflight or self._children)
        if busy:
            self.cancel(reason)
            self.wait_idle(2.0)

    def _finish_error(self, exc: BaseException, status: RunStatus) -> None:
        partial = self.partial()
        self.emit(RunFinished(run_id=self.run_id, depth=self.depth, parent_run_id=self.parent_run_id,
                              response=partial, execution_time=self.limits.elapsed(),
                              usage_summary=self.tracker.summary().to_dict(), status=status.value,
                              error=f"{type(exc).__name__}: {exc}",
                              answer_source=(AnswerSource.PARTIAL if partial else AnswerSource.NONE).value))

    def _plain_call(self, backend: Backend, label: str) -> RLMChatCompletion:
        response = self._call_model(backend, label, as_messages(self.prompt))
        self.last_response = response.text
        return self._result(response.text, backend)
