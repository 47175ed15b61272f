"""A plain-text console sink: each turn's response, code, output and sub-calls, on stderr."""

from __future__ import annotations

import sys
import threading
from typing import IO, Any

from rlm import events as E


def _clip(text: str, n: int) -> str:
    text = text.rstrip()
    return text if len(text) <= n else text[:n] + f" ... [{len(text) - n} more chars]"


class ConsoleSink:
    def __init__(self, stream: IO[str] | None = None, max_chars: int = 2000):
        self._stream = stream
        self.max_chars = max_chars
        self._lock = threading.Lock()

    @property
    def stream(self) -> IO[str]:
        return self._stream or sys.stderr

    def _print(self, depth: int, text: str) -> None:
        pad = "  " * depth
        with self._lock:
            for line in text.splitlines() or [""]:
                self.stream.write(pad + line + "\n")
            self.stream.flush()

    def handle(self, event: E.Event) -> None:
        d = event.depth
        if isinstance(event, E.RunStarted):
            self._print(d, f"== RLM run {event.run_id} (depth {d}) model={event.root_model} "
                           f"backend={event.backend} env={event.environment} "
                           f"context={event.context_type}[{sum(event.context_lengths)} chars]")
        elif isinstance(event, E.IterationStarted):
            self._print(d, f"-- turn {event.iteration}")
        elif isinstance(event, E.IterationCompleted):
            self._print(d, "model: " + _clip(event.response, self.max_chars))
            for block in event.code_blocks:
                res: dict[str, Any] = block.get("result", {})
                if res.get("stdout"):
                    self._print(d, "out: " + _clip(res["stdout"], self.max_chars))
                if res.get("error"):
                    self._print(d, "error: " + _clip(res["error"], self.max_chars))
            self._print(d, f"(turn {event.iteration}: {event.iteration_time:.2f}s)")
        elif isinstance(event, E.SubcallCompleted):
            status = f" error={event.error}" if event.error else ""
            self._print(d + 1, f"{event.kind}_query -> {event.model} {event.duration:.2f}s "
                               f"in={event.input_tokens} out={event.output_tokens}{status}")
        elif isinstance(event, E.LimitExceeded):
            self._print(d, f"!! {event.error_type}: {event.message}")
        elif isinstance(event, E.RunFinished):
            self._print(d, f"== finished ({event.status}) in {event.execution_time:.2f}s: "
                           + _clip(str(event.response), self.max_chars))

    def close(self) -> None:
        return None
