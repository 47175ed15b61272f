"""Faults a test scripts into an emulator: "answer the next N calls of this operation with that
error". Every emulator keeps one :class:`FaultPlan` (the Modal, E2B and Daytona emulators in those
environments' tests do); what a fault is (an HTTP status and body, a gRPC error, a dropped
connection) is the emulator's business."""

from __future__ import annotations

import collections
import threading
from typing import Generic, TypeVar

F = TypeVar("F")


class FaultPlan(Generic[F]):
    """Pending faults by operation name, used in the order they were added; thread-safe."""

    def __init__(self) -> None:
        self._pending: dict[str, collections.deque[F]] = {}
        self._lock = threading.Lock()

    def add(self, op: str, fault: F, times: int = 1) -> None:
        """``fault`` for each of the next ``times`` calls of ``op`` (after those already added)."""
        if isinstance(times, bool) or not isinstance(times, int) or times < 1:
            raise ValueError(f"times must be a positive integer, not {times!r}")
        with self._lock:
            self._pending.setdefault(op, collections.deque()).extend([fault] * times)

    def take(self, op: str) -> F | None:
        """The fault for this call of ``op`` (used up), or ``None``: answer normally."""
        with self._lock:
            queue = self._pending.get(op)
            return queue.popleft() if queue else None

    def clear(self) -> int:
        """Drop every fault not used yet; how many there were."""
        with self._lock:
            left = sum(len(q) for q in self._pending.values())
            self._pending.clear()
        return left

    def __len__(self) -> int:
        with self._lock:
            return sum(len(q) for q in self._pending.values())


__all__ = ["FaultPlan"]
