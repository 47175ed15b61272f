"""Reading the trajectory store: run lists, whole run trees, JSONL export and import.

The tree of a run (:func:`load_tree`) is the one shape every reader uses (``rlm logs show``, the
viewer, the exporter)::

    run = {id, parent_id, status, root_model, ..., usage: [...], notes: [...],
           iterations: [{iteration, response, ..., cells: [{code, stdout, ...,
                         subcalls: [{kind, model, prompt, response, ..., child: run | None}]}],
                         subcalls: [...]}]}      # sub-calls not (yet) attached to a cell
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from rlm.exceptions import ConfigurationError
from rlm.types import RunStatus

from .db import Database, pid_alive
from ._status import STATUSES
from .sink import DEFAULT_MAX_CONTEXT_CHARS, DEFAULT_MAX_TEXT_CHARS, clip

__all__ = ["STATUSES", "effective_status", "list_runs"]


# --- small helpers ------------------------------------------------------------------------------


def effective_status(status: str | None, pid: int | None, source: str | None = "live") -> str:
    """``running`` only while the writing process lives; a run whose process died mid-run is
    ``interrupted``."""
    status = status or "running"
    if status == "running" and (source or "live") == "live" and not pid_alive(pid):
        return "interrupted"
    return "completed" if status == "ok" else status


def parse_when(text: str, *, now: datetime | None = None) -> float:
    """A point in time for --since/--until: ISO date or datetime, ``today``, ``yesterday``, or an
    age such as ``30m``, ``2h``, ``3d``, ``1w`` (that long ago)."""
    now = now or datetime.now()
    t = text.strip().lower()
    if t == "today":
        return now.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    if t == "yesterday":
        return (now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)).timestamp()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|m|h|d|w)", t)
    if m:
        secs = float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]
        return now.timestamp() - secs
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise ConfigurationError(
            f"cannot read the time {text!r}: use an ISO date (2025-01-31 or 2025-01-31T14:00), "
            "'today', 'yesterday', or an age like 30m, 2h, 3d, 1w.") from None


def _loads(text: str | None, default: Any) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


# --- listing ------------------------------------------------------------------------------------

LIST_COLUMNS = ("id, root_id, parent_id, depth, status, started_at, finished_at, updated_at, "
                "root_model, backend, environment, root_prompt, substr(prompt, 1, 300) AS prompt, "
                "response, error, execution_time, iterations, calls, input_tokens, output_tokens, "
                "cost, pid, source")


def list_runs(db: Database, *, model: str | None = None, status: str | None = None,
              since: float | None = None, until: float | None = None, limit: int | None = 20,
              offset: int = 0, roots_only: bool = True, search: str | None = None) -> list[dict[str, Any]]:
    """Runs, newest first. ``model`` matches the root model or any model the run used."""
    where: list[str] = []
    params: list[Any] = []
    if roots_only:
        where.append("parent_id IS NULL")
    if model:
        where.append("(root_model LIKE ? OR id IN (SELECT run_id FROM usage WHERE model LIKE ?))")
        params += [f"%{model}%", f"%{model}%"]
    want = status
    if status in ("running", "interrupted"):
        where.append("status = 'running'")
    elif status == "completed":
        where.append("status IN ('completed', 'ok')")
    elif status:
        where.append("status = ?")
        params.append(status)
    if since is not None:
        where.append("started_at >= ?")
        params.append(since)
    if until is not None:
        where.append("started_at <= ?")
        params.append(until)
    if search:
        where.append("(prompt LIKE ? OR root_prompt LIKE ? OR response LIKE ? OR id LIKE ?)")
        params += [f"%{search}%"] * 3 + [f"{search}%"]
    sql = f"SELECT {LIST_COLUMNS} FROM runs"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY started_at DESC"
    post_filter = want in ("running", "interrupted")
    if limit is not None and not post_filter:
        sql += f" LIMIT {int(limit)} OFFSET {int(offset)}"
    out = []
    for r in db.query(sql, params):
        d = dict(r)
        d["status"] = effective_status(d["status"], d["pid"], d["source"])
        if post_filter and d["status"] != want:
            continue
        out.append(d)
    if post_filter and limit is not None:
        out = out[offset: offset + limit]
    return out


def count_runs(db: Database) -> int:
    return int(db.query("SELECT COUNT(*) FROM runs WHERE parent_id IS NULL")[0][0])


def resolve_id(db: Database, ref: str) -> str:
    """A full run id from an id or a unique prefix of one (``latest`` / ``last``: the newest)."""
    ref = ref.strip()
    if ref in ("latest", "last", "-1"):
        rows = db.query("SELECT id FROM runs WHERE parent_id IS NULL ORDER BY started_at DESC LIMIT 1")
        if not rows:
            raise ConfigurationError(f"no runs are logged yet in {db.path}.")
        return rows[0]["id"]
    rows = db.query("SELECT id FROM runs WHERE id = ?", (ref,))
    if rows:
        return rows[0]["id"]
    rows = db.query("SELECT id FROM runs WHERE id LIKE ? ORDER BY started_at DESC LIMIT 6",
                    (ref.replace("%", "").replace("_", "") + "%",))
    if not rows:
        raise ConfigurationError(f"no run {ref!r} in {db.path}; `rlm logs` lists the runs.")
    if len(rows) > 1:
        ids = ", ".join(r["id"] for r in rows[:5])
        raise ConfigurationError(f"{ref!r} matches several runs ({ids}); give more characters of the id.")
    return rows[0]["id"]


# --- one run as a tree ---------------------------------------------------------------------------


def load_tree(db: Database, run_id: str) -> dict[str, Any]:
    """The run ``run_id`` with its iterations, cells, sub-calls and child runs, nested."""
    with db.lock:
        c = db.conn
        row = c.execute("SELECT root_id FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise ConfigurationError(f"no run {run_id!r} in {db.path}; `rlm logs` lists the runs.")
        root = row["root_id"]
        runs = {r["id"]: dict(r) for r in c.execute("SELECT * FROM runs WHERE root_id = ?", (root,))}
        ids_sql = "SELECT id FROM runs WHERE root_id = ?"
        its = c.execute(f"SELECT * FROM iterations WHERE run_id IN ({ids_sql}) "
                        "ORDER BY run_id, iteration", (root,)).fetchall()
        cells = c.execute(f"SELECT * FROM cells WHERE run_id IN ({ids_sql}) "
                          "ORDER BY run_id, iteration, idx", (root,)).fetchall()
        subs = c.execute(f"SELECT * FROM subcalls WHERE run_id IN ({ids_sql}) "
                         "ORDER BY run_id, COALESCE(seq, 1e18), id", (root,)).fetchall()
        usage = c.execute(f"SELECT * FROM usage WHERE run_id IN ({ids_sql}) ORDER BY model",
                          (root,)).fetchall()
        notes = c.execute(f"SELECT * FROM notes WHERE run_id IN ({ids_sql}) ORDER BY id",
                          (root,)).fetchall()
    for r in runs.values():
        r["status"] = effective_status(r["status"], r["pid"], r["source"])
        r["settings"] = _loads(r["settings"], {})
        r["context_lengths"] = _loads(r["context_lengths"], [])
        r["iteration_count"] = r.pop("iterations")
        r["usage"], r["notes"], r["iterations_list"] = [], [], {}
        r["children_unlinked"] = []
    for u in usage:
        runs[u["run_id"]]["usage"].append({k: u[k] for k in u.keys() if k != "run_id"})
    for n in notes:
        runs[n["run_id"]]["notes"].append({"type": n["type"], "timestamp": n["timestamp"],
                                           "data": _loads(n["data"], n["data"])})
    for it in its:
        d = dict(it)
        d.pop("run_id")
        d["cells"], d["subcalls"] = [], []
        runs[it["run_id"]]["iterations_list"][it["iteration"]] = d
    cell_map: dict[tuple[str, int, int], dict[str, Any]] = {}
    for cell in cells:
        d = dict(cell)
        d["variables"] = _loads(d["variables"], [])
        d["timed_out"] = bool(d["timed_out"])
        d["subcalls"] = []
        run_its = runs[cell["run_id"]]["iterations_list"]
        it = run_its.get(cell["iteration"])
        if it is None:
            it = run_its[cell["iteration"]] = {"iteration": cell["iteration"], "cells": [], "subcalls": []}
        it["cells"].append(d)
        cell_map[(cell["run_id"], cell["iteration"], cell["idx"])] = d
    linked: set[str] = set()
    for s in subs:
        d = dict(s)
        child_id = d.pop("child_run_id")
        d["child"] = runs.get(child_id) if child_id else None
        if child_id in runs:
            linked.add(child_id)
        target = cell_map.get((s["run_id"], s["iteration"], s["cell_idx"]))
        if target is not None:
            target["subcalls"].append(d)
        else:
            run_its = runs[s["run_id"]]["iterations_list"]
            key = s["iteration"] or 0
            it = run_its.get(key)
            if it is None:
                it = run_its[key] = {"iteration": key, "cells": [], "subcalls": []}
            it["subcalls"].append(d)
    for r in runs.values():
        r["iterations"] = [r["iterations_list"][k] for k in sorted(r["iterations_list"])]
        del r["iterations_list"]
        if r["parent_id"] in runs and r["id"] not in linked:
            runs[r["parent_id"]]["children_unlinked"].append(r)
    return runs[run_id]


def walk(run: dict[str, Any]) -> Iterable[dict[str, Any]]:
    """Every run of a tree, depth first."""
    yield run
    for it in run["iterations"]:
        for cell in it["cells"]:
            for s in cell["subcalls"]:
                if s.get("child"):
                    yield from walk(s["child"])
        for s in it["subcalls"]:
            if s.get("child"):
                yield from walk(s["child"])
    for child in run.get("children_unlinked", []):
        yield from walk(child)


# --- export -------------------------------------------------------------------------------------


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts).isoformat()


def _usage_summary(model: str, calls: int, inp: int, out: int, cost: float | None) -> dict[str, Any]:
    return {"model_usage_summaries": {model: {"total_calls": calls, "total_input_tokens": inp,
                                              "total_output_tokens": out, "total_cost": cost}},
            "total_calls": calls, "total_input_tokens": inp, "total_output_tokens": out,
            "total_cost": cost}


def _run_usage_summary(run: dict[str, Any]) -> dict[str, Any]:
    per = {u["model"]: {"total_calls": u["calls"], "total_input_tokens": u["input_tokens"],
                        "total_output_tokens": u["output_tokens"], "total_cost": u["cost"]}
           for u in run["usage"]}
    return {"model_usage_summaries": per, "total_calls": run["calls"],
            "total_input_tokens": run["input_tokens"], "total_output_tokens": run["output_tokens"],
            "total_cost": run["cost"]}


def _metadata_record(run: dict[str, Any]) -> dict[str, Any]:
    settings = dict(run["settings"] or {})
    return {"type": "metadata", "timestamp": _iso(run["started_at"]), "run_id": run["id"],
            "parent_run_id": run["parent_id"], "depth": run["depth"],
            "root_model": run["root_model"], "backend": run["backend"],
            "environment_type": run["environment"], "root_prompt": run["root_prompt"],
            "context_type": run["context_type"], "context_lengths": run["context_lengths"],
            **settings, "prompt": run["prompt"]}


def _call_record(run: dict[str, Any], s: dict[str, Any]) -> dict[str, Any]:
    model = s["model"] or ""
    child = s.get("child")
    if child is not None:
        usage = _run_usage_summary(child)
    else:
        usage = _usage_summary(model, 0 if s["error"] else 1, s["input_tokens"] or 0,
                               s["output_tokens"] or 0, s["cost"])
    d: dict[str, Any] = {"root_model": model, "prompt": s["prompt"], "response": s["response"] or
                         (s["error"] or ""), "usage_summary": usage,
                         "execution_time": s["duration"] or 0.0, "depth": run["depth"] + 1,
                         "kind": s["kind"] or "llm"}
    if s["error"]:
        d["error"] = s["error"]
        d["error_type"] = s["error"].split(":", 2)[1].strip() if s["error"].count(":") >= 2 else "Error"
    if child is not None:
        d["metadata"] = trajectory(child)
    return d


def _iteration_records(run: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for it in run["iterations"]:
        blocks = []
        for cell in it["cells"]:
            names = list(cell["variables"] or [])
            blocks.append({"code": cell["code"] or "", "result": {
                "stdout": cell["stdout"] or "", "stderr": cell["stderr"] or "", "error": cell["error"],
                "variables": names, "locals": dict.fromkeys(names),
                "execution_time": cell["execution_time"] or 0.0,
                "final_answer": cell["final_answer"], "timed_out": cell["timed_out"],
                "rlm_calls": [_call_record(run, s) for s in cell["subcalls"]]}})
        rec: dict[str, Any] = {"type": "iteration", "iteration": it["iteration"],
                               "timestamp": _iso(it.get("finished_at") or it.get("started_at")),
                               "response": it.get("response") or "", "code_blocks": blocks,
                               "final_answer": it.get("final_answer"),
                               "iteration_time": it.get("iteration_time")}
        if it.get("input_tokens") is not None:
            rec["usage"] = {"input_tokens": it["input_tokens"], "output_tokens": it["output_tokens"],
                            "cost": it.get("cost")}
        out.append(rec)
    return out


def _result_record(run: dict[str, Any]) -> dict[str, Any]:
    return {"type": "result", "timestamp": _iso(run["finished_at"]), "status": run["status"],
            "response": run["response"], "error": run["error"],
            "execution_time": run["execution_time"], "usage_summary": _run_usage_summary(run)}


def trajectory(run: dict[str, Any]) -> dict[str, Any]:
    """``RLMLogger.get_trajectory()``'s shape: run_metadata, iterations, result."""
    return {"run_metadata": _metadata_record(run), "iterations": _iteration_records(run),
            "result": _result_record(run) if run["finished_at"] is not None else None}


def export_jsonl(run: dict[str, Any]) -> Iterable[str]:
    """The run as JSONL lines in ``RLMLogger``'s format: metadata, iterations, result; child runs
    nested in the ``metadata`` of the sub-call records that started them."""
    yield json.dumps(_metadata_record(run), ensure_ascii=False, default=str)
    for rec in _iteration_records(run):
        yield json.dumps(rec, ensure_ascii=False, default=str)
    if run["finished_at"] is not None:
        yield json.dumps(_result_record(run), ensure_ascii=False, default=str)


# --- import -------------------------------------------------------------------------------------


def _ts(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        return None


def _totals(summary: Any) -> tuple[int, int, int, float | None, dict[str, dict[str, Any]]]:
    if not isinstance(summary, dict):
        return 0, 0, 0, None, {}
    per = summary.get("model_usage_summaries") or {}
    per = {m: s for m, s in per.items() if isinstance(s, dict)}
    calls = summary.get("total_calls")
    calls = int(calls) if calls is not None else sum(int(s.get("total_calls") or 0) for s in per.values())
    inp = summary.get("total_input_tokens")
    inp = int(inp) if inp is not None else sum(int(s.get("total_input_tokens") or 0) for s in per.values())
    out = summary.get("total_output_tokens")
    out = int(out) if out is not None else sum(int(s.get("total_output_tokens") or 0) for s in per.values())
    cost = summary.get("total_cost")
    if cost is None:
        costs = [s.get("total_cost") for s in per.values() if s.get("total_cost") is not None]
        cost = sum(costs) if costs else None
    return calls, inp, out, cost, per


class _Importer:
    def __init__(self, db: Database, c: sqlite3.Connection, source: str, max_text: int, max_ctx: int):
        self.db, self.c, self.source = db, c, source
        self.max_text, self.max_ctx = max_text, max_ctx

    def t(self, v: Any) -> str | None:
        return clip(v, self.max_text)

    def run(self, run_id: str, meta: dict[str, Any], iterations: list[dict[str, Any]],
            result: dict[str, Any] | None, *, parent_id: str | None, root_id: str,
            parent_subcall_id: int | None, depth: int) -> None:
        c = self.c
        known = {"type", "timestamp", "run_id", "parent_run_id", "depth", "root_model", "backend",
                 "environment_type", "root_prompt", "context_type", "context_lengths", "prompt"}
        settings = {k: v for k, v in meta.items() if k not in known}
        started = _ts(meta.get("timestamp"))
        its_sorted = sorted(iterations, key=lambda r: int(r.get("iteration") or 0))
        if started is None and its_sorted:
            first = its_sorted[0]
            started = (_ts(first.get("timestamp")) or 0.0) - float(first.get("iteration_time") or 0)
        started = started or 0.0
        final = None
        for it in its_sorted:
            if it.get("final_answer") is not None:
                final = it.get("final_answer")
        last_ts = max([_ts(r.get("timestamp")) or started for r in its_sorted] or [started])
        if result:
            status = RunStatus.parse(result.get("status") or "completed").value
            finished = _ts(result.get("timestamp")) or last_ts
            response = result.get("response", final)
            error = result.get("error")
            exec_time = result.get("execution_time")
            calls, inp, out, cost, per = _totals(result.get("usage_summary"))
        else:
            status = "completed" if final is not None else "imported"
            finished, response, error = last_ts, final, None
            exec_time = max(0.0, last_ts - started) if its_sorted else None
            calls = inp = out = 0
            cost, per = None, {}
        prompt = meta.get("prompt")
        ctype = meta.get("context_type")
        lengths = meta.get("context_lengths") or []
        c.execute(
            "INSERT INTO runs (id, root_id, parent_id, parent_subcall_id, depth, status, started_at, "
            "finished_at, updated_at, root_model, backend, environment, root_prompt, prompt, "
            "context_type, context_lengths, settings, response, error, execution_time, iterations, "
            "calls, input_tokens, output_tokens, cost, source) VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run_id, root_id, parent_id, parent_subcall_id, int(meta.get("depth", depth) or depth),
             status, started, finished, finished, meta.get("root_model"), meta.get("backend"),
             meta.get("environment_type") or meta.get("environment"),
             self.t(meta.get("root_prompt")), clip(prompt, self.max_ctx), ctype,
             json.dumps(lengths), json.dumps(settings, default=str), self.t(response),
             self.t(error), exec_time, len(its_sorted), calls, inp, out, cost, self.source))
        for model, s in per.items():
            c.execute("INSERT OR REPLACE INTO usage (run_id, model, calls, input_tokens, output_tokens, "
                      "cost) VALUES (?, ?, ?, ?, ?, ?)",
                      (run_id, model, int(s.get("total_calls") or 0), int(s.get("total_input_tokens") or 0),
                       int(s.get("total_output_tokens") or 0), s.get("total_cost")))
        seq = 0
        sum_inp = sum_out = sum_calls = 0
        for it in its_sorted:
            n = int(it.get("iteration") or 0)
            end = _ts(it.get("timestamp")) or started
            dur = float(it.get("iteration_time") or 0.0)
            usage = it.get("usage") or {}
            c.execute("INSERT OR REPLACE INTO iterations (run_id, iteration, started_at, finished_at, "
                      "response, final_answer, iteration_time, input_tokens, output_tokens, cost) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      (run_id, n, end - dur, end, self.t(it.get("response")),
                       self.t(it.get("final_answer")), dur, usage.get("input_tokens"),
                       usage.get("output_tokens"), usage.get("cost")))
            if usage:
                sum_calls += 1
                sum_inp += int(usage.get("input_tokens") or 0)
                sum_out += int(usage.get("output_tokens") or 0)
            clock = end - dur
            for idx, block in enumerate(it.get("code_blocks") or []):
                if not isinstance(block, dict):
                    continue
                res = block.get("result") or {}
                names = res.get("variables")
                if names is None:
                    names = list((res.get("locals") or {}).keys())
                cell_time = float(res.get("execution_time") or 0.0)
                c.execute("INSERT INTO cells (run_id, iteration, idx, code, stdout, stderr, error, "
                          "variables, execution_time, final_answer, timed_out, finished_at) VALUES "
                          "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                          (run_id, n, idx, self.t(block.get("code")), self.t(res.get("stdout")),
                           self.t(res.get("stderr")), self.t(res.get("error")),
                           json.dumps(names, default=str), cell_time, self.t(res.get("final_answer")),
                           int(bool(res.get("timed_out"))), clock + cell_time))
                call_clock = clock
                for call in res.get("rlm_calls") or []:
                    if not isinstance(call, dict):
                        continue
                    seq += 1
                    ccalls, cinp, cout, ccost, _ = _totals(call.get("usage_summary"))
                    cdur = float(call.get("execution_time") or 0.0)
                    child_meta = call.get("metadata")
                    kind = call.get("kind") or ("rlm" if isinstance(child_meta, dict) and
                                                child_meta.get("iterations") else "llm")
                    cur = c.execute(
                        "INSERT INTO subcalls (run_id, iteration, cell_idx, seq, kind, model, prompt, "
                        "response, started_at, finished_at, duration, error, input_tokens, "
                        "output_tokens, cost) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (run_id, n, idx, seq, kind, call.get("root_model"), self.t(call.get("prompt")),
                         self.t(call.get("response")), call_clock, call_clock + cdur, cdur,
                         call.get("error"), cinp, cout, ccost))
                    if kind == "llm":
                        sum_calls += ccalls or (0 if call.get("error") else 1)
                        sum_inp += cinp
                        sum_out += cout
                    call_clock += cdur
                    if isinstance(child_meta, dict) and isinstance(child_meta.get("iterations"), list):
                        cmeta = dict(child_meta.get("run_metadata") or {})
                        child_id = str(cmeta.get("run_id") or uuid.uuid4().hex[:12])
                        if self.c.execute("SELECT 1 FROM runs WHERE id=?", (child_id,)).fetchone():
                            child_id = uuid.uuid4().hex[:12]
                        self.run(child_id, cmeta, child_meta["iterations"], child_meta.get("result"),
                                 parent_id=run_id, root_id=root_id, parent_subcall_id=cur.lastrowid,
                                 depth=depth + 1)
                        c.execute("UPDATE subcalls SET child_run_id=? WHERE id=?", (child_id, cur.lastrowid))
                        child_calls, child_in, child_out = c.execute(
                            "SELECT calls, input_tokens, output_tokens FROM runs WHERE id=?",
                            (child_id,)).fetchone()
                        sum_calls += child_calls
                        sum_inp += child_in
                        sum_out += child_out
                clock += cell_time
        if not result:  # no result record (the reference library writes none): add up what we saw
            c.execute("UPDATE runs SET calls=?, input_tokens=?, output_tokens=? WHERE id=?",
                      (sum_calls, sum_inp, sum_out, run_id))


def parse_jsonl(lines: Iterable[str], *, name: str = "<input>") -> list[dict[str, Any]]:
    """Group JSONL records into runs: ``[{"metadata", "iterations", "result", "format"}]``.

    Reads files written by ``RLMLogger`` (this project) and by the reference library (``rlms``:
    metadata, optional ``run_context``, iterations, no result record).
    """
    runs: list[dict[str, Any]] = []
    cur: dict[str, Any] | None = None
    for lineno, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigurationError(f"{name}, line {lineno}: not JSON ({exc.msg}); is this a JSONL "
                                     "trajectory written by RLMLogger?") from None
        if not isinstance(rec, dict):
            raise ConfigurationError(f"{name}, line {lineno}: expected a JSON object per line.")
        typ = rec.get("type")
        if typ == "metadata":
            cur = {"metadata": rec, "iterations": [], "result": None, "raw": [line]}
            runs.append(cur)
            continue
        if cur is None:
            if typ in ("iteration", "run_context", "result"):
                cur = {"metadata": {}, "iterations": [], "result": None, "raw": []}
                runs.append(cur)
            else:
                continue
        cur["raw"].append(line[:2000])
        if typ == "iteration":
            cur["iterations"].append(rec)
        elif typ == "run_context":
            for k in ("prompt", "root_prompt", "environment_type", "environment_kwargs"):
                if rec.get(k) is not None and cur["metadata"].get(k) is None:
                    cur["metadata"][k] = rec[k]
        elif typ == "result":
            cur["result"] = rec
    if not runs:
        raise ConfigurationError(f"{name} holds no trajectory: expected a 'metadata' record followed "
                                 "by 'iteration' records (the RLMLogger JSONL format).")
    for r in runs:
        r["format"] = "rlmlogger" if "run_id" in r["metadata"] else "rlms"
    return runs


def import_runs(db: Database, runs: list[dict[str, Any]], *, max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
                max_context_chars: int = DEFAULT_MAX_CONTEXT_CHARS) -> list[tuple[str, bool]]:
    """Store parsed runs. Returns ``(run_id, imported)`` per run; ``imported`` is False for a run
    already in the store (importing the same file twice changes nothing)."""
    out = []
    for r in runs:
        meta = r["metadata"]
        run_id = meta.get("run_id")
        if not run_id:  # no id in the file: derive one from the content, so re-imports are found
            run_id = hashlib.sha1("\n".join(r["raw"]).encode()).hexdigest()[:12]
        run_id = str(run_id)
        with db.transaction() as c:
            if c.execute("SELECT 1 FROM runs WHERE id=?", (run_id,)).fetchone():
                out.append((run_id, False))
                continue
            imp = _Importer(db, c, f"import:{r['format']}", max_text_chars, max_context_chars)
            imp.run(run_id, meta, r["iterations"], r["result"], parent_id=None, root_id=run_id,
                    parent_subcall_id=None, depth=int(meta.get("depth") or 0))
        out.append((run_id, True))
    return out


def import_file(db: Database, path: str | os.PathLike[str]) -> list[tuple[str, bool]]:
    p = Path(path)
    try:
        with open(p, encoding="utf-8") as fh:
            runs = parse_jsonl(fh, name=str(p))
    except FileNotFoundError:
        raise ConfigurationError(f"no such file: {p}") from None
    except UnicodeDecodeError:
        raise ConfigurationError(f"{p} is not UTF-8 text; expected a JSONL trajectory.") from None
    return import_runs(db, runs)
