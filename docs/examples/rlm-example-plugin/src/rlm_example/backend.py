"""`minichat`: a backend for any server that speaks the OpenAI chat-completions format
(llama.cpp's server, Ollama, vLLM, LM Studio, ...), written with the standard library only."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from rlm.plugin import (BackendConnectionError, BackendTimeoutError, BadResponseError,
    ConfigurationError, ModelResponse, Usage)
from rlm.plugin import BaseBackend
from rlm_backend_support import (error_for_status, error_message_of, estimated_usage,
    reported_cost)


class MiniChatBackend(BaseBackend):
    """``RLM(backend="minichat", backend_kwargs={"model_name": ..., "base_url": ...})``.

    :param model_name: the model the server should run.
    :param base_url: the server's API root, e.g. ``http://127.0.0.1:8080/v1``.
    :param api_key: sent as a bearer token; defaults to ``$MINICHAT_API_KEY`` (most local
        servers need none).
    :param timeout: seconds to wait for a reply before raising ``BackendTimeoutError``.
    """

    def __init__(self, model_name: str, base_url: str = "http://127.0.0.1:8080/v1",
                 api_key: str | None = None, timeout: float = 120.0):
        if not base_url.startswith(("http://", "https://")):
            raise ConfigurationError(
                f"minichat: base_url must start with http:// or https://, got {base_url!r} "
                "(for example base_url='http://127.0.0.1:8080/v1')")
        if timeout <= 0:
            raise ConfigurationError(f"minichat: timeout must be > 0 seconds, got {timeout!r}")
        self.model_name = model_name
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.api_key = api_key or os.environ.get("MINICHAT_API_KEY")
        self.timeout = timeout

    def completion(self, messages: Sequence[dict[str, Any]], **sampling: Any) -> ModelResponse:
        body = {"model": self.model_name, "messages": list(messages), **sampling}
        data = self._post(body)
        try:
            text = data["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise BadResponseError(f"minichat: the reply has no choices[0].message.content: "
                                   f"{str(data)[:300]}", backend="minichat",
                                   model=self.model_name) from None
        usage = data.get("usage")
        if isinstance(usage, dict) and "prompt_tokens" in usage:
            counted = Usage(input_tokens=int(usage["prompt_tokens"]),
                            output_tokens=int(usage.get("completion_tokens") or 0),
                            cost=reported_cost(usage.get("cost")))  # some servers price calls
        else:  # the server did not count: estimate, and say so
            counted = estimated_usage(messages, text)
        return ModelResponse(text, counted, data.get("model") or self.model_name,
                             data["choices"][0].get("finish_reason"))

    async def acompletion(self, messages: Sequence[dict[str, Any]],
                          **sampling: Any) -> ModelResponse:
        # urllib has no async API: run the blocking call in a worker thread.
        return await asyncio.to_thread(self.completion, messages, **sampling)

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, json.dumps(body).encode(), headers)
        where = {"backend": "minichat", "model": self.model_name}
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                raw = reply.read()
        except urllib.error.HTTPError as exc:  # the server answered with an error status
            message, code, kind = error_message_of(_json_or_text(exc.read()))
            raise error_for_status(exc.code, message, code=code, error_type=kind,
                                   key_env="MINICHAT_API_KEY", **where) from None
        except (TimeoutError, urllib.error.URLError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, TimeoutError):
                raise BackendTimeoutError(f"minichat: no reply from {self.url} within "
                                          f"{self.timeout} s (raise timeout=...)", **where) from None
            raise BackendConnectionError(f"minichat: cannot reach {self.url}: {reason}. Is the "
                                         "server running, and is base_url right?", **where) from None
        except (http.client.HTTPException, ConnectionError) as exc:
            raise BackendConnectionError(f"minichat: the connection to {self.url} broke: "
                                         f"{exc!r}", **where) from None
        try:
            data = json.loads(raw)
        except ValueError:
            raise BadResponseError(f"minichat: the server sent something that is not JSON: "
                                   f"{raw[:200]!r}", **where) from None
        if not isinstance(data, dict):
            raise BadResponseError(f"minichat: expected a JSON object, got {raw[:200]!r}", **where)
        return data


def _json_or_text(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")
