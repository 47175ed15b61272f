"""``rlm serve``: the command (arrives through the ``rlm_register_commands`` hook)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

from rlm.exceptions import ConfigurationError
from rlm_cli.surface import (add_profile_arguments, add_server_arguments, check_bind,
                             profiles_from_args)

API_KEY_ENV = "RLM_SERVE_API_KEY"


def add_serve_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve", help="serve RLM profiles as an OpenAI-compatible HTTP API",
        description="An OpenAI-compatible server (GET /v1/models, POST /v1/chat/completions, "
                    "streamed and not) where each model id is an RLM profile. The last user "
                    "message is the question; earlier messages, attachments and files passed "
                    "by reference (\"rlm\": {\"files\": [...]}, under --files-root) are the "
                    "context.")
    add_server_arguments(p, port=8000, api_key_env=API_KEY_ENV, max_concurrent=4, files_root=None,
                         files_help="allow requests to pass files under DIR by reference "
                                    "(default: none)")
    p.add_argument("--max-queued", type=int, default=16,
                   help="requests waiting for a run slot before 429 (default 16)")
    p.add_argument("--max-request-mb", type=float, default=16.0,
                   help="largest request body in MiB (default 16)")
    add_profile_arguments(p)
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from .app import MiB, ServeSettings, create_app
    from .runner import bind, make_server

    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    try:
        check_bind(args.host, api_key, flag="--api-key", env=API_KEY_ENV)
        profiles = profiles_from_args(args)
        settings = ServeSettings(
            profiles=profiles, api_key=api_key, files_root=args.files_root,
            max_concurrent=args.max_concurrent, max_queued=args.max_queued,
            max_request_bytes=int(args.max_request_mb * MiB),
            max_file_bytes=int(args.max_files_mb * MiB), log=not args.no_log)
        sock = bind(args.host, args.port)
    except ConfigurationError as exc:
        print(f"rlm serve: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"rlm serve: cannot listen on {args.host}:{args.port} ({exc.strerror}); pick "
              "another --port.", file=sys.stderr)
        return 1
    host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{host}:{sock.getsockname()[1]}/v1"
    print(f"rlm serve: models {', '.join(profiles)} at {url}"
          f"{' (bearer token required)' if api_key else ''}; Ctrl+C to stop",
          file=sys.stderr, flush=True)
    server = make_server(create_app(settings))
    try:
        asyncio.run(server.serve(sockets=[sock]))
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    print("rlm serve: stopped", file=sys.stderr)
    return 0
