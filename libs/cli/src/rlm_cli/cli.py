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
import os
import re
import sys
from typing import Any

from rlm import __version__


def _parse_kv(items: list[str] | None, flag: str) -> dict[str, Any]:
    from ._input import UsageError, parse_value

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{flag} expects KEY=VALUE, got {item!r}")
        out[key] = parse_value(raw)
    return out


#: Exit statuses of ``rlm run`` (and ``rlm PROMPT``).
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_AFTER_LIMIT, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

EMBEDDED_NOTE = ("Qwen2.5-Coder-0.5B, a 0.5B demo model: slow and often wrong; for real work "
                 "pass -b/--backend or --base-url")


def _settings(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """The ``RLM(...)`` arguments of a run from its flags and the config file, and why that
    backend (one phrase for the backend line)."""
    from ._input import UsageError, check_base_url, check_options
    from rlm.config import EMBEDDED_BACKEND, choose_backend, config_defaults, config_path
    from rlm import get_plugin_manager
    from .models import sampling_options

    if args.base_url:
        check_base_url(args.base_url)
    backend_kwargs = _parse_kv(args.backend_arg, "--backend-arg")
    env_kwargs = _parse_kv(args.env_arg, "--env-arg")
    options: dict[str, Any] = {}
    for key, raw in args.option or []:
        from ._input import parse_value

        options[key] = parse_value(raw)
    if args.backend:
        backend, why = args.backend, "from -b/--backend"
    elif args.base_url:
        backend, why = "openai", "--base-url given: the OpenAI-compatible backend"
    else:
        choice = choose_backend(None)
        backend, why = choice.name, choice.reason
    config = config_defaults(backend)
    model = args.model or backend_kwargs.pop("model_name", None) or config.get("model")
    base_url = args.base_url or backend_kwargs.pop("base_url", None)
    if base_url is None and config.get("base_url"):
        base_url = check_base_url(config["base_url"], f"base_url in {config_path()}")
    if base_url and not model and backend == "openai":
        raise UsageError(
            f"--base-url {base_url} needs the model the server serves: pass -m/--model NAME "
            f"(or set model = \"NAME\" in {config_path()}; `rlm models default NAME` writes it).")
    if model:
        backend_kwargs["model_name"] = model
    if base_url:
        backend_kwargs["base_url"] = base_url
    options = {**dict(config.get("options") or {}), **options}
    pm = get_plugin_manager()
    factory = pm.entry("backend", backend).load()
    check_options(options, sampling_options(factory), backend)
    settings: dict[str, Any] = {
        "backend": backend, "backend_kwargs": backend_kwargs, "environment": args.env,
        "environment_kwargs": env_kwargs, "max_iterations": args.max_iterations,
        "max_depth": args.max_depth, "max_timeout": args.timeout, "max_budget": args.max_budget,
        "max_tokens": args.max_tokens, "max_errors": args.max_errors,
        "cell_timeout": args.cell_timeout}
    if options:
        settings["sampling_args"] = options
    if args.sub_model:
        # Sub-calls (llm_query, rlm_query at depth 1) go to other_backends[0]: the same backend
        # with the sub-call model.
        settings["other_backends"] = [backend]
        settings["other_backend_kwargs"] = [{**backend_kwargs, "model_name": args.sub_model}]
    if args.system:
        settings["tool_prompts"] = list(args.system)
    if backend == EMBEDDED_BACKEND and not model and not backend_kwargs.get("model_path"):
        why = f"{why}; {EMBEDDED_NOTE}"
    return settings, why


def _run_input(args: argparse.Namespace) -> tuple[Any, str | None]:
    """``(context, root_prompt)``: the files of --context (or piped stdin) are the context and
    the prompt the question; with neither, the prompt is the context."""
    from ._input import check_prompt, read_contexts, stdin_is_piped

    prompt = check_prompt(args.prompt)
    specs = list(args.context or [])
    if not specs and stdin_is_piped():
        data = sys.stdin.buffer.read()
        if data.strip():
            import io

            return read_contexts(["-"], encoding=args.encoding,
                                 stdin=io.TextIOWrapper(io.BytesIO(data))), prompt
    if specs:
        return read_contexts(specs, as_dict=args.context_dict, encoding=args.encoding), prompt
    return prompt, None


def _print_json(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False, default=str))


def cmd_run(args: argparse.Namespace) -> int:
    from rlm import RLM
    from ._input import UsageError, cli_words
    from rlm.exceptions import CancellationError, RLMError, UnknownPluginError

    def fail(exc: BaseException, code: int, partial: str | None = None,
             status: str = "error") -> int:
        text = cli_words(str(exc))
        name = "usage error" if code == EXIT_USAGE else type(exc).__name__
        print(f"rlm: {name}: {text}" if code != EXIT_INTERRUPTED else "rlm: interrupted",
              file=sys.stderr)
        if args.json:
            _print_json({"status": status, "error": text, "error_type": type(exc).__name__,
                         "partial_answer": partial, "run_id": _run_id(sinks),
                         "exit_code": code})
        return code

    sinks: list[Any] = []
    try:
        if args.env_file:
            from rlm.keys import load_dotenv

            load_dotenv(args.env_file)
        context, root_prompt = _run_input(args)
        settings, why = _settings(args)
    except UsageError as exc:
        return fail(exc, EXIT_USAGE)
    except UnknownPluginError as exc:
        return fail(exc, EXIT_USAGE)
    except RLMError as exc:
        return fail(exc, EXIT_ERROR)
    except KeyboardInterrupt:
        return fail(KeyboardInterrupt(), EXIT_INTERRUPTED, status="cancelled")
    sinks = _run_sinks(args)
    rlm = None
    try:
        rlm = RLM(verbose=args.verbose, sinks=sinks, **settings)
        print(f"rlm: backend {settings['backend']}, model {rlm.root_model_name} ({why})",
              file=sys.stderr, flush=True)
        with rlm:
            result = rlm.completion(context, root_prompt=root_prompt)
    except (KeyboardInterrupt, CancellationError) as exc:
        partial = getattr(exc, "partial_answer", None)
        if partial:
            print(f"rlm: partial answer: {partial}", file=sys.stderr)
        return fail(exc, EXIT_INTERRUPTED, partial, status="cancelled")
    except UnknownPluginError as exc:
        return fail(exc, EXIT_USAGE)
    except RLMError as exc:
        partial = getattr(exc, "partial_answer", None)
        status = str(getattr(exc, "status", "error"))
        if partial and status != "error":  # a limit, with the best answer so far: print it
            print(f"rlm: warning: the run did not complete ({status}): {cli_words(str(exc))}; "
                  "the answer below is partial", file=sys.stderr)
            if args.json:
                _print_json({"status": status, "answer_source": "partial", "response": partial,
                             "error": cli_words(str(exc)), "error_type": type(exc).__name__,
                             "run_id": _run_id(sinks), "exit_code": EXIT_AFTER_LIMIT})
            else:
                print(partial)
            return EXIT_AFTER_LIMIT
        if partial:
            print(f"rlm: partial answer: {partial}", file=sys.stderr)
        return fail(exc, EXIT_ERROR, partial, status=status)
    run_id = _run_id(sinks)
    status = str(getattr(result, "status", "completed"))
    source = str(getattr(result, "answer_source", "model"))
    code = EXIT_OK if status == "completed" else EXIT_AFTER_LIMIT
    if args.json:
        _print_json({"status": status, "answer_source": source, "response": result.response,
                     "root_model": result.root_model, "backend": settings["backend"],
                     "execution_time": result.execution_time,
                     "usage_summary": result.usage_summary.to_dict(), "run_id": run_id,
                     "exit_code": code})
    else:
        print(result.response)
    u = result.usage_summary
    print(f"rlm: {result.root_model}: {u.total_calls} model calls, {u.total_input_tokens} in / "
          f"{u.total_output_tokens} out tokens, {result.execution_time:.2f}s", file=sys.stderr)
    if code != EXIT_OK:
        print(f"rlm: warning: the run did not complete: it stopped at {status} and the answer "
              f"was {'asked for after the limit' if source == 'after_limit' else source}; raise "
              "the limit (e.g. --max-iterations) or check the answer", file=sys.stderr)
    if run_id:
        print(f"rlm: logged as run {run_id} (rlm logs show {run_id}; rlm view {run_id})",
              file=sys.stderr)
    return code


def _run_id(sinks: list[Any]) -> str | None:
    return next((rid for s in sinks for rid in getattr(s, "run_ids", [])[-1:]), None)


def _run_sinks(args: argparse.Namespace) -> list[Any]:
    """The sinks `rlm run` adds: the trajectory store (unless --no-log) and progress (a live
    line on a terminal, a plain line per turn otherwise; not with -v, which prints every turn).
    Both come from plugins: when they are not installed the run simply goes without them."""
    from rlm import get_plugin_manager
    from rlm.exceptions import UnknownPluginError

    pm = get_plugin_manager()
    out: list[Any] = []
    wanted = ([] if args.no_log else ["store"]) + ([] if args.verbose else ["progress"])
    for name in wanted:
        try:
            # progress: a live line on a terminal, else one plain line per turn (plain=True)
            out.append(pm.create("sink", name, plain=True) if name == "progress"
                       else pm.create("sink", name))
        except UnknownPluginError:
            continue
        except Exception as exc:  # noqa: BLE001 - a log that cannot be written never stops a run
            print(f"rlm: not logging this run ({exc}); pass --no-log to silence this.",
                  file=sys.stderr)
    return out


def cmd_plugins(args: argparse.Namespace) -> int:
    from rlm import get_plugin_manager

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
        if row["status"] == "disabled":
            print(f"{row['name']}  ({dist})  DISABLED: {row.get('reason')}")
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
        from rlm import get_plugin_manager

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
    from .batching import batch
    from rlm.exceptions import RLMError

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
        from rlm.config import choose_backend

        settings["backend"] = choose_backend(None).name  # chosen once, here, for every line
    try:
        report = batch(args.input, output=args.output, executor=args.executor,
                       executor_kwargs=executor_kwargs, concurrency=args.concurrency,
                       ordered=args.ordered, retry_errors=args.retry_errors,
                       progress=False if args.no_progress else None, log=not args.no_log,
                       **settings)
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


def cmd_models(args: argparse.Namespace) -> int:
    """``rlm models``: what each installed backend offers (read from what it declares)."""
    from rlm.config import load_config
    from rlm import get_plugin_manager
    from .models import backend_models

    reg = get_plugin_manager().registry("backend")
    entries = sorted({id(e): e for e in reg.entries.values()}.values(), key=lambda e: e.name)
    if args.backend:
        entries = [get_plugin_manager().entry("backend", args.backend)]
    rows = [backend_models(e) for e in entries]
    config = load_config()
    if args.json:
        _print_json({"default": {k: config.get(k) for k in ("backend", "model")},
                     "backends": [r.to_dict() for r in rows]})
        return 0
    for row in rows:
        aliases = f" (aliases: {', '.join(row.aliases)})" if row.aliases else ""
        print(f"{row.backend}{aliases}  [{row.distribution or 'in-process'}]")
        if row.error:
            print(f"  cannot load: {row.error}")
            continue
        if not row.models:
            print("  models: any name it is given (-m NAME)")
        for m in row.models:
            window = f"{m.context_window:>9,} tokens" if m.context_window else " " * 16
            price = (f"${m.price_in:g} / ${m.price_out:g} per 1M in/out"
                     if m.price_in is not None else "")
            mark = []
            if m.default:
                mark.append("backend default")
            if config.get("model") == m.name and config.get("backend", row.backend) == row.backend:
                mark.append("your default")
            names = m.name + (f" (aliases: {', '.join(m.aliases)})" if m.aliases else "")
            print(f"  {names:<32} {window}  {price}{'  [' + ', '.join(mark) + ']' if mark else ''}")
        if row.options is not None:
            print(f"  -o options: {', '.join(row.options)}")
    if config.get("model"):
        print(f"default: {config.get('backend', '(chosen per run)')} / {config['model']} "
              "(rlm models default NAME changes it)")
    return 0


def cmd_models_default(args: argparse.Namespace) -> int:
    """``rlm models default [NAME] [-b BACKEND]``: show or set the default model in config.toml."""
    from ._input import UsageError
    from rlm.config import config_path, load_config
    from rlm import get_plugin_manager
    from .models import backend_models
    from rlm.exceptions import RLMError

    config = load_config()
    if not args.name:
        if not config.get("model"):
            print(f"no default model set in {config_path()}; set one with: rlm models default NAME",
                  file=sys.stderr)
            return 1
        print(config["model"])
        return 0
    pm = get_plugin_manager()
    backend = args.backend
    if backend:
        pm.entry("backend", backend)
    else:
        reg = pm.registry("backend")
        offering = sorted({e.name for e in reg.entries.values()
                           if any(m.name == args.name or args.name in m.aliases
                                  for m in backend_models(e).models)})
        if len(offering) > 1:
            # The configured backend, else today's default, else the provider's own backend
            # (one that knows the model's context window; the shortest name: openai, not
            # azure_openai) over gateways that merely price it.
            from rlm.config import choose_backend

            try:
                current = choose_backend(pm).name
            except RLMError:
                current = None
            own = sorted((e for e in offering
                          if any(m.name == args.name and m.context_window
                                 for m in backend_models(pm.entry("backend", e)).models)),
                         key=lambda n: (len(n), n))
            for pick in (config.get("backend"), current, *own[:1]):
                if pick in offering:
                    offering = [pick]
                    break
        if len(offering) > 1:
            raise UsageError(f"{args.name} is offered by {', '.join(offering)}; pick one with "
                             f"-b/--backend, e.g. rlm models default {args.name} -b {offering[0]}")
        backend = offering[0] if offering else None
    path = write_config(config_path(), {"model": args.name,
                                        **({"backend": backend} if backend else {})})
    where = f" on the {backend} backend" if backend else ""
    print(f"default model: {args.name}{where} (written to {path})", file=sys.stderr)
    return 0


def write_config(path: Any, values: dict[str, str]) -> Any:
    """Set top-level ``key = "value"`` lines of config.toml, keeping every other line."""
    from pathlib import Path

    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    first_table = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("[")), len(lines))
    for key, value in values.items():
        line = f"{key} = {json.dumps(value)}"
        at = next((i for i in range(first_table)
                   if re.match(rf"\s*{re.escape(key)}\s*=", lines[i])), None)
        if at is None:
            lines.insert(first_table, line)
            first_table += 1
        else:
            lines[at] = line
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def _pip(args: list[str]) -> int:
    """pip of the interpreter rlm runs in, so what it installs is what rlm loads."""
    import subprocess

    cmd = [sys.executable, "-m", "pip", *args]
    print(f"rlm: {' '.join(cmd)}", file=sys.stderr, flush=True)
    return subprocess.call(cmd)


def cmd_install(args: argparse.Namespace) -> int:
    """``rlm install NAME...``: pip install plugin distributions into rlm's environment. A name
    one letter away from a distribution the project publishes is refused (did you mean ...?)
    unless --force: a typo must not install whatever someone published under it."""
    import difflib

    from ._input import UsageError
    from rlm.plugin import KNOWN_DISTRIBUTIONS

    known = sorted(set(KNOWN_DISTRIBUTIONS.values()) | {"rlm-plugins", "rlm-core", "rlm-testkit"})
    for name in args.packages:
        base = re.split(r"[\[<>=!~; ]", name, maxsplit=1)[0].lower().replace("_", "-")
        if "/" in name or name.startswith(".") or base in known or args.force or args.editable:
            continue
        close = difflib.get_close_matches(base, known, n=1, cutoff=0.85)
        if close:
            raise UsageError(f"{name!r} is not a distribution the rlm project publishes; did you "
                             f"mean {close[0]}? (rlm install {close[0]}; --force installs "
                             f"{name!r} anyway)")
    pip_args = ["install"]
    if args.upgrade:
        pip_args.append("--upgrade")
    if args.editable:
        pip_args += ["--editable", args.editable]
    return _pip([*pip_args, *args.packages])


def cmd_uninstall(args: argparse.Namespace) -> int:
    return _pip(["uninstall", *(["-y"] if args.yes else []), *args.packages])


def _add_run_arguments(run: argparse.ArgumentParser) -> None:
    run.add_argument("prompt", help="the prompt (with a context: the question about it)")
    run.add_argument("-c", "--context", metavar="FILE", action="append",
                     help="read the context from FILE ('-' for stdin); repeat for several files "
                          "(a list context, or a dict by file name with --context-dict). "
                          "Default: what is piped on stdin")
    run.add_argument("--context-dict", action="store_true",
                     help="several --context files become a dict {file name: text}")
    run.add_argument("--encoding", default="utf-8",
                     help="text encoding of the context files (default utf-8)")
    run.add_argument("-m", "--model", help="the model (rlm models lists what backends offer)")
    run.add_argument("-s", "--system", action="append", metavar="TEXT",
                     help="instructions added to the system prompt (which keeps rlm's REPL "
                          "instructions); repeatable")
    run.add_argument("-o", "--option", nargs=2, action="append", metavar=("KEY", "VALUE"),
                     help="a sampling option for every model call, e.g. -o temperature 0.2 "
                          "(JSON values allowed; checked against the backend's options)")
    run.add_argument("--sub-model", metavar="MODEL",
                     help="the model of sub-calls (llm_query / rlm_query from the REPL), on the "
                          "same backend; default: the root model")
    run.add_argument("-b", "--backend", default=None,
                     help="backend name (default: $RLM_BACKEND, else the user config file, else "
                          "openai with --base-url or when OPENAI_API_KEY is set, else the "
                          "embedded demo model llamacpp)")
    run.add_argument("--base-url", help="an OpenAI-compatible server, e.g. "
                                        "http://127.0.0.1:8000/v1 (implies -b openai; needs -m)")
    run.add_argument("--backend-arg", action="append", metavar="KEY=VALUE",
                     help="a backend constructor argument (JSON values allowed); repeatable")
    run.add_argument("--env", default="local", help="execution environment (default: local)")
    run.add_argument("--env-arg", action="append", metavar="KEY=VALUE",
                     help="an environment argument; repeatable")
    run.add_argument("--max-iterations", type=int, default=30, help="turns of the root model")
    run.add_argument("--max-depth", type=int, default=1)
    run.add_argument("--max-budget", type=float, default=None, help="USD")
    run.add_argument("--max-tokens", type=int, default=None, help="tokens, all calls together")
    run.add_argument("--max-errors", type=int, default=None,
                     help="consecutive failing turns before the run stops")
    run.add_argument("--timeout", type=float, default=None, help="seconds for the whole run")
    run.add_argument("--cell-timeout", type=float, default=None, help="seconds per REPL cell")
    run.add_argument("--json", action="store_true",
                     help="print a JSON object (status, answer_source, response, usage, run_id; "
                          "or the error)")
    run.add_argument("-v", "--verbose", action="store_true", help="show each turn on stderr")
    run.add_argument("-n", "--no-log", action="store_true",
                     help="do not record this run in the trajectory store (rlm logs / rlm view)")
    run.add_argument("--env-file", metavar="FILE",
                     help="load KEY=VALUE lines from a .env file first (needs python-dotenv)")


def build_parser(with_plugins: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlm", usage="rlm PROMPT [run options]  |  rlm COMMAND ...",
        description="Recursive Language Models: run a prompt as a REPL variable and let "
                    "the model work on it with code and sub-calls. `rlm PROMPT` is `rlm run "
                    "PROMPT` (rlm run --help lists its options); piped stdin is the context.")
    parser.add_argument("--version", action="version", version=f"rlm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run", help="run an RLM completion; the answer goes to stdout (rlm PROMPT is the same)",
        description="Run one RLM completion. The context is --context FILE (repeatable), else "
                    "what is piped on stdin, else the prompt itself. Exit status: 0 answered, "
                    "1 error, 2 usage error, 3 answered after a limit (the answer may be "
                    "incomplete), 130 interrupted.")
    _add_run_arguments(run)
    run.set_defaults(func=cmd_run)

    models = sub.add_parser("models", help="what each installed backend offers: models, "
                                           "context windows, prices, -o options")
    models.add_argument("--json", action="store_true")
    models.add_argument("-b", "--backend", help="only this backend")
    models.set_defaults(func=cmd_models)
    msub = models.add_subparsers(dest="models_command", metavar="SUBCOMMAND")
    mdef = msub.add_parser("default", help="show or set the default model (config.toml)")
    mdef.add_argument("name", nargs="?", help="the model; with no NAME, print the current one")
    mdef.add_argument("-b", "--backend", help="its backend (default: the one that offers it)")
    mdef.set_defaults(func=cmd_models_default)

    inst = sub.add_parser("install", help="pip install plugin distributions into the "
                                          "environment rlm runs in")
    inst.add_argument("packages", nargs="*", metavar="PACKAGE")
    inst.add_argument("-U", "--upgrade", action="store_true")
    inst.add_argument("-e", "--editable", metavar="PATH", help="install a local project, editable")
    inst.add_argument("--force", action="store_true",
                      help="install a name even when it looks like a typo of a known one")
    inst.set_defaults(func=cmd_install)
    uninst = sub.add_parser("uninstall", help="pip uninstall plugin distributions")
    uninst.add_argument("packages", nargs="+", metavar="PACKAGE")
    uninst.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    uninst.set_defaults(func=cmd_uninstall)

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
    bat.add_argument("-n", "--no-log", action="store_true",
                     help="do not record the lines' runs in the trajectory store (rlm logs)")
    bat.add_argument("-b", "--backend", default=None, help="backend name (default: as for rlm run)")
    bat.add_argument("-m", "--model", help="the model (rlm models lists what backends offer)")
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


    if with_plugins:
        _add_plugin_commands(sub)
    return parser


def _add_plugin_commands(sub: Any) -> None:
    from rlm import get_plugin_manager

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


BUILTIN_COMMANDS = ("run", "models", "plugins", "backends", "envs", "install", "uninstall",
                    "batch")


def _plugin_command_names() -> list[str]:
    from rlm import get_plugin_manager

    try:
        return sorted(get_plugin_manager().registry("command").names())
    except Exception:  # noqa: BLE001 - a broken plugin never breaks the CLI
        return []


def _route(argv: list[str]) -> list[str]:
    """``rlm PROMPT ...`` is ``rlm run PROMPT ...`` (as ``llm PROMPT`` is ``llm prompt``): any
    first argument that is not a command or a top-level flag starts a run. A lone word close to
    a command's name is a typo, not a prompt."""
    if not argv or argv[0] in ("-h", "--help", "--version"):
        return argv
    commands = [*BUILTIN_COMMANDS, *_plugin_command_names()]
    if argv[0] in commands:
        return argv
    if len(argv) == 1 and re.fullmatch(r"[a-z][a-z-]*", argv[0]):
        import difflib

        close = difflib.get_close_matches(argv[0], commands, n=1, cutoff=0.75)
        if close:
            from ._input import UsageError

            raise UsageError(f"unknown command {argv[0]!r}; did you mean `rlm {close[0]}`? "
                             f"(To send it as a prompt: rlm run {argv[0]})")
    return ["run", *argv]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        return _main(argv)
    except BrokenPipeError:
        # The reader went away (rlm plugins | head -1): no traceback, and no second error when
        # Python flushes stdout at exit.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 0
    except KeyboardInterrupt:
        print("rlm: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _main(argv: list[str]) -> int:
    from ._input import UsageError

    try:
        argv = _route(argv)
    except UsageError as exc:
        print(f"rlm: usage error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    # Plugins' commands are listed in --help; a built-in command other than help skips loading
    # the command hooks (its own work loads what it needs).
    wants_plugins = not argv or argv[0] not in BUILTIN_COMMANDS
    parser = build_parser(with_plugins=wants_plugins)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from rlm.exceptions import RLMError, UnknownPluginError

    try:
        return int(args.func(args) or 0)
    except (UsageError, UnknownPluginError) as exc:
        from ._input import cli_words

        print(f"rlm: usage error: {cli_words(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except RLMError as exc:
        from ._input import cli_words

        print(f"rlm: {type(exc).__name__}: {cli_words(str(exc))}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
