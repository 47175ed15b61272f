"""The ``openrouter`` backend: every model OpenRouter serves, with the cost it reports per call.

OpenRouter speaks the OpenAI chat-completions format, so this is the ``openai`` backend (same
fast request path, retries, error mapping and usage fallback) pointed at
``https://openrouter.ai/api/v1`` with OpenRouter's extras:

* every request asks for usage accounting (``"usage": {"include": true}``), and the
  ``usage.cost`` (USD) OpenRouter answers with is the call's cost, so ``max_budget`` counts what
  OpenRouter bills; when a reply carries no cost, the kernel's price table is used
  (``openai/gpt-4o`` is priced as ``gpt-4o``), and ``prices=`` adds models;
* ``app_url`` / ``app_name`` are sent as ``HTTP-Referer`` / ``X-Title`` (app attribution);
* HTTP 402 (out of credits) is not retried and says where to add credits.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from rlm.exceptions import BackendError
from rlm_backend_support import DEFAULT_PRICES
from rlm_backend_openai.client import OpenAIBackend

__all__ = ["OpenRouterBackend"]

OPENROUTER_BASE_URL = "https://openrouter.ai/api/v1"
DEFAULT_MODEL = "openai/gpt-4o"


class OpenRouterBackend(OpenAIBackend):
    """Chat completions through OpenRouter.

    ``model_name`` is an OpenRouter model id (``openai/gpt-4o``, ``anthropic/claude-sonnet-4``,
    ``meta-llama/llama-3.3-70b-instruct``, ...). The key is ``api_key``, else
    ``$OPENROUTER_API_KEY``. ``base_url`` defaults to ``$OPENROUTER_BASE_URL``, else OpenRouter.
    ``include_usage=False`` stops asking for usage accounting. Every other keyword is the
    ``openai`` backend's.
    """

    backend_name = "openrouter"
    api_key_env = "OPENROUTER_API_KEY"
    official_host = "openrouter.ai"
    default_prices: Mapping[str, tuple[float, float]] = DEFAULT_PRICES

    def __init__(self, model_name: str | None = None, api_key: str | None = None,
                 base_url: str | None = None, *, app_url: str | None = None,
                 app_name: str | None = None, include_usage: bool = True,
                 default_headers: Mapping[str, str] | None = None, **kwargs: Any):
        headers = dict(default_headers or {})
        if app_url:
            headers.setdefault("HTTP-Referer", app_url)
        if app_name:
            headers.setdefault("X-Title", app_name)
        self.include_usage = include_usage
        super().__init__(model_name, api_key, base_url=base_url, default_headers=headers, **kwargs)

    def _default_model(self) -> str:
        return DEFAULT_MODEL

    def _resolve_base_url(self, base_url: str | None) -> str | None:
        return base_url or os.environ.get("OPENROUTER_BASE_URL") or OPENROUTER_BASE_URL

    @property
    def is_official_endpoint(self) -> bool:
        from urllib.parse import urlsplit

        host = (urlsplit(self.base_url or "").hostname or "").lower()
        return host == self.official_host or host.endswith("." + self.official_host)

    def _build(self, messages: Any, sampling: dict[str, Any]) -> Any:
        body, model, options = super()._build(messages, sampling)
        if self.include_usage and "usage" not in body:
            body["usage"] = {"include": True}
        return body, model, options

    def _status_error(self, exc: Any, model: str, attempt: int) -> BackendError:
        err = super()._status_error(exc, model, attempt)
        if err.status_code == 402:
            err.args = (f"{err} Add credits at https://openrouter.ai/settings/credits or lower "
                        "max_tokens.",)
        return err
