"""rlm._limits: stop reasons are a type the limit exceptions map to, and a run's limits say what
is left in the user's terms."""

from __future__ import annotations

import time

import pytest

from rlm._limits import RunLimits, StopReason
from rlm._usage import UsageKey, UsageTracker
from rlm.exceptions import (BudgetExceededError, CancellationError, ErrorThresholdExceededError,
                            TimeoutExceededError, TokenLimitExceededError)
from rlm.settings import Settings
from rlm.status import RunStatus
from rlm.types import Usage


@pytest.mark.parametrize(("exc", "reason"), [
    (TimeoutExceededError(1.0, 1.0), StopReason.TIMEOUT),
    (BudgetExceededError(1.0, 0.5), StopReason.BUDGET),
    (TokenLimitExceededError(10, 5), StopReason.TOKENS),
    (CancellationError(), StopReason.CANCELLED),
    (ErrorThresholdExceededError(3, 3, "boom"), StopReason.CANCELLED),
    (ValueError("x"), StopReason.CANCELLED),
])
def test_every_limit_exception_maps_to_its_stop_reason(exc: BaseException, reason: StopReason) -> None:
    assert StopReason.of(exc) is reason


def test_stop_reasons_are_run_statuses_except_finished() -> None:
    for reason in StopReason:
        expected = RunStatus.CANCELLED if reason is StopReason.FINISHED else RunStatus(reason.value)
        assert reason.status is expected


def test_limits_say_what_is_left_and_what_stopped_the_run() -> None:
    tracker = UsageTracker(None)
    limits = RunLimits(Settings.from_arguments(backend="b", max_budget=1.0, max_tokens=100,
                                               max_timeout=0.2), tracker)
    assert limits.exceeded() is None
    assert limits.remaining_budget() == pytest.approx(1.0)
    tracker.record(UsageKey(1, "b", "m"), Usage(60, 50, 0.25))
    assert limits.exceeded() is StopReason.TOKENS
    assert limits.remaining_tokens() == 1 and limits.remaining_budget() == pytest.approx(0.75)
    assert limits.describe(StopReason.TOKENS) == "max_tokens of 100 used"
    err = limits.error(StopReason.TOKENS, "half", elapsed=0.1, own_timeout=None)
    assert isinstance(err, TokenLimitExceededError) and err.partial_answer == "half"
    time.sleep(0.25)
    assert limits.exceeded() is StopReason.TIMEOUT
    limits.restart()
    assert limits.remaining_time() is not None and limits.remaining_time() > 0.1
