"""The ``jsonl`` sink: every event of a run tree, one JSON object per line.

``RLM(sinks=["jsonl"])`` writes ``./rlm_logs/events_<timestamp>_<id>.jsonl`` (the directory
comes from ``$RLM_LOG_DIR`` when it is set); ``RLM(sinks=[JSONLSink(path="run.jsonl")])`` picks
the file. Each line is an event of :mod:`rlm.events` (``"type"``, ``"run_id"``, ``"depth"``,
``"parent_run_id"``, ``"timestamp"`` and the event's fields), children's events included, so the
whole tree can be rebuilt from ``run_id`` / ``parent_run_id``. Every line is flushed when written:
a crash loses nothing written before it.

Where :class:`rlm.logger.RLMLogger` writes the trajectory of one run in the reference library's
format (``metadata`` then ``iteration`` records), this sink is the raw event stream. It stores the
context once per run (in ``run_started``, cut at ``max_context_chars``), and each cell once
(``cell_executed``): ``iteration_completed`` lines carry the number of cells, not their output
again.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from datetime import datetime
from typing import IO, Any

from rlm import events as E
from rlm.types import to_jsonable

DEFAULT_DIR_ENV = "RLM_LOG_DIR"


class JSONLSink:
    """Args:
        path: the file to write (appended to). Default: a new file in ``log_dir``.
        log_dir: directory for the default file name (default: ``$RLM_LOG_DIR`` or ``rlm_logs``).
        max_context_chars: a longer context is cut (with a note) in the ``run_started`` line.
        fsync: also ``os.fsync`` after each line (survives a power cut, slower).
    """

    def __init__(self, path: str | os.PathLike[str] | None = None,
                 log_dir: str | os.PathLike[str] | None = None, *,
                 max_context_chars: int = 1_000_000, fsync: bool = False):
        if path is None:
            directory = os.fspath(log_dir) if log_dir is not None else os.environ.get(
                DEFAULT_DIR_ENV) or "rlm_logs"
            stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
            path = os.path.join(directory, f"events_{stamp}_{uuid.uuid4().hex[:8]}.jsonl")
        # Absolute now: cells may change the working directory of the thread that emits.
        self.path = os.path.abspath(os.fspath(path))
        self.max_context_chars = max_context_chars
        self.fsync = fsync
        self._lock = threading.Lock()
        self._fh: IO[str] | None = None
        self.records = 0

    def _record(self, event: E.Event) -> dict[str, Any]:
        if isinstance(event, E.RunStarted):
            settings = dict(event.settings)
            prompt = settings.get("prompt")
            if isinstance(prompt, str) and len(prompt) > self.max_context_chars:
                extra = len(prompt) - self.max_context_chars
                settings["prompt"] = (prompt[: self.max_context_chars]
                                      + f"... [{extra:,} more characters not logged]")
            d = {k: to_jsonable(v) for k, v in vars(event).items() if k != "settings"}
            d["settings"] = to_jsonable(settings)
            d["type"] = event.type
            return d
        if isinstance(event, E.IterationCompleted):
            d = {k: to_jsonable(v) for k, v in vars(event).items() if k != "code_blocks"}
            d["cells"] = len(event.code_blocks)
            d["type"] = event.type
            return d
        return event.to_dict()

    def handle(self, event: E.Event) -> None:
        line = json.dumps(self._record(event), default=str, ensure_ascii=False)
        with self._lock:
            if self._fh is None:
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
                self._fh = open(self.path, "a", encoding="utf-8")
            self._fh.write(line + "\n")
            self._fh.flush()
            if self.fsync:
                os.fsync(self._fh.fileno())
            self.records += 1

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None

    def __repr__(self) -> str:
        return f"<JSONLSink {self.path}>"


def read_events(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The events of a file written by :class:`JSONLSink` (a torn last line is skipped)."""
    out: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut by a crash mid-write: everything before it is intact
    return out
