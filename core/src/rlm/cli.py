"""The ``rlm`` command line.

    rlm run PROMPT [--context FILE|-] [--backend B] [--model M] [--env E] [--max-iterations N] [-v]
    rlm plugins [--json]      rlm backends [--json]      rlm envs [--json]
    rlm demo                  (an end-to-end run against a local demo server; no key, no network)
    rlm batch IN.jsonl --output OUT.jsonl [--executor threads|ray] [--address A] [-j N]

Plugins add subcommands through the ``rlm_register_commands`` hook.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from . import __version__


def _parse_kv(items: list[str] | None, flag: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"rlm: {flag} expects KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def _read_context(spec: str) -> str:
    if spec == "-":
        return sys.stdin.read()
    try:
        with open(spec, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError as exc:
        raise SystemExit(f"rlm: cannot read --context {spec!r}: {exc.strerror}") from None


def cmd_run(args: argparse.Namespace) -> int:
    from . import RLM
    from .exceptions import RLMError

    backend_kwargs = _parse_kv(args.backend_arg, "--backend-arg")
    if args.model:
        backend_kwargs["model_name"] = args.model
    if args.base_url:
        backend_kwargs["base_url"] = args.base_url
    env_kwargs = _parse_kv(args.env_arg, "--env-arg")
    if args.context is not None:
        context: Any = _read_context(args.context)
        root_prompt = args.prompt
    else:
        context, root_prompt = args.prompt, None
    if args.env_file:
        from .keys import load_dotenv

        try:
            load_dotenv(args.env_file)
        except RLMError as exc:
            print(f"rlm: {exc}", file=sys.stderr)
            return 2
    sinks = _run_sinks(args)
    try:
        rlm = RLM(backend=args.backend, backend_kwargs=backend_kwargs, environment=args.env,
                  environment_kwargs=env_kwargs, max_iterations=args.max_iterations,
                  max_depth=args.max_depth, max_timeout=args.timeout, max_budget=args.max_budget,
                  verbose=args.verbose, cell_timeout=args.cell_timeout, sinks=sinks)
        with rlm:
            result = rlm.completion(context, root_prompt=root_prompt)
    except KeyboardInterrupt:
        print("rlm: cancelled", file=sys.stderr)
        return 130
    except RLMError as exc:
        print(f"rlm: {type(exc).__name__}: {exc}", file=sys.stderr)
        partial = getattr(exc, "partial_answer", None)
        if partial:
            print(f"rlm: partial answer: {partial}", file=sys.stderr)
        return 1
    run_id = next((rid for s in sinks for rid in getattr(s, "run_ids", [])[-1:]), None)
    if args.json:
        print(json.dumps({"response": result.response, "root_model": result.root_model,
                          "execution_time": result.execution_time,
                          "usage_summary": result.usage_summary.to_dict(), "run_id": run_id},
                         indent=2))
    else:
        print(result.response)
        u = result.usage_summary
        print(f"rlm: {result.root_model}: {u.total_calls} model calls, {u.total_input_tokens} in / "
              f"{u.total_output_tokens} out tokens, {result.execution_time:.2f}s", file=sys.stderr)
        if run_id:
            print(f"rlm: logged as run {run_id} (rlm logs show {run_id}; rlm view {run_id})",
                  file=sys.stderr)
    return 0


def _run_sinks(args: argparse.Namespace) -> list[Any]:
    """The sinks `rlm run` adds: the trajectory store (unless --no-log) and the progress line
    (drawn only when stderr is a terminal; not with -v, which prints every turn instead).
    Both come from plugins: when they are not installed the run simply goes without them."""
    from ._manager import get_plugin_manager
    from .exceptions import UnknownPluginError

    pm = get_plugin_manager()
    out: list[Any] = []
    wanted = ([] if args.no_log else ["store"]) + ([] if args.verbose else ["progress"])
    for name in wanted:
        try:
            out.append(pm.create("sink", name))
        except UnknownPluginError:
            continue
        except Exception as exc:  # noqa: BLE001 - a log that cannot be written never stops a run
            print(f"rlm: not logging this run ({exc}); pass --no-log to silence this.",
                  file=sys.stderr)
    return out


def cmd_plugins(args: argparse.Namespace) -> int:
    from ._manager import get_plugin_manager

    rows = get_plugin_manager().report()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no plugins installed")
    for row in rows:
        dist = f"{row['distribution']} {row['version']}" if row["distribution"] else "in-process"
        if row["status"] == "failed":
            print(f"{row['name']}  ({dist})  FAILED: {row.get('error')}")
            continue
        status = f"  PARTIAL: {row.get('error')}" if row["status"] == "partial" else ""
        print(f"{row['name']}  ({dist}){status}")
        if row.get("hooks"):
            print(f"    hooks: {', '.join(row['hooks'])}")
        for kind, names in sorted(row["registered"].items()):
            print(f"    {kind}: {', '.join(sorted(names))}")
        for conflict in row.get("conflicts", []):
            print(f"    conflict: {conflict}")
    return 0


def _cmd_list(kind: str):
    def run(args: argparse.Namespace) -> int:
        from ._manager import get_plugin_manager

        reg = get_plugin_manager().registry(kind)
        entries = sorted({id(e): e for e in reg.entries.values()}.values(), key=lambda e: e.name)
        if args.json:
            print(json.dumps([e.to_dict() for e in entries], indent=2))
            return 0
        for e in entries:
            aliases = f" (aliases: {', '.join(e.aliases)})" if e.aliases else ""
            where = f"{e.distribution} {e.version}" if e.distribution else e.plugin
            print(f"{e.name}{aliases}  [{where}]  {e.description}")
        return 0
    return run


def cmd_batch(args: argparse.Namespace) -> int:
    from . import batch
    from .exceptions import RLMError

    backend_kwargs = _parse_kv(args.backend_arg, "--backend-arg")
    if args.model:
        backend_kwargs["model_name"] = args.model
    if args.base_url:
        backend_kwargs["base_url"] = args.base_url
    executor_kwargs = _parse_kv(args.executor_arg, "--executor-arg")
    if args.address:
        executor_kwargs["address"] = args.address
    settings: dict[str, Any] = {
        "backend": args.backend, "backend_kwargs": backend_kwargs, "environment": args.env,
        "environment_kwargs": _parse_kv(args.env_arg, "--env-arg"),
        "max_iterations": args.max_iterations, "max_depth": args.max_depth,
        "max_timeout": args.timeout, "max_budget": args.max_budget,
        "cell_timeout": args.cell_timeout}
    if args.backend is None:
        from ._defaults import choose_backend

        settings["backend"] = choose_backend(None).name  # chosen once, here, for every line
    try:
        report = batch(args.input, output=args.output, executor=args.executor,
                       executor_kwargs=executor_kwargs, concurrency=args.concurrency,
                       ordered=args.ordered, retry_errors=args.retry_errors,
                       progress=False if args.no_progress else None, **settings)
    except KeyboardInterrupt:
        print(f"rlm: batch cancelled; finished lines are in {args.output}; run the same "
              "command again to resume", file=sys.stderr)
        return 130
    except RLMError as exc:
        print(f"rlm: {exc}", file=sys.stderr)
        return 2
    print(f"rlm: {report.summary()}; results in {args.output}", file=sys.stderr)
    if report.failed:
        print(f"rlm: {report.failed} lines failed (\"status\": \"error\" in the output); "
              "rerun with --retry-errors to run them again", file=sys.stderr)
        return 3
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    return run_demo(verbose=args.verbose)


def build_parser(with_plugins: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlm", description="Recursive Language Models: run a prompt as a REPL variable and let "
                                "the model work on it with code and sub-calls.")
    parser.add_argument("--version", action="version", version=f"rlm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run an RLM completion; the answer goes to stdout")
    run.add_argument("prompt", help="the prompt (with --context: the question about the context)")
    run.add_argument("--context", metavar="FILE", help="read the context from FILE ('-' for stdin)")
    run.add_argument("--backend", default=None,
                     help="backend name (default: $RLM_BACKEND, else the user config file, else "
                          "openai when OPENAI_API_KEY is set, else the embedded model llamacpp)")
    run.add_argument("--model", help="model name passed as backend_kwargs['model_name']")
    run.add_argument("--base-url", help="backend base URL (OpenAI-compatible servers)")
    run.add_argument("--backend-arg", action="append", metavar="KEY=VALUE",
                     help="extra backend_kwargs entry (JSON values allowed); repeatable")
    run.add_argument("--env", default="local", help="execution environment (default: local)")
    run.add_argument("--env-arg", action="append", metavar="KEY=VALUE",
                     help="extra environment_kwargs entry; repeatable")
    run.add_argument("--max-iterations", type=int, default=30)
    run.add_argument("--max-depth", type=int, default=1)
    run.add_argument("--max-budget", type=float, default=None)
    run.add_argument("--timeout", type=float, default=None, help="max_timeout in seconds")
    run.add_argument("--cell-timeout", type=float, default=None, help="seconds per REPL cell")
    run.add_argument("--json", action="store_true", help="print the result as JSON")
    run.add_argument("-v", "--verbose", action="store_true", help="show each turn on stderr")
    run.add_argument("--no-log", action="store_true",
                     help="do not record this run in the trajectory store (rlm logs / rlm view)")
    run.add_argument("--env-file", metavar="FILE",
                     help="load KEY=VALUE lines from a .env file first (needs python-dotenv)")
    run.set_defaults(func=cmd_run)

    plugins = sub.add_parser("plugins", help="list installed plugins and what they register")
    plugins.add_argument("--json", action="store_true")
    plugins.set_defaults(func=cmd_plugins)
    for name, kind, text in (("backends", "backend", "list installed backends"),
                             ("envs", "environment", "list installed environments")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=_cmd_list(kind))

    bat = sub.add_parser(
        "batch", help="one RLM completion per line of a JSONL file, resumable",
        description="Run one RLM completion per line of INPUT ({\"prompt\": ..., "
                    "\"root_prompt\": ..., \"settings\": {...}, \"id\": ...}) and append "
                    "one result per line to OUTPUT as each finishes. Rerunning skips the lines "
                    "OUTPUT already holds. Exit status: 0 all ok, 3 some lines failed, 2 bad "
                    "input or settings, 130 interrupted.")
    bat.add_argument("input", metavar="INPUT.jsonl")
    bat.add_argument("--output", "-o", required=True, metavar="OUT.jsonl")
    bat.add_argument("--executor", default="threads",
                     help="executor plugin: threads (default) or ray (pip install rlm-executor-ray)")
    bat.add_argument("--address", help="the cluster to use (ray: ray://HOST:10001 or HOST:6379; "
                                       "default: $RAY_ADDRESS, else a local cluster)")
    bat.add_argument("--executor-arg", action="append", metavar="KEY=VALUE",
                     help="extra executor_kwargs entry (JSON values allowed); repeatable")
    bat.add_argument("--concurrency", "-j", type=int, default=8, help="lines in flight (default 8)")
    bat.add_argument("--ordered", action="store_true",
                     help="rewrite OUTPUT in input order at the end")
    bat.add_argument("--retry-errors", action="store_true",
                     help="also rerun the lines OUTPUT holds as failed")
    bat.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    bat.add_argument("--backend", default=None, help="backend name (default: as for rlm run)")
    bat.add_argument("--model", help="model name passed as backend_kwargs['model_name']")
    bat.add_argument("--base-url", help="backend base URL (OpenAI-compatible servers)")
    bat.add_argument("--backend-arg", action="append", metavar="KEY=VALUE")
    bat.add_argument("--env", default="local", help="execution environment (default: local)")
    bat.add_argument("--env-arg", action="append", metavar="KEY=VALUE")
    bat.add_argument("--max-iterations", type=int, default=30)
    bat.add_argument("--max-depth", type=int, default=1)
    bat.add_argument("--max-budget", type=float, default=None, help="per line, in USD")
    bat.add_argument("--timeout", type=float, default=None, help="max_timeout per line, seconds")
    bat.add_argument("--cell-timeout", type=float, default=None)
    bat.set_defaults(func=cmd_batch)

    demo = sub.add_parser("demo", help="run an RLM end to end against a local demo server "
                                       "(no API key, no network)")
    demo.add_argument("-v", "--verbose", action="store_true")
    demo.set_defaults(func=cmd_demo)

    if with_plugins:
        _add_plugin_commands(sub)
    return parser


def _add_plugin_commands(sub: Any) -> None:
    from ._manager import get_plugin_manager

    try:
        reg = get_plugin_manager().registry("command")
    except Exception as exc:  # noqa: BLE001 - a broken plugin never breaks the CLI
        print(f"rlm: plugin commands unavailable: {exc}", file=sys.stderr)
        return
    for name, entry in sorted(reg.entries.items()):
        if name != entry.name:
            continue
        try:
            entry.load()(sub)
        except Exception as exc:  # noqa: BLE001
            print(f"rlm: command {name!r} from {entry.origin} failed to set up: {exc}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Built-in commands and --help need no plugin; only load entry points when they might matter.
    builtin = {"run", "plugins", "backends", "envs", "demo", "batch", "--version"}
    wants_plugins = not argv or argv[0] not in builtin
    parser = build_parser(with_plugins=wants_plugins and argv not in (["-h"], ["--help"]))
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
