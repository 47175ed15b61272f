"""The ``portkey`` backend: the Portkey AI gateway through its OpenAI-compatible API.

Portkey's gateway speaks the OpenAI chat-completions format at ``https://api.portkey.ai/v1`` (and
at ``http://localhost:8787/v1`` for the open-source gateway) and reads its routing from
``x-portkey-*`` headers. So this is the ``openai`` backend (same fast request path, retries,
error mapping and usage fallback) with those headers, rather than the ``portkey-ai`` SDK: that
SDK ships its own vendored copy of the OpenAI SDK, a second HTTP stack and request transform for
the same wire format, and adds nothing the headers do not carry. See the README.

Model names are Portkey's: ``@openai/gpt-5-nano`` (a provider slug from the Model Catalog, then
the model), or a plain model name routed by a ``virtual_key``, a ``config`` or a ``provider``.
Portkey does not report cost in its responses; cost comes from the kernel's price table
(``@openai/gpt-5-nano`` is priced as ``gpt-5-nano``), extended with ``prices=``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from rlm.exceptions import BackendError, ConfigurationError
from rlm_backend_support import DEFAULT_PRICES, Secret
from rlm_backend_openai.client import PLACEHOLDER_API_KEY, OpenAIBackend

__all__ = ["PortkeyBackend"]

PORTKEY_BASE_URL = "https://api.portkey.ai/v1"
DEFAULT_MODEL = "@openai/gpt-4o"


def _header_value(name: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"portkey: {name} must be a string or JSON-serialisable, "
                                 f"got {type(value).__name__}") from exc


class PortkeyBackend(OpenAIBackend):
    """Chat completions through the Portkey gateway.

    ``api_key`` (or ``$PORTKEY_API_KEY``) is the Portkey key, sent as ``x-portkey-api-key``.
    Routing, any of: a Model Catalog name (``model_name="@openai/gpt-5-nano"``), ``virtual_key``
    (``x-portkey-virtual-key``), ``config`` (a config id or dict, ``x-portkey-config``), or
    ``provider`` plus ``provider_api_key`` (``x-portkey-provider`` and the provider's key as the
    bearer token). ``trace_id`` and ``metadata`` are sent for Portkey's logs. ``base_url``
    defaults to ``$PORTKEY_BASE_URL`` / ``$PORTKEY_GATEWAY_URL``, else Portkey's hosted gateway.
    Every other keyword is the ``openai`` backend's.
    """

    backend_name = "portkey"
    api_key_env = "PORTKEY_API_KEY"
    official_host = "api.portkey.ai"
    default_prices: Mapping[str, tuple[float, float]] = DEFAULT_PRICES

    def __init__(self, model_name: str | None = None, api_key: str | None = None,
                 base_url: str | None = None, *, virtual_key: str | None = None,
                 config: str | Mapping[str, Any] | None = None, provider: str | None = None,
                 provider_api_key: str | None = None, trace_id: str | None = None,
                 metadata: Mapping[str, Any] | None = None, **kwargs: Any):
        self._virtual_key = Secret(virtual_key or os.environ.get("PORTKEY_VIRTUAL_KEY"))
        self._provider_api_key = Secret(provider_api_key)
        self.config = config
        self.provider = provider
        self.trace_id = trace_id
        self.metadata = dict(metadata) if metadata else None
        # built after the key is resolved; secrets stay out of vars()
        self._portkey_headers = _HiddenHeaders({})
        super().__init__(model_name, api_key, base_url=base_url, **kwargs)
        headers: dict[str, str] = {}
        if self.has_api_key:
            headers["x-portkey-api-key"] = self._api_key.value
        if self._virtual_key:
            headers["x-portkey-virtual-key"] = self._virtual_key.value
        if config is not None:
            headers["x-portkey-config"] = _header_value("config", config)
        if provider:
            headers["x-portkey-provider"] = provider
        if trace_id:
            headers["x-portkey-trace-id"] = trace_id
        if self.metadata:
            headers["x-portkey-metadata"] = _header_value("metadata", self.metadata)
        self._portkey_headers = _HiddenHeaders(headers)

    def _default_model(self) -> str:
        return DEFAULT_MODEL

    def _resolve_base_url(self, base_url: str | None) -> str | None:
        return (base_url or os.environ.get("PORTKEY_BASE_URL") or os.environ.get("PORTKEY_GATEWAY_URL")
                or PORTKEY_BASE_URL)

    @property
    def is_official_endpoint(self) -> bool:
        host = (urlsplit(self.base_url or "").hostname or "").lower()
        return host == self.official_host or host.endswith(".portkey.ai")

    def _sdk_kwargs(self) -> dict[str, Any]:
        kw = super()._sdk_kwargs()
        # the bearer token: the provider's key when routing by provider, else the Portkey key
        if self._provider_api_key:
            kw["api_key"] = self._provider_api_key.value
        kw["default_headers"] = {**self.default_headers, **self._portkey_headers.values}
        return kw

    def _secrets(self) -> tuple[Any, ...]:
        return tuple(s for s in (self._api_key.value, self._virtual_key.value,
                                 self._provider_api_key.value) if s and s != PLACEHOLDER_API_KEY)

    def __repr__(self) -> str:
        return (f"PortkeyBackend(model_name={self.model_name!r}, base_url={self.base_url!r}, "
                f"api_key={'***' if self.has_api_key else None!r}, "
                f"virtual_key={self._virtual_key!r}, config={'set' if self.config else None!r}, "
                f"provider={self.provider!r})")

    __str__ = __repr__

    def _status_error(self, exc: Any, model: str, attempt: int) -> BackendError:
        err = super()._status_error(exc, model, attempt)
        if err.status_code == 400 and not (model.startswith("@") or self._virtual_key or self.config
                                           or self.provider):
            err.args = (f"{err} Portkey needs to know the provider: use a Model Catalog name such "
                        "as '@openai/gpt-5-nano', or pass virtual_key=, config= or provider=.",)
        return err


class _HiddenHeaders:
    """Headers that carry credentials: usable by the client, invisible in ``repr``/``vars``."""

    __slots__ = ("values",)

    def __init__(self, values: dict[str, str]):
        self.values = values

    def __repr__(self) -> str:
        return f"<{len(self.values)} x-portkey-* headers>"
