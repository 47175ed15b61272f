"""The ``anthropic`` backend: Claude models through the Anthropic Messages API.

The official SDK provides authentication (``x-api-key`` or a bearer token), the
``anthropic-version`` header, base-URL handling, the pooled HTTP client and typed HTTP errors.
Requests go through its low-level ``client.post("/v1/messages", body=..., cast_to=bytes)`` and the
JSON is parsed here: the typed ``messages.create()`` path validates every message through the SDK's
request transform and builds pydantic models for the reply, which costs far more per call than the
HTTP round trip to a nearby server (``benchmarks/bench_backend_overhead.py``).

Chat messages are translated to the Messages API: ``system`` messages become the top-level
``system``, consecutive messages of one role are merged (the API wants user and assistant to
alternate), and the reply's text is taken from its ``text`` blocks only, so ``thinking`` and
``redacted_thinking`` blocks that come first never leak into the answer.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import anthropic

from rlm.exceptions import (BackendConnectionError, BackendError, BackendTimeoutError,
                            BadResponseError, ConfigurationError)
from rlm_backend_support import (ANTHROPIC_PRICES, ClientPool, PooledBackend, PriceTable, RetryPolicy, Secret,
    as_int, check_sdk_kwargs, content_chars, error_for_status, error_message_of,
    estimate_token_count, estimated_usage, lookup_model, missing_key_error, parse_retry_after,
    redact)
from rlm.types import ModelResponse, Usage

__all__ = ["AnthropicBackend", "CONTEXT_WINDOWS", "MAX_OUTPUT_TOKENS", "PRICES", "to_messages_api"]

log = logging.getLogger("rlm_backend_anthropic")

OFFICIAL_HOST = "api.anthropic.com"
PLACEHOLDER_API_KEY = "not-needed"  # sent to custom endpoints when no key is configured
DEFAULT_MODEL = "claude-sonnet-4-20250514"
DEFAULT_MAX_TOKENS = 8192
_PATH = "/v1/messages"
_OPTION_KEYS = ("extra_headers", "extra_query", "extra_body", "timeout")

PRICES = ANTHROPIC_PRICES  # USD per 1M tokens; the kernel's table (rlm.plugin)

# Context windows in tokens. Sonnet 4 / 4.5 offer 1M behind a beta header; 200k is the default.
CONTEXT_WINDOWS: dict[str, int] = {
    "claude-opus-4-1": 200_000, "claude-opus-4": 200_000, "claude-sonnet-4-5": 200_000,
    "claude-sonnet-4": 200_000, "claude-haiku-4-5": 200_000, "claude-3-7-sonnet": 200_000,
    "claude-3-5-sonnet": 200_000, "claude-3-5-haiku": 200_000, "claude-3-opus": 200_000,
    "claude-3-haiku": 200_000,
}

# ``max_tokens`` is required by the Messages API; this is what is sent when the run's sampling
# arguments do not set it. Models whose output limit is lower than the default get their limit.
MAX_OUTPUT_TOKENS: dict[str, int] = {"claude-3-haiku": 4096, "claude-3-opus": 4096,
                                     "claude-3-5-haiku": 8192, "claude-3-5-sonnet": 8192}

# Cache writes cost 1.25x the input price, cache reads 0.1x (5-minute cache).
CACHE_WRITE_FACTOR = 1.25
CACHE_READ_FACTOR = 0.10


def _merge_content(a: Any, b: Any) -> Any:
    if isinstance(a, str) and isinstance(b, str):
        return f"{a}\n\n{b}"
    as_blocks = [x if isinstance(x, list) else [{"type": "text", "text": str(x)}] for x in (a, b)]
    return as_blocks[0] + as_blocks[1]


def to_messages_api(messages: Sequence[Mapping[str, Any]]) -> tuple[str | list[Any] | None, list[dict[str, Any]]]:
    """``(system, messages)`` for the Messages API from chat messages.

    Every ``system`` message (wherever it is) goes into ``system`` (joined by blank lines);
    ``user``/``assistant`` messages keep their content (a string or content blocks) and
    consecutive messages of one role are merged. Other roles (``tool``, ``developer``) count as
    ``user`` and ``developer`` as ``system``. A conversation with no user message gets the system
    text as its only user message, since the API needs at least one.
    """
    system_parts: list[Any] = []
    out: list[dict[str, Any]] = []
    for m in messages:
        role = m.get("role")
        content = m.get("content")
        if content is None:
            content = ""
        if role in ("system", "developer"):
            system_parts.append(content)
            continue
        role = "assistant" if role == "assistant" else "user"
        if out and out[-1]["role"] == role:
            out[-1]["content"] = _merge_content(out[-1]["content"], content)
        else:
            out.append({"role": role, "content": content})
    system: str | list[Any] | None
    if not system_parts:
        system = None
    elif all(isinstance(p, str) for p in system_parts):
        system = "\n\n".join(system_parts)
    else:
        system = []
        for part in system_parts:
            system.extend(part if isinstance(part, list) else [{"type": "text", "text": str(part)}])
    if not out:
        text = system if isinstance(system, str) else "".join(
            b.get("text", "") for b in system or [] if isinstance(b, dict))
        out = [{"role": "user", "content": text or "(empty)"}]
        system = None
    return system, out


class AnthropicBackend(PooledBackend):
    """Claude models through the Messages API.

    ``model_name`` (alias ``model``) is the default model; a ``model=`` sampling argument overrides
    it for one call. The key is ``api_key`` (or ``auth_token`` for a bearer token), else
    ``$ANTHROPIC_API_KEY`` (``$ANTHROPIC_AUTH_TOKEN``); a custom ``base_url`` (a proxy, a local
    server) works without one. ``base_url`` defaults to ``$ANTHROPIC_BASE_URL``, else the API.
    """

    backend_name = "anthropic"
    api_key_env = "ANTHROPIC_API_KEY"

    def __init__(self, model_name: str | None = None, api_key: str | None = None,
                 base_url: str | None = None, timeout: float = 60.0, max_retries: int = 3,
                 max_tokens: int | None = None, default_headers: Mapping[str, str] | None = None,
                 prices: Mapping[str, tuple[float, float]] | None = None, *,
                 model: str | None = None, auth_token: str | None = None,
                 retry_base_delay: float = 0.5, retry_max_delay: float = 30.0,
                 context_windows: Mapping[str, int] | None = None, **client_kwargs: Any):
        if model_name is not None and model is not None and model_name != model:
            raise ConfigurationError(f"anthropic: model_name={model_name!r} and model={model!r} "
                                     "disagree; pass one of them.")
        self.model_name: str = model_name or model or DEFAULT_MODEL
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or timeout <= 0):
            raise ConfigurationError(f"anthropic: timeout must be > 0 seconds, got {timeout!r}")
        if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)
                                       or max_tokens < 1):
            raise ConfigurationError(f"anthropic: max_tokens must be an integer >= 1, got {max_tokens!r}")
        self.timeout = timeout
        self.max_tokens = max_tokens
        self.retry = RetryPolicy(max_retries, retry_base_delay, retry_max_delay, name=self.backend_name)
        self.price_table = PriceTable(PRICES, prices)
        self.context_windows = {**CONTEXT_WINDOWS, **dict(context_windows or {})}
        self.default_headers = dict(default_headers or {})
        self.base_url = base_url or os.environ.get("ANTHROPIC_BASE_URL") or None
        self._auth_token = Secret(auth_token or (None if api_key else os.environ.get("ANTHROPIC_AUTH_TOKEN")))
        self._api_key = Secret(self._resolve_api_key(api_key))
        self._http_client = client_kwargs.pop("http_client", None)
        self._async_http_client = client_kwargs.pop("async_http_client", None)
        check_sdk_kwargs(type(self).__name__, anthropic.Anthropic, client_kwargs)
        self._client_kwargs = client_kwargs
        self._pool = ClientPool(self._make_sync_client, self._make_async_client)
        self._warned_estimate = False

    # -- configuration --------------------------------------------------------------------
    @property
    def is_official_endpoint(self) -> bool:
        if self.base_url is None:
            return True
        return (urlsplit(self.base_url).hostname or "").lower() == OFFICIAL_HOST

    def _resolve_api_key(self, api_key: str | None) -> str:
        key = api_key or os.environ.get(self.api_key_env)
        if key:
            return key
        if self._auth_token or not self.is_official_endpoint:
            return ""
        raise missing_key_error(self.backend_name, self.api_key_env, model=self.model_name,
                                also="or a bearer token: auth_token= or ANTHROPIC_AUTH_TOKEN")

    @property
    def max_retries(self) -> int:
        return self.retry.max_retries

    def __repr__(self) -> str:
        return (f"AnthropicBackend(model_name={self.model_name!r}, base_url={self.base_url!r}, "
                f"api_key={self._api_key!r}, timeout={self.timeout!r}, "
                f"max_retries={self.retry.max_retries!r})")

    __str__ = __repr__

    # -- SDK clients ------------------------------------------------------------------------
    def _sdk_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"timeout": self.timeout, "max_retries": 0}
        if self._api_key:
            kw["api_key"] = self._api_key.value
        elif self._auth_token:
            kw["auth_token"] = self._auth_token.value
        else:  # a local server without auth: the SDK still wants a credential to send
            kw["api_key"] = PLACEHOLDER_API_KEY
        if self._api_key and self._auth_token:
            kw["auth_token"] = self._auth_token.value
        if self.base_url:
            kw["base_url"] = self.base_url
        if self.default_headers:
            kw["default_headers"] = self.default_headers
        kw.update(self._client_kwargs)
        return kw

    def _construct(self, cls: Any, http_client: Any) -> Any:
        kw = self._sdk_kwargs()
        if http_client is not None:
            kw["http_client"] = http_client
        try:
            return cls(**kw)
        except anthropic.AnthropicError as exc:
            raise ConfigurationError(f"anthropic: {self._redact(str(exc))}") from None

    def _make_sync_client(self) -> Any:
        return self._construct(anthropic.Anthropic, self._http_client)

    def _make_async_client(self) -> Any:
        return self._construct(anthropic.AsyncAnthropic, self._async_http_client)

    # -- the Backend protocol ---------------------------------------------------------------
    def completion(self, messages: Sequence[Mapping[str, Any]] | str, **sampling: Any) -> ModelResponse:
        body, model, options = self._build(messages, sampling)
        client = self._pool.sync()

        def attempt(n: int) -> ModelResponse:
            raw = client.post(_PATH, body=body, cast_to=bytes, options=_attempt_options(options, n))
            return self._parse(raw, body, model)

        return self.retry.call(attempt, self._classifier(model, options))

    async def acompletion(self, messages: Sequence[Mapping[str, Any]] | str, **sampling: Any) -> ModelResponse:
        body, model, options = self._build(messages, sampling)
        client = self._pool.async_()

        async def attempt(n: int) -> ModelResponse:
            raw = await client.post(_PATH, body=body, cast_to=bytes, options=_attempt_options(options, n))
            return self._parse(raw, body, model)

        return await self.retry.acall(attempt, self._classifier(model, options))

    def context_window(self, model: str | None = None) -> int | None:
        return lookup_model(self.context_windows, model or self.model_name)

    def count_tokens(self, messages: Sequence[Mapping[str, Any]] | str) -> int:
        """The characters / 4 estimate (Anthropic's tokenizer is not public)."""
        if isinstance(messages, str):
            return estimate_token_count(len(messages))
        return estimate_token_count(sum(content_chars(m.get("content")) for m in messages))

    def cost(self, model: str, input_tokens: int, output_tokens: int,
             cache_write_tokens: int = 0, cache_read_tokens: int = 0) -> float | None:
        """USD for one call from the price table (cache writes 1.25x, reads 0.1x the input price)."""
        price = self.price_table.price(model)
        if price is None:
            return None
        return (input_tokens * price[0] + cache_write_tokens * price[0] * CACHE_WRITE_FACTOR
                + cache_read_tokens * price[0] * CACHE_READ_FACTOR + output_tokens * price[1]) / 1e6

    # -- request ---------------------------------------------------------------------------
    def _build(self, messages: Sequence[Mapping[str, Any]] | str,
               sampling: dict[str, Any]) -> tuple[dict[str, Any], str, dict[str, Any]]:
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        sampling = {k: v for k, v in sampling.items() if v is not None}
        options: dict[str, Any] = {}
        for key in _OPTION_KEYS:
            if key in sampling:
                value = sampling.pop(key)
                options[{"extra_headers": "headers", "extra_query": "params",
                         "extra_body": "extra_json", "timeout": "timeout"}[key]] = (
                    dict(value) if isinstance(value, Mapping) else value)
        if sampling.pop("stream", False):
            raise ConfigurationError("anthropic: stream=True is not supported (the backend returns "
                                     "whole replies); drop 'stream' from the sampling arguments.")
        model = sampling.pop("model", None) or self.model_name
        # OpenAI spellings of the same settings, so one sampling_args dict works for both
        if "max_completion_tokens" in sampling:
            sampling.setdefault("max_tokens", sampling.pop("max_completion_tokens"))
        if "stop" in sampling:
            stop = sampling.pop("stop")
            sampling.setdefault("stop_sequences", [stop] if isinstance(stop, str) else list(stop))
        system, converted = to_messages_api(messages)
        body: dict[str, Any] = {"model": model, "messages": converted}
        if system is not None:
            body["system"] = system
        body["max_tokens"] = sampling.pop("max_tokens", None) or self.max_tokens or \
            lookup_model(MAX_OUTPUT_TOKENS, model) or DEFAULT_MAX_TOKENS
        if "system" in sampling:  # an explicit system argument wins over system messages
            body["system"] = sampling.pop("system")
        body.update(sampling)
        return body, model, options

    # -- response --------------------------------------------------------------------------
    def _parse(self, raw: bytes, body: dict[str, Any], model: str) -> ModelResponse:
        try:
            data = json.loads(raw)
        except (ValueError, TypeError) as exc:
            snippet = raw[:200].decode("utf-8", "replace") if isinstance(raw, (bytes, bytearray)) else repr(raw)[:200]
            raise BadResponseError(f"anthropic ({model}): the server answered with something that is "
                                   f"not JSON ({exc}): {snippet!r}", backend="anthropic", model=model,
                                   status_code=200, provider_message=snippet) from None
        if not isinstance(data, dict):
            raise BadResponseError(f"anthropic ({model}): expected a JSON object, got "
                                   f"{type(data).__name__}", backend="anthropic", model=model,
                                   status_code=200)
        if data.get("type") == "error" or ("error" in data and "content" not in data):
            message = self._redact(error_message_of(data)[0] or json.dumps(data)[:500])
            raise BadResponseError(f"anthropic ({model}): the server returned an error instead of a "
                                   f"message: {message}", backend="anthropic", model=model,
                                   status_code=200, provider_message=message)
        content = data.get("content")
        if not isinstance(content, list):
            raise BadResponseError(f"anthropic ({model}): the response has no content blocks: "
                                   f"{json.dumps(data)[:200]}", backend="anthropic", model=model,
                                   status_code=200)
        text = "".join(b.get("text", "") for b in content
                       if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str))
        reported = data.get("model")
        served = reported if isinstance(reported, str) and reported else model
        usage = self._usage(data.get("usage"), body, text, served, model)
        return ModelResponse(text=text, usage=usage, model=model, finish_reason=data.get("stop_reason"))

    def _usage(self, raw: Any, body: dict[str, Any], text: str, served: str, requested: str) -> Usage:
        if isinstance(raw, dict) and (raw.get("input_tokens") is not None
                                      or raw.get("output_tokens") is not None):
            fresh = as_int(raw.get("input_tokens"))
            written = as_int(raw.get("cache_creation_input_tokens"))
            read = as_int(raw.get("cache_read_input_tokens"))
            usage = Usage(input_tokens=fresh + written + read, output_tokens=as_int(raw.get("output_tokens")))
        else:
            system = body.get("system")
            usage = estimated_usage(body["messages"], text, content_chars(system))
            fresh, written, read = usage.input_tokens, 0, 0
            if not self._warned_estimate:
                self._warned_estimate = True
                log.warning("anthropic: the server at %s sent no usage for model %s; token counts "
                            "are estimated (characters / 4) and marked Usage.estimated=True. This "
                            "is logged once per backend.", self.base_url or OFFICIAL_HOST, served)
        cost = self.cost(served, fresh, usage.output_tokens, written, read)
        if cost is None and served != requested:
            cost = self.cost(requested, fresh, usage.output_tokens, written, read)
        usage.cost = cost
        return usage

    # -- errors ----------------------------------------------------------------------------
    def _redact(self, text: str) -> str:
        secrets = [s for s in (self._api_key.value, self._auth_token.value) if s and s != PLACEHOLDER_API_KEY]
        return redact(text, *secrets)

    def _classifier(self, model: str, options: Mapping[str, Any]) -> Any:
        timeout = options.get("timeout")
        return lambda exc, n: self._to_backend_error(exc, model, n, timeout)

    def _to_backend_error(self, exc: BaseException, model: str, attempt: int, timeout: Any) -> BackendError:
        kw: dict[str, Any] = {"backend": "anthropic", "model": model}
        tries = f" (after {attempt + 1} attempts)" if attempt else ""
        if isinstance(exc, anthropic.APITimeoutError):
            return BackendTimeoutError(f"anthropic ({model}): no answer within the request timeout "
                                       f"({timeout if timeout is not None else self.timeout} s){tries}", **kw)
        if isinstance(exc, anthropic.APIConnectionError):
            cause = exc.__cause__ or exc.__context__
            detail = f": {type(cause).__name__}: {cause}" if cause is not None else ""
            return BackendConnectionError(self._redact(
                f"anthropic ({model}): could not reach {self.base_url or 'https://' + OFFICIAL_HOST} "
                f"or the connection was reset{tries}{detail}"), **kw)
        if isinstance(exc, anthropic.APIStatusError):
            status = int(getattr(exc, "status_code", 0) or 0)
            provider, code, etype = error_message_of(getattr(exc, "body", None))
            if provider is None:
                provider = getattr(exc, "message", None) or str(exc)
            response = getattr(exc, "response", None)
            retry_after = parse_retry_after(getattr(response, "headers", None)) if status in (429, 529) else None
            err = error_for_status(status, self._redact(str(provider)), backend="anthropic", model=model,
                                   code=code, error_type=etype, retry_after=retry_after,
                                   attempts=attempt + 1, key_env=self.api_key_env)
            if etype == "overloaded_error" and not err.retryable:  # some proxies send it with 4xx
                err.retryable = True
            return err
        return BackendError(f"anthropic ({model}): {type(exc).__name__}: {self._redact(str(exc))}", **kw)


def _attempt_options(options: dict[str, Any], attempt: int) -> dict[str, Any]:
    if attempt == 0:
        return options
    return {**options, "headers": {**options.get("headers", {}), "x-stainless-retry-count": str(attempt)}}
