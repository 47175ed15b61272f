"""``E2BEmulator``: the HTTP APIs the E2B SDK uses, served on 127.0.0.1, backed by local sandboxes.

Two servers, as in the real service:

* the **control plane** (``api_url``, the SDK's ``E2B_API_URL``): ``POST /v2/sandboxes``
  (create), ``DELETE /sandboxes/{id}`` (kill), ``POST /sandboxes/{id}/timeout``; requests must
  carry the ``X-API-KEY`` header with the emulator's key;
* **envd** (``sandbox_url``, the SDK's ``E2B_SANDBOX_URL``; the sandbox is picked by the
  ``E2b-Sandbox-Id`` header the SDK sends, and the request must carry the sandbox's
  ``X-Access-Token``): ``GET /health``, ``POST /files`` (multipart or octet-stream upload),
  ``GET /files`` (download), and the process service over Connect RPC with the JSON codec
  (``/process.Process/Start`` and ``Connect`` server streams; ``SendInput``, ``SendSignal``,
  ``CloseStdin``, ``List`` unary), encoded and decoded with the SDK's own generated message
  classes (``e2b.envd.process.process_pb``).

Every request is recorded (:attr:`E2BEmulator.requests`: plane, method, path, operation,
sandbox, a summary, the status answered) so tests can assert the whole flow. Faults are scripted
per operation with :meth:`E2BEmulator.fail` (an HTTP error with the provider's message, or a
dropped connection), and :meth:`E2BEmulator.kill_sandbox` ends a sandbox under a running client
the way the provider does when a sandbox's timeout passes. A killed sandbox answers envd requests
with 502 "... was not found", as E2B's edge proxy does.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import json
import re
import shutil
import signal as signals
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from e2b.envd.process import process_pb as P
from protobuf import Oneof

from rlm_testkit.servers.faults import FaultPlan

from .connect import HTTP_STATUS, RPCError, end_stream, envelope, read_envelopes
from .sandboxes import LocalSandbox, SandboxProcess, make_base_dir

DEFAULT_KEY = "e2b_emulator_0123456789abcdef"
TEMPLATES = ("code-interpreter-v1", "base")
_SIGNALS = {"SIGKILL": signals.SIGKILL, "SIGTERM": signals.SIGTERM}


@dataclass
class Recorded:
    """One request the SDK made."""

    plane: str  # "api" or "envd"
    method: str
    path: str
    op: str  # create, kill, set_timeout, health, upload, download, start, connect, ...
    sandbox_id: str | None
    summary: str
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Fault:
    status: int | None  # None: the connection is dropped without an answer
    message: str
    headers: dict[str, str]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, emulator: E2BEmulator, plane: str):
        self.emulator = emulator
        self.plane = plane
        super().__init__(("127.0.0.1", 0), _Handler)


class _Drop(Exception):
    """Cut the connection without an answer (a network failure, a sandbox gone mid-stream)."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        # headers and body go out in separate writes: without this, Nagle's algorithm and the
        # client's delayed ACK add ~40 ms to every small answer
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # --- plumbing -----------------------------------------------------------------------

    def _body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", content_type: str = "application/json",
              headers: dict[str, str] | None = None) -> None:
        self._record.status = status
        self.send_response(status)
        if body or status not in (204, 304):
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _json(self, status: int, value: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(value).encode(), headers=headers)

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._record.status = -1

    def _handle(self) -> None:
        emu = self.server.emulator
        parsed = urllib.parse.urlsplit(self.path)
        self.query = dict(urllib.parse.parse_qsl(parsed.query))
        self.route = parsed.path
        self._record = Recorded(self.server.plane, self.command, parsed.path, "?",
                                self.headers.get("E2b-Sandbox-Id"), "",
                                headers={k.lower(): v for k, v in self.headers.items()})
        emu._add(self._record)
        try:
            if self.server.plane == "api":
                self._api()
            else:
                self._envd()
        except _Drop:
            self._drop()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = do_POST = do_DELETE = do_PUT = _handle

    def _fault(self, op: str) -> bool:
        """Answer with a scripted fault for ``op``, if one is pending."""
        self._record.op = op
        fault = self.server.emulator._faults.take(op)
        if fault is None:
            return False
        self._body()
        if fault.status is None:
            raise _Drop()
        self._json(fault.status, {"code": fault.status, "message": fault.message},
                   headers=fault.headers)
        return True

    # --- control plane ------------------------------------------------------------------

    def _api(self) -> None:
        emu = self.server.emulator
        route, method = self.route, self.command
        m = re.fullmatch(r"/sandboxes/([^/]+)(/timeout)?", route)
        op = ("create" if (method, route) == ("POST", "/v2/sandboxes") else
              "kill" if m and method == "DELETE" and not m.group(2) else
              "set_timeout" if m and method == "POST" and m.group(2) else "unknown")
        self._record.sandbox_id = m.group(1) if m else None
        if self._fault(op):
            return
        if self.headers.get("X-API-KEY") != emu.api_key:
            self._body()
            return self._json(401, {"code": 401, "message": "Invalid API key, please visit "
                                    "https://e2b.dev/docs/api-key for more information."})
        body = self._body()
        if op == "create":
            req = json.loads(body or b"{}")
            template = req.get("templateID")
            self._record.summary = f"template={template} timeout={req.get('timeout')}"
            if template not in emu.templates:
                return self._json(404, {"code": 404,
                                        "message": f"template '{template}' not found"})
            sandbox = emu._create(template, float(req.get("timeout") or 300),
                                  req.get("envVars") or {}, req.get("metadata") or {},
                                  req.get("allow_internet_access"))
            self._record.sandbox_id = sandbox.sandbox_id
            return self._json(201, {"templateID": template, "sandboxID": sandbox.sandbox_id,
                                    "clientID": "emulator", "envdVersion": emu.envd_version,
                                    "envdAccessToken": sandbox.access_token, "domain": None})
        sandbox = emu.sandboxes.get(m.group(1)) if m else None
        if op == "unknown":
            return self._json(404, {"code": 404, "message": f"no route {method} {route}"})
        if sandbox is None or not sandbox.alive:
            return self._json(404, {"code": 404,
                                    "message": f"sandbox \"{m.group(1)}\" not found"})
        if op == "kill":
            emu.kill_sandbox(sandbox.sandbox_id, record=False)
            return self._send(204)
        timeout = float(json.loads(body or b"{}").get("timeout") or 0)
        self._record.summary = f"timeout={timeout:g}"
        sandbox.deadline = time.monotonic() + timeout
        return self._send(204)

    # --- envd ---------------------------------------------------------------------------

    def _envd(self) -> None:
        emu = self.server.emulator
        route = self.route
        op = {"/health": "health", "/files": "upload" if self.command == "POST" else "download"
              }.get(route) or _rpc_op(route)
        if self._fault(op):
            return
        sandbox = emu.sandboxes.get(self.headers.get("E2b-Sandbox-Id") or "")
        if sandbox is None or not sandbox.alive:
            self._body()
            sid = self.headers.get("E2b-Sandbox-Id")
            return self._json(502, {"code": 502, "sandboxId": sid,
                                    "message": f"The sandbox {sid} was not found"})
        if self.headers.get("X-Access-Token") != sandbox.access_token:
            self._body()
            return self._json(401, {"code": 401, "message": "invalid access token"})
        self.sandbox = sandbox
        self._record.summary = _user(self.headers.get("Authorization"))
        if op == "health":
            self._body()
            return self._send(204)
        if op == "upload":
            return self._upload()
        if op == "download":
            self._body()
            path = self.query.get("path", "")
            self._record.summary += f" {path}"
            try:
                data = sandbox.read_file(path)
            except FileNotFoundError:
                return self._json(404, {"code": 404, "message": f"path '{path}' does not exist"})
            return self._send(200, data, "application/octet-stream")
        self._rpc(op)

    def _upload(self) -> None:
        body = self._body()
        ctype = self.headers.get("Content-Type") or ""
        files: list[tuple[str, bytes]] = []
        if ctype.startswith("multipart/form-data"):
            msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body)
            for part in msg.iter_parts():
                name = self.query.get("path") or part.get_filename() or ""
                files.append((name, part.get_payload(decode=True) or b""))
        else:
            files.append((self.query.get("path", ""), body))
        infos = []
        for path, data in files:
            try:
                written = self.sandbox.write_file(path, data)
            except PermissionError as exc:
                return self._json(403, {"code": 403, "message": str(exc)})
            self._record.summary += f" {written} ({len(data)} B)"
            infos.append({"name": written.rsplit("/", 1)[-1], "path": written, "type": "file"})
        self._json(200, infos)

    def _rpc(self, op: str) -> None:
        body = self._body()
        streaming = op in ("start", "connect")
        try:
            if op == "unknown":
                raise RPCError("unimplemented", f"{self.route} is not implemented by the "
                                                "emulator")
            if streaming:
                envs = [p for f, p in read_envelopes(body) if not f & 0x02]
                if len(envs) != 1:
                    raise RPCError("invalid_argument", "a server stream takes one message")
                payload = envs[0]
            else:
                payload = body
            handler = getattr(self, f"_rpc_{op}")
            cls = {"start": P.StartRequest, "connect": P.ConnectRequest,
                   "send_input": P.SendInputRequest, "send_signal": P.SendSignalRequest,
                   "close_stdin": P.CloseStdinRequest, "list": P.ListRequest}[op]
            request = cls.from_json(payload.decode("utf-8"), ignore_unknown_fields=True)
            if streaming:
                return handler(request)
            response = handler(request)
            self._send(200, response.to_json().encode(), "application/json")
        except RPCError as err:
            self._record.summary += f" -> {err.code}"
            if streaming:
                self._stream_head()
                self._chunk(end_stream(err))
                self._chunk(b"")
                return
            self._json(HTTP_STATUS[err.code], err.body())

    def _process(self, selector: Any) -> SandboxProcess:
        pid = selector.selector.value if selector and selector.selector else None
        proc = self.sandbox.processes.get(pid) if isinstance(pid, int) else None
        if proc is None:
            raise RPCError("not_found", f"process with pid {pid} not found")
        return proc

    def _rpc_send_input(self, req: P.SendInputRequest) -> P.SendInputResponse:
        proc = self._process(req.process)
        data = req.input.input.value if req.input and req.input.input else b""
        self._record.summary += f" pid={proc.pid} {len(data)} B"
        try:
            proc.write_stdin(data)
        except (BrokenPipeError, OSError) as exc:
            raise RPCError("failed_precondition", f"cannot write to stdin: {exc}") from exc
        return P.SendInputResponse()

    def _rpc_send_signal(self, req: P.SendSignalRequest) -> P.SendSignalResponse:
        proc = self._process(req.process)
        name = req.signal.name if req.signal is not None else "SIGKILL"
        self._record.summary += f" pid={proc.pid} {name}"
        proc.signal(_SIGNALS.get(name, signals.SIGKILL))
        return P.SendSignalResponse()

    def _rpc_close_stdin(self, req: P.CloseStdinRequest) -> P.CloseStdinResponse:
        proc = self._process(req.process)
        proc.close_stdin()
        return P.CloseStdinResponse()

    def _rpc_list(self, req: P.ListRequest) -> P.ListResponse:
        return P.ListResponse(processes=[
            P.ProcessInfo(pid=p.pid, config=P.ProcessConfig(cmd=p.cmd))
            for p in self.sandbox.processes.values() if p.exit is None])

    def _rpc_start(self, req: P.StartRequest) -> None:
        cfg = req.process
        if cfg is None or not cfg.cmd:
            raise RPCError("invalid_argument", "process.cmd is required")
        args = list(cfg.args or [])
        self._record.summary += f" {cfg.cmd} {' '.join(args)}"[:300]
        try:
            proc = self.sandbox.start(cfg.cmd, args, dict(cfg.envs or {}), cfg.cwd or "",
                                      bool(req.stdin))
        except OSError as exc:
            raise RPCError("internal", f"failed to start the process: {exc}") from exc
        self._record.summary += f" -> pid={proc.pid}"
        self._stream(proc, proc.first_events)

    def _rpc_connect(self, req: P.ConnectRequest) -> None:
        proc = self._process(req.process)
        self._stream(proc, proc.subscribe())

    def _stream_head(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/connect+json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self._record.status = 200

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _event(self, cls: Any, field_name: str, value: Any) -> None:
        E = P.ProcessEvent
        self._chunk(envelope(cls(event=E(event=Oneof(field_name, value))).to_json().encode()))

    def _stream(self, proc: SandboxProcess, events: list[tuple[Any, ...]]) -> None:
        E = P.ProcessEvent
        cls = P.StartResponse if self._record.op == "start" else P.ConnectResponse
        limit_ms = self.headers.get("Connect-Timeout-Ms")
        deadline = time.monotonic() + int(limit_ms) / 1000 if limit_ms else None
        self._stream_head()
        try:
            self._event(cls, "start", E.StartEvent(pid=proc.pid))
            while True:
                if deadline is not None and time.monotonic() > deadline:
                    self._chunk(end_stream(RPCError("deadline_exceeded",
                                                    "the stream's deadline passed")))
                    self._chunk(b"")
                    return
                ev = proc.next_event(events, 0.5)
                if ev is None:
                    continue
                if ev[0] in ("stdout", "stderr"):
                    self._event(cls, "data", E.DataEvent(output=Oneof(ev[0], ev[1])))
                elif ev[0] == "end":
                    self._event(cls, "end", E.EndEvent(exit_code=ev[1], exited=True,
                                                       status=ev[2]))
                    self._chunk(end_stream())
                    self._chunk(b"")
                    return
                else:  # the sandbox went away: the connection ends mid-stream
                    raise _Drop()
        finally:
            proc.unsubscribe(events)


def _rpc_op(route: str) -> str:
    m = re.fullmatch(r"/process\.Process/(\w+)", route)
    if not m:
        return "unknown"
    return re.sub(r"(?<!^)([A-Z])", r"_\1", m.group(1)).lower()


def _user(header: str | None) -> str:
    if header and header.startswith("Basic "):
        try:
            return "user=" + base64.b64decode(header[6:]).decode().rstrip(":")
        except ValueError:
            pass
    return "user=-"


class E2BEmulator:
    """The E2B control plane and envd on 127.0.0.1 (see the module docstring).

    Use as a context manager, or call :meth:`start` and :meth:`close`. Point the SDK at it with
    :attr:`connection_kwargs` (``api_key``, ``api_url``, ``sandbox_url``) or the environment
    variables in :attr:`env_vars`.
    """

    def __init__(self, api_key: str = DEFAULT_KEY, *, envd_version: str = "0.6.7",
                 templates: tuple[str, ...] = TEMPLATES):
        self.api_key = api_key
        self.envd_version = envd_version
        self.templates = set(templates)
        self.sandboxes: dict[str, LocalSandbox] = {}
        self.requests: list[Recorded] = []
        self._faults: FaultPlan[_Fault] = FaultPlan()
        self._lock = threading.Lock()
        self._base = make_base_dir()
        self._api = _Server(self, "api")
        self._envd = _Server(self, "envd")
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> Self:
        for srv in (self._api, self._envd):
            t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1},
                                 daemon=True, name=f"e2b-emulator-{srv.plane}")
            t.start()
            self._threads.append(t)
        reaper = threading.Thread(target=self._reap, daemon=True, name="e2b-emulator-timeouts")
        reaper.start()
        self._threads.append(reaper)
        return self

    def close(self) -> None:
        self._stop.set()
        for sandbox in list(self.sandboxes.values()):
            sandbox.kill()
        for srv in (self._api, self._envd):
            srv.shutdown()
            srv.server_close()
        for t in self._threads:
            t.join(5)
        shutil.rmtree(self._base, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self._api.server_address[1]}"

    @property
    def sandbox_url(self) -> str:
        return f"http://127.0.0.1:{self._envd.server_address[1]}"

    @property
    def connection_kwargs(self) -> dict[str, str]:
        return {"api_key": self.api_key, "api_url": self.api_url,
                "sandbox_url": self.sandbox_url}

    @property
    def env_vars(self) -> dict[str, str]:
        return {"E2B_API_KEY": self.api_key, "E2B_API_URL": self.api_url,
                "E2B_SANDBOX_URL": self.sandbox_url}

    # --- what tests use -----------------------------------------------------------------

    def fail(self, op: str, status: int | None = 500, message: str = "emulated failure", *,
             times: int = 1, headers: dict[str, str] | None = None) -> None:
        """Answer the next ``times`` requests of ``op`` with ``status`` and ``message`` (``None``:
        drop the connection). Ops: create, kill, set_timeout, health, upload, download, start,
        connect, send_input, send_signal, close_stdin, list."""
        self._faults.add(op, _Fault(status, message, dict(headers or {})), times)

    def clear_faults(self) -> int:
        """Drop the faults not yet used; returns how many there were."""
        return self._faults.clear()

    def kill_sandbox(self, sandbox_id: str, *, record: bool = True) -> None:
        """End a sandbox as the provider does (its timeout passed, it crashed)."""
        sandbox = self.sandboxes.get(sandbox_id)
        if sandbox is None:
            return
        if record:
            self._add(Recorded("emulator", "-", "-", "expire", sandbox_id, "killed by the "
                               "provider", 0))
        sandbox.kill()

    def ops(self, sandbox_id: str | None = None) -> list[str]:
        """The operations recorded so far (``"create"``, ``"upload"``, ``"start"``...), in order,
        optionally only those of one sandbox (its creation included)."""
        with self._lock:
            return [r.op for r in self.requests
                    if sandbox_id is None or r.sandbox_id == sandbox_id]

    def live_sandboxes(self) -> list[str]:
        return [sid for sid, sb in self.sandboxes.items() if sb.alive]

    # --- internals ----------------------------------------------------------------------

    def _add(self, record: Recorded) -> None:
        with self._lock:
            self.requests.append(record)

    def _create(self, template: str, timeout: float, env_vars: dict[str, str],
                metadata: dict[str, str], allow_internet: bool | None) -> LocalSandbox:
        sandbox = LocalSandbox(self._base, template, timeout, env_vars, metadata, allow_internet)
        with self._lock:
            self.sandboxes[sandbox.sandbox_id] = sandbox
        return sandbox

    def _reap(self) -> None:
        while not self._stop.wait(0.1):
            now = time.monotonic()
            for sandbox in list(self.sandboxes.values()):
                if sandbox.alive and now > sandbox.deadline:
                    self.kill_sandbox(sandbox.sandbox_id)
