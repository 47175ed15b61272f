"""``rlm mcp``: the command (arrives through the ``rlm_register_commands`` hook).

On stdio nothing but protocol goes to stdout (the SDK points fd 1 at stderr while serving);
messages go to stderr. Over HTTP the MCP endpoint is ``/mcp``; a bearer token is required unless
the host is a loopback address.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from typing import Any

from rlm.exceptions import ConfigurationError
from rlm_cli.surface import (add_profile_arguments, add_server_arguments, bearer_matches,
                             check_bind, profiles_from_args)

API_KEY_ENV = "RLM_MCP_API_KEY"


def add_mcp_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "mcp", help="serve RLM profiles as a Model Context Protocol tool (stdio or HTTP)",
        description="A Model Context Protocol server with one tool, rlm_answer(question, "
                    "context, paths, glob, profile): an RLM answers the question over the given "
                    "text and files, with a progress notification per turn.")
    p.add_argument("--transport", choices=("stdio", "http"), default="stdio",
                   help="stdio (default; for an MCP client that starts this command) or http "
                        "(streamable HTTP at /mcp)")
    add_server_arguments(p, port=8765, api_key_env=API_KEY_ENV, max_concurrent=2, files_root=".",
                         files_help="paths and globs are read under DIR (default: the current "
                                    "directory)", http_only=True)
    p.add_argument("--no-files", action="store_true", help="refuse paths and globs")
    add_profile_arguments(p)
    p.set_defaults(func=cmd_mcp)


class BearerGate:
    """ASGI wrapper: HTTP requests without ``Authorization: Bearer TOKEN`` get a 401."""

    def __init__(self, app: Any, token: str):
        self.app, self.token = app, token

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            if not bearer_matches(headers.get(b"authorization", b"").decode("latin-1"), self.token):
                body = b'{"error": "missing or wrong bearer token (rlm mcp --api-key)"}'
                await send({"type": "http.response.start", "status": 401, "headers": [
                    (b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def cmd_mcp(args: argparse.Namespace) -> int:
    from .server import MiB, MCPSettings, build_server

    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    try:
        if args.transport == "http":
            check_bind(args.host, api_key, flag="--api-key", env=API_KEY_ENV)
        root = None if args.no_files else args.files_root
        if root is not None and not os.path.isdir(root):
            raise ConfigurationError(f"--files-root {root}: not a directory.")
        settings = MCPSettings(profiles=profiles_from_args(args), files_root=root,
                               max_concurrent=args.max_concurrent,
                               max_file_bytes=int(args.max_files_mb * MiB), log=not args.no_log)
        server = build_server(settings)
    except ConfigurationError as exc:
        print(f"rlm mcp: {exc}", file=sys.stderr)
        return 2
    names = ", ".join(settings.profiles)
    if args.transport == "stdio":
        print(f"rlm mcp: tool rlm_answer (profiles {names}) on stdio", file=sys.stderr, flush=True)
        try:
            server.run("stdio")
        except KeyboardInterrupt:
            pass
        return 0
    import uvicorn

    app: Any = server.streamable_http_app(host=args.host)
    if api_key:
        app = BearerGate(app, api_key)
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited: no 40 ms ACK waits
    try:
        sock.bind((args.host, args.port))
    except OSError as exc:
        print(f"rlm mcp: cannot listen on {args.host}:{args.port} ({exc.strerror}); pick another "
              "--port.", file=sys.stderr)
        return 1
    sock.listen(128)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"rlm mcp: tool rlm_answer (profiles {names}) at "
          f"http://{host}:{sock.getsockname()[1]}/mcp"
          f"{' (bearer token required)' if api_key else ''}; Ctrl+C to stop",
          file=sys.stderr, flush=True)
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5)
    try:
        asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    print("rlm mcp: stopped", file=sys.stderr)
    return 0
