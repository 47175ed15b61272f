"""The ``progress`` sink: one live status line on stderr while a run goes.

    turn 3/30 · sub-calls 2 running, 14 done · 12,345 tokens · $0.0123 · 14.2s

Silent unless the stream is a terminal (``force=True`` overrides, for tests), so piping or
redirecting stderr gets no control characters. The line is redrawn at most ``fps`` times a
second and once a second while nothing happens (the clock keeps moving), and erased when the
root run finishes.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import IO, Any


class ProgressSink:
    def __init__(self, stream: IO[str] | None = None, *, force: bool = False, fps: float = 10.0):
        self._stream = stream
        self.force = force
        self._min_gap = 1.0 / fps
        self._lock = threading.Lock()
        self._root: str | None = None
        self._t0 = 0.0
        self._turn = 0
        self._max_turns = 0
        self._running = 0
        self._done = 0
        self._failed = 0
        self._tokens = 0
        self._cost: float | None = None
        self._children = 0
        self._last_draw = 0.0
        self._width = 0
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def stream(self) -> IO[str]:
        return self._stream or sys.stderr

    @property
    def enabled(self) -> bool:
        if self.force:
            return True
        try:
            return bool(self.stream.isatty())
        except (AttributeError, ValueError):
            return False

    # -- state ----------------------------------------------------------------------------------
    def line(self) -> str:
        """The status line as it would be drawn now."""
        parts = [f"turn {self._turn}/{self._max_turns}" if self._max_turns else f"turn {self._turn}"]
        sub = f"sub-calls {self._running} running, {self._done} done"
        if self._failed:
            sub += f", {self._failed} failed"
        parts.append(sub)
        if self._children:
            parts.append(f"{self._children} child runs")
        parts.append(f"{self._tokens:,} tokens")
        if self._cost is not None:
            parts.append(f"${self._cost:.4f}")
        parts.append(f"{time.perf_counter() - self._t0:.1f}s")
        return " · ".join(parts)

    def handle(self, event: Any) -> None:
        try:
            kind = event.type
        except Exception:  # noqa: BLE001
            return
        with self._lock:
            final = False
            if kind == "run_started":
                if self._root is None and not getattr(event, "parent_run_id", None):
                    self._root = event.run_id
                    self._t0 = time.perf_counter()
                    self._max_turns = int((getattr(event, "settings", None) or {}).get("max_iterations") or 0)
                    if self.enabled:
                        self._stop.clear()
                        self._ticker = threading.Thread(target=self._tick, name="rlm-progress",
                                                         daemon=True)
                        self._ticker.start()
                elif getattr(event, "parent_run_id", None):
                    self._children += 1
            elif kind == "iteration_started" and event.run_id == self._root:
                self._turn = int(event.iteration)
            elif kind == "iteration_completed":
                usage = getattr(event, "usage", None) or {}
                self._tokens += int(usage.get("input_tokens") or 0) + int(usage.get("output_tokens") or 0)
                if usage.get("cost") is not None:
                    self._cost = (self._cost or 0.0) + float(usage["cost"])
            elif kind == "subcall_started":
                self._running += 1
            elif kind == "subcall_completed":
                self._running = max(0, self._running - 1)
                self._done += 1
                if getattr(event, "error", None):
                    self._failed += 1
                if getattr(event, "kind", "llm") != "rlm":  # a child's own events count its usage
                    self._tokens += int(getattr(event, "input_tokens", 0) or 0) + int(
                        getattr(event, "output_tokens", 0) or 0)
                    if getattr(event, "cost", None) is not None:
                        self._cost = (self._cost or 0.0) + float(event.cost)
            elif kind == "run_finished" and event.run_id == self._root:
                summary = getattr(event, "usage_summary", None) or {}
                if summary:
                    self._tokens = int(summary.get("total_input_tokens") or 0) + int(
                        summary.get("total_output_tokens") or 0)
                    self._cost = summary.get("total_cost", self._cost)
                final = True
            if final:
                self._stop.set()
                self._clear()
                self._root = None
            else:
                self._draw(force=False)

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            with self._lock:
                if self._root is not None:
                    self._draw(force=True)

    def _draw(self, *, force: bool) -> None:
        if self._root is None or not self.enabled:
            return
        now = time.perf_counter()
        if not force and now - self._last_draw < self._min_gap:
            return
        self._last_draw = now
        text = self.line()
        pad = max(0, self._width - len(text))
        self._width = len(text)
        try:
            self.stream.write("\r" + text + " " * pad)
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def _clear(self) -> None:
        if not self.enabled or not self._width:
            return
        try:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
        except (OSError, ValueError):
            pass
        self._width = 0

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            if self._root is not None:
                self._clear()
