"""Batch runs: one RLM completion per input line, on an executor plugin.

    import rlm

    report = rlm.batch("tasks.jsonl", output="out.jsonl", backend="openai",
                       backend_kwargs={"model_name": "gpt-4o-mini"}, concurrency=16)
    print(report.summary())

or ``rlm batch tasks.jsonl --output out.jsonl --backend openai --model gpt-4o-mini``.

Input: JSON Lines. Each line is an object ``{"prompt": ..., "root_prompt": "...", "settings":
{...}, "id": ...}`` (only ``prompt`` is required; it may be a string, an object or a list, like
``completion()``'s) or a bare JSON string (the prompt). ``settings`` are ``RLM(...)`` arguments
for that line only (``max_iterations``, ``max_budget``, ``backend_kwargs`` merged into the
batch's, ...). Blank lines are ignored.

Output: one JSON object per input line, appended and fsync'ed as soon as the line finishes, in
completion order, tagged with ``index`` (0-based position among the items), ``line`` (1-based
line number of the input file) and ``id`` (when the input has one). A line that fails is
recorded with ``"status": "error"``, ``error``, ``error_type`` and ``partial_answer``; the batch
goes on. Rerunning with the same output skips the lines it already holds (``retry_errors=True``
reruns the failed ones), so an interrupted batch resumes where it stopped; ``ordered=True``
rewrites the file in input order at the end (atomically).

Lines run on an executor (``rlm.protocols.Executor``, registered by plugins through
``rlm_register_executors``): ``threads`` by default, ``ray`` with ``rlm-executor-ray``. The job
sent to the executor is plain data plus :func:`run_line`, so it can run in another process or on
another machine; the results come back to this process, which alone writes the output file.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rlm.exceptions import ConfigurationError
from rlm.settings import NAMES, PER_LINE, PROCESS_ARGUMENTS

#: What a line's ``settings`` may set (rlm.settings.PER_LINE), and the ``RLM(...)`` arguments no
#: line can have: objects of this process (rlm.settings.PROCESS_ARGUMENTS) and ``persistent``.
_NOT_PER_LINE = frozenset(PROCESS_ARGUMENTS) | (frozenset(NAMES) - PER_LINE)
_MERGED = ("backend_kwargs", "environment_kwargs", "sampling_args", "sub_sampling_args")


# -- input ---------------------------------------------------------------------------------


@dataclass
class BatchItem:
    """One line of a batch: what :func:`run_line` needs, as plain (picklable) data."""

    index: int
    prompt: Any
    root_prompt: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    id: Any = None
    line: int | None = None
    sha: str = ""
    problem: str | None = None  # why this line cannot run (recorded as its error)


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=repr)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _item_from(value: Any, index: int, line: int | None) -> BatchItem:
    where = f"line {line}" if line is not None else f"item {index}"
    if isinstance(value, str):
        return BatchItem(index, value, line=line, sha=_digest(value))
    if not isinstance(value, Mapping):
        return BatchItem(index, None, line=line, sha=_digest(value), problem=(
            f"{where} is a {type(value).__name__}; each line must be a JSON object with a "
            "\"prompt\" key (or a JSON string, the prompt)"))
    item = BatchItem(index, value.get("prompt"), value.get("root_prompt"),
                     dict(value.get("settings") or {}), value.get("id"), line, _digest(value))
    unknown = sorted(set(value) - {"prompt", "root_prompt", "settings", "id"})
    if "prompt" not in value:
        item.problem = (f"{where} has no \"prompt\" key (keys: {sorted(value)}); give the "
                        "context of the completion as \"prompt\"")
    elif unknown:
        item.problem = (f"{where} has unknown keys {unknown}; a line may have \"prompt\", "
                        "\"root_prompt\", \"settings\" (RLM arguments for this line) and \"id\"")
    elif item.root_prompt is not None and not isinstance(item.root_prompt, str):
        item.problem = f"{where}: \"root_prompt\" must be a string"
    elif not isinstance(value.get("settings") or {}, Mapping):
        item.problem = f"{where}: \"settings\" must be an object of RLM arguments"
    return item


def read_items(source: str | os.PathLike[str] | Iterable[Any]) -> list[BatchItem]:
    """The items of a batch: from a JSONL file (a path) or from an iterable of prompts/objects.

    A file line that is not valid JSON raises :class:`ConfigurationError` naming the line (the
    file is malformed, not the task); a line of the wrong shape becomes that item's error.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            fh = open(path, encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(f"cannot read the batch input {str(path)!r}: "
                                     f"{exc.strerror}") from None
        items: list[BatchItem] = []
        with fh:
            for lineno, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                try:
                    value = json.loads(raw)
                except json.JSONDecodeError as exc:
                    raise ConfigurationError(
                        f"{path}:{lineno} is not valid JSON ({exc.msg} at column {exc.colno}); "
                        "each line of a batch input is one JSON object such as "
                        '{"prompt": "...", "root_prompt": "..."}') from None
                items.append(_item_from(value, len(items), lineno))
        return items
    if isinstance(source, (bytes, Mapping)):
        raise ConfigurationError("batch items must be a path to a .jsonl file or an iterable of "
                                 "prompts / {\"prompt\": ...} objects")
    return [_item_from(v, i, None) for i, v in enumerate(source)]


# -- the job (runs wherever the executor puts it) -------------------------------------------

_cache_lock = threading.Lock()
_cache: dict[str, Any] = {}


def _cached_rlm(settings: dict[str, Any]) -> Any:
    """One RLM per distinct settings in this process, shared by the lines that use them (an RLM
    runs concurrent non-persistent completions safely and reuses its backend's connections)."""
    from rlm import RLM

    key = json.dumps(settings, sort_keys=True, default=lambda v: f"{type(v).__name__}@{id(v)}")
    with _cache_lock:
        rlm = _cache.get(key)
        if rlm is None:
            rlm = _cache[key] = RLM(**settings)
        return rlm


def close_cached() -> None:
    """Close the RLMs :func:`run_line` built in this process."""
    with _cache_lock:
        rlms = list(_cache.values())
        _cache.clear()
    for rlm in rlms:
        try:
            rlm.close()
        except Exception:  # noqa: BLE001
            pass


def cancel_cached() -> None:
    """Cancel every completion running in this process's batch RLMs (Ctrl+C)."""
    with _cache_lock:
        rlms = list(_cache.values())
    for rlm in rlms:
        rlm.cancel()


def _tag(item: Mapping[str, Any]) -> dict[str, Any]:
    out = {"index": item["index"]}
    if item.get("line") is not None:
        out["line"] = item["line"]
    if item.get("id") is not None:
        out["id"] = item["id"]
    out["input_sha"] = item["sha"]
    return out


def error_record(item: Mapping[str, Any], exc: BaseException | str, *,
                 error_type: str | None = None, partial: str | None = None) -> dict[str, Any]:
    text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
    return {**_tag(item), "status": "error", "error": text,
            "error_type": error_type or (type(exc).__name__ if not isinstance(exc, str)
                                         else "ConfigurationError"),
            "partial_answer": partial}


def run_line(job: Mapping[str, Any]) -> dict[str, Any]:
    """Run one batch line and return its output record (never raises for the line's own errors).

    ``job`` is plain data: ``index``, ``line``, ``id``, ``sha``, ``prompt``, ``root_prompt`` and
    ``settings`` (the ``RLM(...)`` arguments, batch defaults and the line's own merged).
    """
    t0 = time.perf_counter()
    worker = f"{socket.gethostname()}:{os.getpid()}"
    run = None
    try:
        rlm = _cached_rlm(dict(job["settings"]))
        run = rlm._start_run(job["prompt"], job.get("root_prompt"))
        result = run.execute()
    except Exception as exc:  # noqa: BLE001 - limits, backend errors, a plugin's bug: this line
        rec = error_record(job, exc, partial=getattr(exc, "partial_answer", None))
        if run is not None:  # what the line spent before it failed still counts
            rec["usage_summary"] = run.tracker.summary().to_dict()
    else:
        rec = {**_tag(job), "status": "ok", "response": result.response,
               "root_model": result.root_model, "execution_time": result.execution_time,
               "usage_summary": result.usage_summary.to_dict()}
    rec["worker"] = worker
    rec.setdefault("execution_time", time.perf_counter() - t0)
    return rec


# -- output --------------------------------------------------------------------------------


class OutputFile:
    """The output JSONL: existing records (for resuming) and atomic appends.

    Each record is written with one ``write`` of one line, flushed and fsync'ed before the next,
    so a crash leaves at most a torn last line, which the next run drops.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.records: dict[int, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._fh: IO[str] | None = None
        self.dropped_tail = False
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        pos, lineno = 0, 0
        while pos < len(data):
            nl = data.find(b"\n", pos)
            if nl < 0:  # no newline: a record written half-way by an interrupted run
                break
            raw, lineno = data[pos:nl], lineno + 1
            if raw.strip():
                try:
                    rec = json.loads(raw)
                    if not isinstance(rec, dict) or not isinstance(rec.get("index"), int):
                        raise ValueError("not a batch record")
                except ValueError:
                    raise ConfigurationError(
                        f"{self.path}:{lineno} is not a record of rlm batch; is the output "
                        "pointing at the right file? Use another output path, or delete it to "
                        "start over.") from None
                self.records[rec["index"]] = rec  # a later record of a line (a retry) wins
            pos = nl + 1
        if pos < len(data):
            self.dropped_tail = True
            with open(self.path, "r+b") as fh:
                fh.truncate(pos)

    def check_matches(self, items: list[BatchItem]) -> None:
        by_index = {it.index: it for it in items}
        for index, rec in sorted(self.records.items()):
            item = by_index.get(index)
            if item is None or rec.get("input_sha") != item.sha:
                where = f"line {rec.get('line')}" if rec.get("line") else f"item {index}"
                raise ConfigurationError(
                    f"{self.path} was written for a different input: its record of {where} does "
                    "not match this input's. Write to a new --output, or delete the file to "
                    "start over.")

    def append(self, record: Mapping[str, Any]) -> None:
        text = json.dumps(record, ensure_ascii=False, default=repr) + "\n"
        with self._lock:
            if self._fh is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = open(self.path, "a", encoding="utf-8")
            self._fh.write(text)
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self.records[int(record["index"])] = dict(record)

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None

    def rewrite_ordered(self) -> None:
        """Rewrite the file with one record per line, in input order (tmp file + rename)."""
        with self._lock:
            tmp = self.path.with_name(self.path.name + ".tmp")
            with open(tmp, "w", encoding="utf-8") as fh:
                for index in sorted(self.records):
                    fh.write(json.dumps(self.records[index], ensure_ascii=False, default=repr)
                             + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)


# -- progress ------------------------------------------------------------------------------


class Progress:
    """``[#######.....] 120/200  3 failed  12.3/s  ETA 7s`` on stderr, redrawn in place; drawn
    only when the stream is a terminal (or ``force=True``)."""

    def __init__(self, total: int, done: int = 0, stream: IO[str] | None = None,
                 force: bool | None = None, width: int = 30):
        self.stream = stream or sys.stderr
        if force is None:
            try:
                force = bool(self.stream.isatty())
            except (AttributeError, ValueError):
                force = False
        self.enabled = force
        self.total, self.done, self.failed, self.width = total, done, 0, width
        self._start_done = done
        self._t0 = time.monotonic()
        self._last = 0.0

    def line(self) -> str:
        frac = self.done / self.total if self.total else 1.0
        filled = int(frac * self.width)
        bar = "#" * filled + "." * (self.width - filled)
        rate = (self.done - self._start_done) / max(1e-9, time.monotonic() - self._t0)
        parts = [f"[{bar}] {self.done}/{self.total}"]
        if self.failed:
            parts.append(f"{self.failed} failed")
        if rate > 0:
            parts.append(f"{rate:.1f}/s")
            parts.append(f"ETA {max(0, self.total - self.done) / rate:.0f}s")
        return "  ".join(parts)

    def update(self, ok: bool) -> None:
        self.done += 1
        self.failed += 0 if ok else 1
        now = time.monotonic()
        if self.enabled and (now - self._last > 0.1 or self.done == self.total):
            self._last = now
            self.stream.write("\r" + self.line() + "\x1b[K")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r" + self.line() + "\x1b[K\n")
            self.stream.flush()


# -- the batch -----------------------------------------------------------------------------


@dataclass
class BatchReport:
    """What :func:`batch` did. ``results`` holds every record (this run's and those already in
    the output), one per item, in input order; ``succeeded`` / ``failed`` count them;
    ``ran`` / ``usage`` / ``elapsed`` are this call's (lines skipped on resume cost nothing)."""

    total: int
    ran: int
    skipped: int
    succeeded: int
    failed: int
    elapsed: float
    usage: dict[str, Any]
    executor: str
    output: str | None
    results: list[dict[str, Any]]

    def summary(self) -> str:
        calls = sum(m.get("total_calls", 0) for m in self.usage.values())
        cost = [m.get("total_cost") for m in self.usage.values() if m.get("total_cost") is not None]
        text = (f"{self.total} lines: {self.succeeded} ok, {self.failed} failed; {self.ran} run "
                f"now in {self.elapsed:.1f}s on {self.executor} ({calls} model calls")
        if cost:
            text += f", ${sum(cost):.4f}"
        text += f"), {self.skipped} already in the output"
        return text


def _add_usage(total: dict[str, Any], usage: Mapping[str, Any] | None) -> None:
    for model, s in ((usage or {}).get("model_usage_summaries") or {}).items():
        t = total.setdefault(model, {"total_calls": 0, "total_input_tokens": 0,
                                     "total_output_tokens": 0, "total_cost": None})
        for k in ("total_calls", "total_input_tokens", "total_output_tokens"):
            t[k] += int(s.get(k) or 0)
        if s.get("total_cost") is not None:
            t["total_cost"] = (t["total_cost"] or 0.0) + float(s["total_cost"])


def _line_settings(defaults: dict[str, Any], own: Mapping[str, Any],
                   allowed: set[str]) -> dict[str, Any]:
    bad = sorted(set(own) - allowed)
    if bad:
        raise ConfigurationError(
            f"unknown or unsupported settings {bad}; a line's settings are RLM(...) arguments "
            f"such as max_iterations, max_depth, max_budget, max_timeout, backend_kwargs "
            f"(not {sorted(_NOT_PER_LINE)})")
    merged = dict(defaults)
    for k, v in own.items():
        if k in _MERGED and isinstance(v, Mapping):
            merged[k] = {**(merged.get(k) or {}), **v}
        else:
            merged[k] = v
    return merged


def batch(items: str | os.PathLike[str] | Iterable[Any], *,
          output: str | os.PathLike[str] | None = None, executor: str = "threads",
          executor_kwargs: Mapping[str, Any] | None = None, concurrency: int = 8,
          ordered: bool = False, retry_errors: bool = False, progress: bool | None = None,
          plugin_manager: Any = None, log: bool = False, **rlm_kwargs: Any) -> BatchReport:
    """Run one RLM completion per item and record every result.

    ``items``: a ``.jsonl`` path or an iterable of prompts / ``{"prompt", "root_prompt",
    "settings", "id"}`` objects. ``rlm_kwargs``: the ``RLM(...)`` arguments of every line
    (``backend``, ``backend_kwargs``, ``max_iterations``, ...), which a line's ``settings``
    override. ``output``: the JSONL file to append results to (and resume from). ``executor``:
    an executor plugin name (``threads``; ``ray`` with ``rlm-executor-ray``) built with
    ``executor_kwargs`` (for Ray: ``{"address": "ray://head:10001"}``). ``concurrency``: lines
    in flight at once. ``ordered``: rewrite the output in input order at the end.
    ``progress``: draw a progress bar on stderr (default: when stderr is a terminal).
    ``log``: record every line's run in the trajectory store (``rlm logs``, ``rlm view``), as
    ``rlm run`` does (``rlm batch`` sets it unless ``--no-log``); lines that run in this process
    only (an executor with ``in_process``), when the ``store`` sink is installed.

    Per-line failures are recorded and counted, never raised. Raises
    :class:`ConfigurationError` for a malformed input file, an output written for another
    input, an unknown executor or bad arguments; Ctrl+C cancels the lines in flight, keeps what
    finished, and raises ``KeyboardInterrupt`` (rerun to resume).
    """
    from rlm import get_plugin_manager

    if not isinstance(concurrency, int) or concurrency < 1:
        raise ConfigurationError(f"concurrency must be an integer >= 1, got {concurrency!r}.")
    allowed = set(NAMES) | set(PROCESS_ARGUMENTS)
    bad = sorted(set(rlm_kwargs) - allowed)
    if bad:
        raise ConfigurationError(f"batch() got unknown RLM arguments {bad}.")
    blocked = sorted(set(rlm_kwargs) & (_NOT_PER_LINE - {"plugin_manager"}))
    if blocked:
        raise ConfigurationError(
            f"batch() cannot pass {blocked} to the lines' RLMs: lines may run in other "
            "processes; log with the output file (each record has the usage) instead.")
    pm = plugin_manager or get_plugin_manager()
    pm.entry("executor", executor)  # unknown names fail now, with the install line
    t0 = time.perf_counter()
    all_items = read_items(items)
    out = OutputFile(output) if output is not None else None
    records: dict[int, dict[str, Any]] = {}
    if out is not None:
        out.check_matches(all_items)
        for index, rec in out.records.items():
            if rec.get("status") == "ok" or not retry_errors:
                records[index] = rec
    todo = [it for it in all_items if it.index not in records]
    skipped = len(all_items) - len(todo)
    per_line_allowed = set(PER_LINE)
    jobs: list[dict[str, Any]] = []
    usage: dict[str, Any] = {}
    bar = Progress(len(all_items), skipped, force=progress)
    ran = 0

    def finish(rec: dict[str, Any]) -> None:
        nonlocal ran
        ran += 1
        ok = rec.get("status") == "ok"
        records[int(rec["index"])] = rec
        _add_usage(usage, rec.get("usage_summary"))
        if out is not None:
            out.append(rec)
        bar.update(ok)

    for it in todo:
        job = {"index": it.index, "line": it.line, "id": it.id, "sha": it.sha,
               "prompt": it.prompt, "root_prompt": it.root_prompt}
        problem = it.problem
        if problem is None:
            try:
                job["settings"] = _line_settings(rlm_kwargs, it.settings, per_line_allowed)
            except ConfigurationError as exc:
                problem = str(exc)
        if problem is not None:
            finish(error_record(job, problem, error_type="ConfigurationError"))
            continue
        jobs.append(job)

    engine = pm.create("executor", executor, **dict(executor_kwargs or {}))
    where = getattr(engine, "describe", lambda: executor)()
    if plugin_manager is not None and getattr(engine, "in_process", False):
        for job in jobs:  # an isolated manager reaches lines that run in this process
            job["settings"]["plugin_manager"] = plugin_manager
    if log and getattr(engine, "in_process", False) and "store" in pm.registry("sink").entries:
        for job in jobs:  # each line is a run in the store, like one of `rlm run`
            job["settings"]["sinks"] = ["store"]
    cancelled = False
    handle = None
    try:
        if jobs:
            handle = engine.map(run_line, jobs, concurrency=concurrency)
            pending = {j["index"]: j for j in jobs}
            for pos, result, error in handle:
                job = jobs[pos]
                pending.pop(job["index"], None)
                if error is not None:  # the executor lost the job (a worker died for good, ...)
                    rec = error_record(job, error)
                elif not isinstance(result, dict) or result.get("index") != job["index"]:
                    rec = error_record(job, f"the executor returned {type(result).__name__} "
                                            "instead of the line's record",
                                       error_type="ExecutorError")
                else:
                    rec = result
                finish(rec)
    except KeyboardInterrupt:
        cancelled = True
        if handle is not None:
            handle.cancel()
        cancel_cached()
        raise
    finally:
        bar.close()
        try:
            engine.close()
        finally:
            close_cached()
            if out is not None:
                out.close()
                if ordered and not cancelled:
                    out.rewrite_ordered()
    results = [records[i] for i in sorted(records)]
    return BatchReport(
        total=len(all_items), ran=ran, skipped=skipped,
        succeeded=sum(1 for r in results if r.get("status") == "ok"),
        failed=sum(1 for r in results if r.get("status") != "ok"),
        elapsed=time.perf_counter() - t0, usage=usage, executor=where,
        output=str(out.path) if out is not None else None, results=results)


def iter_records(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The records of a batch output file (a torn last line is skipped)."""
    with open(path, encoding="utf-8") as fh:
        for raw in fh:
            if raw.strip():
                try:
                    yield json.loads(raw)
                except json.JSONDecodeError:
                    continue
