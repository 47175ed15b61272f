"""The kit's pytest plugin, loaded through the ``pytest11`` entry point of rlm-testkit.

Fixtures (all function-scoped, all cleaned up after the test):

``rlm_plugin_manager``
    A strict, isolated :class:`rlm.PluginManager`: no entry point is loaded, only the
    first-party ``local`` environment and ``scripted`` backend are registered. Register the plugin
    under test with ``rlm_plugin_manager.register(my_plugin_module)`` and pass the manager to
    ``RLM(..., plugin_manager=rlm_plugin_manager)``.
``scripted_backend``
    A factory: ``scripted_backend(replies=[...], responder=None, **kwargs)`` builds the
    first-party scripted backend (closed after the test).
``openai_server``
    A started :class:`rlm_testkit.servers.OpenAICompatibleServer` on 127.0.0.1 whose replies the test
    scripts (``add_replies``, ``responder``, ``inject(Fault(...))``); stopped after the test. It
    starts with no replies: a request nobody scripted gets a 500 that says so.
``openai_provider``
    The same server wrapped as a :class:`rlm_testkit.providers.OpenAIServerProvider`.
``recording_sink``
    A :class:`rlm_testkit.RecordingSink` that records every event of a run.
``clean_plugin_env``
    The ``RLM_*_PLUGINS`` variables unset and the process-wide plugin manager reset for one test
    (reset again after it); it is the test's ``monkeypatch``, to set those variables with.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .helpers import RecordingSink, isolated_plugin_manager
from .providers import OpenAIServerProvider

_PLUGIN_ENV = ("RLM_LOAD_PLUGINS", "RLM_DISABLE_PLUGINS", "RLM_TRACE_PLUGINS", "RLM_STRICT_PLUGINS")


def pytest_report_header(config: pytest.Config) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"rlm-testkit {version('rlm-testkit')}"
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "rlm-testkit (not installed)"


@pytest.fixture
def rlm_plugin_manager(monkeypatch: pytest.MonkeyPatch) -> Any:
    for var in _PLUGIN_ENV:
        monkeypatch.delenv(var, raising=False)
    return isolated_plugin_manager(first_party=("local", "scripted"))


@pytest.fixture
def clean_plugin_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for var in _PLUGIN_ENV:
        monkeypatch.delenv(var, raising=False)
    from rlm import reset_plugin_manager

    reset_plugin_manager()
    yield monkeypatch
    reset_plugin_manager()


@pytest.fixture
def scripted_backend() -> Iterator[Callable[..., Any]]:
    from rlm_plugins.scripted.backend import ScriptedBackend

    built: list[Any] = []

    def make(replies: Any = None, responder: Any = None, **kwargs: Any) -> Any:
        backend = ScriptedBackend(replies=replies, responder=responder, **kwargs)
        built.append(backend)
        return backend

    yield make
    for backend in built:
        backend.close()


@pytest.fixture
def openai_server() -> Iterator[Any]:
    from rlm_testkit.servers import OpenAICompatibleServer

    with OpenAICompatibleServer(host="127.0.0.1") as server:
        yield server


@pytest.fixture
def openai_provider(openai_server: Any) -> OpenAIServerProvider:
    return OpenAIServerProvider(openai_server)


@pytest.fixture
def recording_sink() -> RecordingSink:
    return RecordingSink()
