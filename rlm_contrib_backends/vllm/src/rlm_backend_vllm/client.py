"""The ``vllm`` backend: a vLLM server, or any other OpenAI-compatible server you run.

It is the ``openai`` backend (same fast request path, retries, error mapping and usage fallback)
with what a self-hosted server needs: ``base_url`` is required (there is no default host), a key
is optional (vLLM's ``--api-key``, also read from ``VLLM_API_KEY``), calls cost nothing unless you
give prices, and the context window is read from the server's ``/models`` (vLLM reports
``max_model_len``) when you do not set it.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from rlm.exceptions import BackendError, ConfigurationError
from rlm_backend_openai.client import OpenAIBackend

__all__ = ["VLLMBackend"]

EXAMPLE_URL = "http://localhost:8000/v1"


class VLLMBackend(OpenAIBackend):
    """Chat completions on a vLLM (or other OpenAI-compatible) server at ``base_url``.

    ``base_url`` (or ``$VLLM_BASE_URL``) is required, e.g. ``http://localhost:8000/v1``;
    ``model_name`` is the name the server serves (``vllm serve <model>`` or
    ``--served-model-name``). ``api_key`` (or ``$VLLM_API_KEY``) only when the server was started
    with ``--api-key``. Every other keyword is the ``openai`` backend's (``timeout``,
    ``max_retries``, ``prices``, ``context_windows``, ``default_headers``, ...).
    """

    backend_name = "vllm"
    api_key_env = "VLLM_API_KEY"
    default_prices: Mapping[str, tuple[float, float]] = {}  # self-hosted: free unless priced

    def __init__(self, model_name: str | None = None, base_url: str | None = None,
                 api_key: str | None = None, *, model: str | None = None, **kwargs: Any):
        url = base_url or os.environ.get("VLLM_BASE_URL")
        if not url:
            raise ConfigurationError(
                "vllm: base_url is required: pass backend_kwargs={\"base_url\": "
                f"\"{EXAMPLE_URL}\"}} (the address `vllm serve <model>` prints, ending in /v1) "
                "or set VLLM_BASE_URL.")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError(
                f"vllm: base_url must be an http(s) URL such as {EXAMPLE_URL!r}, got {url!r}.")
        if not (model_name or model):
            raise ConfigurationError(
                "vllm: model_name is required: the model the server serves (the argument of "
                f"`vllm serve`, or its --served-model-name); `curl {url.rstrip('/')}/models` lists it.")
        self._served_windows: dict[str, int] | None = None
        self._served_lock = threading.Lock()
        super().__init__(model_name, api_key, base_url=url, model=model, **kwargs)

    def _resolve_base_url(self, base_url: str | None) -> str | None:
        return base_url

    @property
    def is_official_endpoint(self) -> bool:
        return False  # a key is never required

    def _status_error(self, exc: Any, model: str, attempt: int) -> BackendError:
        err = super()._status_error(exc, model, attempt)
        if err.status_code == 404:
            path = urlsplit(self.base_url or "").path.rstrip("/")
            hint = ""
            if not path.endswith("/v1"):
                hint = (f" The base_url {self.base_url!r} does not end in /v1; vLLM serves the API "
                        f"under /v1 (e.g. {EXAMPLE_URL!r}).")
            elif "model" in (err.provider_message or "").lower():
                hint = (f" Check model_name against `curl {self.base_url.rstrip('/')}/models`"
                        if self.base_url else "")
            if hint:
                err.args = (str(err) + hint,)
        return err

    def context_window(self, model: str | None = None) -> int | None:
        """The configured window, else ``max_model_len`` from the server's ``/models``."""
        name = model or self.model_name
        known = self.context_windows.get(name)
        if known is not None:
            return known
        return self._served_context_windows().get(name)

    def _served_context_windows(self) -> dict[str, int]:
        windows = self._served_windows
        if windows is not None:
            return windows
        with self._served_lock:
            if self._served_windows is not None:
                return self._served_windows
            found: dict[str, int] = {}
            try:
                raw = self._sync_client().get("/models", cast_to=bytes, options={"timeout": min(
                    10.0, self.timeout or 10.0)})
                for item in json.loads(raw).get("data", []):
                    length = item.get("max_model_len") if isinstance(item, dict) else None
                    if isinstance(item.get("id"), str) and isinstance(length, int) and length > 0:
                        found[item["id"]] = length
            except Exception:  # noqa: BLE001 - an unknown window is None, not an error
                found = {}
            self._served_windows = found
            return found
