"""The ``llamacpp`` backend: a GGUF model run by llama.cpp inside this process.

The backend is :class:`rlm_backend_openai.client.OpenAIBackend` pointed at the embedded server
(:mod:`rlm_backend_llamacpp.server`): the same request path, retries, error mapping and usage
parsing as every other OpenAI-compatible server, over a keep-alive connection to 127.0.0.1. What
it adds: finding and checking the model file, starting the server on first use, cost 0, the
context window of the loaded configuration, and a short system prompt for small models.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rlm.exceptions import (AuthenticationError, BackendError, ConfigurationError,
                            ContextWindowExceededError)
from rlm.types import ModelResponse
from rlm_backend_support import Secret
from rlm_backend_openai.client import OpenAIBackend

from . import prompts, weights
from .server import EmbeddedServer, ServerConfig, default_threads, get_server

__all__ = ["DEFAULT_SAMPLING", "LlamaCppBackend"]

#: Applied to every call unless the run's sampling arguments set them. A cap on the reply length
#: keeps a small model that loops from generating until the context is full; temperature 0 makes
#: runs repeatable.
DEFAULT_SAMPLING: dict[str, Any] = {"max_tokens": 512, "temperature": 0.0}

_PLACEHOLDER_URL = "http://127.0.0.1/v1"  # replaced by the server's address on first use


class LlamaCppBackend(OpenAIBackend):
    """A local GGUF model served by llama.cpp in this process (no key, no network).

    Model file: ``model_path`` (a GGUF file), else ``model_package`` (an installed distribution
    that ships one), else ``$RLM_LLAMACPP_MODEL``, else the bundled Qwen2.5-Coder-0.5B-Instruct
    Q4_K_M. ``model_sha256`` makes the backend check your file before loading it (the bundled
    one is always checked).
    """

    backend_name = "llamacpp"
    api_key_env = ""  # no user key: the embedded server's key is made per process

    def __init__(self, model_name: str | None = None, *, model_path: str | Path | None = None,
                 model_package: str | None = None, model_sha256: str | None = None,
                 n_ctx: int = 8192, n_threads: int | None = None, n_parallel: int = 1,
                 n_batch: int = 512, server_params: Mapping[str, Any] | None = None,
                 prompt_profile: str = "small", system_prompt: str | None = None,
                 sampling_defaults: Mapping[str, Any] | None = None, timeout: float = 600.0,
                 max_retries: int = 2, model: str | None = None, **kwargs: Any):
        # base_url: a llama.cpp server you run yourself (llama-server); nothing is started here,
        # and the prompt profile, zero cost and defaults still apply.
        self._external_url: str | None = kwargs.pop("base_url", None)
        # The key of that server goes to the OpenAI client below, which keeps it hidden; this
        # backend keeps no copy of its own.
        external_key: str | None = kwargs.pop("api_key", None)
        if self._external_url is None and external_key is not None:
            raise ConfigurationError(
                "llamacpp: api_key= is only for a server you run yourself (with base_url=); the "
                "embedded server makes its own private key.")
        if self._external_url is not None and (model_path or model_package or model_sha256):
            raise ConfigurationError(
                "llamacpp: with base_url= the server you run loads the model; drop model_path, "
                "model_package and model_sha256 (or drop base_url to use the embedded server).")
        if model_path is not None and model_package is not None:
            raise ConfigurationError("llamacpp: pass model_path or model_package, not both.")
        if prompt_profile not in prompts.PROFILES:
            raise ConfigurationError(
                f"llamacpp: prompt_profile={prompt_profile!r} is unknown; use one of "
                f"{sorted(prompts.PROFILES)} (or system_prompt= for your own text).")
        self.model_path = model_path
        self.model_package = model_package
        self.model_sha256 = model_sha256
        self._package_file: Path | None = None
        if model_package is not None:
            self._package_file = weights.package_gguf(model_package)
        served_name = self._guess_name()
        self._config_args: dict[str, Any] = {
            "n_ctx": n_ctx, "n_threads": default_threads() if n_threads is None else n_threads,
            "n_parallel": n_parallel, "n_batch": n_batch,
            "extra": tuple(sorted(dict(server_params or {}).items()))}
        ServerConfig(model_path="-", model_name=served_name, **self._config_args)  # validate now
        self.n_ctx = n_ctx
        if sampling_defaults is None:
            sampling_defaults = dict(DEFAULT_SAMPLING)
            if system_prompt is None and prompt_profile in prompts.STOP:
                # A small model tends to write the REPL's output itself and answer from it:
                # stop it where the profile's examples show the output.
                sampling_defaults["stop"] = list(prompts.STOP[prompt_profile])
        self.sampling_defaults = dict(sampling_defaults)
        #: The prompt profile: the kernel uses it instead of its default system prompt when the
        #: user gave no custom_system_prompt. None means the kernel's default.
        self.system_prompt: str | None = (system_prompt if system_prompt is not None
                                          else prompts.PROFILES[prompt_profile])
        self.prompt_profile = "custom" if system_prompt is not None else prompt_profile
        #: Per-request grammar and repetition guard of the small profile (None: requests go as
        #: they are). See :mod:`rlm_backend_llamacpp.prompts`.
        self._profile: prompts.SmallProfile | None = (prompts.SmallProfile()
                                                      if self.prompt_profile == "small" else None)
        #: How much of the context the kernel shows in its context message (0: none).
        self.context_preview_chars = prompts.PREVIEW_CHARS if self._profile is not None else 0
        #: llama.cpp's own timings of the latest calls (``prompt_n``: prompt tokens evaluated,
        #: ``cache_n``: taken from the KV cache, ``predicted_n``, ms figures), newest last.
        self.timings: collections.deque[dict[str, Any]] = collections.deque(maxlen=256)
        self._server: EmbeddedServer | None = None
        self._server_lock = threading.Lock()
        self.model_origin: str | None = None
        super().__init__(model_name, external_key, base_url=self._external_url or _PLACEHOLDER_URL,
                         timeout=timeout, max_retries=max_retries, model=model, **kwargs)
        self._served_name = served_name

    # -- configuration --------------------------------------------------------------------
    def _guess_name(self) -> str:
        if self._external_url is not None:
            return "llamacpp-server"
        if self._package_file is not None:
            path = self._package_file
        elif self.model_path is not None:
            path = Path(self.model_path)
        elif os.environ.get(weights.MODEL_ENV):
            path = Path(os.environ[weights.MODEL_ENV])
        else:
            return weights.BUNDLED.name
        name = path.name
        return name[:-5] if name.lower().endswith(".gguf") else name

    @property
    def uses_bundled_model(self) -> bool:
        """True when no model_path, model_package or $RLM_LLAMACPP_MODEL names another file."""
        return (self.model_path is None and self.model_package is None
                and not os.environ.get(weights.MODEL_ENV))

    def _default_model(self) -> str:
        return self._guess_name()

    def _resolve_api_key(self, api_key: str | None) -> str:
        if self._external_url is not None:
            return api_key or "not-needed"
        return "not-started"  # replaced by the server's own key when it starts

    @property
    def has_api_key(self) -> bool:
        return False

    @property
    def server(self) -> EmbeddedServer | None:
        """The embedded server, once a call has started it."""
        return self._server

    def __repr__(self) -> str:
        where = (self._external_url or (self._server.base_url if self._server is not None
                                         else "not started"))
        return (f"{type(self).__name__}(model_name={self.model_name!r}, model_path="
                f"{str(self.model_path) if self.model_path else None!r}, model_package="
                f"{self.model_package!r}, n_ctx={self.n_ctx}, n_threads="
                f"{self._config_args['n_threads']}, server={where!r})")

    __str__ = __repr__

    # -- the server ----------------------------------------------------------------------
    def start(self) -> EmbeddedServer:
        """Find and check the model file, and start (or reuse) the embedded server.

        Called by the first completion; call it yourself to pay the load time up front.
        """
        if self._external_url is not None:
            raise ConfigurationError(
                f"llamacpp: this backend uses the server at {self._external_url} (base_url=); "
                "there is no embedded server to start.")
        server = self._server
        if server is not None and server.running:
            return server
        with self._server_lock:
            server = self._server
            if server is not None and server.running:
                return server
            if self._package_file is not None:
                found = weights.resolve_model(model_path=self._package_file,
                                              model_sha256=self.model_sha256)
                resolved = weights.ResolvedModel(found.path, found.name,
                                                 f"model_package={self.model_package!r}")
            else:
                resolved = weights.resolve_model(model_path=self.model_path,
                                                 model_sha256=self.model_sha256)
            config = ServerConfig(model_path=str(resolved.path), model_name=self._served_name,
                                  **self._config_args)
            new = get_server(config)
            if server is not None:
                super().close()  # clients of a server that was shut down point at a dead port
            self.base_url = new.base_url
            self._api_key = Secret(new.api_key)
            self.model_origin = resolved.origin
            self._server = new
            return new

    def _ensure_current(self) -> None:
        if self._external_url is not None:
            return
        server = self._server
        if server is None or not server.running:
            self.start()

    # -- the Backend protocol ------------------------------------------------------------
    def _prepare(self, messages: Sequence[Mapping[str, Any]] | str,
                 sampling: dict[str, Any]) -> tuple[Sequence[Mapping[str, Any]] | str, dict[str, Any]]:
        """The request as sent: the profile's messages and grammar, then the defaults, then the
        caller's own sampling arguments (which win, ``grammar`` included)."""
        merged = dict(self.sampling_defaults)
        if self._profile is not None:
            adapted = self._profile.adapt(messages)
            messages = adapted.messages
            merged.update(adapted.sampling)
        if "max_completion_tokens" in sampling:
            merged.pop("max_tokens", None)
        merged.update(sampling)
        return messages, merged

    def completion(self, messages: Sequence[Mapping[str, Any]] | str, **sampling: Any) -> ModelResponse:
        self._ensure_current()
        messages, sampling = self._prepare(messages, sampling)
        return super().completion(messages, **sampling)

    async def acompletion(self, messages: Sequence[Mapping[str, Any]] | str, **sampling: Any) -> ModelResponse:
        server = self._server
        if self._external_url is None and (server is None or not server.running):
            # Loading takes seconds: do it off the event loop.
            await asyncio.to_thread(self.start)
        messages, sampling = self._prepare(messages, sampling)
        return await super().acompletion(messages, **sampling)

    def _parse(self, raw: bytes, body: dict[str, Any], model: str) -> ModelResponse:
        response = super()._parse(raw, body, model)
        try:  # llama.cpp adds its timings to every reply: the evidence of KV-cache reuse
            timings = json.loads(raw).get("timings")
        except (ValueError, TypeError, AttributeError):
            timings = None
        if isinstance(timings, dict):
            self.timings.append(timings)
        return response

    # -- extras the kernel looks up -------------------------------------------------------
    def cost(self, model: str, input_tokens: int, output_tokens: int) -> float:
        return 0.0  # a local model costs nothing per call; max_budget never stops it

    def context_window(self, model: str | None = None) -> int:
        """Tokens one request may use: n_ctx shared by the n_parallel slots."""
        return self.n_ctx // max(1, int(self._config_args["n_parallel"]))

    def _status_error(self, exc: Any, model: str, attempt: int) -> BackendError:
        err = super()._status_error(exc, model, attempt)
        if err.status_code in (401, 403) and self._external_url is None:
            return AuthenticationError(
                f"llamacpp ({model}): the embedded server refused this process's private key "
                f"(HTTP {err.status_code}: {err.provider_message}). It was probably restarted "
                "while a call was in flight; retry the call.", backend="llamacpp", model=model,
                status_code=err.status_code, provider_message=err.provider_message)
        body = getattr(exc, "body", None)
        error = body.get("error", body) if isinstance(body, dict) else body
        etype = error.get("type") if isinstance(error, dict) else None
        if etype == "exceed_context_size_error" or "context size" in str(err.provider_message or "").lower():
            return ContextWindowExceededError(
                f"llamacpp ({model}): the request does not fit the context window "
                f"({self.context_window()} tokens): {err.provider_message}. Pass a larger "
                "backend_kwargs={\"n_ctx\": ...} (memory grows with it), or shorten the prompt.",
                backend="llamacpp", model=model, status_code=err.status_code,
                provider_message=err.provider_message)
        return err
