"""The trajectory viewer's HTTP server: the static page and a JSON API over the store.

Standard library only (``http.server``), bound to 127.0.0.1. The page's assets ship inside the
wheel (``rlm_plugins/viewer/static``): no build step, no Node.js.

API (all GET unless noted, JSON):
    /api/info                       what is served (the database path or the file)
    /api/runs?n=&offset=&model=&status=&q=     root runs, newest first
    /api/runs/ID                    the whole tree of one run
    /api/runs/ID/stamp              {updated_at, status, runs}: cheap polling for live runs
    POST /api/upload                a JSONL trajectory in the body; parsed into a private
                                    in-memory store (your logs are not touched); -> {"runs": [...]}
"""

from __future__ import annotations

import json
import mimetypes
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from rlm.exceptions import ConfigurationError

from ..store.db import Database
from ..store.query import count_runs, import_runs, list_runs, load_tree, parse_jsonl, resolve_id

MAX_UPLOAD_BYTES = 256 * 1024 * 1024
STATIC_FILES = ("index.html", "app.js", "app.css", "highlight.js")


def _static(name: str) -> bytes:
    return resources.files("rlm_plugins.viewer").joinpath("static", name).read_bytes()


class Viewer:
    """What the server serves: a store (the user's logs, or an in-memory one holding a file) and
    a private in-memory store for uploads."""

    def __init__(self, db: Database, *, label: str):
        self.db = db
        self.label = label
        self._uploads: Database | None = None
        self._lock = threading.Lock()

    @property
    def uploads(self) -> Database:
        with self._lock:
            if self._uploads is None:
                self._uploads = Database(":memory:")
            return self._uploads

    def _find(self, ref: str) -> tuple[Database, str]:
        try:
            return self.db, resolve_id(self.db, ref)
        except ConfigurationError:
            if self._uploads is None:
                raise
            return self._uploads, resolve_id(self._uploads, ref)

    def tree(self, ref: str) -> dict[str, Any]:
        db, run_id = self._find(ref)
        return load_tree(db, run_id)

    def stamp(self, ref: str) -> dict[str, Any]:
        db, run_id = self._find(ref)
        row = db.query("SELECT root_id FROM runs WHERE id=?", (run_id,))[0]
        agg = db.query("SELECT MAX(updated_at) AS u, COUNT(*) AS n FROM runs WHERE root_id=?",
                       (row["root_id"],))[0]
        from ..store.query import effective_status

        r = db.query("SELECT status, pid, source FROM runs WHERE id=?", (run_id,))[0]
        subs = db.query("SELECT COUNT(*) AS n FROM subcalls WHERE run_id IN (SELECT id FROM runs "
                        "WHERE root_id=?)", (row["root_id"],))[0]
        return {"updated_at": agg["u"], "runs": agg["n"], "subcalls": subs["n"],
                "status": effective_status(r["status"], r["pid"], r["source"])}

    def upload(self, body: bytes, name: str) -> list[str]:
        text = body.decode("utf-8")
        runs = parse_jsonl(text.splitlines(), name=name)
        return [run_id for run_id, _ in import_runs(self.uploads, runs)]


def make_handler(viewer: Viewer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "rlm-viewer"
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: Any) -> None:  # quiet: the terminal is the user's
            pass

        def _send(self, status: int, body: bytes, ctype: str, *, cache: bool = False) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "max-age=300" if cache else "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, data: Any, status: int = 200) -> None:
            body = json.dumps(data, default=str, ensure_ascii=False).encode("utf-8")
            self._send(status, body, "application/json; charset=utf-8")

        def _error(self, status: int, message: str) -> None:
            self._json({"error": message}, status)

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            url = urlparse(self.path)
            path = unquote(url.path)
            q = {k: v[-1] for k, v in parse_qs(url.query).items()}
            try:
                if path in ("/", "/index.html"):
                    return self._send(200, _static("index.html"), "text/html; charset=utf-8")
                if path.startswith("/static/"):
                    name = path[len("/static/"):]
                    if name not in STATIC_FILES:
                        return self._error(404, f"no static file {name!r}")
                    ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
                    if ctype.startswith("text/") or ctype.endswith("javascript"):
                        ctype += "; charset=utf-8"
                    return self._send(200, _static(name), ctype)
                if path == "/api/info":
                    return self._json({"label": viewer.label, "runs": count_runs(viewer.db)})
                if path == "/api/runs":
                    n = int(q.get("n", 200))
                    rows = list_runs(viewer.db, model=q.get("model") or None,
                                     status=q.get("status") or None, search=q.get("q") or None,
                                     limit=n, offset=int(q.get("offset", 0)))
                    return self._json({"runs": rows})
                parts = path.strip("/").split("/")
                if len(parts) >= 3 and parts[:2] == ["api", "runs"]:
                    if len(parts) == 3:
                        return self._json(viewer.tree(parts[2]))
                    if len(parts) == 4 and parts[3] == "stamp":
                        return self._json(viewer.stamp(parts[2]))
                if path == "/favicon.ico":
                    return self._send(204, b"", "image/x-icon")
                return self._error(404, f"nothing at {path}")
            except ConfigurationError as exc:
                return self._error(404, str(exc))
            except ValueError as exc:
                return self._error(400, str(exc))
            except (BrokenPipeError, ConnectionResetError):
                return None

        def do_POST(self) -> None:
            url = urlparse(self.path)
            if url.path != "/api/upload":
                return self._error(404, f"nothing to POST at {url.path}")
            length = int(self.headers.get("Content-Length") or 0)
            if length <= 0:
                return self._error(400, "empty upload: send the .jsonl file as the request body")
            if length > MAX_UPLOAD_BYTES:
                return self._error(413, f"file too large ({length:,} bytes; at most "
                                        f"{MAX_UPLOAD_BYTES:,}); import it with `rlm logs import`")
            body = self.rfile.read(length)
            name = parse_qs(url.query).get("name", ["upload.jsonl"])[-1]
            try:
                ids = viewer.upload(body, name)
            except (ConfigurationError, UnicodeDecodeError) as exc:
                return self._error(400, str(exc))
            return self._json({"runs": ids})

    return Handler


def make_server(viewer: Viewer, port: int = 3001, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    try:
        server = ThreadingHTTPServer((host, port), make_handler(viewer))
    except OSError as exc:
        raise ConfigurationError(
            f"cannot listen on {host}:{port} ({exc.strerror}); another program (or another "
            f"`rlm view`) uses it: pass --port N, or --port 0 for any free port.") from None
    server.daemon_threads = True
    return server
