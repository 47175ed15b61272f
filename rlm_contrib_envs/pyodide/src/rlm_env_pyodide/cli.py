"""``rlm-env-pyodide install | check``: get the Pyodide files once, then check the setup."""

from __future__ import annotations

import argparse
import sys

from .install import PYODIDE_VERSION, default_prefix


def cmd_install(args: argparse.Namespace) -> int:
    from rlm.exceptions import RLMEnvironmentError

    from .install import find_deno, install

    try:
        path = install(args.prefix, args.version, quiet=True)
        deno = find_deno()
    except RLMEnvironmentError as exc:
        print(f"rlm-env-pyodide: {exc}", file=sys.stderr)
        return 1
    print(f"pyodide {args.version}: {path}")
    print(f"deno: {deno}")
    if args.prefix:
        print(f"use it with RLM_PYODIDE_DIR={path} or environment_kwargs={{'pyodide_dir': "
              f"'{path}'}}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Start the environment once and run a cell: the whole chain, end to end."""
    from rlm.exceptions import RLMEnvironmentError

    from .env import PyodideREPL

    class _Host:
        depth = 0

        def llm_query(self, prompt, model=None):
            return f"echo:{prompt}"

    try:
        env = PyodideREPL(pyodide_dir=args.pyodide_dir)
        env.start(_Host(), {})
        try:
            r = env.execute("import sys\nprint(sys.version.split()[0], llm_query('ping'))",
                            timeout=30)
        finally:
            env.shutdown()
    except RLMEnvironmentError as exc:
        print(f"rlm-env-pyodide: {exc}", file=sys.stderr)
        return 1
    if r.error:
        print(f"rlm-env-pyodide: the test cell failed:\n{r.error}", file=sys.stderr)
        return 1
    print(f"ok: Python {r.stdout.strip()} in Pyodide {env.pyodide_version} under "
          f"{env.deno}; started in {env.startup_seconds:.2f} s")
    return 0


def _configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="pyodide_command", metavar="COMMAND")
    i = sub.add_parser("install", help=f"npm install pyodide@{PYODIDE_VERSION} into the cache",
                       description="Installs the Pyodide npm package (from the npm registry, with "
                                   "npm) where the 'pyodide' environment looks for it. "
                                   "Idempotent.")
    i.add_argument("--prefix", default=None,
                   help=f"npm prefix (default {default_prefix()})")
    i.add_argument("--version", default=PYODIDE_VERSION,
                   help=f"Pyodide version (default {PYODIDE_VERSION}, the tested one)")
    i.set_defaults(func=cmd_install)
    c = sub.add_parser("check", help="start Pyodide under Deno once and run a cell")
    c.add_argument("--pyodide-dir", default=None, help="the pyodide folder (default: the cache)")
    c.set_defaults(func=cmd_check)

    def usage(args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(func=usage)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rlm-env-pyodide",
                                     description="Tools of rlm's pyodide environment.")
    _configure(parser)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
