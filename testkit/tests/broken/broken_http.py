"""A correct OpenAI-compatible HTTP backend (standard library, pooled keep-alive connections) and
copies with one bug each, plus in-process copies of ``broken_impl.GoodBackend`` with one bug each.

The kit must pass ``GoodHttpBackend`` and fail exactly the named standard tests on each broken
copy (``testkit/tests/test_kit_catches_bugs.py``).
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from broken_impl import GoodBackend
from rlm.exceptions import (BackendConnectionError, BackendError, BackendTimeoutError,
                            BadResponseError, ConfigurationError)
from rlm.plugin import BaseBackend, ModelResponse, Usage
from rlm_backend_support import (RetryPolicy, Secret, error_for_status, error_message_of,
                                 estimated_usage, parse_retry_after, redact, reported_cost)


class GoodHttpBackend(BaseBackend):
    """``model_name``, ``base_url`` (``http://host:port/v1``), ``api_key``, ``timeout``,
    ``max_retries``, ``retry_base_delay``, ``retry_max_delay`` (rlm_backend_support.RetryPolicy).

    Connections are kept alive in a pool (one per concurrent call) and closed by ``close()``;
    ``acompletion`` is BaseBackend's (the blocking call in a worker thread).
    """

    def __init__(self, model_name: str, base_url: str, api_key: str | None = None,
                 timeout: float = 30.0, max_retries: int = 2, retry_base_delay: float = 0.5,
                 retry_max_delay: float = 30.0):
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ConfigurationError(f"good-http: base_url must be http://host:port/..., got "
                                     f"{base_url!r}")
        self.model_name = model_name
        self.api_key = Secret(api_key)
        self.timeout = timeout
        self.retry = RetryPolicy(max_retries, retry_base_delay, retry_max_delay, name="good-http")
        self._host, self._port = parts.hostname, parts.port or 80
        self._path = parts.path.rstrip("/") + "/chat/completions"
        self._lock = threading.Lock()
        self._idle: list[http.client.HTTPConnection] = []
        self._open: set[http.client.HTTPConnection] = set()

    # -- what a request carries (the broken copies change one of these) --------------------
    def _body(self, messages: Sequence[Any], sampling: dict[str, Any]) -> dict[str, Any]:
        return {"model": self.model_name, "messages": list(messages), **sampling}

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key.value}"
        return headers

    # -- connections -----------------------------------------------------------------------
    def _take(self) -> http.client.HTTPConnection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
            self._open.add(conn)
            return conn

    def _give_back(self, conn: http.client.HTTPConnection, reusable: bool) -> None:
        with self._lock:
            if reusable:
                self._idle.append(conn)
                return
            self._open.discard(conn)
        conn.close()

    def close(self) -> None:
        with self._lock:
            conns, self._idle = list(self._open), []
            self._open.clear()
        for conn in conns:
            conn.close()

    # -- the call --------------------------------------------------------------------------
    def _post(self, body: dict[str, Any]) -> tuple[int, bytes, float | None]:
        where = {"backend": "good-http", "model": self.model_name}
        conn = self._take()
        try:
            conn.request("POST", self._path, json.dumps(body).encode(), self._headers())
            reply = conn.getresponse()
            raw = reply.read()
        except TimeoutError:
            self._give_back(conn, False)
            raise BackendTimeoutError(f"good-http: no reply within {self.timeout} s",
                                      **where) from None
        except (OSError, http.client.HTTPException) as exc:
            self._give_back(conn, False)
            raise BackendConnectionError(f"good-http: the connection broke: {exc!r}",
                                         **where) from None
        self._give_back(conn, not reply.will_close)
        return reply.status, raw, parse_retry_after(reply.headers)

    def completion(self, messages: Sequence[Any], **sampling: Any) -> ModelResponse:
        return self.retry.call(lambda attempt: self._attempt(messages, sampling),
                               lambda exc, attempt: BackendError(repr(exc), backend="good-http"))

    def _attempt(self, messages: Sequence[Any], sampling: dict[str, Any]) -> ModelResponse:
        where = {"backend": "good-http", "model": self.model_name}
        status, raw, retry_after = self._post(self._body(messages, sampling))
        try:
            data = json.loads(raw)
        except ValueError:
            data = raw.decode("utf-8", "replace")
        if status >= 400:
            raise self._error(status, data, retry_after)
        try:
            choice = data["choices"][0]
            text = choice["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise BadResponseError(f"good-http: not a chat completion: {raw[:200]!r}",
                                   **where) from None
        usage = data.get("usage")
        if isinstance(usage, dict) and "prompt_tokens" in usage:
            counted = Usage(int(usage["prompt_tokens"]), int(usage.get("completion_tokens") or 0),
                            reported_cost(usage.get("cost")))
        else:
            counted = estimated_usage(messages, text)
        return ModelResponse(text, counted, data.get("model") or self.model_name,
                             choice.get("finish_reason"))

    def _error(self, status: int, data: Any, retry_after: float | None) -> BackendError:
        message, code, kind = error_message_of(data)
        return error_for_status(status, redact(message or "", self.api_key) or None, code=code,
                                error_type=kind, backend="good-http", model=self.model_name,
                                retry_after=retry_after)


class NoModelBackend(GoodHttpBackend):
    """Bug: the request never names the model (the server picks its default)."""

    def _body(self, messages: Sequence[Any], sampling: dict[str, Any]) -> dict[str, Any]:
        return {"messages": list(messages), **sampling}


class NoKeyBackend(GoodHttpBackend):
    """Bug: the API key is accepted and never sent."""

    def _headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json"}


class NeverRetriesBackend(GoodHttpBackend):
    """Bug: takes max_retries and makes one attempt whatever happens."""

    def completion(self, messages: Sequence[Any], **sampling: Any) -> ModelResponse:
        return self._attempt(messages, sampling)


class ShowsKeyBackend(GoodHttpBackend):
    """Bug: an error message of the provider that quotes the API key is passed on as it is."""

    def _error(self, status: int, data: Any, retry_after: float | None) -> BackendError:
        message, code, kind = error_message_of(data)
        return error_for_status(status, message, code=code, error_type=kind, backend="good-http",
                                model=self.model_name, retry_after=retry_after)


class LeaksConnectionsBackend(GoodHttpBackend):
    """Bug: close() forgets the pool instead of closing its connections."""

    def close(self) -> None:
        with self._lock:
            self._idle = []


class DropsFinishReasonBackend(GoodBackend):
    """Bug: the reply is rebuilt from its text and usage; the finish reason is lost."""

    def _call(self, messages: Sequence[Any], sampling: dict[str, Any]) -> ModelResponse:
        r = super()._call(messages, sampling)
        return ModelResponse(r.text, r.usage, r.model)


class HidesErrorMessageBackend(GoodBackend):
    """Bug: a provider failure keeps its class but gets a message of the backend's own."""

    def _call(self, messages: Sequence[Any], sampling: dict[str, Any]) -> ModelResponse:
        try:
            return super()._call(messages, sampling)
        except BackendError as exc:
            raise type(exc)("the provider refused the request", backend="good",
                            model=self.model_name) from None
