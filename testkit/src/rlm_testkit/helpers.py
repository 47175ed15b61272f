"""Objects behind the kit's fixtures, usable without pytest too.

* :func:`isolated_plugin_manager`: a strict :class:`rlm.PluginManager` that loads no entry point
  and registers only the plugins you give it (plus, on request, the first-party ``local``
  environment and ``scripted`` backend the end-to-end tests run with).
* :class:`RecordingSink`: a logger sink that keeps every event of a run, thread-safe.
* :func:`scripted_rlm_reply`: a ```` ```repl ```` reply that finishes a run with a given answer.
* :func:`backend_factory`, :func:`clean_env_fixture`, :func:`echo_server_fixture`: the fixtures
  of a backend's own tests (build backends with test defaults and close them; keep the
  developer's credentials out; a kit server answering ``"echo: <last message>"``).
"""

from __future__ import annotations

import contextlib
import importlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from types import ModuleType
from typing import Any, TypeVar

from rlm import events as E

#: First-party plugin modules the kit can add to an isolated manager, by the name they register.
FIRST_PARTY = {
    "local": "rlm_plugins.local.plugin",
    "scripted": "rlm_plugins.scripted.plugin",
}

EventT = TypeVar("EventT", bound=E.Event)


def load_plugin_object(plugin: object) -> object:
    """``plugin`` itself, or the module a ``"package.module"`` string names."""
    if isinstance(plugin, str):
        try:
            return importlib.import_module(plugin)
        except ImportError as exc:
            raise ImportError(f"rlm_testkit: cannot import the plugin module {plugin!r} ({exc}); "
                              "install the distribution under test (pip install -e .).") from exc
    return plugin


def entry_point_modules(plugin: object) -> list[str]:
    """The module of ``plugin`` and every module named by an ``rlm`` entry point of the
    distribution that ships it (all are imported whenever ``rlm`` loads plugins), in order,
    without repeats. A plugin that is not installed (no entry point names its package) gives its
    own module only."""
    from rlm.plugin import iter_entry_points

    obj = load_plugin_object(plugin)
    own = obj.__name__ if isinstance(obj, ModuleType) else type(obj).__module__
    modules = [own]
    top = own.split(".")[0]
    dists: set[str] = set()
    eps = iter_entry_points()
    for ep in eps:
        if ep.value.split(":")[0].split(".")[0] == top and ep.dist is not None:
            dists.add(ep.dist.name)
    for ep in eps:
        if ep.dist is not None and ep.dist.name in dists:
            modules.append(ep.value.split(":")[0])
    return list(dict.fromkeys(modules))


def isolated_plugin_manager(*plugins: object, first_party: Iterable[str] = (),
                            strict: bool = True) -> Any:
    """A :class:`rlm.PluginManager` that sees only ``plugins`` (modules, module names or
    objects with hook implementations) and the first-party plugins named in ``first_party``
    (``"local"``, ``"scripted"``). First-party plugins are registered first, so the plugins under
    test win a name clash only when ``strict=False`` (in strict mode a clash raises)."""
    from rlm import PluginManager

    pm = PluginManager(load_entrypoints=False, strict=strict)
    objects = [load_plugin_object(p) for p in plugins]
    for name in first_party:
        if name not in FIRST_PARTY:
            raise ValueError(f"unknown first-party plugin {name!r}; choose from "
                             f"{', '.join(sorted(FIRST_PARTY))}")
        module = importlib.import_module(FIRST_PARTY[name])
        if module not in objects:
            pm.register(module, name=f"rlm-plugins:{name}")
    for obj in objects:
        pm.register(obj, name=_plugin_name(obj))
    return pm


def _plugin_name(obj: object) -> str:
    if isinstance(obj, ModuleType):
        return obj.__name__
    return getattr(obj, "__name__", None) or f"{type(obj).__module__}.{type(obj).__qualname__}"


def scripted_rlm_reply(answer: str) -> str:
    """A root-model reply whose ```` ```repl ```` cell sets ``answer`` and finishes the run."""
    return f"```repl\nanswer['content'] = {answer!r}\nanswer['ready'] = True\n```"


@contextlib.contextmanager
def backend_factory(backend_class: Callable[..., Any],
                    **defaults: Any) -> Iterator[Callable[..., Any]]:
    """``make(cls=backend_class, **kwargs)``: a backend built with ``defaults`` under
    ``kwargs``; on leaving the block every backend built is closed (in the order built).

    A backend's ``make_backend`` fixture is ``with backend_factory(MyBackend, base_url=...,
    retry_base_delay=0.001) as make: yield make``. Not thread-safe: build from the test's thread.
    """
    built: list[Any] = []

    def make(cls: Callable[..., Any] | None = None, **kwargs: Any) -> Any:
        backend = (cls or backend_class)(**{**defaults, **kwargs})
        built.append(backend)
        return backend

    try:
        yield make
    finally:
        for backend in built:
            backend.close()


def clean_env_fixture(*names: str) -> Any:
    """An autouse pytest fixture unsetting the environment variables ``names`` for each test, so
    no real credential or endpoint of the developer's shell reaches the backend under test.
    Assign it in a conftest or test module: ``_clean_env = clean_env_fixture("MY_API_KEY")``."""
    import pytest

    @pytest.fixture(autouse=True)
    def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
        for name in names:
            monkeypatch.delenv(name, raising=False)

    return _clean_env


def echo_reply(messages: list[dict[str, Any]], body: Any = None) -> str:
    """A responder for the kit's servers: ``"echo: <content of the last message>"``."""
    return f"echo: {messages[-1]['content']}"


def echo_server_fixture(server_class: Callable[..., Any], **kwargs: Any) -> Any:
    """A pytest fixture: ``server_class(responder=echo_reply, **kwargs)`` (a server of
    :mod:`rlm_testkit.servers`) started for the test and stopped after it. Assign it under the
    fixture's name: ``server = echo_server_fixture(OpenAICompatibleServer)``."""
    import pytest

    @pytest.fixture
    def server() -> Iterator[Any]:
        with server_class(responder=echo_reply, **kwargs) as srv:
            yield srv

    return server


def is_root_turn(messages: list[dict[str, Any]]) -> bool:
    """Whether a request is a root RLM turn (it carries the RLM system prompt)."""
    return any(m.get("role") == "system" for m in messages)


class RecordingSink:
    """A logger sink that records every event it receives (thread-safe).

    ``sink.events`` is the list in arrival order; ``sink.types()`` their type names
    (``"run_started"``, ...); ``sink.of(rlm.events.CellExecuted)`` those of one class;
    ``sink.closed`` counts ``close()`` calls. Pass it as ``RLM(sinks=[sink])``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[E.Event] = []
        self.closed = 0

    def handle(self, event: E.Event) -> None:
        with self._lock:
            self.events.append(event)

    def close(self) -> None:
        with self._lock:
            self.closed += 1

    def types(self) -> list[str]:
        with self._lock:
            return [e.type for e in self.events]

    def of(self, cls: type[EventT]) -> list[EventT]:
        with self._lock:
            return [e for e in self.events if isinstance(e, cls)]

    def last(self, cls: type[EventT]) -> EventT:
        found = self.of(cls)
        if not found:
            raise AssertionError(f"no {cls.__name__} event was recorded; recorded: {self.types()}")
        return found[-1]

    def clear(self) -> None:
        with self._lock:
            self.events.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self.events)

    def __repr__(self) -> str:
        return f"<RecordingSink {len(self)} events>"


class RecordingHost:
    """A Host that answers deterministically and records every call (thread-safe).

    ``api_key`` stands for what a real host holds in memory (the backends' keys): the escape
    suite checks that no cell can read it.
    """

    depth = 0

    def __init__(self, api_key: str = "") -> None:
        self.api_key = api_key
        self.calls: list[tuple[str, Any, Any]] = []
        self._lock = threading.Lock()
        self.delay = 0.0

    def _record(self, method: str, arg: Any, model: Any) -> None:
        with self._lock:
            self.calls.append((method, arg, model))
        if self.delay:
            time.sleep(self.delay)

    def llm_query(self, prompt: Any, model: str | None = None) -> str:
        self._record("llm_query", prompt, model)
        if prompt == "fail":
            return "Error: BackendError: the provider said no"
        return f"llm:{prompt}" + (f"@{model}" if model else "")

    def llm_query_batched(self, prompts: Any, model: str | None = None) -> list[str]:
        self._record("llm_query_batched", list(prompts), model)
        return [f"llm:{p}" + (f"@{model}" if model else "") for p in prompts]

    def rlm_query(self, prompt: Any, model: str | None = None) -> str:
        self._record("rlm_query", prompt, model)
        return f"rlm:{prompt}"

    def rlm_query_batched(self, prompts: Any, model: str | None = None) -> list[str]:
        self._record("rlm_query_batched", list(prompts), model)
        return [f"rlm:{p}" for p in prompts]
