"""A run's limits: why a run stops (:class:`StopReason`) and what it has left (:class:`RunLimits`).

Lifecycle: a :class:`RunLimits` is made with its run and lives as long as it; ``restart`` moves
the clock when a queued persistent completion actually starts. Threading: the reads are plain
arithmetic on the tracker (its own lock) and the clock, safe from any thread.
"""

from __future__ import annotations

import enum
import time
from typing import TYPE_CHECKING

from ._usage import UsageTracker
from .exceptions import (BudgetExceededError, CancellationError, TimeoutExceededError,
                         TokenLimitExceededError, _LimitError)
from .status import RunStatus

if TYPE_CHECKING:
    from .settings import Settings


class StopReason(enum.StrEnum):
    """Why a run (or a call in flight) was stopped before it returned."""

    CANCELLED = "cancelled"  # Ctrl+C, RLM.cancel(), a cancelled acompletion, a stopped parent
    TIMEOUT = "timeout"  # max_timeout
    BUDGET = "budget"  # max_budget
    TOKENS = "tokens"  # max_tokens
    FINISHED = "finished"  # the run returned: what outlives it is stopped, it is not an error

    @property
    def status(self) -> RunStatus:
        return RunStatus.CANCELLED if self is StopReason.FINISHED else RunStatus(self.value)

    @classmethod
    def of(cls, exc: BaseException) -> StopReason:
        """The reason a limit exception stands for (anything else: ``CANCELLED``)."""
        status = getattr(exc, "status", None)
        try:
            return cls(status.value if isinstance(status, RunStatus) else "cancelled")
        except ValueError:
            return cls.CANCELLED


class RunLimits:
    """The clock, the spend and the limits of one run (its ancestors' are checked by the run)."""

    def __init__(self, settings: Settings, tracker: UsageTracker):
        self.settings = settings
        self.tracker = tracker
        self.t0 = time.perf_counter()
        self.deadline: float | None = None
        self.restart()

    def restart(self) -> None:
        """Start the clock now (a persistent completion that waited for the previous one)."""
        self.t0 = time.perf_counter()
        timeout = self.settings.max_timeout
        self.deadline = self.t0 + timeout if timeout else None

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def remaining_time(self) -> float | None:
        return None if self.deadline is None else max(0.001, self.deadline - time.perf_counter())

    def remaining_budget(self) -> float | None:
        b = self.settings.max_budget
        return None if b is None else max(1e-12, b - self.tracker.cost)

    def remaining_tokens(self) -> int | None:
        t = self.settings.max_tokens
        return None if t is None else max(1, t - self.tracker.total_tokens)

    def exceeded(self) -> StopReason | None:
        """The first of this run's own limits that is used up, if any."""
        s = self.settings
        if self.deadline is not None and time.perf_counter() >= self.deadline:
            return StopReason.TIMEOUT
        if s.max_budget is not None and self.tracker.cost > s.max_budget:
            return StopReason.BUDGET
        if s.max_tokens is not None and self.tracker.total_tokens > s.max_tokens:
            return StopReason.TOKENS
        return None

    def describe(self, reason: StopReason) -> str:
        """What stopped the run, in the user's terms (the argument and its value)."""
        s = self.settings
        return {
            StopReason.CANCELLED: "the run was cancelled",
            StopReason.FINISHED: "the run has already finished",
            StopReason.TIMEOUT: f"max_timeout of {s.max_timeout}s reached",
            StopReason.BUDGET: f"max_budget of ${s.max_budget} spent",
            StopReason.TOKENS: f"max_tokens of {s.max_tokens} used",
        }[reason]

    def error(self, reason: StopReason, partial: str | None, *, elapsed: float,
              own_timeout: float | None) -> _LimitError:
        """The exception a run raises when ``reason`` (hit by the run these limits belong to)
        stops it; ``elapsed`` and ``own_timeout`` are the stopped run's own."""
        s = self.settings
        if reason is StopReason.TIMEOUT:
            return TimeoutExceededError(elapsed, own_timeout or s.max_timeout or 0.0, partial)
        if reason is StopReason.BUDGET:
            return BudgetExceededError(self.tracker.cost, s.max_budget or 0.0, partial)
        if reason is StopReason.TOKENS:
            return TokenLimitExceededError(self.tracker.total_tokens, s.max_tokens or 0, partial)
        return CancellationError(partial)
