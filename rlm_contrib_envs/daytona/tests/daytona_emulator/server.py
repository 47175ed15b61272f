"""``DaytonaEmulator``: the Daytona control-plane and toolbox HTTP APIs on 127.0.0.1.

Only what the ``daytona`` Python SDK calls for a create / upload / execute / read / delete flow
is served, with the JSON shapes of the SDK's generated models (``daytona_api_client`` and
``daytona_toolbox_api_client``, 0.226):

control plane (``DAYTONA_API_URL`` = ``<base>/api``)
    ``POST /sandbox`` (state ``starting``, then ``started`` after ``start_delay`` seconds, which
    the SDK's wait-until-started polling sees), ``GET /sandbox/{id}``, ``DELETE /sandbox/{id}``,
    ``GET /sandbox/{id}/toolbox-proxy-url``. Anything else (the SDK's Socket.IO event stream
    among them) is answered 404 and recorded, and the SDK falls back to polling.
toolbox (``toolboxProxyUrl`` = ``<base>/toolbox``, the SDK adds ``/{sandboxId}``)
    ``POST /files/bulk-upload`` (multipart), ``POST /files/bulk-download`` (multipart answer),
    ``POST /files/permissions``, ``POST /process/session``, ``GET|DELETE
    /process/session/{sid}``, ``POST /process/session/{sid}/exec`` (sync or ``runAsync``),
    ``GET /process/session/{sid}/command/{cid}``, ``GET .../logs`` (JSON, or with
    ``follow=true`` a WebSocket carrying Daytona's ``\\x01\\x01\\x01`` / ``\\x02\\x02\\x02``
    stdout/stderr framing) and ``POST .../input`` (written to the command's stdin, echoed to
    its output unless the command was started with ``suppressInputEcho``, as the real daemon
    does).

Every request must carry ``Authorization: Bearer <api_key>`` (401 otherwise) and is recorded
(:attr:`DaytonaEmulator.requests`). Faults are injected per route (:meth:`DaytonaEmulator.fail`)
with the error bodies the real service sends, a sandbox can fail to start
(:attr:`DaytonaEmulator.start_error`) or die mid-run (:meth:`DaytonaEmulator.kill_sandbox`).
Commands really run, under bubblewrap (see :mod:`.box`).
"""

from __future__ import annotations

import asyncio
import datetime
import email.parser
import email.policy
import json
import re
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from rlm_testkit.servers.faults import FaultPlan
from rlm_testkit.servers.loop import LoopThread

from .box import Box, Command, SandboxFault

STDOUT_PREFIX = b"\x01\x01\x01"
STDERR_PREFIX = b"\x02\x02\x02"
ORG = "emulator-org"


@dataclass
class Recorded:
    """One request the SDK made: its route name, method, path, answer and a body summary."""

    route: str
    method: str
    path: str
    status: int = 0
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Fault:
    """An error answer scripted by a test (see :meth:`DaytonaEmulator.fail`)."""

    status: int
    message: str


@dataclass
class Sandbox:
    """The control plane's record of one sandbox."""

    id: str
    name: str
    request: dict[str, Any]
    created: float
    box: Box | None
    state: str = "starting"
    error_reason: str | None = None
    start_error: str | None = None

    def refresh(self, start_delay: float) -> None:
        if self.state == "starting" and time.monotonic() - self.created >= start_delay:
            if self.start_error:
                self.state, self.error_reason = "error", self.start_error
            else:
                self.state = "started"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")


class DaytonaEmulator:
    """A local stand-in for Daytona's HTTP APIs; use as a context manager.

    Args:
        api_key: the key clients must send (``DAYTONA_API_KEY``).
        start_delay: seconds a new sandbox stays ``starting`` before it is ``started``.
        root: where sandboxes' files live (default: a fresh temporary directory).
    """

    def __init__(self, api_key: str = "emulator-key", *, start_delay: float = 0.3,
                 root: str | None = None):
        self.api_key = api_key
        self.start_delay = start_delay
        self._own_root = root is None
        self.root = root or tempfile.mkdtemp(prefix="daytona-emulator-")
        self.requests: list[Recorded] = []
        self.sandboxes: dict[str, Sandbox] = {}
        self.faults: FaultPlan[Fault] = FaultPlan()
        #: When set, new sandboxes end in state ``error`` with this reason instead of starting.
        self.start_error: str | None = None
        self._lock = threading.Lock()
        self._runner: web.AppRunner | None = None
        self._thread: LoopThread | None = None
        self.port = 0

    # --- lifecycle -----------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        """The value for ``DAYTONA_API_URL``."""
        return f"{self.base_url}/api"

    def start(self) -> DaytonaEmulator:
        async def listen() -> int:
            runner = web.AppRunner(self._app(), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self._runner = runner
            return site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

        self._thread = LoopThread("daytona-emulator")
        self.port = self._thread.start(listen)
        return self

    def stop(self) -> None:
        for sb in list(self.sandboxes.values()):
            if sb.box is not None:
                sb.box.destroy()
        if self._thread is not None:
            runner, self._runner = self._runner, None
            self._thread.stop(runner.cleanup if runner is not None else None)
            self._thread = None
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> DaytonaEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what tests use ------------------------------------------------------------------

    def fail(self, route: str, status: int, message: str, times: int = 1) -> None:
        """Answer the next ``times`` requests of ``route`` (a name of :meth:`routes`) with an
        error ``status`` and ``message``, in the body the real service uses."""
        if route not in self.routes():
            raise ValueError(f"unknown route {route!r}; known: {sorted(self.routes())}")
        self.faults.add(route, Fault(status, message), times)

    def kill_sandbox(self, sandbox_id: str, reason: str = "the sandbox's runner was lost") -> None:
        """The sandbox dies: its processes are killed, it goes to state ``error``."""
        sb = self.sandboxes[sandbox_id]
        sb.state, sb.error_reason = "error", reason
        if sb.box is not None:
            sb.box.kill_all()

    def flow(self) -> list[str]:
        """Route names of the requests made so far, in order (polling repeats collapsed)."""
        names: list[str] = []
        for r in self.requests:
            if not names or names[-1] != r.route:
                names.append(r.route)
        return names

    def calls(self, route: str) -> list[Recorded]:
        return [r for r in self.requests if r.route == route]

    def live(self) -> list[str]:
        """Ids of the sandboxes not deleted."""
        return [i for i, sb in self.sandboxes.items() if sb.state != "destroyed"]

    @staticmethod
    def routes() -> dict[str, tuple[str, str]]:
        """Route name -> (method, path pattern)."""
        sid = r"/toolbox/(?P<box>[^/]+)"
        session = sid + r"/process/session/(?P<session>[^/]+)"
        command = session + r"/command/(?P<command>[^/]+)"
        return {
            "create": ("POST", r"/api/sandbox"),
            "get": ("GET", r"/api/sandbox/(?P<box>[^/]+)"),
            "delete": ("DELETE", r"/api/sandbox/(?P<box>[^/]+)"),
            "toolbox-url": ("GET", r"/api/sandbox/(?P<box>[^/]+)/toolbox-proxy-url"),
            "upload": ("POST", sid + r"/files/bulk-upload"),
            "download": ("POST", sid + r"/files/bulk-download"),
            "permissions": ("POST", sid + r"/files/permissions"),
            "create-session": ("POST", sid + r"/process/session"),
            "get-session": ("GET", session),
            "delete-session": ("DELETE", session),
            "exec": ("POST", session + r"/exec"),
            "get-command": ("GET", command),
            "logs": ("GET", command + r"/logs"),
            "input": ("POST", command + r"/input"),
        }

    # --- HTTP ----------------------------------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=256 * 2**20)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        return app

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        route, params = "unknown", {}
        for name, (method, pattern) in self.routes().items():
            m = re.fullmatch(pattern, request.path)
            if m and request.method == method:
                route, params = name, m.groupdict()
                break
        rec = Recorded(route, request.method, request.path)
        self.requests.append(rec)
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            rec.status = 401
            return self._error(request, 401, "Invalid credentials", toolbox=False)
        toolbox = request.path.startswith("/toolbox/")
        fault = self.faults.take(route)
        if fault is not None:
            rec.status = fault.status
            rec.summary["fault"] = fault.message
            return self._error(request, fault.status, fault.message, toolbox=toolbox)
        if route == "unknown":
            rec.status = 404
            return self._error(request, 404, f"Cannot {request.method} {request.path}",
                               toolbox=toolbox)
        try:
            response = await getattr(self, "_r_" + route.replace("-", "_"))(request, rec,
                                                                            **params)
        except SandboxFault as exc:
            rec.status = exc.status
            return self._error(request, exc.status, exc.message, toolbox=toolbox)
        if not rec.status:
            rec.status = response.status
        return response

    @staticmethod
    def _error(request: web.Request, status: int, message: str, *, toolbox: bool) -> web.Response:
        reasons = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
                   409: "Conflict", 410: "Gone", 429: "Too Many Requests",
                   500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}
        if toolbox:  # the daemon's ErrorResponse
            body = {"statusCode": status, "message": message, "code": reasons.get(status, "Error")
                    .upper().replace(" ", "_"), "method": request.method, "path": request.path,
                    "timestamp": _now()}
        else:  # the control plane's (NestJS) error body
            body = {"statusCode": status, "message": message,
                    "error": reasons.get(status, "Error")}
        return web.json_response(body, status=status)

    def _sandbox(self, box_id: str, *, started: bool = False) -> Sandbox:
        sb = self.sandboxes.get(box_id) or next(
            (s for s in self.sandboxes.values() if s.name == box_id and s.state != "destroyed"),
            None)
        if sb is None or sb.state == "destroyed":
            raise SandboxFault(404, f"Sandbox with ID or name {box_id} not found")
        sb.refresh(self.start_delay)
        if started and sb.state != "started":
            raise SandboxFault(409 if sb.state != "error" else 502,
                               f"Sandbox {box_id} is not running (state: {sb.state}"
                               + (f", {sb.error_reason}" if sb.error_reason else "") + ")")
        return sb

    def _dto(self, sb: Sandbox) -> dict[str, Any]:
        req = sb.request
        return {
            "id": sb.id, "organizationId": ORG, "name": sb.name,
            "snapshot": req.get("snapshot"), "user": req.get("user") or "daytona",
            "env": req.get("env") or {}, "labels": req.get("labels") or {},
            "public": bool(req.get("public")),
            "networkBlockAll": bool(req.get("networkBlockAll")), "kvm": False,
            "target": req.get("target") or "us", "cpu": sb.box.cpu if sb.box else 1, "gpu": 0,
            "memory": int(req.get("memory") or 1), "disk": int(req.get("disk") or 3),
            "state": sb.state, "desiredState": "destroyed" if sb.state == "destroyed"
            else "started", "errorReason": sb.error_reason, "recoverable": False,
            "autoStopInterval": req.get("autoStopInterval", 15),
            "autoArchiveInterval": req.get("autoArchiveInterval", 10080),
            "autoDeleteInterval": req.get("autoDeleteInterval", -1),
            "volumes": [], "createdAt": _now(), "updatedAt": _now(),
            "daemonVersion": "emulator", "runnerId": "emulator-runner",
            "toolboxProxyUrl": f"{self.base_url}/toolbox",
        }

    # control plane

    async def _r_create(self, request: web.Request, rec: Recorded) -> web.Response:
        body = await request.json()
        rec.summary = {k: body[k] for k in ("snapshot", "cpu", "memory", "disk", "target",
                                            "autoStopInterval", "autoDeleteInterval", "ttlMinutes", "labels",
                                            "networkBlockAll", "env") if k in body}
        if body.get("buildInfo"):
            rec.summary["dockerfile"] = body["buildInfo"].get("dockerfileContent")
        sandbox_id = str(uuid.uuid4())
        box = Box(self.root, sandbox_id, env=body.get("env") or {}, cpu=int(body.get("cpu") or 1),
                  memory_gib=int(body.get("memory") or 1), disk_gib=int(body.get("disk") or 3))
        sb = Sandbox(sandbox_id, body.get("name") or sandbox_id, body, time.monotonic(), box,
                     start_error=self.start_error)
        self.sandboxes[sandbox_id] = sb
        rec.summary["id"] = sandbox_id
        return web.json_response(self._dto(sb))

    async def _r_get(self, request: web.Request, rec: Recorded, box: str) -> web.Response:
        sb = self._sandbox(box)
        rec.summary = {"state": sb.state}
        return web.json_response(self._dto(sb))

    async def _r_delete(self, request: web.Request, rec: Recorded, box: str) -> web.Response:
        sb = self._sandbox(box)
        if sb.box is not None:
            await asyncio.to_thread(sb.box.destroy)
        sb.state = "destroyed"
        return web.json_response(self._dto(sb))

    async def _r_toolbox_url(self, request: web.Request, rec: Recorded, box: str
                             ) -> web.Response:
        self._sandbox(box)
        return web.json_response({"url": f"{self.base_url}/toolbox"})

    # toolbox: files

    async def _r_upload(self, request: web.Request, rec: Recorded, box: str) -> web.Response:
        sb = self._sandbox(box, started=True)
        assert sb.box is not None
        paths: dict[str, str] = {}
        datas: dict[str, bytes] = {}
        raw = await request.read()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {request.headers.get('Content-Type', '')}\r\n\r\n".encode() + raw)
        if not message.is_multipart():
            raise SandboxFault(400, "bulk-upload takes a multipart/form-data body")
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition") or ""
            m = re.fullmatch(r"files\[(\d+)\]\.(path|file)", str(name))
            if m is None:
                raise SandboxFault(400, f"unexpected form field {name!r}")
            data = part.get_payload(decode=True) or b""
            if m.group(2) == "path":
                paths[m.group(1)] = data.decode("utf-8")
            else:
                datas[m.group(1)] = data
        if set(paths) != set(datas):
            raise SandboxFault(400, "every files[i].path needs its files[i].file")
        rec.summary = {"files": {path: len(datas[i]) for i, path in paths.items()}}
        for i, path in paths.items():
            sb.box.write_file(path, datas[i])
        return web.json_response({"files": [{"path": path} for path in paths.values()]})

    async def _r_download(self, request: web.Request, rec: Recorded, box: str
                          ) -> web.Response:
        sb = self._sandbox(box, started=True)
        assert sb.box is not None
        paths = (await request.json()).get("paths") or []
        rec.summary = {"paths": list(paths)}
        boundary = uuid.uuid4().hex
        parts: list[bytes] = []
        for path in paths:  # as Go's mime/multipart writes them: the path unescaped
            quoted = str(path).replace("\\", "\\\\").replace('"', '\\"')
            try:
                data, name, ctype = sb.box.read_file(path), "file", "application/octet-stream"
            except SandboxFault as exc:
                data = json.dumps({"message": exc.message, "statusCode": exc.status,
                                   "code": "FILE_NOT_FOUND" if exc.status == 404 else "ERROR"}
                                  ).encode()
                name, ctype = "error", "application/json"
            parts.append(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; "
                         f"filename=\"{quoted}\"\r\nContent-Type: {ctype}\r\n\r\n".encode()
                         + data + b"\r\n")
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return web.Response(body=body, status=200,
                            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})

    async def _r_permissions(self, request: web.Request, rec: Recorded, box: str
                             ) -> web.Response:
        sb = self._sandbox(box, started=True)
        assert sb.box is not None
        path, mode = request.query.get("path", ""), request.query.get("mode")
        owner = request.query.get("owner")
        rec.summary = {"path": path, "mode": mode, "owner": owner}
        if owner not in (None, "", "daytona"):  # the only user of the emulated sandboxes
            raise SandboxFault(400, f"unknown user {owner!r}")
        if mode:
            sb.box.set_mode(path, mode)
        return web.Response(status=200)

    # toolbox: sessions and commands

    async def _r_create_session(self, request: web.Request, rec: Recorded, box: str
                                ) -> web.Response:
        sb = self._sandbox(box, started=True)
        assert sb.box is not None
        session_id = (await request.json()).get("sessionId") or ""
        rec.summary = {"sessionId": session_id}
        sb.box.create_session(session_id)
        return web.Response(status=201)

    async def _r_get_session(self, request: web.Request, rec: Recorded, box: str,
                             session: str) -> web.Response:
        sb = self._sandbox(box, started=True)
        assert sb.box is not None
        return web.json_response(sb.box.session(session).to_json())

    async def _r_delete_session(self, request: web.Request, rec: Recorded, box: str,
                                session: str) -> web.Response:
        sb = self._sandbox(box, started=True)
        assert sb.box is not None
        await asyncio.to_thread(sb.box.delete_session, session)
        return web.Response(status=204)

    async def _r_exec(self, request: web.Request, rec: Recorded, box: str, session: str
                      ) -> web.Response:
        sb = self._sandbox(box, started=True)
        assert sb.box is not None
        body = await request.json()
        command = body.get("command") or ""
        run_async = bool(body.get("runAsync") or body.get("async"))
        echo = not body.get("suppressInputEcho")
        rec.summary = {"command": command, "runAsync": run_async, "suppressInputEcho": not echo}
        cmd = sb.box.execute(session, command, echo_input=echo)
        if run_async:
            return web.json_response({"cmdId": cmd.id}, status=202)
        await asyncio.to_thread(_wait_exit, cmd)
        return web.json_response({"cmdId": cmd.id, "output": cmd.text(),
                                  "stdout": cmd.text("stdout"), "stderr": cmd.text("stderr"),
                                  "exitCode": cmd.exit_code})

    async def _r_get_command(self, request: web.Request, rec: Recorded, box: str, session: str,
                             command: str) -> web.Response:
        sb = self._sandbox(box)
        assert sb.box is not None
        cmd = sb.box.command(session, command)
        rec.summary = {"exitCode": cmd.exit_code}
        return web.json_response(cmd.to_json())

    async def _r_input(self, request: web.Request, rec: Recorded, box: str, session: str,
                       command: str) -> web.Response:
        sb = self._sandbox(box, started=True)
        assert sb.box is not None
        data = (await request.json()).get("data")
        if not isinstance(data, str):
            raise SandboxFault(400, "data must be a string")
        rec.summary = {"chars": len(data)}
        await asyncio.to_thread(sb.box.send_input, session, command, data)
        return web.Response(status=204)

    async def _r_logs(self, request: web.Request, rec: Recorded, box: str, session: str,
                      command: str) -> web.StreamResponse:
        sb = self._sandbox(box)
        assert sb.box is not None
        cmd = sb.box.command(session, command)
        follow = request.query.get("follow", "").lower() == "true"
        rec.summary = {"follow": follow}
        if not follow:
            return web.json_response({"output": cmd.text(), "stdout": cmd.text("stdout"),
                                      "stderr": cmd.text("stderr")})
        ws = web.WebSocketResponse()
        if not ws.can_prepare(request).ok:
            raise SandboxFault(400, "follow=true needs a WebSocket upgrade")
        await ws.prepare(request)
        rec.status = 101
        await self._stream(ws, cmd)
        return ws

    async def _stream(self, ws: web.WebSocketResponse, cmd: Command) -> None:
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()

        def notify() -> None:
            loop.call_soon_threadsafe(wake.set)

        async def drain_client() -> None:  # pings and the client's close
            async for msg in ws:
                if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                    break
            wake.set()

        reader = asyncio.create_task(drain_client())
        with cmd.cond:
            cmd.watchers.append(notify)
        seen = 0
        try:
            while not ws.closed:
                wake.clear()
                with cmd.cond:
                    entries, ended = cmd.log[seen:], cmd.exit_code is not None
                for kind, data in entries:
                    await ws.send_bytes((STDOUT_PREFIX if kind == "stdout" else STDERR_PREFIX)
                                        + data)
                seen += len(entries)
                if ended:
                    break
                try:
                    await asyncio.wait_for(wake.wait(), 1.0)
                except TimeoutError:
                    pass
        except (ConnectionResetError, RuntimeError):
            pass
        finally:
            with cmd.cond:
                if notify in cmd.watchers:
                    cmd.watchers.remove(notify)
            if not ws.closed:
                await ws.close(code=1000)
            reader.cancel()


def _wait_exit(cmd: Command) -> None:
    with cmd.cond:
        while cmd.exit_code is None:
            cmd.cond.wait(1.0)




_shared: DaytonaEmulator | None = None
_shared_lock = threading.Lock()


def shared_emulator() -> DaytonaEmulator:
    """One emulator for the whole process (started on first use, stopped at exit), for test
    classes whose settings must name its URL when they are defined."""
    global _shared
    with _shared_lock:
        if _shared is None:
            import atexit

            _shared = DaytonaEmulator(api_key="emulator-" + uuid.uuid4().hex[:12],
                                      start_delay=0.0).start()
            atexit.register(_shared.stop)
        return _shared


__all__ = ["STDERR_PREFIX", "STDOUT_PREFIX", "DaytonaEmulator", "Recorded", "shared_emulator"]
