"""``rlm logs``: the runs in the trajectory store.

    rlm logs [-n 20] [--model M] [--status S] [--since WHEN] [--until WHEN] [--all] [--json]
    rlm logs show ID [--full] [--json]          the whole tree: iterations, cells, sub-calls, children
    rlm logs path                               where the database is
    rlm logs export ID [--jsonl] [-o FILE]      RLMLogger's JSONL format (children nested)
    rlm logs import FILE.jsonl [...]            files written by RLMLogger or by the reference library
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime
from typing import Any

from rlm.exceptions import ConfigurationError

from ._status import STATUSES


def _db():
    from .db import Database

    return Database(os.environ.get("RLM_LOGS_DB") or None)


def _add_list_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", "--count", type=int, default=20, help="how many runs (0: all; default 20)")
    p.add_argument("--model", help="only runs that used this model (substring)")
    p.add_argument("--status", choices=STATUSES,
                   help="how the run ended (completed is the only success)")
    p.add_argument("--since", metavar="WHEN", help="started at or after: 2025-01-31, today, 2h, 3d")
    p.add_argument("--until", metavar="WHEN", help="started at or before (same forms)")
    p.add_argument("-q", "--search", metavar="TEXT", help="text in the prompt or the answer")
    p.add_argument("--all", action="store_true", help="include child runs (rlm_query)")
    p.add_argument("--json", action="store_true", help="one JSON array of runs")


def add_logs_parser(subparsers: Any) -> None:
    logs = subparsers.add_parser("logs", help="list, show, export and import logged runs",
                                 description="Runs logged by `rlm run` (and by RLM(sinks=['store'])) "
                                             "in the local trajectory store.")
    _add_list_options(logs)
    logs.set_defaults(func=_guard(cmd_list))
    sub = logs.add_subparsers(dest="logs_command", metavar="SUBCOMMAND")
    lst = sub.add_parser("list", help="list runs, newest first (the default)")
    _add_list_options(lst)
    lst.set_defaults(func=_guard(cmd_list))
    show = sub.add_parser("show", help="one run as a tree: iterations, cells, sub-calls, child runs")
    show.add_argument("id", nargs="?", default="latest", help="run id or a prefix of it (default: latest)")
    show.add_argument("--full", action="store_true", help="do not shorten long texts")
    show.add_argument("--json", action="store_true", help="the tree as JSON")
    show.set_defaults(func=_guard(cmd_show))
    path = sub.add_parser("path", help="print the path of the logs database")
    path.set_defaults(func=_guard(cmd_path))
    exp = sub.add_parser("export", help="write a run as JSONL (RLMLogger's format)")
    exp.add_argument("id", help="run id or a prefix of it ('latest' for the newest)")
    exp.add_argument("--jsonl", action="store_true", default=True,
                     help="JSONL: a metadata record, then iteration records, then a result (default)")
    exp.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    exp.set_defaults(func=_guard(cmd_export))
    imp = sub.add_parser("import", help="add JSONL trajectories (RLMLogger or the reference library)")
    imp.add_argument("files", nargs="+", metavar="FILE.jsonl")
    imp.set_defaults(func=_guard(cmd_import))
    prune = sub.add_parser(
        "prune", help="remove old runs: by age, by count or down to a size",
        description="Remove logged runs (each with its child runs), oldest first, then compact "
                    "the database. Runs still being written are kept. The database also has a "
                    "size cap applied after every logged run: logs_max_mb in config.toml or "
                    "$RLM_LOGS_MAX_MB (default 1024; 0 turns it off).")
    prune.add_argument("--older-than", metavar="AGE", help="runs started before: 30d, 2w, 12h, "
                                                           "or a date (2025-01-31)")
    prune.add_argument("--keep", type=int, metavar="N", help="keep only the newest N runs")
    prune.add_argument("--max-size", metavar="SIZE", help="remove the oldest runs until the "
                                                          "database is at most SIZE (500MB, 2GB)")
    prune.add_argument("--dry-run", action="store_true", help="say what would go; remove nothing")
    prune.set_defaults(func=_guard(cmd_prune))


def cmd_prune(args: argparse.Namespace) -> int:
    from .prune import parse_size, prune
    from .query import parse_when

    if args.older_than is None and args.keep is None and args.max_size is None:
        print("rlm logs prune: say what to remove: --older-than AGE, --keep N and/or "
              "--max-size SIZE (e.g. rlm logs prune --older-than 30d)", file=sys.stderr)
        return 2
    if args.keep is not None and args.keep < 0:
        print("rlm logs prune: --keep must be >= 0", file=sys.stderr)
        return 2
    older = parse_when(args.older_than) if args.older_than else None
    size = parse_size(args.max_size) if args.max_size else None
    db = _db()
    try:
        report = prune(db, older_than=older, keep=args.keep, max_bytes=size,
                       dry_run=args.dry_run)
    finally:
        db.close()
    verb = "would remove" if args.dry_run else "removed"
    print(f"{verb} {report.runs} runs; the database is {report.bytes_after / 1e6:.1f} MB "
          f"(was {report.bytes_before / 1e6:.1f} MB)")
    return 0


def _guard(fn):
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except ConfigurationError as exc:
            print(f"rlm logs: {exc}", file=sys.stderr)
            return 1
        except BrokenPipeError:
            return 0
    return run


# --- formatting -------------------------------------------------------------------------------


def fmt_tokens(inp: int | None, out: int | None) -> str:
    return f"{inp or 0:,} in / {out or 0:,} out"


def fmt_cost(cost: float | None) -> str:
    if cost is None:
        return "-"
    return f"${cost:.4f}" if cost < 10 else f"${cost:,.2f}"


def fmt_secs(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 60:
        return f"{s:.2f}s"
    m, sec = divmod(int(s), 60)
    return f"{m}m{sec:02d}s" if m < 60 else f"{m // 60}h{m % 60:02d}m"


def fmt_time(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def one_line(text: Any, n: int) -> str:
    s = " ".join(str(text or "").split())
    return s if len(s) <= n else s[: n - 1] + "…"


# --- commands ---------------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    from .query import list_runs, parse_when

    db = _db()
    since = parse_when(args.since) if args.since else None
    until = parse_when(args.until) if args.until else None
    rows = list_runs(db, model=args.model, status=args.status, since=since, until=until,
                     limit=None if args.count == 0 else args.count, roots_only=not args.all,
                     search=args.search)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if not rows:
        print(f"no runs found in {db.path}" + (" matching these filters" if any(
            (args.model, args.status, args.since, args.until, args.search)) else
            " (`rlm run` logs every run here; RLM(sinks=['store']) does it from Python)"),
              file=sys.stderr)
        return 0
    lines = []
    for r in rows:
        dur = r["execution_time"] if r["execution_time"] is not None else (
            (r["updated_at"] or r["started_at"]) - r["started_at"])
        question = r["root_prompt"] or r["prompt"]
        lines.append(f"{r['id']}  {fmt_time(r['started_at'])}  {r['status']:<11} "
                     f"{one_line(r['root_model'] or '?', 24):<24} {fmt_secs(dur):>8}  "
                     f"{r['iterations']:>3} it  {fmt_tokens(r['input_tokens'], r['output_tokens']):>22}  "
                     f"{fmt_cost(r['cost']):>8}  {one_line(question, 60)}")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def cmd_path(args: argparse.Namespace) -> int:
    from .db import default_db_path

    print(os.environ.get("RLM_LOGS_DB") or default_db_path())
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from .query import load_tree, resolve_id

    db = _db()
    tree = load_tree(db, resolve_id(db, args.id))
    if args.json:
        print(json.dumps(tree, indent=2, default=str))
        return 0
    out: list[str] = []
    render_tree(tree, out, full=args.full)
    sys.stdout.write("\n".join(out) + "\n")
    return 0


def _block(out: list[str], pad: str, label: str, text: Any, full: bool, limit: int = 12) -> None:
    if text is None or text == "":
        return
    lines = str(text).rstrip("\n").splitlines() or [""]
    shown = lines if full else lines[:limit]
    out.append(f"{pad}{label}")
    for line in shown:
        out.append(f"{pad}  │ {line if full or len(line) <= 160 else line[:159] + '…'}")
    if len(shown) < len(lines):
        out.append(f"{pad}  │ … {len(lines) - len(shown)} more lines (--full shows everything)")


def render_tree(run: dict[str, Any], out: list[str], *, full: bool = False, pad: str = "") -> None:
    """The run as indented text: the header, each iteration's response, cells with their output,
    each sub-call, and child runs nested under the sub-call that started them."""
    out.append(f"{pad}run {run['id']}  {run['status']}  {run['root_model'] or '?'}  "
               f"(backend {run['backend'] or '?'}, env {run['environment'] or '?'}, depth {run['depth']})")
    out.append(f"{pad}  started {fmt_time(run['started_at'])}  took {fmt_secs(run['execution_time'])}  "
               f"{run['iteration_count']} iterations  {run['calls']} calls  "
               f"{fmt_tokens(run['input_tokens'], run['output_tokens'])}  {fmt_cost(run['cost'])}")
    for u in run["usage"]:
        out.append(f"{pad}  usage {u['model']}: {u['calls']} calls, "
                   f"{fmt_tokens(u['input_tokens'], u['output_tokens'])}, {fmt_cost(u['cost'])}")
    if run["root_prompt"]:
        out.append(f"{pad}  question: {one_line(run['root_prompt'], 200) if not full else run['root_prompt']}")
    if run["prompt"]:
        lengths = run["context_lengths"] or []
        out.append(f"{pad}  context ({run['context_type'] or '?'}, {sum(lengths):,} chars): "
                   f"{one_line(run['prompt'], 120)}")
    for it in run["iterations"]:
        t = it.get("iteration_time")
        usage = ""
        if it.get("input_tokens") is not None:
            usage = f", {fmt_tokens(it.get('input_tokens'), it.get('output_tokens'))}"
        out.append(f"{pad}── iteration {it['iteration']} ({fmt_secs(t)}{usage})")
        _block(out, pad + "   ", "response:", it.get("response"), full)
        for cell in it["cells"]:
            flags = " TIMED OUT" if cell["timed_out"] else ""
            out.append(f"{pad}   ▸ cell {cell['idx'] + 1} ({fmt_secs(cell['execution_time'])}){flags}")
            _block(out, pad + "     ", "code:", cell["code"], full)
            _block(out, pad + "     ", "stdout:", cell["stdout"], full)
            _block(out, pad + "     ", "stderr:", cell["stderr"], full)
            _block(out, pad + "     ", "error:", cell["error"], full)
            for s in cell["subcalls"]:
                _render_subcall(s, out, full=full, pad=pad + "     ")
        for s in it["subcalls"]:
            _render_subcall(s, out, full=full, pad=pad + "   ")
        if it.get("final_answer") is not None:
            out.append(f"{pad}   final answer: {it['final_answer'] if full else one_line(it['final_answer'], 200)}")
    for child in run.get("children_unlinked", []):
        render_tree(child, out, full=full, pad=pad + "    ")
    for note in run["notes"]:
        out.append(f"{pad}   note {note['type']}: {one_line(json.dumps(note['data'], default=str), 160)}")
    if run["error"]:
        out.append(f"{pad}  error: {run['error']}")
    if run["status"] != "running" and run["response"] is not None:
        out.append(f"{pad}  answer: {run['response'] if full else one_line(run['response'], 300)}")


def _render_subcall(s: dict[str, Any], out: list[str], *, full: bool, pad: str) -> None:
    state = "running" if s["finished_at"] is None else fmt_secs(s["duration"])
    err = f"  ERROR {one_line(s['error'], 100)}" if s["error"] else ""
    out.append(f"{pad}↳ {s['kind'] or 'llm'}_query {s['model'] or '?'}  {state}  "
               f"{fmt_tokens(s['input_tokens'], s['output_tokens'])}  {fmt_cost(s['cost'])}{err}")
    out.append(f"{pad}    prompt: {s['prompt'] if full else one_line(s['prompt'], 120)}")
    if s["response"] is not None and not s.get("child"):
        out.append(f"{pad}    response: {s['response'] if full else one_line(s['response'], 120)}")
    if s.get("child"):
        render_tree(s["child"], out, full=full, pad=pad + "    ")


def cmd_export(args: argparse.Namespace) -> int:
    from .query import export_jsonl, load_tree, resolve_id

    db = _db()
    tree = load_tree(db, resolve_id(db, args.id))
    lines = list(export_jsonl(tree))
    text = "\n".join(lines) + "\n"
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(text)
        print(f"wrote {len(lines)} records of run {tree['id']} to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from .query import import_file

    db = _db()
    for f in args.files:
        for run_id, new in import_file(db, f):
            state = "imported" if new else "already in the store"
            print(f"{run_id}  {state}  ({f})")
    return 0
