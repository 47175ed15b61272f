"""The ``gemini`` backend: Gemini models through the Gemini API, on the official ``google-genai`` SDK.

The SDK provides authentication (``x-goog-api-key``), the API's URLs and versions, request and
response types, and the HTTP clients. Calls go through ``client.models.generate_content`` (and
``generate_content_stream`` with ``stream=True``, assembled into one reply); ``client.aio`` is
the async side. The SDK's own retries are turned off (``HttpRetryOptions(attempts=1)``) so that
rlm's :class:`~rlm.plugin.RetryPolicy` is the only retry loop, with the kernel's error mapping.

Lifecycle and threading: one sync client (thread-safe, shared by threads) and one async client per
event loop (:class:`~rlm.plugin.ClientPool`), made on first use; the async side runs on httpx, as
the sync side does, so one family of transport errors is mapped. ``close()`` closes them all and
the backend stays usable (new clients are made on the next call).

Chat messages are translated to ``contents``: ``system`` (and ``developer``) messages become the
``system_instruction``, ``assistant`` becomes role ``model``, every other role ``user``;
consecutive messages of one role are merged into one content with several parts. The reply's text
is the concatenation of the first candidate's text parts, without ``thought`` parts (a thinking
model's summary never reaches the answer).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx
import pydantic
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from rlm.exceptions import (AuthenticationError, BackendConnectionError, BackendError,
                            BackendTimeoutError, BadResponseError, ConfigurationError,
                            ContextWindowExceededError)
from rlm_backend_support import (ClientPool, PooledBackend, PriceTable, RetryPolicy, Secret, as_int,
    check_sdk_kwargs, content_chars, error_for_status, estimate_token_count, estimated_usage,
    lookup_model, missing_key_error, parse_retry_after, redact)
from rlm.types import ModelResponse, Usage

__all__ = ["CONTEXT_WINDOWS", "GeminiBackend", "LONG_CONTEXT_PRICES", "PRICES", "to_contents"]

log = logging.getLogger("rlm_backend_gemini")

OFFICIAL_HOST = "generativelanguage.googleapis.com"
PLACEHOLDER_API_KEY = "not-needed"  # sent to custom endpoints when no key is configured
DEFAULT_MODEL = "gemini-2.5-flash"
KEY_ENVS = ("GOOGLE_API_KEY", "GEMINI_API_KEY")  # the SDK's order: GOOGLE_API_KEY wins

# USD per 1M tokens (input, output), the Gemini API's paid tier, prompts up to the long-context
# threshold. Thinking tokens are output tokens. Prices change: pass ``prices=`` or call
# ``rlm.plugin.register_prices``.
PRICES: dict[str, tuple[float, float]] = {
    "gemini-3-pro-preview": (2.00, 12.00),
    "gemini-2.5-pro": (1.25, 10.00),
    "gemini-2.5-flash": (0.30, 2.50),
    "gemini-2.5-flash-lite": (0.10, 0.40),
    "gemini-flash-latest": (0.30, 2.50),
    "gemini-flash-lite-latest": (0.10, 0.40),
    "gemini-2.0-flash": (0.10, 0.40),
    "gemini-2.0-flash-lite": (0.075, 0.30),
    "gemini-1.5-pro": (1.25, 5.00),
    "gemini-1.5-flash": (0.075, 0.30),
    "gemini-1.5-flash-8b": (0.0375, 0.15),
}

# Models whose price rises for long prompts: (threshold in prompt tokens, input, output) used when
# a call's prompt has more tokens than the threshold. Not applied to models priced by ``prices=``.
LONG_CONTEXT_PRICES: dict[str, tuple[int, float, float]] = {
    "gemini-3-pro-preview": (200_000, 4.00, 18.00),
    "gemini-2.5-pro": (200_000, 2.50, 15.00),
    "gemini-1.5-pro": (128_000, 2.50, 10.00),
    "gemini-1.5-flash": (128_000, 0.15, 0.60),
    "gemini-1.5-flash-8b": (128_000, 0.075, 0.30),
}

# Cached prompt tokens (``cachedContentTokenCount``, part of the prompt) cost this fraction of the
# input price: 10 % on the 2.5 and 3 models, 25 % before.
CACHE_FACTORS: dict[str, float] = {"gemini-3": 0.10, "gemini-2.5": 0.10, "gemini-flash-latest": 0.10,
                                   "gemini-flash-lite-latest": 0.10}
DEFAULT_CACHE_FACTOR = 0.25

# Input token limits (``inputTokenLimit`` of models.get).
CONTEXT_WINDOWS: dict[str, int] = {
    "gemini-3": 1_048_576, "gemini-2.5": 1_048_576, "gemini-2.0": 1_048_576,
    "gemini-1.5-pro": 2_097_152, "gemini-1.5-flash": 1_048_576, "gemini-flash-latest": 1_048_576,
    "gemini-flash-lite-latest": 1_048_576,
}

# OpenAI spellings of generation settings, so one sampling_args dict works for every backend.
_SPELLINGS = {"max_tokens": "max_output_tokens", "max_completion_tokens": "max_output_tokens",
              "stop": "stop_sequences", "n": "candidate_count"}
_CONFIG_FIELDS = frozenset(types.GenerateContentConfig.model_fields) - {"http_options"}
_CONFIG_ALIASES = {f.alias: name for name, f in types.GenerateContentConfig.model_fields.items()
                   if f.alias}
_CONTEXT_PHRASES = ("exceeds the maximum number of tokens", "input token count",
                    "exceeds the context", "too many tokens", "context window")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def _http_families() -> tuple[Any, ...]:
    """The HTTP client packages the SDK may use: httpx2 (its default when installed) and httpx."""
    try:
        import httpx2  # type: ignore[import-not-found, unused-ignore]  # optional
    except ImportError:
        return (httpx,)
    return (httpx2, httpx)


_FAMILIES = _http_families()
_TIMEOUTS = tuple(f.TimeoutException for f in _FAMILIES) + (asyncio.TimeoutError, TimeoutError)
_TRANSPORT_ERRORS = tuple(f.TransportError for f in _FAMILIES) + (ConnectionError,)


def _async_http_client() -> Any:
    """The async HTTP client of one pool slot, of the family the SDK prefers for its sync side
    (``GOOGLE_GENAI_HTTP_CLIENT=httpx`` picks httpx)."""
    family = _FAMILIES[0]
    if os.environ.get("GOOGLE_GENAI_HTTP_CLIENT", "").strip().lower() == "httpx":
        family = httpx
    return family.AsyncClient(timeout=None, follow_redirects=False)


def _text_part(text: Any) -> dict[str, Any]:
    return {"text": text if isinstance(text, str) else str(text)}


def _parts(content: Any) -> list[dict[str, Any]]:
    """Gemini parts from a chat message's content (a string, OpenAI content parts, Gemini parts)."""
    if content is None:
        return [{"text": ""}]
    if isinstance(content, str):
        return [{"text": content}]
    if not isinstance(content, list):
        return [_text_part(content)]
    parts: list[dict[str, Any]] = []
    for item in content:
        if isinstance(item, str):
            parts.append({"text": item})
        elif not isinstance(item, dict):
            parts.append(_text_part(item))
        elif item.get("type") == "text" or ("text" in item and "type" not in item):
            parts.append({"text": str(item.get("text", ""))})
        elif item.get("type") == "image_url":
            url = item.get("image_url", {})
            url = url.get("url") if isinstance(url, dict) else url
            match = re.match(r"^data:([^;,]+);base64,(.*)$", str(url or ""), re.S)
            if match:
                base64.b64decode(match.group(2), validate=False)
                parts.append({"inline_data": {"mime_type": match.group(1), "data": match.group(2)}})
            else:
                parts.append({"file_data": {"file_uri": str(url)}})
        elif "type" not in item:  # already a Gemini part (inline_data, file_data, ...)
            parts.append(dict(item))
        else:
            parts.append({"text": str(item.get("text", ""))})
    return parts or [{"text": ""}]


def to_contents(messages: Sequence[Mapping[str, Any]]) -> tuple[str | None, list[dict[str, Any]]]:
    """``(system_instruction, contents)`` for the Gemini API from chat messages.

    ``system`` and ``developer`` messages (wherever they are) are joined by blank lines into the
    system instruction; ``assistant`` becomes role ``model``, any other role ``user``; consecutive
    messages of one role become one content with the parts of each. A conversation with no other
    message gets the system text as its only user message, since ``contents`` must not be empty.
    """
    system_parts: list[str] = []
    out: list[dict[str, Any]] = []
    for m in messages:
        role = m.get("role")
        if role in ("system", "developer"):
            content = m.get("content")
            system_parts.append(content if isinstance(content, str) else "".join(
                p.get("text", "") for p in _parts(content)))
            continue
        role = "model" if role == "assistant" else "user"
        parts = _parts(m.get("content"))
        if out and out[-1]["role"] == role:
            out[-1]["parts"].extend(parts)
        else:
            out.append({"role": role, "parts": parts})
    system = "\n\n".join(system_parts) if system_parts else None
    if not out:
        out = [{"role": "user", "parts": [{"text": system or ""}]}]
        system = None
    return system, out


def _retry_delay(details: Any) -> float | None:
    """Seconds from a ``google.rpc.RetryInfo`` detail (``"retryDelay": "37s"``), if any."""
    for detail in details if isinstance(details, list) else []:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            match = _DURATION.match(str(detail.get("retryDelay", "")))
            if match:
                value = float(match.group(1))
                return value if math.isfinite(value) else None
    return None


def _error_reasons(details: Any) -> set[str]:
    return {str(d.get("reason")) for d in (details if isinstance(details, list) else [])
            if isinstance(d, dict) and d.get("reason")}


class GeminiBackend(PooledBackend):
    """Gemini models through the Gemini API (Google AI Studio keys).

    ``model_name`` (alias ``model``) is the default model; a ``model=`` sampling argument overrides
    it for one call. The key is ``api_key``, else ``$GOOGLE_API_KEY``, else ``$GEMINI_API_KEY``;
    a custom ``base_url`` (a proxy, the emulator) works without one. ``base_url`` defaults to
    ``$GOOGLE_GEMINI_BASE_URL``, else the API. ``exact_token_count=True`` makes
    :meth:`count_tokens` ask the API's ``countTokens`` instead of estimating.
    """

    backend_name = "gemini"
    api_key_env = "GEMINI_API_KEY"

    def __init__(self, model_name: str | None = None, api_key: str | None = None,
                 base_url: str | None = None, timeout: float = 60.0, max_retries: int = 3,
                 prices: Mapping[str, tuple[float, float]] | None = None, *,
                 model: str | None = None, api_version: str | None = None,
                 default_headers: Mapping[str, str] | None = None,
                 retry_base_delay: float = 0.5, retry_max_delay: float = 30.0,
                 context_windows: Mapping[str, int] | None = None,
                 exact_token_count: bool = False, **client_kwargs: Any):
        if model_name is not None and model is not None and model_name != model:
            raise ConfigurationError(f"gemini: model_name={model_name!r} and model={model!r} "
                                     "disagree; pass one of them.")
        self.model_name: str = (model_name or model or DEFAULT_MODEL).removeprefix("models/")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0 \
                or not math.isfinite(timeout):
            raise ConfigurationError(f"gemini: timeout must be > 0 seconds, got {timeout!r}")
        self.timeout = float(timeout)
        self.retry = RetryPolicy(max_retries, retry_base_delay, retry_max_delay, name=self.backend_name)
        self.price_table = PriceTable(PRICES, prices)
        self._priced_by_user = set((prices or {}).keys())
        self.context_windows = {**CONTEXT_WINDOWS, **dict(context_windows or {})}
        self.default_headers = dict(default_headers or {})
        self.api_version = api_version
        self.base_url = base_url or os.environ.get("GOOGLE_GEMINI_BASE_URL") or None
        self.exact_token_count = bool(exact_token_count)
        self._vertex = bool(client_kwargs.get("vertexai"))
        self._api_key = Secret(self._resolve_api_key(api_key))
        self._http_options = dict(client_kwargs.pop("http_options", None) or {})
        check_sdk_kwargs(type(self).__name__, genai.Client, client_kwargs)
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
        key = api_key or next((os.environ[v] for v in KEY_ENVS if os.environ.get(v)), "")
        if key or self._vertex or not self.is_official_endpoint:
            return key
        raise missing_key_error(self.backend_name, self.api_key_env, model=self.model_name,
                                also="GOOGLE_API_KEY works too; keys come from Google AI Studio")

    @property
    def max_retries(self) -> int:
        return self.retry.max_retries

    def __repr__(self) -> str:
        return (f"GeminiBackend(model_name={self.model_name!r}, base_url={self.base_url!r}, "
                f"api_key={self._api_key!r}, timeout={self.timeout!r}, "
                f"max_retries={self.retry.max_retries!r})")

    __str__ = __repr__

    # -- SDK clients ------------------------------------------------------------------------
    def _options(self, async_http: Any = None) -> types.HttpOptions:
        opts: dict[str, Any] = {"timeout": max(1, int(self.timeout * 1000)),
                                "retry_options": types.HttpRetryOptions(attempts=1)}
        if self.base_url:
            opts["base_url"] = self.base_url
        if self.api_version:
            opts["api_version"] = self.api_version
        if self.default_headers:
            opts["headers"] = dict(self.default_headers)
        opts.update(self._http_options)
        if async_http is not None:
            opts["httpx_async_client"] = async_http
        return types.HttpOptions(**opts)

    def _construct(self, async_http: Any = None) -> genai.Client:
        kw: dict[str, Any] = dict(self._client_kwargs)
        if not self._vertex:
            kw["api_key"] = self._api_key.value or PLACEHOLDER_API_KEY
        try:
            return genai.Client(http_options=self._options(async_http), **kw)
        except (ValueError, TypeError, pydantic.ValidationError) as exc:
            raise ConfigurationError(f"gemini: {self._redact(str(exc))}") from None

    def _make_sync_client(self) -> Any:
        return self._construct()

    def _make_async_client(self) -> Any:
        # The backend owns the async HTTP client of each loop and the pool closes it on that
        # loop; the SDK's own aiohttp sessions or httpx clients would be closed by the garbage
        # collector after asyncio.run() had closed their loop. A user's own async client
        # (http_options={"httpx_async_client": ...} or "aiohttp_client") is left to the user.
        own = None
        if not {"httpx_async_client", "aiohttp_client"} & set(self._http_options):
            own = _async_http_client()
        try:
            return _AsyncClient(self._construct(own), own)
        except BaseException:
            if own is not None:
                _close_quietly(own)
            raise

    # -- the Backend protocol ---------------------------------------------------------------
    def completion(self, messages: Sequence[Mapping[str, Any]] | str, **sampling: Any) -> ModelResponse:
        model, contents, config, stream, messages = self._build(messages, sampling)
        client = self._pool.sync()

        def attempt(n: int) -> ModelResponse:
            del n
            if stream:
                chunks = list(client.models.generate_content_stream(
                    model=model, contents=contents, config=config))
                return self._parse_chunks(chunks, messages, model)
            reply = client.models.generate_content(model=model, contents=contents, config=config)
            return self._parse(reply, messages, model)

        return self.retry.call(attempt, self._classifier(model, config))

    async def acompletion(self, messages: Sequence[Mapping[str, Any]] | str, **sampling: Any) -> ModelResponse:
        model, contents, config, stream, messages = self._build(messages, sampling)
        aio = self._pool.async_().aio

        async def attempt(n: int) -> ModelResponse:
            del n
            if stream:
                chunks = [c async for c in await aio.models.generate_content_stream(
                    model=model, contents=contents, config=config)]
                return self._parse_chunks(chunks, messages, model)
            reply = await aio.models.generate_content(model=model, contents=contents, config=config)
            return self._parse(reply, messages, model)

        return await self.retry.acall(attempt, self._classifier(model, config))

    def context_window(self, model: str | None = None) -> int | None:
        return lookup_model(self.context_windows, (model or self.model_name).removeprefix("models/"))

    def count_tokens(self, messages: Sequence[Mapping[str, Any]] | str) -> int:
        """Tokens of ``messages``: the characters / 4 estimate, or with ``exact_token_count=True``
        the API's ``countTokens`` (one HTTP request; the system text is counted as a user part,
        since the Gemini API's countTokens takes no system instruction)."""
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        if not self.exact_token_count:
            return estimate_token_count(sum(content_chars(m.get("content")) for m in messages))
        system, contents = to_contents(messages)
        if system:
            contents = [{"role": "user", "parts": [{"text": system}]}, *contents]
        model = self.model_name
        client = self._pool.sync()

        def attempt(n: int) -> int:
            del n
            reply = client.models.count_tokens(model=model, contents=contents)
            if reply.total_tokens is None:
                raise BadResponseError(f"gemini ({model}): countTokens answered without totalTokens",
                                       backend="gemini", model=model, status_code=200)
            return int(reply.total_tokens)

        return self.retry.call(attempt, self._classifier(model, None))

    def cost(self, model: str, input_tokens: int, output_tokens: int,
             cached_tokens: int = 0) -> float | None:
        """USD for one call. ``input_tokens`` includes ``cached_tokens`` (priced at the model's
        cache factor of the input price); a prompt above the long-context threshold of a model in
        :data:`LONG_CONTEXT_PRICES` is priced at the long-context rates."""
        price = self.price_table.price(model)
        if price is None:
            return None
        in_price, out_price = price
        long = None if lookup_model(dict.fromkeys(self._priced_by_user, 1), model) else \
            lookup_model(LONG_CONTEXT_PRICES, model)
        if long is not None and input_tokens > long[0]:
            in_price, out_price = long[1], long[2]
        cached = min(max(0, cached_tokens), input_tokens)
        factor = lookup_model(CACHE_FACTORS, model) or DEFAULT_CACHE_FACTOR
        return ((input_tokens - cached) * in_price + cached * in_price * factor
                + output_tokens * out_price) / 1e6

    # -- request ---------------------------------------------------------------------------
    def _build(self, messages: Sequence[Mapping[str, Any]] | str, sampling: dict[str, Any]
               ) -> tuple[str, list[dict[str, Any]], types.GenerateContentConfig, bool,
                          Sequence[Mapping[str, Any]]]:
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        sampling = {k: v for k, v in sampling.items() if v is not None}
        model = str(sampling.pop("model", None) or self.model_name).removeprefix("models/")
        stream = bool(sampling.pop("stream", False))
        sampling.pop("stream_options", None)
        http: dict[str, Any] = {}
        if "timeout" in sampling:
            seconds = sampling.pop("timeout")
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
                raise ConfigurationError(f"gemini: the timeout sampling argument must be > 0 seconds, "
                                         f"got {seconds!r}")
            http["timeout"] = max(1, int(seconds * 1000))
        if "extra_headers" in sampling:
            http["headers"] = dict(sampling.pop("extra_headers") or {})
        if "extra_body" in sampling:
            http["extra_body"] = dict(sampling.pop("extra_body") or {})
        config: dict[str, Any] = {}
        for key, value in sampling.items():
            name = _SPELLINGS.get(key) or _CONFIG_ALIASES.get(key) or key
            if name not in _CONFIG_FIELDS:
                raise ConfigurationError(
                    f"gemini: unknown sampling argument {key!r}. The Gemini API takes "
                    f"{', '.join(sorted(_CONFIG_FIELDS))} (and the OpenAI spellings max_tokens, "
                    "max_completion_tokens, stop, n); drop it from sampling_args.")
            if name == "stop_sequences" and isinstance(value, str):
                value = [value]
            config.setdefault(name, value)
        system, contents = to_contents(messages)
        if system is not None:
            config.setdefault("system_instruction", system)
        if http:  # merged by the SDK over the client's options for this call only
            config["http_options"] = http
        try:
            built = types.GenerateContentConfig(**config)
        except pydantic.ValidationError as exc:
            raise ConfigurationError(f"gemini: invalid sampling arguments: {exc}") from None
        return model, contents, built, stream, messages

    # -- response --------------------------------------------------------------------------
    def _bad(self, model: str, what: str) -> BadResponseError:
        return BadResponseError(f"gemini ({model}): {what}", backend="gemini", model=model,
                                status_code=200)

    def _parse(self, reply: Any, messages: Sequence[Mapping[str, Any]], model: str) -> ModelResponse:
        if not isinstance(reply, types.GenerateContentResponse):
            raise self._bad(model, f"expected a GenerateContentResponse, got {type(reply).__name__}")
        candidates = reply.candidates or []
        if not candidates:
            feedback = reply.prompt_feedback
            reason = getattr(feedback, "block_reason", None) if feedback is not None else None
            if reason is not None:
                detail = getattr(feedback, "block_reason_message", None) or ""
                raise self._bad(model, f"the prompt was blocked ({getattr(reason, 'value', reason)})"
                                       f"{': ' + detail if detail else ''}; no candidate was "
                                       "generated. Change the prompt or the safety_settings.")
            raise self._bad(model, "the response has no candidates")
        first = candidates[0]
        parts = (first.content.parts if first.content is not None else None) or []
        if not parts and first.finish_reason is None:
            raise self._bad(model, "the first candidate has neither content nor a finishReason")
        text = "".join(p.text for p in parts if isinstance(p.text, str) and not p.thought)
        finish = first.finish_reason
        finish_name = getattr(finish, "value", finish) if finish is not None else None
        served = (reply.model_version or model).removeprefix("models/")
        usage = self._usage(reply.usage_metadata, messages, text, served, model)
        return ModelResponse(text=text, usage=usage, model=model, finish_reason=finish_name)

    def _parse_chunks(self, chunks: list[Any], messages: Sequence[Mapping[str, Any]],
                      model: str) -> ModelResponse:
        """One reply from a stream: the chunks' text joined, the last finish reason and usage."""
        if not chunks:
            raise self._bad(model, "the stream ended without a chunk")
        texts: list[str] = []
        finish = None
        usage_meta = None
        version = None
        for chunk in chunks:
            if not chunk.candidates and chunk.prompt_feedback is not None \
                    and chunk.prompt_feedback.block_reason is not None:
                return self._parse(chunk, messages, model)
            for cand in chunk.candidates or []:
                if cand.index not in (None, 0):
                    continue
                for p in (cand.content.parts if cand.content is not None else None) or []:
                    if isinstance(p.text, str) and not p.thought:
                        texts.append(p.text)
                if cand.finish_reason is not None:
                    finish = cand.finish_reason
            usage_meta = chunk.usage_metadata or usage_meta
            version = chunk.model_version or version
        if finish is None and not texts:
            raise self._bad(model, "the stream carried no candidate")
        text = "".join(texts)
        served = (version or model).removeprefix("models/")
        usage = self._usage(usage_meta, messages, text, served, model)
        return ModelResponse(text=text, usage=usage, model=model,
                             finish_reason=getattr(finish, "value", finish))

    def _usage(self, meta: Any, messages: Sequence[Mapping[str, Any]], text: str,
               served: str, requested: str) -> Usage:
        if meta is not None:
            prompt = as_int(meta.prompt_token_count) + as_int(meta.tool_use_prompt_token_count)
            output = as_int(meta.candidates_token_count) + as_int(meta.thoughts_token_count)
            cached = as_int(meta.cached_content_token_count)
            usage = Usage(input_tokens=prompt, output_tokens=output)
        else:
            usage = estimated_usage(messages, text)
            cached = 0
            if not self._warned_estimate:
                self._warned_estimate = True
                log.warning("gemini: the server at %s sent no usageMetadata for model %s; token "
                            "counts are estimated (characters / 4) and marked Usage.estimated=True. "
                            "This is logged once per backend.", self.base_url or OFFICIAL_HOST, served)
        cost = self.cost(served, usage.input_tokens, usage.output_tokens, cached)
        if cost is None and served != requested:
            cost = self.cost(requested, usage.input_tokens, usage.output_tokens, cached)
        usage.cost = cost
        return usage

    # -- errors ----------------------------------------------------------------------------
    def _redact(self, text: str) -> str:
        key = self._api_key.value
        return redact(text, key if key and key != PLACEHOLDER_API_KEY else None)

    def _classifier(self, model: str, config: Any) -> Any:
        options = getattr(config, "http_options", None)
        ms = getattr(options, "timeout", None)
        timeout = ms / 1000 if ms else self.timeout
        return lambda exc, n: self._to_backend_error(exc, model, n, timeout)

    def _to_backend_error(self, exc: BaseException, model: str, attempt: int,
                          timeout: float) -> BackendError:
        kw: dict[str, Any] = {"backend": "gemini", "model": model}
        tries = f" (after {attempt + 1} attempts)" if attempt else ""
        if isinstance(exc, _TIMEOUTS):
            return BackendTimeoutError(f"gemini ({model}): no answer within the request timeout "
                                       f"({timeout:g} s){tries}; raise it with "
                                       "backend_kwargs={\"timeout\": ...}", **kw)
        if isinstance(exc, _TRANSPORT_ERRORS):
            return BackendConnectionError(self._redact(
                f"gemini ({model}): could not reach {self.base_url or 'https://' + OFFICIAL_HOST} "
                f"or the connection was reset{tries}: {type(exc).__name__}: {exc}"), **kw)
        if isinstance(exc, genai_errors.UnknownApiResponseError):
            return BadResponseError(self._redact(
                f"gemini ({model}): the server answered with something that is not JSON: "
                f"{str(exc)[:300]}"), status_code=200, **kw)
        if isinstance(exc, genai_errors.APIError):
            return self._api_error(exc, model, attempt)
        if isinstance(exc, (pydantic.ValidationError, ValueError, TypeError, KeyError,
                            AttributeError)):
            return BadResponseError(self._redact(
                f"gemini ({model}): the response does not have the API's shape: "
                f"{type(exc).__name__}: {str(exc)[:300]}"), status_code=200, **kw)
        return BackendError(f"gemini ({model}): {type(exc).__name__}: {self._redact(str(exc))}", **kw)

    def _api_error(self, exc: genai_errors.APIError, model: str, attempt: int) -> BackendError:
        status = int(exc.code or 0)
        body = exc.details if isinstance(exc.details, dict) else {}
        nested = body.get("error")
        error = nested if isinstance(nested, dict) else body
        details = error.get("details") if isinstance(error, dict) else None
        message = self._redact(str(exc.message or error.get("message") or f"HTTP {status}"))
        status_name = str(exc.status or "")
        name = f"gemini ({model})"
        kw: dict[str, Any] = {"backend": "gemini", "model": model, "status_code": status,
                              "provider_message": message}
        if "API_KEY_INVALID" in _error_reasons(details) or status in (401, 403):
            fix = ("Check the key: backend_kwargs={\"api_key\": ...} or GEMINI_API_KEY / "
                   "GOOGLE_API_KEY (a key from Google AI Studio).")
            return AuthenticationError(f"{name}: HTTP {status} {status_name} authentication failed: "
                                       f"{message.rstrip('.')}. {fix}", **kw)
        if status in (400, 413) and any(p in message.lower() for p in _CONTEXT_PHRASES):
            return ContextWindowExceededError(
                f"{name}: the prompt does not fit the context window: {message}", **kw)
        retry_after = None
        if status == 429:
            retry_after = _retry_delay(details)
            if retry_after is None:
                retry_after = parse_retry_after(getattr(getattr(exc, "response", None), "headers", None))
        err = error_for_status(status, message, backend="gemini", model=model,
                               error_type=status_name or None, retry_after=retry_after,
                               attempts=attempt + 1, key_env=self.api_key_env)
        if status == 503 and "overloaded" in message.lower():
            err.retryable = True
        return err


def _close_quietly(http: Any) -> None:
    try:
        asyncio.get_running_loop().create_task(http.aclose())
    except RuntimeError:
        pass


class _AsyncClient:
    """The pool's async client: a ``genai.Client`` used through ``.aio`` and the HTTP client the
    backend gave it; ``close()`` closes both (the pool awaits it on the client's loop)."""

    __slots__ = ("client", "aio", "http")

    def __init__(self, client: genai.Client, http: Any):
        self.client = client
        self.aio = client.aio
        self.http = http

    async def close(self) -> None:
        await self.aio.aclose()
        if self.http is not None:
            await self.http.aclose()
