"""``rlm view [ID | FILE.jsonl] [--port 3001] [--no-browser]``: the trajectory viewer."""

from __future__ import annotations

import argparse
import os
import sys
import threading
import webbrowser
from typing import Any

from rlm.exceptions import ConfigurationError


def add_view_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "view", help="browse logged runs (or a .jsonl trajectory) in the browser",
        description="Serves the trajectory viewer on 127.0.0.1 and opens it in your browser. "
                    "Without an argument: every logged run. With a run id: that run. With a "
                    ".jsonl file (RLMLogger's or the reference library's): that file, without "
                    "adding it to your logs.")
    p.add_argument("target", nargs="?", help="run id (or prefix, or 'latest'), or a .jsonl file")
    p.add_argument("--port", type=int, default=int(os.environ.get("RLM_VIEW_PORT", 3001)),
                   help="port on 127.0.0.1 (default 3001; 0 picks a free one)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")
    p.set_defaults(func=cmd_view)


def cmd_view(args: argparse.Namespace) -> int:
    from ..store.db import Database
    from ..store.query import import_file, resolve_id
    from .server import Viewer, make_server

    fragment = ""
    try:
        target = args.target
        if target and (target.endswith((".jsonl", ".json")) or os.path.isfile(target)):
            db = Database(":memory:")
            ids = import_file(db, target)
            viewer = Viewer(db, label=os.path.abspath(target))
            fragment = f"#/run/{ids[0][0]}" if ids else ""
        else:
            db = Database(os.environ.get("RLM_LOGS_DB") or None)
            viewer = Viewer(db, label=db.path)
            if target:
                fragment = f"#/run/{resolve_id(db, target)}"
        server = make_server(viewer, args.port)
    except ConfigurationError as exc:
        print(f"rlm view: {exc}", file=sys.stderr)
        return 1
    url = f"http://127.0.0.1:{server.server_address[1]}/{fragment}"
    print(f"rlm view: serving {viewer.label} at {url} (Ctrl+C to stop)", file=sys.stderr, flush=True)
    if not args.no_browser:
        threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        print("rlm view: stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0
