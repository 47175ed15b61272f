"""A Modal control plane and task command router on 127.0.0.1, for the real ``modal`` SDK.

Point the SDK at it with ``MODAL_SERVER_URL=http://127.0.0.1:PORT`` plus the emulator's
``MODAL_TOKEN_ID`` / ``MODAL_TOKEN_SECRET`` (:attr:`ModalEmulator.env`). Both gRPC services are
built on the base classes the SDK itself ships (``modal_proto.api_grpc.ModalClientBase`` and
``modal_proto.task_command_router_grpc.TaskCommandRouterBase``) and served by grpclib, the SDK's
own gRPC library, so requests and responses are the SDK's protobuf messages, byte for byte.

Only the RPCs of the sandbox flow are implemented (the SDK version this was written against,
1.6.x, creates "V2" sandboxes by default):

* control plane: ``AppGetOrCreate``, ``AuthTokenGet``, ``EnvironmentGetOrCreate``, ``ImageGetOrCreate``,
  ``SandboxCreateV2``, ``SandboxGetTaskIdV2``, ``SandboxGetCommandRouterAccess``,
  ``SandboxWaitV2``, ``SandboxTerminateV2``, ``AppClientDisconnect``, ``ClientHello``;
* task command router: ``TaskExecStart``, ``TaskExecStdioRead``, ``TaskExecStdinWrite``,
  ``TaskExecPoll``, ``TaskExecWait``.

Every other RPC answers ``UNIMPLEMENTED`` and is recorded, so a test fails loudly when the SDK
starts needing something new. Every call is recorded in :attr:`ModalEmulator.calls`; faults can
be injected per RPC (:meth:`ModalEmulator.fail`) to reproduce the provider's quota, auth and
network errors. Control-plane calls must carry the emulator's token pair and command-router
calls the per-task bearer token the control plane handed out, as on the real service.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

from grpclib import GRPCError, Status
from grpclib.server import Server, Stream
from modal_proto import api_grpc, api_pb2
from modal_proto import task_command_router_grpc as tcr_grpc
from modal_proto import task_command_router_pb2 as tcr_pb2

from rlm_testkit.servers.faults import FaultPlan
from rlm_testkit.servers.loop import LoopThread

from .sandbox import EmulatedSandbox, ExecProcess

SUCCESS = api_pb2.GenericResult.GENERIC_STATUS_SUCCESS
TERMINATED = api_pb2.GenericResult.GENERIC_STATUS_TERMINATED
BUILDER_VERSION = "2025.06"
TIMEOUT = api_pb2.GenericResult.GENERIC_STATUS_TIMEOUT


@dataclass
class Call:
    """One RPC as the emulator received it."""

    service: str  # "control" or "router"
    method: str
    request: Any
    at: float = field(default_factory=time.monotonic)


def _jwt(claims: dict[str, Any]) -> str:
    """A JWT-shaped token (the SDK reads ``exp`` from it; the signature is a random nonce)."""
    def part(obj: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
    return f"{part({'alg': 'none'})}.{part(claims)}.{secrets.token_urlsafe(16)}"


class _Recorder:
    """Shared state of both services: the record, the injected faults, the sandboxes."""

    def __init__(self, token_id: str, token_secret: str):
        self.token_id = token_id
        self.token_secret = token_secret
        self.calls: list[Call] = []
        self.faults: FaultPlan[tuple[Status, str]] = FaultPlan()  # method -> (status, message)
        self.apps: dict[str, str] = {}
        self.sandboxes: dict[str, EmulatedSandbox] = {}
        self.by_task: dict[str, EmulatedSandbox] = {}
        self.router_tokens: dict[str, str] = {}  # jwt -> task id
        self.url = ""
        self.ids = itertools.count(1)
        self.lock = threading.Lock()

    async def enter(self, service: str, method: str, stream: Stream) -> Any:
        request = await stream.recv_message()
        with self.lock:
            self.calls.append(Call(service, method, request))
        fault = self.faults.take(method)
        meta = stream.metadata or {}
        if service == "control":
            if (meta.get("x-modal-token-id") != self.token_id
                    or meta.get("x-modal-token-secret") != self.token_secret):
                raise GRPCError(Status.UNAUTHENTICATED,
                                "Token ID or secret is invalid. Please check your Modal "
                                "credentials (emulator).")
        else:
            auth = str(meta.get("authorization", ""))
            task = self.router_tokens.get(auth.removeprefix("Bearer "))
            if task is None or task != getattr(request, "task_id", task):
                raise GRPCError(Status.UNAUTHENTICATED, "invalid command router token")
        if fault is not None:
            raise GRPCError(*fault)
        return request

    def sandbox(self, sandbox_id: str) -> EmulatedSandbox:
        sandbox = self.sandboxes.get(sandbox_id)
        if sandbox is None:
            raise GRPCError(Status.NOT_FOUND, f"Sandbox {sandbox_id} not found")
        return sandbox

    def task(self, task_id: str) -> EmulatedSandbox:
        sandbox = self.by_task.get(task_id)
        if sandbox is None:
            raise GRPCError(Status.NOT_FOUND, f"Task {task_id} not found")
        return sandbox

    def access(self, sandbox: EmulatedSandbox) -> api_pb2.CommandRouterAccess:
        token = _jwt({"task_id": sandbox.task_id, "exp": int(time.time()) + 3600})
        self.router_tokens[token] = sandbox.task_id
        return api_pb2.CommandRouterAccess(url=self.url, jwt=token)


def _unimplemented(service: str, base: type) -> dict[str, Callable[..., Any]]:
    def make(name: str) -> Callable[..., Any]:
        async def handler(self: Any, stream: Stream) -> None:
            request = await stream.recv_message()
            with self.rec.lock:
                self.rec.calls.append(Call(service, name, request))
            raise GRPCError(Status.UNIMPLEMENTED, f"{name} is not implemented by the Modal "
                                                  "emulator")
        handler.__name__ = name
        return handler
    return {name: make(name) for name in base.__abstractmethods__}


class _ControlPlaneBase(api_grpc.ModalClientBase):
    def __init__(self, rec: _Recorder):
        self.rec = rec


class ControlPlane(type("_ControlPlaneFallback", (_ControlPlaneBase,),
                        _unimplemented("control", api_grpc.ModalClientBase))):
    """The RPCs of ``modal.App.lookup`` and ``modal.Sandbox.create / terminate``."""

    async def ClientHello(self, stream: Stream) -> None:
        await self.rec.enter("control", "ClientHello", stream)
        await stream.send_message(api_pb2.ClientHelloResponse())

    async def AuthTokenGet(self, stream: Stream) -> None:
        await self.rec.enter("control", "AuthTokenGet", stream)
        await stream.send_message(api_pb2.AuthTokenGetResponse(
            token=_jwt({"sub": self.rec.token_id, "exp": int(time.time()) + 3600})))

    async def AppGetOrCreate(self, stream: Stream) -> None:
        req = await self.rec.enter("control", "AppGetOrCreate", stream)
        if req.app_name not in self.rec.apps:
            if req.object_creation_type != api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING:
                raise GRPCError(Status.NOT_FOUND, f"App '{req.app_name}' not found")
            self.rec.apps[req.app_name] = f"ap-emu{next(self.rec.ids)}"
        await stream.send_message(api_pb2.AppGetOrCreateResponse(app_id=self.rec.apps[req.app_name]))

    async def AppClientDisconnect(self, stream: Stream) -> None:
        await self.rec.enter("control", "AppClientDisconnect", stream)
        from google.protobuf import empty_pb2
        await stream.send_message(empty_pb2.Empty())

    async def EnvironmentGetOrCreate(self, stream: Stream) -> None:
        req = await self.rec.enter("control", "EnvironmentGetOrCreate", stream)
        await stream.send_message(api_pb2.EnvironmentGetOrCreateResponse(
            environment_id="en-emu", metadata=api_pb2.EnvironmentMetadata(
                name=req.deployment_name or "main",
                settings=api_pb2.EnvironmentSettings(image_builder_version=BUILDER_VERSION))))

    async def ImageGetOrCreate(self, stream: Stream) -> None:
        await self.rec.enter("control", "ImageGetOrCreate", stream)
        await stream.send_message(api_pb2.ImageGetOrCreateResponse(
            image_id=f"im-emu{next(self.rec.ids)}",
            result=api_pb2.GenericResult(status=SUCCESS)))

    async def SandboxCreateV2(self, stream: Stream) -> None:
        req = await self.rec.enter("control", "SandboxCreateV2", stream)
        n = next(self.rec.ids)
        sandbox = EmulatedSandbox(f"sb-emu{n}", f"ta-emu{n}V", req.app_id, req.definition)
        self.rec.sandboxes[sandbox.sandbox_id] = sandbox
        self.rec.by_task[sandbox.task_id] = sandbox
        if req.definition.timeout_secs:
            sandbox.timeout_handle = asyncio.get_running_loop().call_later(
                req.definition.timeout_secs, sandbox.terminate, TIMEOUT,
                f"Sandbox timed out after {req.definition.timeout_secs} seconds")
        await stream.send_message(api_pb2.SandboxCreateV2Response(
            sandbox_id=sandbox.sandbox_id, task_id=sandbox.task_id,
            command_router_access=self.rec.access(sandbox)))

    async def SandboxGetTaskIdV2(self, stream: Stream) -> None:
        req = await self.rec.enter("control", "SandboxGetTaskIdV2", stream)
        sandbox = self.rec.sandbox(req.sandbox_id)
        resp = api_pb2.SandboxGetTaskIdResponse(task_id=sandbox.task_id)
        if sandbox.result is not None:
            resp = api_pb2.SandboxGetTaskIdResponse(task_result=_result(sandbox))
        await stream.send_message(resp)

    async def SandboxGetCommandRouterAccess(self, stream: Stream) -> None:
        req = await self.rec.enter("control", "SandboxGetCommandRouterAccess", stream)
        sandbox = (self.rec.sandbox(req.sandbox_id) if req.sandbox_id
                   else self.rec.task(req.task_id))
        access = self.rec.access(sandbox)
        await stream.send_message(api_pb2.SandboxGetCommandRouterAccessResponse(
            url=access.url, jwt=access.jwt))

    async def SandboxWaitV2(self, stream: Stream) -> None:
        req = await self.rec.enter("control", "SandboxWaitV2", stream)
        sandbox = self.rec.sandbox(req.sandbox_id)
        deadline = time.monotonic() + min(req.timeout or 0, 50)
        while sandbox.result is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        resp = api_pb2.SandboxWaitResponse()
        if sandbox.result is not None:
            resp.result.CopyFrom(_result(sandbox))
        await stream.send_message(resp)

    async def SandboxTerminateV2(self, stream: Stream) -> None:
        req = await self.rec.enter("control", "SandboxTerminateV2", stream)
        sandbox = self.rec.sandbox(req.sandbox_id)
        sandbox.terminate(TERMINATED, "Sandbox terminated")
        await stream.send_message(api_pb2.SandboxTerminateResponse(existing_result=_result(sandbox)))


def _result(sandbox: EmulatedSandbox) -> api_pb2.GenericResult:
    status, message = sandbox.result or (SUCCESS, "")
    return api_pb2.GenericResult(status=status, exception=message)


class _RouterBase(tcr_grpc.TaskCommandRouterBase):
    def __init__(self, rec: _Recorder):
        self.rec = rec


class Router(type("_RouterFallback", (_RouterBase,),
                  _unimplemented("router", tcr_grpc.TaskCommandRouterBase))):
    """The task command router's exec RPCs: start, stdin by offset, stdio from an offset, wait."""

    def _exec(self, task_id: str, exec_id: str) -> ExecProcess:
        sandbox = self.rec.task(task_id)
        process = sandbox.execs.get(exec_id)
        if process is None:
            raise GRPCError(Status.NOT_FOUND, f"exec {exec_id} not found")
        return process

    async def TaskExecStart(self, stream: Stream) -> None:
        req = await self.rec.enter("router", "TaskExecStart", stream)
        sandbox = self.rec.task(req.task_id)
        if sandbox.terminated:
            raise GRPCError(Status.NOT_FOUND, "Sandbox has already terminated")
        env = dict(req.env.items()) if hasattr(req, "env") else {}
        await sandbox.exec(req.exec_id, list(req.command_args), req.workdir or None, env)
        await stream.send_message(tcr_pb2.TaskExecStartResponse())

    async def TaskExecStdinWrite(self, stream: Stream) -> None:
        req = await self.rec.enter("router", "TaskExecStdinWrite", stream)
        process = self._exec(req.task_id, req.exec_id)
        await process.write_stdin(req.offset, req.data, req.eof)
        await stream.send_message(tcr_pb2.TaskExecStdinWriteResponse())

    async def TaskExecStdioRead(self, stream: Stream) -> None:
        req = await self.rec.enter("router", "TaskExecStdioRead", stream)
        process = self._exec(req.task_id, req.exec_id)
        name = ("stdout" if req.file_descriptor == tcr_pb2.TASK_EXEC_STDIO_FILE_DESCRIPTOR_STDOUT
                else "stderr")
        buffer: bytearray = getattr(process, name)
        offset = req.offset
        while True:
            async with process.changed:
                while len(buffer) <= offset and not process.eof[name]:
                    await process.changed.wait()
                data = bytes(buffer[offset:offset + (1 << 20)])
                ended = process.eof[name] and offset + len(data) >= len(buffer)
            if data:
                await stream.send_message(tcr_pb2.TaskExecStdioReadResponse(data=data))
                offset += len(data)
            if ended:
                return

    async def TaskExecPoll(self, stream: Stream) -> None:
        req = await self.rec.enter("router", "TaskExecPoll", stream)
        status = self._exec(req.task_id, req.exec_id).exit_status()
        resp = tcr_pb2.TaskExecPollResponse()
        if status is not None:
            setattr(resp, status[0], status[1])
        await stream.send_message(resp)

    async def TaskExecWait(self, stream: Stream) -> None:
        req = await self.rec.enter("router", "TaskExecWait", stream)
        process = self._exec(req.task_id, req.exec_id)
        await process.done.wait()
        status = process.exit_status()
        assert status is not None
        resp = tcr_pb2.TaskExecWaitResponse()
        setattr(resp, status[0], status[1])
        await stream.send_message(resp)


class ModalEmulator:
    """The emulator, served from a thread of its own; use as a context manager.

    Attributes:
        calls: every RPC received, in order (:class:`Call`).
        sandboxes: sandbox id -> :class:`~tests.emulators.modal.sandbox.EmulatedSandbox`.
        env: the environment variables that point the SDK here.
    """

    def __init__(self, token_id: str = "ak-emulator", token_secret: str | None = None):
        self.rec = _Recorder(token_id, token_secret or "as-" + secrets.token_hex(8))
        self._server: Server | None = None
        self._thread = LoopThread("modal-emulator")
        self.port = 0

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> ModalEmulator:
        async def listen() -> int:
            self._server = Server([ControlPlane(self.rec), Router(self.rec)])
            await self._server.start("127.0.0.1", 0)
            return self._server._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

        self.port = self._thread.start(listen, timeout=10)
        self.rec.url = f"http://127.0.0.1:{self.port}"
        return self

    def stop(self) -> None:
        async def close() -> None:
            for sandbox in self.rec.sandboxes.values():
                if not sandbox.terminated:
                    sandbox.terminate(TERMINATED, "emulator stopped")
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()
            tasks = [t for sb in self.rec.sandboxes.values() for t in sb.tasks]
            if tasks:  # every process was killed: their pumps end at once
                await asyncio.wait(tasks, timeout=10)

        self._thread.stop(close, timeout=15)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what tests use -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self.rec.url

    @property
    def env(self) -> dict[str, str]:
        return {"MODAL_SERVER_URL": self.url, "MODAL_TOKEN_ID": self.rec.token_id,
                "MODAL_TOKEN_SECRET": self.rec.token_secret}

    @property
    def calls(self) -> list[Call]:
        with self.rec.lock:
            return list(self.rec.calls)

    @property
    def sandboxes(self) -> dict[str, EmulatedSandbox]:
        return self.rec.sandboxes

    def methods(self) -> list[str]:
        """The names of the RPCs received, in order."""
        return [c.method for c in self.calls]

    def clear(self) -> None:
        with self.rec.lock:
            self.rec.calls.clear()

    def fail(self, method: str, status: Status, message: str, times: int = 1) -> None:
        """Make the next ``times`` calls of ``method`` fail with the given gRPC status."""
        self.rec.faults.add(method, (status, message), times)

    def clear_faults(self) -> int:
        """Drop the faults not yet used; returns how many there were."""
        return self.rec.faults.clear()

    def kill_sandbox(self, sandbox_id: str, message: str = "Sandbox crashed", *,
                     terminated: bool = False) -> None:
        """End a sandbox from the provider's side: a crash or eviction, or with
        ``terminated=True`` a ``modal sandbox terminate`` from somewhere else."""
        status = TERMINATED if terminated else api_pb2.GenericResult.GENERIC_STATUS_INTERNAL_FAILURE
        self._thread.call(lambda: self.rec.sandbox(sandbox_id).terminate(status, message),
                          timeout=5)

    def run(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the emulator's loop and return its result."""
        return self._thread.call(fn)


__all__ = ["Call", "ModalEmulator"]
