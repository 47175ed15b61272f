"""The ``litellm`` backend: any ``provider/model`` name LiteLLM routes.

``import litellm`` takes seconds and, unless ``LITELLM_LOCAL_MODEL_COST_MAP`` is true, fetches
its model cost map from the network. So this module does not import it: the first backend
construction does, after setting ``LITELLM_LOCAL_MODEL_COST_MAP=True`` (unless you set the
variable yourself), so the cost map is the copy installed with LiteLLM and nothing is fetched.

LiteLLM's own retries are switched off (``num_retries=0``, ``max_retries=0``); the kernel's
:class:`~rlm.plugin.RetryPolicy` retries instead, like every rlm backend, honouring
``Retry-After`` with a cap. Errors become the kernel's exceptions with the provider's message.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import threading
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from rlm.exceptions import (BackendConnectionError, BackendError, BackendTimeoutError,
                            BadResponseError, ConfigurationError, ContextWindowExceededError)
from rlm_backend_support import (DEFAULT_PRICES, PriceTable, RetryPolicy, Secret, as_int,
    content_chars, error_for_status, error_message_of, estimate_token_count, estimated_usage,
    missing_key_error, parse_retry_after, redact, reported_cost)
from rlm.types import ModelResponse, Usage

__all__ = ["LiteLLMBackend", "import_litellm"]

log = logging.getLogger("rlm_backend_litellm")

DEFAULT_MODEL = "openai/gpt-4o"
_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "0.0.0.0")
_import_lock = threading.Lock()
_PREFIX = re.compile(r"^litellm\.\w+:\s*")


def import_litellm() -> Any:
    """Import LiteLLM with its local cost map (no network), quietly. Cached after the first call."""
    with _import_lock:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        module: Any = importlib.import_module("litellm")
        module.suppress_debug_info = True
        module.telemetry = False
        return module


_CONNECTION_ERRORS = ("APIConnectionError", "ConnectError", "RemoteProtocolError", "ReadError",
                      "WriteError", "ConnectionResetError", "ConnectionRefusedError",
                      "ServerDisconnectedError", "ClientConnectionError", "ClientOSError")


def _connection_failure(exc: BaseException) -> bool:
    """LiteLLM reports a reset or refused connection as a 500 "Connection error."; find the cause."""
    if "connection error" in str(getattr(exc, "message", "") or exc).lower():
        return True
    seen: set[int] = set()
    cur: BaseException | None = exc.__cause__ or exc.__context__
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if type(cur).__name__ in _CONNECTION_ERRORS and "timeout" not in type(cur).__name__.lower():
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def _is_undecodable_reply(message: str) -> bool:
    lowered = message.lower()
    # A JSON decode error is the reply's fault whatever status LiteLLM attaches to it (it
    # reports a 200 it cannot parse as a 500, with or without "200 OK" in the message).
    return ("expecting value" in lowered or "jsondecodeerror" in lowered
            or "invalid json" in lowered or "unable to parse" in lowered
            or "unable to get json response" in lowered)


def _provider_message(exc: BaseException) -> str:
    """The provider's words from a LiteLLM exception, without LiteLLM's class-name prefix."""
    message = str(getattr(exc, "message", None) or exc)
    message = _PREFIX.sub("", message)
    start = message.find("{")
    if start >= 0:  # "AnthropicException - {json body}": keep the provider's message
        try:
            parsed, _ = json.JSONDecoder().raw_decode(message[start:])
        except ValueError:
            parsed = None
        found = error_message_of(parsed)[0] if parsed is not None else None
        if found:
            return found
    return message.strip()


class LiteLLMBackend:
    """Chat completions through LiteLLM.

    ``model_name`` (alias ``model``) is a LiteLLM model name: ``openai/gpt-4o``,
    ``anthropic/claude-sonnet-4-20250514``, ``gemini/gemini-2.0-flash``, ``ollama/llama3``, ...
    ``api_key`` and ``api_base`` (alias ``base_url``) go to LiteLLM; without ``api_key`` LiteLLM
    reads the provider's variable (``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``, ...), and a missing
    one is reported at construction. Cost: ``prices=`` / ``register_prices`` first, then
    LiteLLM's cost map, then the kernel's table. Any other keyword is passed to every
    ``litellm.completion`` call (``drop_params``, ``api_version``, ``custom_llm_provider``, ...).
    """

    backend_name = "litellm"

    def __init__(self, model_name: str | None = None, api_key: str | None = None,
                 api_base: str | None = None, timeout: float = 60.0, max_retries: int = 3,
                 prices: Mapping[str, tuple[float, float]] | None = None, *,
                 model: str | None = None, base_url: str | None = None,
                 retry_base_delay: float = 0.5, retry_max_delay: float = 30.0,
                 context_windows: Mapping[str, int] | None = None, **call_kwargs: Any):
        if model_name is not None and model is not None and model_name != model:
            raise ConfigurationError(f"litellm: model_name={model_name!r} and model={model!r} "
                                     "disagree; pass one of them.")
        if api_base and base_url and api_base != base_url:
            raise ConfigurationError("litellm: api_base and base_url are the same setting; pass one.")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or timeout <= 0):
            raise ConfigurationError(f"litellm: timeout must be > 0 seconds, got {timeout!r}")
        self.model_name: str = model_name or model or DEFAULT_MODEL
        self.api_base = api_base or base_url or None
        self.timeout = timeout
        self.retry = RetryPolicy(max_retries, retry_base_delay, retry_max_delay, name="litellm")
        self.user_prices = PriceTable({}, prices)  # the user's prices (and register_prices)
        self.price_table = PriceTable(DEFAULT_PRICES, prices)
        self.context_windows = dict(context_windows or {})
        for key in ("num_retries", "stream", "messages"):
            if key in call_kwargs:
                raise ConfigurationError(f"litellm: {key!r} cannot be a backend argument "
                                         "(retries are max_retries=; replies are never streamed).")
        self._call_kwargs = call_kwargs
        self._api_key = Secret(api_key)
        self._litellm = import_litellm()
        self._check_key()
        self._warned_estimate = False

    # -- configuration --------------------------------------------------------------------
    def _is_local(self) -> bool:
        if not self.api_base:
            return False
        return (urlsplit(self.api_base).hostname or "") in _LOCAL_HOSTS

    def _check_key(self) -> None:
        if self._api_key or self._is_local():
            return
        try:
            report = self._litellm.validate_environment(model=self.model_name)
        except Exception:  # noqa: BLE001 - an unknown provider: let the call report it
            return
        missing = [k for k in (report or {}).get("missing_keys", []) if k.endswith(("_KEY", "_TOKEN"))]
        if missing:
            raise missing_key_error("litellm", " / ".join(missing), model=self.model_name,
                                    also=f"LiteLLM's variable for {self.model_name!r}")

    @property
    def max_retries(self) -> int:
        return self.retry.max_retries

    def __repr__(self) -> str:
        return (f"LiteLLMBackend(model_name={self.model_name!r}, api_base={self.api_base!r}, "
                f"api_key={self._api_key!r}, timeout={self.timeout!r}, "
                f"max_retries={self.retry.max_retries!r})")

    __str__ = __repr__

    def close(self) -> None:
        """Nothing to close: LiteLLM keeps its own module-level HTTP clients."""

    async def aclose(self) -> None:
        self.close()

    # -- the Backend protocol -------------------------------------------------------------
    def completion(self, messages: Sequence[Mapping[str, Any]] | str, **sampling: Any) -> ModelResponse:
        kwargs, model = self._build(messages, sampling)
        litellm = self._litellm
        return self.retry.call(lambda n: self._parse(litellm.completion(**kwargs), kwargs, model),
                               lambda exc, n: self._to_backend_error(exc, model, n, kwargs))

    async def acompletion(self, messages: Sequence[Mapping[str, Any]] | str, **sampling: Any) -> ModelResponse:
        kwargs, model = self._build(messages, sampling)
        litellm = self._litellm

        async def attempt(n: int) -> ModelResponse:
            return self._parse(await litellm.acompletion(**kwargs), kwargs, model)

        return await self.retry.acall(attempt, lambda exc, n: self._to_backend_error(exc, model, n, kwargs))

    def context_window(self, model: str | None = None) -> int | None:
        name = model or self.model_name
        if name in self.context_windows:
            return self.context_windows[name]
        try:
            info = self._litellm.get_model_info(name)
        except Exception:  # noqa: BLE001 - not in the cost map
            return None
        value = info.get("max_input_tokens") or info.get("max_tokens")
        return int(value) if value else None

    def count_tokens(self, messages: Sequence[Mapping[str, Any]] | str) -> int:
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        try:
            return int(self._litellm.token_counter(model=self.model_name, messages=list(messages)))
        except Exception:  # noqa: BLE001 - no tokenizer for this model offline
            return estimate_token_count(sum(content_chars(m.get("content")) for m in messages))

    # -- request and response -------------------------------------------------------------
    def _build(self, messages: Sequence[Mapping[str, Any]] | str,
               sampling: dict[str, Any]) -> tuple[dict[str, Any], str]:
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        sampling = {k: v for k, v in sampling.items() if v is not None}
        if sampling.pop("stream", False):
            raise ConfigurationError("litellm: stream=True is not supported (the backend returns "
                                     "whole replies); drop 'stream' from the sampling arguments.")
        model = sampling.pop("model", None) or self.model_name
        kwargs: dict[str, Any] = {**self._call_kwargs, **sampling, "model": model,
                                  "messages": [dict(m) for m in messages], "num_retries": 0,
                                  "max_retries": 0}
        kwargs.setdefault("timeout", self.timeout)
        if self.api_base:
            kwargs.setdefault("api_base", self.api_base)
        if self._api_key:
            kwargs["api_key"] = self._api_key.value
        elif self._is_local():
            kwargs.setdefault("api_key", "not-needed")
        return kwargs, model

    def _parse(self, resp: Any, kwargs: dict[str, Any], model: str) -> ModelResponse:
        try:
            choice = resp.choices[0]
            message = choice.message
            text = message.content
        except (AttributeError, IndexError, TypeError) as exc:
            raise BadResponseError(f"litellm ({model}): the response has no choices[0].message: "
                                   f"{str(resp)[:200]}", backend="litellm", model=model) from exc
        if text is None:
            text = ""
        elif not isinstance(text, str):
            text = "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in text) \
                if isinstance(text, list) else str(text)
        raw = getattr(resp, "usage", None)
        prompt = getattr(raw, "prompt_tokens", None) if raw is not None else None
        completion = getattr(raw, "completion_tokens", None) if raw is not None else None
        # LiteLLM turns a missing usage object into zeros, so 0/0 is treated as missing too.
        if raw is None or (not prompt and not completion):
            usage = estimated_usage(kwargs["messages"], text)
            if not self._warned_estimate:
                self._warned_estimate = True
                log.warning("litellm: no usage came back for model %s; token counts are estimated "
                            "(characters / 4) and marked Usage.estimated=True. This is logged once "
                            "per backend.", model)
        else:
            usage = Usage(input_tokens=as_int(prompt), output_tokens=as_int(completion))
        usage.cost = self._cost(resp, raw, model, usage)
        return ModelResponse(text=text, usage=usage, model=model,
                             finish_reason=getattr(choice, "finish_reason", None))

    def _cost(self, resp: Any, raw: Any, model: str, usage: Usage) -> float | None:
        cost = self.user_prices.cost(model, usage.input_tokens, usage.output_tokens)
        if cost is not None:
            return cost
        cost = reported_cost(getattr(raw, "cost", None))  # OpenRouter through LiteLLM reports it
        if cost is not None:
            return cost
        if not usage.estimated:
            hidden = getattr(resp, "_hidden_params", None) or {}
            cost = reported_cost(hidden.get("response_cost"))
            if cost is None:
                try:
                    cost = reported_cost(self._litellm.completion_cost(completion_response=resp, model=model))
                except Exception:  # noqa: BLE001 - not in LiteLLM's cost map
                    cost = None
            if cost is not None:
                return cost
        return self.price_table.cost(model, usage.input_tokens, usage.output_tokens)

    # -- errors ---------------------------------------------------------------------------
    def _redact(self, text: str) -> str:
        return redact(text, self._api_key)

    def _to_backend_error(self, exc: BaseException, model: str, attempt: int,
                          kwargs: Mapping[str, Any]) -> BackendError:
        litellm = self._litellm
        kw: dict[str, Any] = {"backend": "litellm", "model": model}
        tries = f" (after {attempt + 1} attempts)" if attempt else ""
        provider = self._redact(_provider_message(exc))
        status = getattr(exc, "status_code", None)
        if isinstance(exc, litellm.Timeout) or type(exc).__name__ in ("Timeout", "APITimeoutError"):
            return BackendTimeoutError(f"litellm ({model}): no answer within the request timeout "
                                       f"({kwargs.get('timeout')} s){tries}: {provider}",
                                       provider_message=provider, **kw)
        if isinstance(exc, litellm.ContextWindowExceededError):
            return ContextWindowExceededError(f"litellm ({model}): the prompt does not fit the "
                                              f"context window: {provider}", status_code=status,
                                              provider_message=provider, **kw)
        if _is_undecodable_reply(provider):  # LiteLLM reports a 200 it cannot parse as a 500
            return BadResponseError(f"litellm ({model}): the server answered with something that "
                                    f"is not a valid completion: {provider[:300]}", status_code=200,
                                    provider_message=provider, **kw)
        if isinstance(exc, litellm.APIConnectionError) or _connection_failure(exc) or (
                status is None and isinstance(exc, (ConnectionError, OSError))):
            return BackendConnectionError(f"litellm ({model}): could not reach the provider or the "
                                          f"connection was reset{tries}: {provider}",
                                          provider_message=provider, **kw)
        if isinstance(exc, litellm.exceptions.UnsupportedParamsError):
            return ConfigurationError(f"litellm ({model}): {provider} (pass drop_params=True in "
                                      "backend_kwargs to drop unsupported sampling arguments)")  # type: ignore[return-value]
        if isinstance(status, int) and status >= 400:
            retry_after = None
            if status == 429:
                for source in (getattr(exc, "litellm_response_headers", None),
                               getattr(exc, "headers", None),
                               getattr(getattr(exc, "response", None), "headers", None)):
                    retry_after = parse_retry_after(source)
                    if retry_after is not None:
                        break
            body = getattr(exc, "body", None)
            _, code, etype = error_message_of(body)
            return error_for_status(status, provider, backend="litellm", model=model, code=code,
                                    error_type=etype, retry_after=retry_after, attempts=attempt + 1)
        if isinstance(exc, (ValueError, TypeError)) and "json" in str(exc).lower():
            return BadResponseError(f"litellm ({model}): invalid response: {provider}", **kw)
        return BackendError(f"litellm ({model}): {type(exc).__name__}: {provider}", **kw)
