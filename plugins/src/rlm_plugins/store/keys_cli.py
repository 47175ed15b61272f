"""``rlm keys``: provider keys stored in the user directory (``keys.json``, mode 0600).

    rlm keys set openai            prompts for the key (or reads it from stdin, or --value)
    rlm keys get openai            prints it (for scripts: OPENAI_API_KEY=$(rlm keys get openai))
    rlm keys list                  the names only
    rlm keys remove openai
    rlm keys path

A stored key is used when the backend gets no ``api_key`` argument, before the environment
variable (:func:`rlm.keys.resolve_api_key`).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from rlm.exceptions import ConfigurationError


def add_keys_parser(subparsers: Any) -> None:
    keys = subparsers.add_parser(
        "keys", help="store provider keys in the user directory (mode 0600)",
        description="Provider keys used when a backend gets no api_key, before its environment "
                    "variable. Key names are backend names: openai, anthropic, azure_openai, ...")
    keys.set_defaults(func=_run(cmd_list))
    sub = keys.add_subparsers(dest="keys_command", metavar="SUBCOMMAND")
    s = sub.add_parser("set", help="store a key (prompted for, or read from stdin)")
    s.add_argument("name", help="backend name, e.g. openai")
    s.add_argument("--value", help="the key itself (visible in your shell history: prefer the prompt)")
    s.add_argument("--force", action="store_true",
                   help="store a key under a name no installed or known backend uses")
    s.set_defaults(func=_run(cmd_set))
    g = sub.add_parser("get", help="print a stored key")
    g.add_argument("name")
    g.set_defaults(func=_run(cmd_get))
    ls = sub.add_parser("list", help="names of the stored keys")
    ls.set_defaults(func=_run(cmd_list))
    rm = sub.add_parser("remove", help="delete a stored key")
    rm.add_argument("name")
    rm.set_defaults(func=_run(cmd_remove))
    p = sub.add_parser("path", help="print the path of the key store")
    p.set_defaults(func=_run(cmd_path))


def _run(fn):
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except ConfigurationError as exc:
            print(f"rlm keys: {exc}", file=sys.stderr)
            return 1
        except (KeyboardInterrupt, EOFError):
            print("rlm keys: cancelled", file=sys.stderr)
            return 130
    return run


def known_key_names() -> list[str]:
    """The names a stored key is used under: installed backends (and their aliases) and the
    backends the project publishes. ``rlm keys set`` refuses other names unless ``--force``."""
    from rlm import get_plugin_manager
    from rlm.plugin import KNOWN_DISTRIBUTIONS

    names = {name for kind, name in KNOWN_DISTRIBUTIONS if kind == "backend"}
    try:
        names |= set(get_plugin_manager().registry("backend").entries)
    except Exception:  # noqa: BLE001 - a broken plugin leaves the published names
        pass
    return sorted(names)


def check_known_name(name: str) -> None:
    """:class:`ConfigurationError` with a did-you-mean when ``name`` is no backend's key name."""
    known = known_key_names()
    if name in known:
        return
    import difflib

    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    from rlm.exceptions import ConfigurationError

    raise ConfigurationError(
        f"no backend uses a key named {name!r}; {hint}key names are backend names "
        f"({', '.join(known)}). Pass --force to store it anyway (for a plugin that reads it).")


def cmd_set(args: argparse.Namespace) -> int:
    from rlm.keys import set_key

    if not getattr(args, "force", False):
        check_known_name(args.name)
    value = args.value
    if value is None:
        if sys.stdin.isatty():
            value = getpass.getpass(f"Key for {args.name}: ")
        else:
            value = sys.stdin.readline()
    path = set_key(args.name, (value or "").strip())
    print(f"stored the key for {args.name} in {path}", file=sys.stderr)
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    from rlm.keys import get_key, keys_path, list_keys

    value = get_key(args.name)
    if value is None:
        names = ", ".join(list_keys()) or "none"
        print(f"rlm keys: no key named {args.name!r} in {keys_path()} (stored: {names}); store one "
              f"with: rlm keys set {args.name}", file=sys.stderr)
        return 1
    print(value)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from rlm.keys import keys_path, list_keys

    names = list_keys()
    if not names:
        print(f"no keys stored in {keys_path()}; add one with: rlm keys set openai", file=sys.stderr)
    for name in names:
        print(name)
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    from rlm.keys import delete_key

    if not delete_key(args.name):
        print(f"rlm keys: no key named {args.name!r}", file=sys.stderr)
        return 1
    print(f"removed the key for {args.name}", file=sys.stderr)
    return 0


def cmd_path(args: argparse.Namespace) -> int:
    from rlm.keys import keys_path

    print(keys_path())
    return 0
