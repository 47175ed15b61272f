"""The ``store`` logger sink: every run, child runs included, into the SQLite trajectory store.

    RLM(..., sinks=["store"])              # the library: opt in
    rlm run ...                            # the CLI: on unless --no-log

One transaction per event, so a process killed mid-run keeps everything up to its last event.
Child runs share the sink with their parent (the kernel passes the sinks down), so one sink sees
the whole tree; each child run is linked to the ``rlm_query`` sub-call that started it.

Events are read tolerantly: fields the sink does not know are ignored, missing optional fields
take defaults, and event types it does not know are kept as notes.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import threading
import time
from typing import Any

from .db import Database

DEFAULT_MAX_TEXT_CHARS = 100_000
DEFAULT_MAX_CONTEXT_CHARS = 1_000_000


def clip(text: Any, limit: int) -> str | None:
    """``text`` as a string of at most ``limit`` characters, with a marker saying what was cut."""
    if text is None:
        return None
    if not isinstance(text, str):
        try:
            text = json.dumps(text, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            text = repr(text)
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n... [{len(text) - limit:,} more characters not stored]"


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _event_type(event: Any) -> str:
    try:
        return str(event.type)
    except Exception:  # noqa: BLE001 - an event class the kernel does not name
        name = type(event).__name__
        return "".join("_" + ch.lower() if ch.isupper() else ch for ch in name).lstrip("_")


class _RunState:
    __slots__ = ("root_id", "parent_id", "iteration", "cells", "seq")

    def __init__(self, root_id: str, parent_id: str | None):
        self.root_id = root_id
        self.parent_id = parent_id
        self.iteration = 0
        self.cells: dict[int, int] = {}
        self.seq = 0


class StoreSink:
    """Writes events to the trajectory store (``path`` defaults to ``logs.db`` in the user dir).

    ``max_text_chars`` caps each stored prompt, response, code and output; ``max_context_chars``
    caps the stored context of a run (the context is stored once per run, never per cell).
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *,
                 max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
                 max_context_chars: int = DEFAULT_MAX_CONTEXT_CHARS,
                 source: str = "live"):
        self.db = Database(path)
        self.path = self.db.path
        self.max_text_chars = max_text_chars
        self.max_context_chars = max_context_chars
        self.source = source
        self._runs: dict[str, _RunState] = {}
        self._lock = threading.Lock()
        self._failed = False
        self.run_ids: list[str] = []  # root runs this sink recorded, in order
        self._closed = False

    def __repr__(self) -> str:
        return f"<StoreSink {self.path}>"

    # -- the sink protocol -----------------------------------------------------------------
    def handle(self, event: Any) -> None:
        if self._closed:
            return
        kind = _event_type(event)
        method = getattr(self, "_on_" + kind, None)
        try:
            with self._lock, self.db.transaction() as c:
                if method is None:
                    self._on_note(c, event, kind)
                else:
                    method(c, event)
        except Exception as exc:  # noqa: BLE001 - logging never breaks a run
            if not self._failed:
                self._failed = True
                print(f"rlm: the trajectory store {self.path} could not record a {kind} event "
                      f"({type(exc).__name__}: {exc}); later failures are not reported. Run with "
                      "--no-log (or drop the 'store' sink) to stop logging.", file=sys.stderr)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self.run_ids and self.path != ":memory:":
                self._enforce_cap()
            self.db.close()

    def _enforce_cap(self) -> None:
        """The size cap (rlm_plugins.store.prune): the oldest runs go when the file is over it."""
        from .prune import enforce_cap

        try:
            report = enforce_cap(self.db, protect=set(self.run_ids))
        except Exception as exc:  # noqa: BLE001 - pruning never breaks a run
            print(f"rlm: could not apply the logs size cap to {self.path}: {exc}", file=sys.stderr)
            return
        if report is not None and report.runs:
            print(f"rlm: the logs database was over its size cap (logs_max_mb in config.toml); "
                  f"removed the {report.runs} oldest runs ({report.bytes_before / 1e6:.1f} MB -> "
                  f"{report.bytes_after / 1e6:.1f} MB)", file=sys.stderr)

    # -- helpers ------------------------------------------------------------------------------
    def _t(self, text: Any) -> str | None:
        return clip(text, self.max_text_chars)

    def _state(self, c: sqlite3.Connection, run_id: str) -> _RunState:
        st = self._runs.get(run_id)
        if st is None:  # a run this sink did not see start (attached late): read it back
            row = c.execute("SELECT root_id, parent_id, iterations FROM runs WHERE id=?",
                            (run_id,)).fetchone()
            if row is None:
                now = time.time()
                c.execute("INSERT INTO runs (id, root_id, started_at, updated_at, pid, source) "
                          "VALUES (?, ?, ?, ?, ?, ?)", (run_id, run_id, now, now, os.getpid(), self.source))
                st = _RunState(run_id, None)
            else:
                st = _RunState(row["root_id"], row["parent_id"])
                st.iteration = row["iterations"]
            self._runs[run_id] = st
        return st

    def _ancestors(self, c: sqlite3.Connection, run_id: str) -> list[str]:
        out, seen = [], {run_id}
        parent = self._runs[run_id].parent_id if run_id in self._runs else None
        while parent and parent not in seen:
            out.append(parent)
            seen.add(parent)
            if parent in self._runs:
                parent = self._runs[parent].parent_id
            else:
                row = c.execute("SELECT parent_id FROM runs WHERE id=?", (parent,)).fetchone()
                parent = row["parent_id"] if row else None
        return out

    def _add_usage(self, c: sqlite3.Connection, run_ids: list[str], calls: int, inp: int, out: int,
                   cost: float | None, ts: float) -> None:
        if not run_ids:
            return
        marks = ",".join("?" * len(run_ids))
        c.execute(f"UPDATE runs SET calls = calls + ?, input_tokens = input_tokens + ?, "
                  f"output_tokens = output_tokens + ?, cost = CASE WHEN ? IS NULL THEN cost "
                  f"ELSE COALESCE(cost, 0) + ? END, updated_at = ? WHERE id IN ({marks})",
                  (calls, inp, out, cost, cost, ts, *run_ids))

    def _touch(self, c: sqlite3.Connection, run_id: str, ts: float) -> None:
        c.execute("UPDATE runs SET updated_at = ? WHERE id = ?", (ts, run_id))

    # -- events -------------------------------------------------------------------------------
    def _on_run_started(self, c: sqlite3.Connection, e: Any) -> None:
        parent_id = getattr(e, "parent_run_id", None)
        root_id = e.run_id
        if parent_id:
            pst = self._runs.get(parent_id)
            if pst is not None:
                root_id = pst.root_id
            else:
                row = c.execute("SELECT root_id FROM runs WHERE id=?", (parent_id,)).fetchone()
                root_id = row["root_id"] if row else parent_id
        settings = dict(getattr(e, "settings", None) or {})
        prompt = settings.pop("prompt", None)
        ts = float(getattr(e, "timestamp", None) or time.time())
        c.execute(
            "INSERT OR REPLACE INTO runs (id, root_id, parent_id, depth, status, started_at, "
            "updated_at, root_model, backend, environment, root_prompt, prompt, context_type, "
            "context_lengths, settings, pid, source) VALUES "
            "(?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (e.run_id, root_id, parent_id, int(getattr(e, "depth", 0) or 0), ts, ts,
             getattr(e, "root_model", None), getattr(e, "backend", None),
             getattr(e, "environment", None), self._t(getattr(e, "root_prompt", None)),
             clip(prompt, self.max_context_chars), getattr(e, "context_type", None),
             _json(getattr(e, "context_lengths", None) or []), _json(settings), os.getpid(),
             self.source))
        self._runs[e.run_id] = _RunState(root_id, parent_id)
        if parent_id:
            self._link_child(c, e, parent_id, prompt)
        else:
            self.run_ids.append(e.run_id)

    def _link_child(self, c: sqlite3.Connection, e: Any, parent_id: str, prompt: Any) -> None:
        """Attach a child run to the parent's ``rlm`` sub-call that started it."""
        call_id = getattr(e, "parent_call_id", None) or getattr(e, "subcall_id", None)
        row = None
        if call_id:
            row = c.execute("SELECT id FROM subcalls WHERE run_id=? AND call_id=?",
                            (parent_id, str(call_id))).fetchone()
        if row is None:
            preview = (prompt if isinstance(prompt, str) else str(prompt))[:200]
            rows = c.execute("SELECT id, prompt FROM subcalls WHERE run_id=? AND kind='rlm' AND "
                             "child_run_id IS NULL ORDER BY id", (parent_id,)).fetchall()
            row = next((r for r in rows if (r["prompt"] or "")[:200] == preview), None)
            if row is None and rows:
                row = rows[0]
        if row is not None:
            c.execute("UPDATE subcalls SET child_run_id=? WHERE id=?", (e.run_id, row["id"]))
            c.execute("UPDATE runs SET parent_subcall_id=? WHERE id=?", (row["id"], e.run_id))

    def _on_iteration_started(self, c: sqlite3.Connection, e: Any) -> None:
        st = self._state(c, e.run_id)
        st.iteration = int(e.iteration)
        ts = float(e.timestamp)
        c.execute("INSERT OR IGNORE INTO iterations (run_id, iteration, started_at) VALUES (?, ?, ?)",
                  (e.run_id, st.iteration, ts))
        c.execute("UPDATE runs SET iterations = MAX(iterations, ?), updated_at = ? WHERE id = ?",
                  (st.iteration, ts, e.run_id))

    def _insert_cell(self, c: sqlite3.Connection, run_id: str, iteration: int, code: Any,
                     result: dict[str, Any], ts: float) -> int:
        st = self._state(c, run_id)
        idx = st.cells.get(iteration, 0)
        st.cells[iteration] = idx + 1
        c.execute(
            "INSERT INTO cells (run_id, iteration, idx, code, stdout, stderr, error, variables, "
            "execution_time, final_answer, timed_out, finished_at) VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run_id, iteration, idx, self._t(code), self._t(result.get("stdout")),
             self._t(result.get("stderr")), self._t(result.get("error")),
             _json(list(result.get("variables") or list(result.get("locals") or {}))),
             result.get("execution_time"), self._t(result.get("final_answer")),
             int(bool(result.get("timed_out"))), ts))
        return idx

    def _on_cell_executed(self, c: sqlite3.Connection, e: Any) -> None:
        st = self._state(c, e.run_id)
        iteration = int(getattr(e, "iteration", st.iteration) or st.iteration)
        result = dict(getattr(e, "result", None) or {})
        ts = float(e.timestamp)
        idx = self._insert_cell(c, e.run_id, iteration, getattr(e, "code", ""), result, ts)
        # The sub-calls this cell made have completed (a helper returns only then): attach them,
        # and fill in the full prompt and response from the cell's call records.
        rows = c.execute("SELECT id, kind, call_id FROM subcalls WHERE run_id=? AND cell_idx IS NULL "
                         "AND finished_at IS NOT NULL ORDER BY seq, id", (e.run_id,)).fetchall()
        calls = [r for r in (result.get("rlm_calls") or []) if isinstance(r, dict)]
        by_id = {str(r["call_id"]): r for r in calls if r.get("call_id") is not None}
        for i, row in enumerate(rows):
            c.execute("UPDATE subcalls SET iteration=?, cell_idx=? WHERE id=?",
                      (iteration, idx, row["id"]))
            # By call id; records without one (older events, imports) in order.
            call = by_id.get(row["call_id"]) if row["call_id"] is not None else None
            if call is None and not by_id and i < len(calls):
                call = calls[i]
            if call is not None:
                c.execute("UPDATE subcalls SET prompt=?, response=? WHERE id=?",
                          (self._t(call.get("prompt")), self._t(call.get("response")), row["id"]))
        self._touch(c, e.run_id, ts)

    def _on_iteration_completed(self, c: sqlite3.Connection, e: Any) -> None:
        st = self._state(c, e.run_id)
        it = int(e.iteration)
        ts = float(e.timestamp)
        usage = getattr(e, "usage", None) or {}
        inp, out = int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)
        cost = usage.get("cost")
        t = getattr(e, "iteration_time", None)
        c.execute("INSERT OR IGNORE INTO iterations (run_id, iteration, started_at) VALUES (?, ?, ?)",
                  (e.run_id, it, ts - float(t or 0)))
        c.execute("UPDATE iterations SET finished_at=?, response=?, final_answer=?, iteration_time=?, "
                  "input_tokens=?, output_tokens=?, cost=? WHERE run_id=? AND iteration=?",
                  (ts, self._t(getattr(e, "response", None)),
                   self._t(getattr(e, "final_answer", None)), t, inp, out, cost, e.run_id, it))
        if not st.cells.get(it):  # no cell events came for this turn: take the code blocks
            for block in getattr(e, "code_blocks", None) or []:
                if isinstance(block, dict):
                    self._insert_cell(c, e.run_id, it, block.get("code"),
                                      dict(block.get("result") or {}), ts)
        c.execute("UPDATE runs SET iterations = MAX(iterations, ?) WHERE id = ?", (it, e.run_id))
        if usage:
            self._add_usage(c, [e.run_id, *self._ancestors(c, e.run_id)], 1, inp, out, cost, ts)
        else:
            self._touch(c, e.run_id, ts)

    def _on_subcall_started(self, c: sqlite3.Connection, e: Any) -> None:
        st = self._state(c, e.run_id)
        call_id = getattr(e, "call_id", None) or getattr(e, "subcall_id", None)
        c.execute("INSERT INTO subcalls (run_id, call_id, iteration, kind, model, prompt, started_at) "
                  "VALUES (?, ?, ?, ?, ?, ?, ?)",
                  (e.run_id, None if call_id is None else str(call_id),
                   getattr(e, "iteration", None) or st.iteration, getattr(e, "kind", None),
                   getattr(e, "model", None), self._t(getattr(e, "prompt_preview", None)),
                   float(e.timestamp)))
        self._touch(c, e.run_id, float(e.timestamp))

    def _on_subcall_completed(self, c: sqlite3.Connection, e: Any) -> None:
        st = self._state(c, e.run_id)
        ts = float(e.timestamp)
        duration = float(getattr(e, "duration", 0.0) or 0.0)
        kind, model = getattr(e, "kind", None), getattr(e, "model", None)
        call_id = getattr(e, "call_id", None) or getattr(e, "subcall_id", None)
        row = None
        if call_id is not None:
            row = c.execute("SELECT id FROM subcalls WHERE run_id=? AND call_id=?",
                            (e.run_id, str(call_id))).fetchone()
        if row is None:
            # No call id in the events: the open call of this kind and model whose start is
            # closest to (end - duration) is the one that finished.
            row = c.execute("SELECT id FROM subcalls WHERE run_id=? AND finished_at IS NULL AND "
                            "kind IS ? AND model IS ? ORDER BY ABS(started_at - ?), id LIMIT 1",
                            (e.run_id, kind, model, ts - duration)).fetchone()
        st.seq += 1
        inp, out = int(getattr(e, "input_tokens", 0) or 0), int(getattr(e, "output_tokens", 0) or 0)
        cost = getattr(e, "cost", None)
        values = (st.seq, ts, duration, getattr(e, "error", None), inp, out, cost)
        if row is None:
            c.execute("INSERT INTO subcalls (run_id, iteration, kind, model, started_at, seq, "
                      "finished_at, duration, error, input_tokens, output_tokens, cost) VALUES "
                      "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      (e.run_id, st.iteration, kind, model, ts - duration, *values))
        else:
            c.execute("UPDATE subcalls SET seq=?, finished_at=?, duration=?, error=?, input_tokens=?, "
                      "output_tokens=?, cost=? WHERE id=?", (*values, row["id"]))
        if kind == "rlm":  # the child run's own events already counted its usage
            self._touch(c, e.run_id, ts)
        else:
            calls = 1 if (inp or out or not getattr(e, "error", None)) else 0
            self._add_usage(c, [e.run_id, *self._ancestors(c, e.run_id)], calls, inp, out, cost, ts)

    def _on_run_finished(self, c: sqlite3.Connection, e: Any) -> None:
        self._state(c, e.run_id)
        ts = float(e.timestamp)
        summary = getattr(e, "usage_summary", None) or {}
        per_model = summary.get("model_usage_summaries") or {}
        c.execute("DELETE FROM usage WHERE run_id=?", (e.run_id,))
        for model, s in per_model.items():
            c.execute("INSERT INTO usage (run_id, model, calls, input_tokens, output_tokens, cost) "
                      "VALUES (?, ?, ?, ?, ?, ?)",
                      (e.run_id, model, int(s.get("total_calls") or 0),
                       int(s.get("total_input_tokens") or 0), int(s.get("total_output_tokens") or 0),
                       s.get("total_cost")))
        row = c.execute("SELECT calls, input_tokens, output_tokens, cost FROM runs WHERE id=?",
                        (e.run_id,)).fetchone()
        if per_model or summary.get("total_calls") is not None:
            calls = int(summary.get("total_calls") or sum(int(s.get("total_calls") or 0)
                                                           for s in per_model.values()))
            inp = int(summary.get("total_input_tokens") or 0)
            out = int(summary.get("total_output_tokens") or 0)
            cost = summary.get("total_cost")
            # The summary is authoritative (it has calls the events do not show, like the final
            # answer request); pass the difference on to the ancestors' running totals.
            d_cost = None if cost is None else cost - (row["cost"] or 0.0)
            self._add_usage(c, self._ancestors(c, e.run_id), calls - row["calls"],
                            inp - row["input_tokens"], out - row["output_tokens"], d_cost, ts)
            c.execute("UPDATE runs SET calls=?, input_tokens=?, output_tokens=?, cost=? WHERE id=?",
                      (calls, inp, out, cost, e.run_id))
        c.execute("UPDATE runs SET status=?, finished_at=?, updated_at=?, response=?, error=?, "
                  "execution_time=? WHERE id=?",
                  (getattr(e, "status", None) or "completed", ts, ts, self._t(getattr(e, "response", None)),
                   self._t(getattr(e, "error", None)), getattr(e, "execution_time", None), e.run_id))
        self._runs.pop(e.run_id, None)  # a finished run's state is read back if ever needed

    def _on_note(self, c: sqlite3.Connection, e: Any, kind: str | None = None) -> None:
        run_id = getattr(e, "run_id", None)
        if not run_id:
            return
        self._state(c, run_id)
        try:
            data = e.to_dict()
        except Exception:  # noqa: BLE001
            data = dict(vars(e)) if hasattr(e, "__dict__") else {}
        for k in ("run_id", "depth", "parent_run_id", "timestamp", "type"):
            data.pop(k, None)
        ts = float(getattr(e, "timestamp", None) or time.time())
        c.execute("INSERT INTO notes (run_id, timestamp, type, data) VALUES (?, ?, ?, ?)",
                  (run_id, ts, kind or _event_type(e), clip(_json(data), self.max_text_chars)))
        self._touch(c, run_id, ts)

    def _on_compacted(self, c: sqlite3.Connection, e: Any) -> None:
        self._on_note(c, e, "compacted")

    def _on_limit_exceeded(self, c: sqlite3.Connection, e: Any) -> None:
        self._on_note(c, e, "limit_exceeded")
