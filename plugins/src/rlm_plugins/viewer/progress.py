"""The ``progress`` sink: one live status line on stderr while a run goes.

    turn 3/30 · sub-calls 2 running, 14 done · 12,345 tokens · $0.0123 · 14.2s

Silent unless the stream is a terminal (``force=True`` overrides, for tests), so piping or
redirecting stderr gets no control characters. The line is redrawn at most ``fps`` times a
second and once a second while nothing happens (the clock keeps moving), and erased when the
root run finishes.

``plain=True`` (what ``rlm run`` asks for): when the stream is not a terminal, one plain line per
turn instead (``rlm: turn 2/30 done · ...``), a line when the run starts, and a ``still waiting``
line every ``plain_every`` seconds while nothing happens, so a slow first turn (a local model
loading) is visible in a log file too.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import IO, Any


class ProgressSink:
    def __init__(self, stream: IO[str] | None = None, *, force: bool = False, fps: float = 10.0,
                 plain: bool = False, plain_every: float = 5.0):
        self._stream = stream
        self.force = force
        self.plain = plain
        self._plain_every = plain_every
        self._last_plain = 0.0
        self._backend = ""
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

    @property
    def plain_lines(self) -> bool:
        """One line per turn (not a redrawn line): ``plain=True`` and not a terminal."""
        return self.plain and not self.enabled

    def _say(self, text: str) -> None:
        self._last_plain = time.perf_counter()
        try:
            self.stream.write(f"rlm: {text}\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass

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

    def _totals(self) -> str:
        """Sub-calls, tokens, cost and time so far, for the plain lines."""
        parts = []
        if self._done or self._running:
            parts.append(f"{self._done} sub-calls" + (f" ({self._failed} failed)" if self._failed else ""))
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
                    self._backend = str(getattr(event, "root_model", "") or "")
                    if self.plain_lines:
                        self._turn = 0
                        self._say(f"run started on {self._backend or 'the model'}; turn 1 "
                                  "begins (the first call also waits for the model to load)")
                    if self.enabled or self.plain_lines:
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
                if self.plain_lines and event.run_id == self._root:
                    blocks = len(getattr(event, "code_blocks", None) or [])
                    what = ("answer set" if getattr(event, "final_answer", None) is not None
                            else f"{blocks} code block{'s' if blocks != 1 else ''} run")
                    n = f"/{self._max_turns}" if self._max_turns else ""
                    self._say(f"turn {event.iteration}{n} done in "
                              f"{float(getattr(event, 'iteration_time', 0.0)):.1f}s: {what} · "
                              f"{self._totals()}")
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
                if self.plain_lines:
                    self._say(f"run finished ({getattr(event, 'status', '')}) after "
                              f"{self._turn} turns · {self._totals()}")
                self._root = None
            else:
                self._draw(force=False)

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            with self._lock:
                if self._root is None:
                    continue
                if self.plain_lines:
                    if time.perf_counter() - self._last_plain >= self._plain_every:
                        turn = max(1, self._turn)
                        self._say(f"turn {turn}: waiting for the model · {self._totals()}"
                                  + (" (the first call also loads the model)" if turn == 1 else ""))
                else:
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
