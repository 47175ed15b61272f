"""How a run ended (:class:`RunStatus`) and where its answer came from (:class:`AnswerSource`).

Also importable from :mod:`rlm.types` and from ``rlm``.
"""

from __future__ import annotations

import enum
from typing import Any


class RunStatus(enum.StrEnum):
    """How a run ended. The value is what logs, the store, the viewer and ``rlm run --json`` show.

    Only ``COMPLETED`` means the model set its answer within the limits. ``MAX_ITERATIONS`` comes
    back as a result (the answer was asked for after the last turn); the other limits raise their
    exception, which carries the same status in its ``status`` attribute.
    """

    COMPLETED = "completed"
    MAX_ITERATIONS = "max_iterations"
    TIMEOUT = "timeout"
    BUDGET = "budget"
    TOKENS = "tokens"
    ERRORS = "errors"
    CANCELLED = "cancelled"
    ERROR = "error"  # an exception that is not a limit (a backend or environment failure)

    @property
    def is_success(self) -> bool:
        return self is RunStatus.COMPLETED

    @classmethod
    def parse(cls, value: Any) -> RunStatus:
        """A status from its value (the seed's logs wrote ``"ok"`` for ``COMPLETED``)."""
        if isinstance(value, RunStatus):
            return value
        if value == "ok":
            return cls.COMPLETED
        try:
            return cls(value)
        except ValueError:
            return cls.ERROR

    def __str__(self) -> str:
        return self.value


class AnswerSource(enum.StrEnum):
    """How the answer of a run was obtained."""

    MODEL = "model"  # the model set it (answer["ready"], FINAL, FINAL_VAR) within its turns
    AFTER_LIMIT = "after_limit"  # asked for after a limit (the call after the last turn)
    PARTIAL = "partial"  # the best partial answer (answer["content"]) set before a limit
    NONE = "none"  # no answer: the last reply after a limit was still code, or nothing at all

    def __str__(self) -> str:
        return self.value
