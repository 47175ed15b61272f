"""Usage accounting for a run tree.

Every model call is recorded against the backend *instance* that made it, so two clients serving
one model name are never merged. A child run records into its own tracker and is then folded into
its parent, so the root's ``usage_summary`` covers the whole tree and the parent's limits count
what children spent.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from .types import ModelUsageSummary, Usage, UsageSummary


@dataclass(frozen=True, slots=True)
class UsageKey:
    backend_id: int  # id of the backend instance (stable for the run)
    backend_label: str  # e.g. "openai" or "openai#2"
    model: str


class UsageTracker:
    """Thread-safe totals per (backend instance, model), with a parent to propagate into."""

    def __init__(self, parent: UsageTracker | None = None):
        self._lock = threading.Lock()
        self._by_key: dict[UsageKey, ModelUsageSummary] = {}
        self.parent = parent
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost = 0.0
        self.calls = 0

    def record(self, key: UsageKey, usage: Usage, calls: int = 1) -> None:
        """Record one call (or ``calls`` calls totalling ``usage``, as a child RLM run in
        another process reports them) here and in every ancestor (limits at each level see the
        spend)."""
        tracker: UsageTracker | None = self
        while tracker is not None:
            tracker._record_local(key, usage, calls)
            tracker = tracker.parent

    def _record_local(self, key: UsageKey, usage: Usage, calls: int = 1) -> None:
        with self._lock:
            summary = self._by_key.get(key)
            if summary is None:
                summary = self._by_key[key] = ModelUsageSummary()
            summary.add(usage, calls)
            self.calls += calls
            self.input_tokens += usage.input_tokens
            self.output_tokens += usage.output_tokens
            if usage.cost is not None:
                self.cost += usage.cost

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def summary(self) -> UsageSummary:
        """Per-model totals. A model served by two backend instances is listed once per instance
        as ``"<model> [<label>]"``."""
        with self._lock:
            items = list(self._by_key.items())
        per_model: dict[str, list[UsageKey]] = {}
        for key, _ in items:
            keys = per_model.setdefault(key.model, [])
            if key.backend_id not in {k.backend_id for k in keys}:
                keys.append(key)
        out: dict[str, ModelUsageSummary] = {}
        for key, s in items:
            name = key.model
            if len(per_model[key.model]) > 1:
                name = f"{key.model} [{key.backend_label}]"
            copy = ModelUsageSummary()
            copy.merge(s)
            if name in out:
                out[name].merge(copy)
            else:
                out[name] = copy
        return UsageSummary(out)
