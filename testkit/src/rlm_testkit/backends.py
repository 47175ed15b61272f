"""Standard tests for backend plugins.

    import rlm_backend_echo.plugin
    from rlm_testkit import OpenAICompatibleBackendTests

    class TestEchoBackend(OpenAICompatibleBackendTests):
        plugin = rlm_backend_echo.plugin          # the module your entry point names
        backend_name = "echo"                     # the name it registers
        backend_kwargs = {"model_name": "echo-1"}
        capabilities = {"cost": False}

:class:`BackendTests` works with any provider: a subclass returns a
:class:`~rlm_testkit.providers.ScriptedProvider` from the ``provider`` fixture.
:class:`OpenAICompatibleBackendTests` already does, with the kit's OpenAI-compatible server on
127.0.0.1, for backends that speak that wire format.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import secrets
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rlm.exceptions import BackendError, BackendTimeoutError, ConfigurationError
from rlm.protocols import Backend
from rlm.types import ModelResponse

from ._core import StandardTests, property_test, requires
from .helpers import (entry_point_modules, is_root_turn, isolated_plugin_manager,
                      load_plugin_object, scripted_rlm_reply)
from .imports import third_party_imports
from .providers import FAULTS, ScriptedProvider

MESSAGES = [{"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say hello."}]

_texts = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\r"),
                 min_size=1, max_size=200)
_tokens = st.integers(min_value=0, max_value=2_000_000)


def _bounded(call: Any, limit: float, name: str) -> dict[str, Any] | None:
    """Run ``call()`` in a daemon thread (named ``name``) for at most ``limit`` seconds:
    ``{"value": result}`` or ``{"error": exception}``, or ``None`` while it still runs (the thread
    is left behind: a backend that hangs fails its test instead of hanging the session)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # noqa: BLE001
            box["error"] = exc

    worker = threading.Thread(target=run, daemon=True, name=name)
    worker.start()
    worker.join(limit)
    return None if worker.is_alive() else box


class BackendTests(StandardTests, kit=True):
    """The contract of a backend: replies, usage, errors, sampling, timeouts, concurrency."""

    CAPABILITIES = {
        "async_calls": (True, "acompletion() makes a real asynchronous call"),
        "usage": (True, "the provider's token counts are reported exactly in ModelResponse.usage"),
        "usage_estimate": (True, "a reply without usage gets an estimate marked Usage.estimated"),
        "cost": (False, "the provider reports a per-call cost that lands in Usage.cost"),
        "sampling": (True, "sampling arguments (temperature, max_tokens) reach the provider"),
        "errors": (True, "provider failures raise the matching rlm.BackendError subclass"),
        "timeout": (True, "a request timeout makes a stalled call raise BackendTimeoutError"),
        "concurrency": (True, "concurrent calls (threads and asyncio) each get their own reply"),
        "strict_kwargs": (True, "unknown constructor arguments are rejected, not swallowed"),
        "lazy_import": (True, "importing the plugin module (and every module the distribution's "
                              "entry points name) imports neither the backend module nor any "
                              "package beyond the standard library, rlm and its own"),
        "api_key": (True, "the backend takes an API key (`api_key_argument`) and sends it with "
                          "every request"),
        "key_hidden": (False, "the API key never shows in the backend's repr, a log record or an "
                              "exception, even one quoting the provider's message that names it"),
        "retries": (False, "the backend retries what may succeed later (429 honouring Retry-After "
                           "up to its cap, 5xx, stalls past the timeout, reset connections) up to "
                           "its retry limit, and nothing else (`retry_kwargs`)"),
    }
    REQUIRED = {
        "plugin": "the plugin module (or its dotted name) that registers the backend",
        "backend_name": "the name the plugin registers",
    }

    plugin: ClassVar[Any] = None
    backend_name: ClassVar[str | None] = None
    backend_kwargs: ClassVar[dict[str, Any]] = {}
    #: Extra keyword arguments that turn retries off, so one scripted fault is one error.
    no_retry_kwargs: ClassVar[dict[str, Any]] = {}
    #: Sampling arguments the sampling test sends; each must reach the provider unchanged.
    sampling_args: ClassVar[dict[str, Any]] = {"temperature": 0.25, "max_tokens": 17}
    #: Upper bound in seconds for any single call in these tests.
    call_timeout: ClassVar[float] = 20.0
    #: The constructor argument that takes the API key (capability ``api_key``); the key tested
    #: is ``backend_kwargs[api_key_argument]`` when set, else a fresh one.
    api_key_argument: ClassVar[str] = "api_key"
    #: Top-level packages the plugin modules may import at load besides the standard library,
    #: rlm's own and their package (capability ``lazy_import``).
    plugin_imports_allowed: ClassVar[tuple[str, ...]] = ()
    #: The model name the provider must see in every request (``None``: ``backend.model_name``;
    #: a router sends ``openai/gpt-4o`` as ``gpt-4o``).
    provider_model_name: ClassVar[str | None] = None
    #: Seconds ``close()`` gets to have every connection to the provider closed.
    close_grace: ClassVar[float] = 3.0
    #: The backend's arguments for the settings the retry tests make (capability ``retries``):
    #: ``max_retries`` (retries after the first attempt), ``base_delay`` (the backoff's first
    #: wait, seconds) and ``max_delay`` (the cap on any wait, Retry-After included). A setting
    #: the backend lacks maps to ``None`` (the tests that need it skip).
    retry_kwargs: ClassVar[dict[str, str | None]] = {
        "max_retries": "max_retries", "base_delay": "retry_base_delay",
        "max_delay": "retry_max_delay"}

    # -- what a subclass may override ----------------------------------------------------
    @pytest.fixture
    def provider(self) -> ScriptedProvider:
        """The scripted provider the backend is connected to (override for your wire format)."""
        raise NotImplementedError(
            f"{type(self).__qualname__} must define a `provider` fixture returning an "
            "rlm_testkit.providers.ScriptedProvider, or subclass OpenAICompatibleBackendTests if "
            "the backend speaks the OpenAI chat-completions format.")

    def connect_kwargs(self, provider: ScriptedProvider) -> dict[str, Any]:
        """Keyword arguments that point the backend at ``provider``."""
        return provider.connect_kwargs()

    def timeout_kwargs(self, seconds: float) -> dict[str, Any]:
        """Keyword arguments that set the backend's request timeout to ``seconds``."""
        return {"timeout": seconds}

    def observed_params(self, backend: Any, provider: ScriptedProvider) -> dict[str, Any]:
        """The parameters of the last request, as the provider received them."""
        assert provider.requests, "the provider received no request"
        return provider.requests[-1].params

    # -- building ------------------------------------------------------------------------
    @pytest.fixture
    def backend_pm(self) -> Any:
        return isolated_plugin_manager(self.plugin, first_party=("local",))

    @pytest.fixture
    def make_backend(self, backend_pm: Any, provider: ScriptedProvider) -> Iterator[Any]:
        """``make_backend(**overrides)``: the backend through the plugin manager, closed after."""
        built: list[Any] = []

        def make(**overrides: Any) -> Any:
            kwargs = {**self.backend_kwargs, **self.connect_kwargs(provider),
                      **self.no_retry_kwargs, **overrides}
            backend = backend_pm.create("backend", self.backend_name, **kwargs)
            built.append(backend)
            return backend

        yield make
        for backend in built:
            try:
                backend.close()
            except Exception as exc:  # noqa: BLE001
                pytest.fail(f"{type(backend).__name__}.close() raised {exc!r}; close() must not raise")

    @pytest.fixture
    def backend(self, make_backend: Any) -> Any:
        return make_backend()

    def _run(self, coro: Any) -> Any:
        return asyncio.run(asyncio.wait_for(coro, self.call_timeout))

    # -- registration ----------------------------------------------------------------------
    def test_registers_its_name(self, backend_pm: Any) -> None:
        entry = backend_pm.entry("backend", self.backend_name)
        assert entry.kind == "backend"
        assert entry.name == self.backend_name or self.backend_name in entry.aliases
        assert entry.description, ("registrar.add(..., description='one line') is missing: "
                                   "`rlm backends` shows it")
        assert self.backend_name in backend_pm.names("backend")

    @requires("lazy_import")
    def test_plugin_module_is_cheap(self, backend_pm: Any) -> None:
        entry = backend_pm.entry("backend", self.backend_name)
        target = entry.target_name
        assert ":" in target, (f"the backend is registered as a callable ({target}); register a "
                               "'package.module:Class' string so the module is imported on use only")
        module = target.split(":", 1)[0]
        plugin = load_plugin_object(self.plugin)
        if not isinstance(plugin, types.ModuleType):
            pytest.fail(f"{type(self).__qualname__}.plugin is a {type(plugin).__name__}: the "
                        "lazy_import check imports the plugin in a fresh interpreter, so set "
                        "plugin to the plugin's module (or its dotted name)", pytrace=False)
        plugin_module = plugin.__name__
        code = (f"import sys, {plugin_module}; "
                f"sys.exit(3 if {module!r} in sys.modules else 0)")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=60, env=env)
        assert proc.returncode != 3, (f"importing {plugin_module} also imports {module}: the plugin "
                                      "module must stay cheap (import the backend module lazily)")
        assert proc.returncode == 0, proc.stderr
        modules = entry_point_modules(self.plugin)
        old = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = env["PYTHONPATH"]
        try:
            heavy = {m: pkgs for m, pkgs in third_party_imports(
                modules, allowed=self.plugin_imports_allowed).items() if pkgs}
        finally:
            if old is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = old
        assert not heavy, (
            "every `import rlm` that loads plugins imports these modules, and they load packages "
            "beyond the standard library, rlm and their own: "
            + "; ".join(f"{m} imports {', '.join(p)}" for m, p in heavy.items())
            + ". Import them inside the backend (or environment) module, which is loaded on use "
              "only (or list a light one in plugin_imports_allowed).")

    @requires("strict_kwargs")
    def test_rejects_unknown_arguments(self, backend_pm: Any, provider: ScriptedProvider) -> None:
        kwargs = {**self.backend_kwargs, **self.connect_kwargs(provider),
                  "surely_not_an_argument": 1}
        with pytest.raises(ConfigurationError, match="surely_not_an_argument"):
            backend = backend_pm.create("backend", self.backend_name, **kwargs)
            backend.close()

    def test_is_a_backend(self, backend: Any) -> None:
        assert isinstance(backend, Backend), (
            f"{type(backend).__name__} lacks part of rlm.protocols.Backend "
            "(model_name, completion, acompletion, close)")
        assert isinstance(backend.model_name, str) and backend.model_name
        assert asyncio.iscoroutinefunction(backend.acompletion), "acompletion must be `async def`"

    # -- replies ---------------------------------------------------------------------------
    def test_completion_returns_the_reply(self, backend: Any, provider: ScriptedProvider) -> None:
        @property_test(max_examples=12)
        @given(text=_texts)
        def check(text: str) -> None:
            provider.reply(text)
            response = backend.completion(MESSAGES)
            assert isinstance(response, ModelResponse)
            assert response.text == text

        check()

    @requires("async_calls")
    def test_acompletion_returns_the_reply(self, backend: Any, provider: ScriptedProvider) -> None:
        provider.reply("async hello")
        response = self._run(backend.acompletion(MESSAGES))
        assert isinstance(response, ModelResponse)
        assert response.text == "async hello"

    @requires("async_calls")
    def test_acompletion_does_not_block_the_event_loop(self, backend: Any,
                                                       provider: ScriptedProvider) -> None:
        """While ``acompletion`` waits for a slow provider, other tasks on the loop keep
        running (a synchronous call inside ``async def`` stalls every task of the run)."""
        provider.stall(0.6)
        provider.reply("slow hello")

        async def call_and_tick() -> tuple[Any, int]:
            ticks = 0

            async def tick() -> None:
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.02)
                    ticks += 1

            ticker = asyncio.create_task(tick())
            await asyncio.sleep(0)  # let the ticker start
            try:
                return await backend.acompletion(MESSAGES), ticks
            finally:
                ticker.cancel()

        response, ticks = self._run(call_and_tick())
        assert response.text == "slow hello"
        assert ticks >= 5, (f"the event loop ran {ticks} times during a 0.6 s call: acompletion "
                            "blocks it; await an async client or run the blocking call in a "
                            "thread (asyncio.to_thread), as rlm.plugin.BaseBackend does")

    def test_messages_reach_the_provider_in_order(self, backend: Any,
                                                  provider: ScriptedProvider) -> None:
        messages = [{"role": "system", "content": "sys"}, {"role": "user", "content": "one"},
                    {"role": "assistant", "content": "two"}, {"role": "user", "content": "three"}]
        provider.reply("ok")
        backend.completion(messages)
        sent = provider.requests[-1].messages
        assert [(m.get("role"), m.get("content")) for m in sent] == [
            (m["role"], m["content"]) for m in messages]

    # -- what the provider saw, and what it said -------------------------------------------
    @staticmethod
    def _observed(provider: ScriptedProvider, what: str, how: str) -> None:
        if what not in provider.observes:
            pytest.skip(f"the provider {type(provider).__name__} does not record {how} (its "
                        f"`observes` lacks {what!r})")

    @staticmethod
    def _supports(method: Any, *names: str) -> None:
        params = inspect.signature(method).parameters
        missing = [n for n in names if n not in params and not any(
            p.kind is p.VAR_KEYWORD for p in params.values())]
        if missing:
            pytest.skip(f"{type(method.__self__).__name__}.{method.__name__}() takes no "
                        f"{', '.join(missing)}= (rlm_testkit.ScriptedProvider documents it)")

    def test_the_configured_model_is_sent(self, backend: Any, provider: ScriptedProvider) -> None:
        """Every request names the configured model (``backend.model_name``, or the class
        setting ``provider_model_name``), synchronous and asynchronous calls alike."""
        self._observed(provider, "model", "the model each request names")
        provider.reply("one")
        backend.completion(MESSAGES)
        if self.has("async_calls"):
            provider.reply("two")
            self._run(backend.acompletion(MESSAGES))
        sent = [provider.model_of(r) for r in provider.requests]
        expected = self.provider_model_name or backend.model_name
        assert sent and all(m == expected for m in sent), (
            f"the backend is configured for model {expected!r} but its requests named "
            f"{sent!r}: put the model in every request")

    def test_the_reply_keeps_the_finish_reason_and_names_the_model(
            self, backend: Any, provider: ScriptedProvider) -> None:
        """``ModelResponse.finish_reason`` is the reason the provider gave (a reply cut at
        ``max_tokens``: ``"length"`` or the provider's own word), and ``ModelResponse.model``
        names the model: the one requested (the kernel keys a run's usage by it) or the one the
        provider says answered, never empty or another."""
        self._supports(provider.reply, "model", "finish_reason")
        calls = [backend.completion]
        if self.has("async_calls"):
            calls.append(lambda m: self._run(backend.acompletion(m)))
        for call in calls:
            provider.reply("cut off", model="kit-served-model-7", finish_reason="length")
            response = call(MESSAGES)
            assert str(response.finish_reason).lower() in ("length", "max_tokens"), (
                f"the provider stopped at max_tokens; ModelResponse.finish_reason is "
                f"{response.finish_reason!r}: pass the provider's finish reason through")
            assert response.model in (backend.model_name, "kit-served-model-7"), (
                f"ModelResponse.model is {response.model!r}; it must name the model requested "
                f"({backend.model_name!r}) or the one the provider says answered")

    @requires("api_key")
    def test_the_api_key_is_sent(self, make_backend: Any, provider: ScriptedProvider) -> None:
        """The API key given to the backend reaches the provider with every request (a bearer
        token, or the provider's own header or query parameter)."""
        self._observed(provider, "headers", "request headers")
        key = self.backend_kwargs.get(self.api_key_argument) or f"rlm-kit-{secrets.token_hex(8)}"
        backend = make_backend(**{self.api_key_argument: key})
        provider.reply("keyed")
        backend.completion(MESSAGES)
        if self.has("async_calls"):
            provider.reply("keyed")
            self._run(backend.acompletion(MESSAGES))
        for request in provider.requests:
            assert key in provider.credentials_of(request), (
                f"the backend was given {self.api_key_argument}={key!r} but a request carried "
                f"{sorted(provider.credentials_of(request)) or 'no credentials'}: send the key "
                "(for OpenAI-compatible servers: Authorization: Bearer <key>)")

    @requires("api_key", "key_hidden")
    def test_the_api_key_stays_hidden(self, make_backend: Any, provider: ScriptedProvider,
                                      caplog: pytest.LogCaptureFixture) -> None:
        """The API key never shows in ``repr``/``str`` of the backend or of its attributes, in a
        log record (DEBUG included, over a call that is retried and whose usage is estimated),
        or in an exception, even when the provider's error message quotes the key."""
        self._supports(provider.fail, "message")
        key = self.backend_kwargs.get(self.api_key_argument) or f"rlm-kit-{secrets.token_hex(8)}"
        backend = make_backend(**{self.api_key_argument: key})
        for shown in (repr(backend), str(backend), repr(getattr(backend, "__dict__", {}))):
            assert key not in shown, (
                f"the backend shows its API key: {shown[:300]!r}; hold it in a "
                "rlm_backend_support.Secret (its repr is '***')")
        provider.respond_with(self._echo)
        caller = backend
        if self.has("retries"):
            self._expect_fault(provider, "server")
            provider.fail("server")
            keyed: dict[str, Any] = {self.api_key_argument: key}
            caller = self._retrying(make_backend, max_retries=1, **keyed)
        provider.reply("no usage", usage=False)
        with caplog.at_level(logging.DEBUG):
            try:
                caller.completion(MESSAGES)
            except BackendError:
                pass  # whether it retries is test_server_errors_are_retried's business
        leaked = sorted({r.name for r in caplog.records if key in r.getMessage()})
        assert not leaked, (f"log records of {', '.join(leaked)} contain the API key: redact it "
                            "(rlm_backend_support.redact) before logging")
        for kind in ("auth", "server"):
            self._expect_fault(provider, kind)
            provider.fail(kind, message=f"the key {key} is not valid here")
            with pytest.raises(BackendError) as info:
                backend.completion(MESSAGES)
            err = info.value
            for shown in (str(err), repr(err), err.provider_message or ""):
                assert key not in shown, (
                    f"the provider's {kind!r} error quoted the key and the "
                    f"{type(err).__name__} repeats it: {shown[:300]!r}; redact the key "
                    "(rlm_backend_support.redact) from the provider's message")

    @requires("errors")
    @pytest.mark.parametrize("kind", ["auth", "rate_limit", "server"])
    def test_the_providers_error_message_is_kept(self, backend: Any, provider: ScriptedProvider,
                                                 kind: str) -> None:
        """The kernel exception of a failed call contains the provider's own error message (the
        user's only clue to a wrong key, an exhausted quota, an outage)."""
        self._supports(provider.fail, "message")
        message = f"kit {kind} fault: project kit-{secrets.token_hex(4)} says no (from the provider)"
        self._expect_fault(provider, kind)
        provider.fail(kind, message=message)
        with pytest.raises(BackendError) as info:
            backend.completion(MESSAGES)
        assert message in str(info.value), (
            f"the provider answered {message!r}; the {type(info.value).__name__} says "
            f"{str(info.value)!r}: keep the provider's message in the exception")

    # -- usage -----------------------------------------------------------------------------
    @requires("usage")
    def test_usage_is_reported(self, backend: Any, provider: ScriptedProvider) -> None:
        @property_test(max_examples=12)
        @given(input_tokens=_tokens, output_tokens=_tokens)
        def check(input_tokens: int, output_tokens: int) -> None:
            provider.reply("counted", input_tokens=input_tokens, output_tokens=output_tokens)
            usage = backend.completion(MESSAGES).usage
            assert (usage.input_tokens, usage.output_tokens) == (input_tokens, output_tokens), (
                f"the provider reported {input_tokens} input / {output_tokens} output tokens, "
                f"the backend returned {usage.input_tokens} / {usage.output_tokens}")
            assert usage.estimated is False

        check()

    @requires("usage", "async_calls")
    def test_async_usage_is_reported(self, backend: Any, provider: ScriptedProvider) -> None:
        provider.reply("counted", input_tokens=321, output_tokens=54)
        usage = self._run(backend.acompletion(MESSAGES)).usage
        assert (usage.input_tokens, usage.output_tokens) == (321, 54)

    @requires("usage_estimate")
    def test_missing_usage_is_estimated(self, backend: Any, provider: ScriptedProvider) -> None:
        provider.reply("no usage here", usage=False)
        usage = backend.completion(MESSAGES).usage
        assert usage.estimated is True, "a reply without usage must be marked Usage.estimated=True"
        assert usage.input_tokens > 0 and usage.output_tokens > 0

    @requires("cost")
    def test_cost_is_reported(self, backend: Any, provider: ScriptedProvider) -> None:
        provider.reply("priced", input_tokens=10, output_tokens=5, cost=0.0125)
        usage = backend.completion(MESSAGES).usage
        assert usage.cost == pytest.approx(0.0125)

    # -- sampling --------------------------------------------------------------------------
    @requires("sampling")
    def test_sampling_args_are_passed_through(self, backend: Any,
                                              provider: ScriptedProvider) -> None:
        provider.reply("sampled")
        backend.completion(MESSAGES, **self.sampling_args)
        params = self.observed_params(backend, provider)
        for key, value in self.sampling_args.items():
            assert params.get(key) == value, (
                f"sampling argument {key}={value!r} did not reach the provider (it saw "
                f"{params.get(key)!r})")

    @requires("sampling", "async_calls")
    def test_async_sampling_args_are_passed_through(self, backend: Any,
                                                    provider: ScriptedProvider) -> None:
        provider.reply("sampled")
        self._run(backend.acompletion(MESSAGES, **self.sampling_args))
        params = self.observed_params(backend, provider)
        for key, value in self.sampling_args.items():
            assert params.get(key) == value

    # -- errors ----------------------------------------------------------------------------
    def _expect_fault(self, provider: ScriptedProvider, kind: str) -> type[BackendError]:
        if kind not in provider.fault_kinds:
            pytest.skip(f"the provider {type(provider).__name__} cannot produce a {kind!r} fault")
        return FAULTS[kind]

    @requires("errors")
    @pytest.mark.parametrize("kind", sorted(FAULTS))
    def test_errors_map_to_kernel_exceptions(self, backend: Any, provider: ScriptedProvider,
                                             kind: str) -> None:
        expected = self._expect_fault(provider, kind)
        provider.fail(kind)
        with pytest.raises(BackendError) as info:
            backend.completion(MESSAGES)
        assert isinstance(info.value, expected), (
            f"a {kind!r} failure must raise rlm.{expected.__name__}, got "
            f"{type(info.value).__name__}: {info.value}")
        assert str(info.value), "the error message is empty"

    @requires("errors", "async_calls")
    @pytest.mark.parametrize("kind", sorted(FAULTS))
    def test_async_errors_map_to_kernel_exceptions(self, backend: Any,
                                                   provider: ScriptedProvider, kind: str) -> None:
        expected = self._expect_fault(provider, kind)
        provider.fail(kind)
        with pytest.raises(BackendError) as info:
            self._run(backend.acompletion(MESSAGES))
        assert isinstance(info.value, expected), (
            f"a {kind!r} failure must raise rlm.{expected.__name__}, got "
            f"{type(info.value).__name__}: {info.value}")

    # -- timeouts --------------------------------------------------------------------------
    #: The request timeout the timeout tests set, and how long they wait for it to fire.
    timeout_seconds: ClassVar[float] = 0.5
    timeout_grace: ClassVar[float] = 2.5

    def _expect_timeout(self, call: Any) -> None:
        """Run ``call`` in a daemon thread: a backend that ignores its timeout fails, never hangs."""
        t0 = time.perf_counter()
        box = _bounded(call, self.timeout_seconds + self.timeout_grace, "rlm-testkit-timeout")
        elapsed = time.perf_counter() - t0
        if box is None:
            pytest.fail(f"a call with a {self.timeout_seconds} s request timeout was still running "
                        f"after {elapsed:.1f} s: the backend does not honour its timeout")
        if "error" not in box:
            pytest.fail(f"a call that the provider stalled returned {box.get('value')!r} instead of "
                        f"raising BackendTimeoutError after {self.timeout_seconds} s")
        if not isinstance(box["error"], BackendTimeoutError):
            raise AssertionError(f"a timed-out call must raise rlm.BackendTimeoutError, got "
                                 f"{type(box['error']).__name__}: {box['error']}") from box["error"]

    @requires("timeout")
    def test_request_timeout_is_honoured(self, make_backend: Any,
                                         provider: ScriptedProvider) -> None:
        backend = make_backend(**self.timeout_kwargs(self.timeout_seconds))
        provider.stall(self.timeout_seconds + self.timeout_grace + 1)
        provider.reply("too late")
        self._expect_timeout(lambda: backend.completion(MESSAGES))

    @requires("timeout", "async_calls")
    def test_async_request_timeout_is_honoured(self, make_backend: Any,
                                               provider: ScriptedProvider) -> None:
        backend = make_backend(**self.timeout_kwargs(self.timeout_seconds))
        provider.stall(self.timeout_seconds + self.timeout_grace + 1)
        provider.reply("too late")
        self._expect_timeout(lambda: asyncio.run(backend.acompletion(MESSAGES)))

    # -- retries ---------------------------------------------------------------------------
    def _retrying(self, make_backend: Any, *, max_retries: int = 2, base_delay: float = 0.001,
                  max_delay: float | None = None, **extra: Any) -> Any:
        """The backend with these retry settings (``retry_kwargs`` names its arguments)."""
        kwargs: dict[str, Any] = {}
        for knob, value in (("max_retries", max_retries), ("base_delay", base_delay),
                            ("max_delay", max_delay)):
            arg = self.retry_kwargs.get(knob)
            if value is not None and arg:
                kwargs[arg] = value
            elif value is not None and knob != "base_delay":
                pytest.skip(f"{type(self).__qualname__}.retry_kwargs maps {knob!r} to no argument")
        return make_backend(**kwargs, **extra)

    def _finishes(self, call: Any, limit: float, what: str) -> Any:
        """``call()`` in a daemon thread: its value (or its error, raised), failing after ``limit``
        seconds instead of hanging."""
        box = _bounded(call, limit, "rlm-testkit-retry")
        if box is None:
            pytest.fail(f"{what}: the call was still running after {limit:.1f} s")
        if "error" in box:
            raise box["error"]
        return box["value"]

    def _count(self, provider: ScriptedProvider, expected: int, why: str) -> None:
        got = len(provider.requests)
        assert got == expected, f"the provider received {got} request(s), expected {expected}: {why}"

    def _echoed(self, response: Any, provider: ScriptedProvider, requests: int, why: str) -> None:
        """``response`` is the provider's echo, reached in ``requests`` requests."""
        assert response.text == self._echo(MESSAGES)
        self._count(provider, requests, why)

    def _rate_limited(self, provider: ScriptedProvider, retry_after: float, times: int = 1) -> None:
        """The next ``times`` requests get a 429 asking to wait ``retry_after`` s; then echoes."""
        self._supports(provider.fail, "retry_after")
        provider.respond_with(self._echo)
        for _ in range(times):
            provider.fail("rate_limit", retry_after=retry_after)

    @requires("retries")
    def test_retry_after_is_honoured(self, make_backend: Any, provider: ScriptedProvider) -> None:
        """A 429 asking to wait 0.3 s (with the backoff itself at 0) is retried after 0.3 s."""
        self._rate_limited(provider, 0.3)
        backend = self._retrying(make_backend, base_delay=0.0)
        t0 = time.perf_counter()
        response = self._finishes(lambda: backend.completion(MESSAGES), self.call_timeout,
                                  "a 429 with Retry-After: 0.3")
        elapsed = time.perf_counter() - t0
        self._echoed(response, provider, 2, "a 429 is retried once the wait is over")
        assert elapsed >= 0.28, (f"the provider asked for 0.3 s (Retry-After) and the retry came "
                                 f"after {elapsed:.2f} s: wait what the provider asks")

    @requires("retries")
    def test_retry_after_is_capped(self, make_backend: Any, provider: ScriptedProvider) -> None:
        """A Retry-After of an hour waits no longer than the backend's maximum delay (0.05 s)."""
        self._rate_limited(provider, 3600)
        backend = self._retrying(make_backend, max_delay=0.05)
        response = self._finishes(lambda: backend.completion(MESSAGES), 3.0,
                                  "Retry-After: 3600 with a maximum delay of 0.05 s (cap the wait)")
        self._echoed(response, provider, 2, "a 429 is retried")

    @requires("retries")
    def test_rate_limit_after_max_retries_raises(self, make_backend: Any,
                                                 provider: ScriptedProvider) -> None:
        """When every attempt is rate limited, the last 429 raises RateLimitError, keeping the
        provider's Retry-After in ``retry_after``, after exactly ``1 + max_retries`` attempts."""
        from rlm.exceptions import RateLimitError

        self._rate_limited(provider, 0.01, times=4)
        backend = self._retrying(make_backend, max_retries=2)
        with pytest.raises(RateLimitError) as info:
            self._finishes(lambda: backend.completion(MESSAGES), self.call_timeout,
                           "four 429s with max_retries=2")
        self._count(provider, 3, "max_retries=2 is one attempt and two retries")
        assert info.value.retry_after == pytest.approx(0.01), (
            f"RateLimitError.retry_after is {info.value.retry_after!r}; the provider asked for "
            "0.01 s: keep it (the caller's own backoff reads it)")

    @requires("retries")
    @pytest.mark.parametrize("status", [500, 503])
    def test_server_errors_are_retried(self, make_backend: Any, provider: ScriptedProvider,
                                       status: int) -> None:
        """A 5xx is retried; when every attempt fails, ServerError after ``1 + max_retries``."""
        from rlm.exceptions import ServerError

        self._supports(provider.fail, "status")
        self._expect_fault(provider, "server")
        provider.respond_with(self._echo)
        provider.fail("server", status=status)
        assert self._retrying(make_backend).completion(MESSAGES).text == self._echo(MESSAGES)
        self._count(provider, 2, f"an HTTP {status} is retried")
        for _ in range(3):
            provider.fail("server", status=status)
        with pytest.raises(ServerError):
            self._retrying(make_backend, max_retries=2).completion(MESSAGES)
        self._count(provider, 2 + 3, "max_retries=2 is one attempt and two retries")

    @requires("retries", "timeout")
    def test_stall_is_a_timeout_and_retried(self, make_backend: Any,
                                            provider: ScriptedProvider) -> None:
        """A request that outlives the timeout is abandoned and retried (the retry answers)."""
        provider.respond_with(self._echo)
        provider.stall(self.timeout_seconds + self.timeout_grace + 1)
        backend = self._retrying(make_backend, max_retries=1,
                                 **self.timeout_kwargs(self.timeout_seconds))
        response = self._finishes(lambda: backend.completion(MESSAGES),
                                  self.timeout_seconds + self.timeout_grace,
                                  f"a stalled request with a {self.timeout_seconds} s timeout "
                                  "and max_retries=1 (time out, then retry)")
        self._echoed(response, provider, 2, "the stalled request times out and is retried")

    @requires("retries")
    def test_reset_connection_is_retried(self, make_backend: Any,
                                         provider: ScriptedProvider) -> None:
        """A connection reset is retried; when every attempt is reset, BackendConnectionError."""
        from rlm.exceptions import BackendConnectionError

        self._expect_fault(provider, "connection")
        provider.respond_with(self._echo)
        provider.fail("connection")
        assert self._retrying(make_backend).completion(MESSAGES).text == self._echo(MESSAGES)
        self._count(provider, 2, "a reset connection is retried")
        provider.fail("connection")
        provider.fail("connection")
        with pytest.raises(BackendConnectionError):
            self._retrying(make_backend, max_retries=1).completion(MESSAGES)

    @requires("retries", "async_calls")
    def test_async_calls_retry(self, make_backend: Any, provider: ScriptedProvider) -> None:
        """``acompletion`` retries a 429, a 5xx and a reset like ``completion`` does."""
        provider.respond_with(self._echo)
        for kind in ("rate_limit", "server", "connection"):
            self._expect_fault(provider, kind)
            provider.fail(kind)
        response = self._run(self._retrying(make_backend, max_retries=3).acompletion(MESSAGES))
        self._echoed(response, provider, 4, "three retryable failures, then the answer")

    @requires("retries")
    @pytest.mark.parametrize("kind", ["auth", "bad_response", "context_window"])
    def test_what_cannot_succeed_is_not_retried(self, make_backend: Any,
                                                provider: ScriptedProvider, kind: str) -> None:
        """A wrong key, a malformed answer or a too-long prompt raises at once (a retry would
        answer here: the provider only fails once)."""
        expected = self._expect_fault(provider, kind)
        provider.respond_with(self._echo)
        provider.fail(kind)
        with pytest.raises(expected):
            self._retrying(make_backend).completion(MESSAGES)
        self._count(provider, 1, f"a {kind!r} failure cannot succeed on retry: raise it at once")

    # -- concurrency -----------------------------------------------------------------------
    @staticmethod
    def _echo(messages: list[dict[str, Any]]) -> str:
        return "re: " + str(messages[-1].get("content"))

    @requires("concurrency", "async_calls")
    def test_concurrent_async_calls_keep_their_replies(self, backend: Any,
                                                       provider: ScriptedProvider) -> None:
        provider.respond_with(self._echo)

        async def many() -> list[Any]:
            return await asyncio.gather(*(
                backend.acompletion([{"role": "user", "content": f"prompt {i}"}]) for i in range(16)))

        replies = self._run(many())
        assert [r.text for r in replies] == [f"re: prompt {i}" for i in range(16)]

    @requires("concurrency")
    def test_concurrent_threaded_calls_keep_their_replies(self, backend: Any,
                                                          provider: ScriptedProvider) -> None:
        provider.respond_with(self._echo)
        with ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(
                lambda i: backend.completion([{"role": "user", "content": f"thread {i}"}]), range(16)))
        assert [r.text for r in replies] == [f"re: thread {i}" for i in range(16)]

    # -- lifecycle and the loop ------------------------------------------------------------
    def test_close_is_idempotent(self, make_backend: Any, provider: ScriptedProvider) -> None:
        backend = make_backend()
        provider.reply("before close")
        backend.completion(MESSAGES)
        backend.close()
        backend.close()

    def test_close_releases_connections(self, make_backend: Any,
                                        provider: ScriptedProvider) -> None:
        """After ``close()`` (following synchronous and asynchronous calls) no connection of the
        backend to the provider stays open."""
        self._observed(provider, "connections", "open connections")
        backend = make_backend()
        provider.reply("sync")
        backend.completion(MESSAGES)
        if self.has("async_calls"):
            provider.reply("async")
            self._run(backend.acompletion(MESSAGES))
        backend.close()
        deadline = time.monotonic() + self.close_grace
        while (left := provider.open_connections()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert left == 0, (f"{left} connection(s) to the provider still open {self.close_grace} s "
                           "after close(): close() must close the backend's HTTP clients")

    def test_runs_an_rlm_completion(self, backend_pm: Any, provider: ScriptedProvider) -> None:
        from rlm import RLM

        provider.reply(scripted_rlm_reply("forty-two"), input_tokens=120, output_tokens=30)
        provider.respond_with(lambda m: scripted_rlm_reply("late") if is_root_turn(m) else "sub")
        kwargs = {**self.backend_kwargs, **self.connect_kwargs(provider), **self.no_retry_kwargs}
        rlm = RLM(backend=self.backend_name, backend_kwargs=kwargs, environment="local",
                  max_iterations=3, plugin_manager=backend_pm)
        try:
            result = rlm.completion("the context", root_prompt="What is the answer?")
        finally:
            rlm.close()
        assert result.response == "forty-two"
        usage = result.usage_summary
        assert usage.total_calls == 1
        if self.has("usage"):
            assert (usage.total_input_tokens, usage.total_output_tokens) == (120, 30), (
                "the run's usage_summary must add up what the backend reported")


class OpenAICompatibleBackendTests(BackendTests, kit=True):
    """:class:`BackendTests` against the kit's OpenAI-compatible server on 127.0.0.1.

    The backend is built with ``base_url=<server>/v1`` (override :meth:`connect_kwargs` if it
    takes another argument).
    """

    @pytest.fixture
    def provider(self, openai_provider: Any) -> ScriptedProvider:
        return openai_provider
