"""The OpenAI-compatible ASGI app: ``GET /v1/models``, ``POST /v1/chat/completions``.

Each model id is an RLM profile (:class:`rlm_cli.surface.Profile`). A request becomes a run as
:mod:`rlm_serve.requests` describes; the run executes on a worker thread of the app's own pool
(``max_concurrent`` threads), so the event loop only parses, queues and streams. Up to
``max_queued`` more requests wait for a thread; beyond that the answer is 429 with
``Retry-After``. A client that disconnects cancels its run.

Responses are OpenAI's, plus an ``rlm`` object (run id, :class:`~rlm.types.RunStatus`, answer
source, per-model usage, time) and the ``X-RLM-Run-Id`` header. ``usage`` is the whole tree's
(root turns, sub-calls and child runs). A run stopped by a limit answers 200 with its partial
answer and ``finish_reason: "length"``; errors use OpenAI's error body
``{"error": {"message", "type", "param", "code"}}``.

A stream sends, as server-sent events: the role; one chunk per progress update (a turn, a
sub-call started or done, a child run) whose ``delta.reasoning_content`` is a line of text and
whose ``rlm.progress`` holds the counts; the answer as ``delta.content``; a last chunk with the
``finish_reason``, ``usage`` and ``rlm``; with ``stream_options.include_usage`` the usage chunk
(``choices: []``) too; then ``[DONE]``. A comment line keeps an idle stream alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from rlm.exceptions import BackendError, ConfigurationError, RateLimitError, RLMError
from rlm_cli.surface import InputError, bearer_matches, Outcome, Profile, ProfileRun, Progress

from .requests import KNOWN_FIELDS, RunRequest, parse_request

log = logging.getLogger("rlm.serve")

MiB = 1024 * 1024


@dataclass
class ServeSettings:
    """What ``rlm serve``'s flags set. ``api_key=None`` serves without authentication (the CLI
    allows that only on loopback); ``files_root=None`` refuses files passed by reference."""

    profiles: Mapping[str, Profile]
    api_key: str | None = None
    files_root: str | None = None
    max_concurrent: int = 4
    max_queued: int = 16
    max_request_bytes: int = 16 * MiB
    max_file_bytes: int = 256 * MiB
    log: bool = True
    keepalive: float = 5.0
    plugin_manager: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.profiles:
            raise ConfigurationError("rlm serve needs at least one profile.")
        if self.max_concurrent < 1 or self.max_queued < 0:
            raise ConfigurationError("--max-concurrent must be >= 1 and --max-queued >= 0.")
        if self.files_root is not None:
            root = Path(self.files_root)
            if not root.is_dir():
                raise ConfigurationError(f"--files-root {self.files_root}: not a directory.")
            self.files_root = str(root.resolve())


def error_response(status: int, message: str, *, type_: str = "invalid_request_error",
                   code: str | None = None, param: str | None = None,
                   headers: Mapping[str, str] | None = None) -> JSONResponse:
    """OpenAI's error body."""
    return JSONResponse({"error": {"message": message, "type": type_, "param": param,
                                   "code": code}}, status_code=status, headers=dict(headers or {}))


def _error_for(exc: BaseException) -> tuple[int, str, str]:
    """(HTTP status, OpenAI error type, code) for an exception a run raised."""
    if isinstance(exc, RateLimitError):
        return 429, "rate_limit_error", "backend_rate_limited"
    if isinstance(exc, BackendError):
        return 502, "server_error", "backend_error"
    if isinstance(exc, ConfigurationError):
        return 500, "server_error", "rlm_configuration_error"
    return 500, "server_error", "rlm_error" if isinstance(exc, RLMError) else "internal_error"


def _usage(outcome: Outcome) -> dict[str, int]:
    u = outcome.usage
    return {"prompt_tokens": u.total_input_tokens, "completion_tokens": u.total_output_tokens,
            "total_tokens": u.total_tokens}


def _finish_reason(outcome: Outcome) -> str:
    return "stop" if outcome.ok else "length"


class App:
    """The server's state: settings, the worker pool and the admission counters. Created once;
    ``close()`` (on shutdown) stops the pool after cancelling the runs in flight."""

    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self.pool = ThreadPoolExecutor(max_workers=settings.max_concurrent,
                                       thread_name_prefix="rlm-serve")
        self.admitted = 0  # running + waiting for a thread; touched only on the event loop
        self.peak = 0  # the most requests admitted at once, for the benchmark
        self.runs: set[ProfileRun] = set()
        self.created = int(time.time())
        self.starlette = Starlette(routes=[
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/v1/models/{model:path}", self.model, methods=["GET"]),
            Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
            Route("/health", self.health, methods=["GET"]),
        ], exception_handlers={404: self.not_found, 405: self.not_allowed},
            lifespan=self._lifespan)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            problem = self._auth_problem(scope)
            if problem is not None:
                await problem(scope, receive, send)
                return
        await self.starlette(scope, receive, send)

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: Any) -> AsyncIterator[None]:
        try:
            yield
        finally:
            self.close()

    def close(self) -> None:
        for run in list(self.runs):
            run.cancel()
        self.pool.shutdown(wait=False, cancel_futures=True)

    # -- plumbing ---------------------------------------------------------------------------
    def _auth_problem(self, scope: Any) -> Response | None:
        key = self.settings.api_key
        if not key:
            return None
        headers = dict(scope.get("headers") or [])
        if bearer_matches(headers.get(b"authorization", b"").decode("latin-1"), key):
            return None
        return error_response(401, "Missing or wrong API key: send 'Authorization: Bearer KEY' "
                                   "with the key rlm serve was started with (--api-key).",
                              type_="authentication_error", code="invalid_api_key")

    async def not_found(self, request: Request, exc: Exception) -> Response:
        return error_response(404, f"No route {request.method} {request.url.path}; this server "
                                   "has GET /v1/models and POST /v1/chat/completions.",
                              code="not_found")

    async def not_allowed(self, request: Request, exc: Exception) -> Response:
        return error_response(405, f"{request.method} is not allowed on {request.url.path}.",
                              code="method_not_allowed")

    async def _read_body(self, request: Request) -> bytes | Response:
        limit = self.settings.max_request_bytes
        too_big = error_response(
            413, f"The request body exceeds {limit:,} bytes; pass large inputs by reference "
                 "(\"rlm\": {\"files\": [...]}, under the server's --files-root) or raise "
                 "--max-request-mb.", code="request_too_large")
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            return too_big
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return too_big
            chunks.append(chunk)
        return b"".join(chunks)

    def _model_entry(self, name: str, profile: Profile) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": self.created, "owned_by": "rlm",
                "description": profile.summary()}

    # -- routes -----------------------------------------------------------------------------
    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "profiles": sorted(self.settings.profiles),
                             "running_or_queued": self.admitted})

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [
            self._model_entry(n, p) for n, p in self.settings.profiles.items()]})

    async def model(self, request: Request) -> Response:
        name = request.path_params["model"]
        profile = self.settings.profiles.get(name)
        if profile is None:
            return error_response(404, f"The model {name!r} does not exist; see GET /v1/models.",
                                  code="model_not_found", param="model")
        return JSONResponse(self._model_entry(name, profile))

    async def chat_completions(self, request: Request) -> Response:
        raw = await self._read_body(request)
        if isinstance(raw, Response):
            return raw
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return error_response(400, f"The body is not valid JSON ({exc}).", code="invalid_json")
        s = self.settings
        try:
            req = await asyncio.get_running_loop().run_in_executor(
                None, lambda: parse_request(body, s.profiles, files_root=s.files_root,
                                            max_file_bytes=s.max_file_bytes))
        except LookupError as exc:
            return error_response(404, str(exc), code="model_not_found", param="model")
        except InputError as exc:
            return error_response(400, str(exc), code="invalid_request")
        unknown = sorted(set(body) - KNOWN_FIELDS)
        if unknown:
            log.debug("rlm serve: ignoring unknown request fields %s", unknown)
        if self.admitted >= s.max_concurrent + s.max_queued:
            return error_response(
                429, f"rlm serve is running {s.max_concurrent} requests with {s.max_queued} "
                     "more waiting; retry shortly (or start it with a higher --max-concurrent "
                     "or --max-queued).", type_="rate_limit_error", code="server_busy",
                headers={"Retry-After": "1"})
        self.admitted += 1
        self.peak = max(self.peak, self.admitted)
        try:
            if req.stream:
                return StreamingResponse(self._stream(req), media_type="text/event-stream",
                                         headers={"Cache-Control": "no-cache"})
            return await self._complete(req, request)
        finally:
            if not req.stream:
                self.admitted -= 1

    # -- runs -------------------------------------------------------------------------------
    def _start(self, req: RunRequest, on_progress: Any = None) -> tuple[ProfileRun, asyncio.Future]:
        run = ProfileRun(req.profile, req.prompt, req.root_prompt, on_progress=on_progress,
                         log=self.settings.log, plugin_manager=self.settings.plugin_manager)
        self.runs.add(run)
        fut = asyncio.get_running_loop().run_in_executor(self.pool, run.execute)
        fut.add_done_callback(lambda _: self.runs.discard(run))
        return run, fut

    async def _complete(self, req: RunRequest, request: Request) -> Response:
        run, fut = self._start(req)

        async def watch_disconnect() -> None:
            while True:
                message = await request.receive()
                if message["type"] == "http.disconnect":
                    run.cancel()
                    return

        watcher = asyncio.create_task(watch_disconnect())
        try:
            outcome: Outcome = await asyncio.shield(fut)
        except asyncio.CancelledError:
            run.cancel()
            raise
        except Exception as exc:  # reported in OpenAI's error format
            status, type_, code = _error_for(exc)
            if code == "internal_error":
                log.exception("rlm serve: run failed")
            headers = {"X-RLM-Run-Id": run.run_id} if run.run_id else {}
            return error_response(status, f"{type(exc).__name__}: {exc}", type_=type_, code=code,
                                  headers=headers)
        finally:
            watcher.cancel()
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        body = {"id": completion_id, "object": "chat.completion", "created": int(time.time()),
                "model": req.profile.name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": outcome.answer},
                             "finish_reason": _finish_reason(outcome), "logprobs": None}],
                "usage": _usage(outcome), "rlm": outcome.to_dict()}
        headers = {"X-RLM-Run-Id": outcome.run_id} if outcome.run_id else {}
        return JSONResponse(body, headers=headers)

    async def _stream(self, req: RunRequest) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Progress | None] = asyncio.Queue()
        run, fut = self._start(req, on_progress=lambda p: loop.call_soon_threadsafe(
            queue.put_nowait, p))
        fut.add_done_callback(lambda _: queue.put_nowait(None))
        cid, created, model = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), req.profile.name

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
            data = {"id": cid, "object": "chat.completion.chunk", "created": created,
                    "model": model, "choices": [{"index": 0, "delta": delta,
                                                 "finish_reason": finish, "logprobs": None}],
                    **extra}
            return f"data: {json.dumps(data)}\n\n"

        finished = False
        try:
            yield chunk({"role": "assistant", "content": ""})
            while True:
                try:
                    update = await asyncio.wait_for(queue.get(), self.settings.keepalive)
                except TimeoutError:
                    yield ": running\n\n"
                    continue
                if update is None:
                    break
                yield chunk({"reasoning_content": update.message + "\n"},
                            rlm={"progress": update.to_dict()})
            try:
                outcome: Outcome = fut.result()
            except Exception as exc:  # an error event, as OpenAI streams them
                _, type_, code = _error_for(exc)
                if code == "internal_error":
                    log.exception("rlm serve: run failed")
                error = {"message": f"{type(exc).__name__}: {exc}", "type": type_, "param": None,
                         "code": code}
                yield f"data: {json.dumps({'error': error})}\n\n"
                finished = True
                return
            if outcome.answer:
                yield chunk({"content": outcome.answer})
            yield chunk({}, _finish_reason(outcome), usage=_usage(outcome), rlm=outcome.to_dict())
            if req.include_usage:
                last = {"id": cid, "object": "chat.completion.chunk", "created": created,
                        "model": model, "choices": [], "usage": _usage(outcome)}
                yield f"data: {json.dumps(last)}\n\n"
            yield "data: [DONE]\n\n"
            finished = True
        finally:
            self.admitted -= 1
            if not finished:  # the client went away (or the server is stopping)
                run.cancel()


def create_app(settings: ServeSettings) -> App:
    """The ASGI application for ``settings`` (serve it with uvicorn)."""
    return App(settings)
