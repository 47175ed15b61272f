"""``RLMLogger``: the trajectory of a run, in memory and optionally as a JSONL file.

``RLMLogger(log_dir="./logs")`` writes ``./logs/rlm_<timestamp>_<id>.jsonl``: a ``metadata``
record, then one ``iteration`` record per turn, then a ``result`` record. Each record is flushed
as it is written, so a crash loses nothing written so far. ``RLMLogger()`` keeps the trajectory in
memory only. Either way ``result.metadata`` holds the full trajectory, with child runs nested in
the sub-call records of the cells that made them.

The logger is a logger sink (:class:`rlm.protocols.LoggerSink`): it receives the run's events.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from datetime import datetime
from typing import Any

from .events import Event, IterationCompleted, RunFinished, RunStarted
from .types import to_jsonable

DEFAULT_MAX_CONTEXT_CHARS = 1_000_000


class RLMLogger:
    def __init__(self, log_dir: str | os.PathLike[str] | None = None, file_name: str = "rlm", *,
                 max_context_chars: int = DEFAULT_MAX_CONTEXT_CHARS):
        # Absolute now: kernel code may later run on a REPL thread with its own working directory.
        self.log_dir = os.path.abspath(os.fspath(log_dir)) if log_dir is not None else None
        self.file_name = file_name
        self.max_context_chars = max_context_chars
        self.log_file_path: str | None = None
        self._lock = threading.Lock()
        self._fh: Any = None
        self._run_id: str | None = None
        self.run_metadata: dict[str, Any] | None = None
        self.iterations: list[dict[str, Any]] = []
        self.result: dict[str, Any] | None = None
        self._runs = 0
        if self.log_dir is not None:
            os.makedirs(self.log_dir, exist_ok=True)
            self._new_file()

    def _new_file(self) -> None:
        assert self.log_dir is not None
        stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        self.log_file_path = os.path.join(self.log_dir,
                                          f"{self.file_name}_{stamp}_{uuid.uuid4().hex[:8]}.jsonl")

    # -- the sink protocol ----------------------------------------------------------------
    def handle(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self._start(event)
        elif event.run_id != self._run_id:
            return  # another run's event (children have their own loggers)
        elif isinstance(event, IterationCompleted):
            record = {"type": "iteration", "iteration": event.iteration,
                      "timestamp": _iso(event.timestamp), "response": event.response,
                      "code_blocks": event.code_blocks, "final_answer": event.final_answer,
                      "iteration_time": event.iteration_time, "usage": event.usage}
            self.iterations.append(record)
            self._write(record)
        elif isinstance(event, RunFinished):
            self.result = {"type": "result", "timestamp": _iso(event.timestamp),
                           "status": event.status, "answer_source": event.answer_source,
                           "response": event.response, "error": event.error, "execution_time": event.execution_time,
                           "usage_summary": event.usage_summary}
            self._write(self.result)

    def _start(self, event: RunStarted) -> None:
        with self._lock:
            if self._runs and self.log_dir is not None:
                self.close()
                self._new_file()  # one file per completion() call
            self._runs += 1
            self._run_id = event.run_id
            self.iterations = []
            self.result = None
        prompt = event.settings.get("prompt")
        if isinstance(prompt, str) and len(prompt) > self.max_context_chars:
            more = len(prompt) - self.max_context_chars
            prompt = prompt[: self.max_context_chars] + f"... [{more:,} more characters not logged]"
        self.run_metadata = {
            "type": "metadata", "timestamp": _iso(event.timestamp), "run_id": event.run_id,
            "parent_run_id": event.parent_run_id, "depth": event.depth,
            "root_model": event.root_model, "backend": event.backend,
            "environment_type": event.environment, "root_prompt": event.root_prompt,
            "context_type": event.context_type, "context_lengths": event.context_lengths,
            **{k: v for k, v in event.settings.items() if k != "prompt"},
            "prompt": to_jsonable(prompt),
        }
        self._write(self.run_metadata)

    def _write(self, record: dict[str, Any]) -> None:
        if self.log_file_path is None:
            return
        line = json.dumps(record, default=str, ensure_ascii=False)
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate (print('\udcff')): escape it, keep the record
            line = json.dumps(record, default=str)
        with self._lock:
            if self._fh is None:
                self._fh = open(self.log_file_path, "a", encoding="utf-8")
            self._fh.write(line + "\n")
            self._fh.flush()

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None

    # -- reading back ------------------------------------------------------------------
    def get_trajectory(self) -> dict[str, Any]:
        """The last run: ``{"run_metadata": ..., "iterations": [...], "result": ...}``."""
        return {"run_metadata": self.run_metadata, "iterations": list(self.iterations),
                "result": self.result}

    @property
    def iteration_count(self) -> int:
        return len(self.iterations)

    def __repr__(self) -> str:
        where = self.log_file_path or "memory"
        return f"<RLMLogger {where}>"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts).isoformat()
