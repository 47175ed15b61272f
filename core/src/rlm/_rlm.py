"""The RLM class: ``RLM(...).completion(prompt)``, and what one RLM tree shares.

One ``completion()`` is a :class:`rlm._run._Run` (the run tree, its limits, its loop); the
settings are one frozen :class:`rlm.settings.Settings` that children, remote children and batch
lines derive from.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from ._async import LoopRunner
from ._host import RunHost
from ._limits import StopReason
from ._manager import PluginManager, get_plugin_manager
from ._run import _Run
from ._tools import normalize_tools
from .exceptions import ConfigurationError, RLMError
from .logger import RLMLogger
from .protocols import Backend, Environment
from .settings import NAMES, Settings
from .types import ModelResponse, ModelUsageSummary, RLMChatCompletion, Tool, UsageSummary

Callback = Callable[..., None]


def run_child(job: Mapping[str, Any]) -> dict[str, Any]:
    """Run one child RLM from plain settings (in whatever process the executor chose).

    Returns the child's answer, usage and, on failure, the error with its partial answer; it
    raises only when the settings themselves cannot build an RLM.
    """
    settings = dict(job["settings"])
    if job.get("logger"):
        settings["logger"] = RLMLogger()
    t0 = time.perf_counter()
    out: dict[str, Any] = {"worker": f"{socket.gethostname()}:{os.getpid()}"}
    rlm = RLM(**settings)
    try:
        run = rlm._start_run(job["prompt"], None)
        try:
            result = run.execute()
        except Exception as exc:  # noqa: BLE001 - reported to the parent as the item's error
            out.update(error=f"Error: {type(exc).__name__}: {exc}", error_type=type(exc).__name__,
                       partial_answer=getattr(exc, "partial_answer", None),
                       usage=run.tracker.summary().to_dict(), metadata=run.trajectory(),
                       root_model=rlm.root_model_name)
        else:
            out.update(response=result.response, usage=result.usage_summary.to_dict(),
                       metadata=result.metadata, root_model=result.root_model, error=None)
    finally:
        rlm.close()
    out["execution_time"] = time.perf_counter() - t0
    return out


class _Resources:
    """What one RLM tree shares: the plugin manager, backend instances, the event loop."""

    def __init__(self, pm: PluginManager):
        self.pm = pm
        self.loop = LoopRunner()
        self._backends: dict[tuple[str, int], tuple[Backend, str]] = {}
        self._executors: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.closed = False

    def backend(self, slot: int, name: str, kwargs: Mapping[str, Any]) -> tuple[Backend, str]:
        """Backend for slot 0 (the default) or 1.. (other_backends), built once and reused."""
        key = (name, slot)
        with self._lock:
            hit = self._backends.get(key)
            if hit is None:
                instance = self.pm.create("backend", name, **dict(kwargs))
                label = name if slot == 0 else f"{name}#{slot}"
                hit = self._backends[key] = (instance, label)
            return hit

    def instances(self) -> list[tuple[Backend, str]]:
        """Every backend built so far, with its label (``name`` or ``name#slot``)."""
        with self._lock:
            return list(self._backends.values())

    def slot_of(self, backend: Backend) -> int | None:
        """The slot (0: the default, 1..: other_backends) ``backend`` was built for."""
        with self._lock:
            return next((slot for (_, slot), (b, _) in self._backends.items() if b is backend), None)

    def executor(self, name: str, kwargs: Mapping[str, Any]) -> Any:
        """The executor that runs remote children, built once per tree and closed with it."""
        with self._lock:
            engine = self._executors.get(name)
            if engine is None:
                engine = self._executors[name] = self.pm.create("executor", name, **dict(kwargs))
            return engine

    def close(self) -> None:
        with self._lock:
            backends = list(self._backends.values())
            self._backends.clear()
            self.closed = True
            executors = list(self._executors.values())
            self._executors.clear()
        for engine in executors:
            try:
                engine.close()
            except Exception:  # noqa: BLE001
                pass
        for b, _ in backends:
            # Async clients were created on our loop: close them there, while it still runs.
            aclose = getattr(b, "aclose", None)
            if self.loop.active and callable(aclose):
                try:
                    self.loop.run(aclose(), timeout=5)
                except Exception:  # noqa: BLE001
                    pass
            try:
                b.close()
            except Exception:  # noqa: BLE001
                pass
        self.loop.close()


class RLM:
    """A Recursive Language Model: ``RLM(...).completion(prompt)``.

    The constructor takes every argument of the reference library (see the getting-started
    guide) plus ``sampling_args``/``sub_sampling_args`` (passed to root and sub-call model calls),
    ``max_concurrent_subcalls`` (fan-out bound of the batched helpers), ``cell_timeout`` (seconds
    per REPL cell), ``tool_providers`` (names of tool-provider plugins to add), ``sinks`` (logger
    sink names or objects), ``compaction_strategy`` / ``compaction_kwargs``, ``tool_prompts`` /
    ``tool_code``, and ``plugin_manager`` (an isolated :class:`rlm.PluginManager`).

    Without ``backend``, the backend is ``$RLM_BACKEND``, else the one named in the user's
    ``config.toml``, else ``openai`` when an OpenAI key is set, else the embedded offline model
    ``llamacpp`` (see :mod:`rlm.config`); ``verbose=True`` prints which and why.

    ``completion()`` and ``await acompletion()`` run one RLM; ``cancel()`` (from another thread)
    cancels the running ones; ``close()`` or ``with RLM(...) as rlm:`` releases the persistent
    environment and the backends' clients. Callbacks fire at every depth of the tree:
    ``on_iteration_start(depth, iteration)``, ``on_iteration_complete(depth, iteration,
    duration)``, and for each recursive call (``rlm_query`` / ``rlm_query_batched``, not plain
    ``llm_query``) ``on_subcall_start(depth, model, prompt_preview)`` and
    ``on_subcall_complete(depth, model, duration, error)`` with the child's depth.

    The arguments other than the logger, sinks, callbacks and plugin manager are checked into
    one frozen :class:`rlm.settings.Settings`, ``rlm.settings``; each also reads as an attribute
    (``rlm.max_iterations``), and none can be changed afterwards.
    """

    settings: Settings  # set once by _init (object.__setattr__: the instance is read-only)

    def __init__(
        self,
        backend: str | None = None,
        backend_kwargs: dict[str, Any] | None = None,
        environment: str = "local",
        environment_kwargs: dict[str, Any] | None = None,
        depth: int = 0,
        max_depth: int = 1,
        max_iterations: int = 30,
        max_budget: float | None = None,
        max_timeout: float | None = None,
        max_tokens: int | None = None,
        max_errors: int | None = None,
        custom_system_prompt: str | None = None,
        other_backends: list[str] | None = None,
        other_backend_kwargs: list[dict[str, Any]] | None = None,
        logger: RLMLogger | None = None,
        verbose: bool = False,
        persistent: bool = False,
        custom_tools: dict[str, Any] | None = None,
        custom_sub_tools: dict[str, Any] | None = None,
        compaction: bool = False,
        compaction_threshold_pct: float = 0.85,
        on_subcall_start: Callback | None = None,
        on_subcall_complete: Callback | None = None,
        on_iteration_start: Callback | None = None,
        on_iteration_complete: Callback | None = None,
        *,
        sampling_args: dict[str, Any] | None = None,
        sub_sampling_args: dict[str, Any] | None = None,
        max_concurrent_subcalls: int = 16,
        cell_timeout: float | None = None,
        tool_prompts: str | list[str] | None = None,
        tool_code: str | None = None,
        tool_providers: list[str] | None = None,
        sinks: list[Any] | None = None,
        compaction_strategy: str = "summarize",
        compaction_kwargs: dict[str, Any] | None = None,
        plugin_manager: PluginManager | None = None,
        subcall_executor: str | None = None,
        subcall_executor_kwargs: dict[str, Any] | None = None,
        _resources: _Resources | None = None,
    ):
        if backend is None:  # RLM_BACKEND, the user config file, openai with a key, else llamacpp
            from .config import announce, choose_backend

            choice = choose_backend(_resources.pm if _resources is not None else plugin_manager)
            announce(choice, verbose=verbose)
            backend = choice.name
        arguments = dict(locals())
        settings = Settings.from_arguments(**{n: arguments[n] for n in NAMES})
        if logger is not None and not hasattr(logger, "handle"):
            raise ConfigurationError("logger must be an rlm.logger.RLMLogger (or a logger sink).")
        for name, cb in (("on_subcall_start", on_subcall_start),
                         ("on_subcall_complete", on_subcall_complete),
                         ("on_iteration_start", on_iteration_start),
                         ("on_iteration_complete", on_iteration_complete)):
            if cb is not None and not callable(cb):
                raise ConfigurationError(f"{name} must be callable, got {type(cb).__name__}.")
        self._init(settings, logger=logger, sinks=sinks, plugin_manager=plugin_manager,
                   callbacks=(on_subcall_start, on_subcall_complete, on_iteration_start,
                              on_iteration_complete), _resources=_resources)

    def _init(self, settings: Settings, *, logger: Any, sinks: list[Any] | None,
              plugin_manager: PluginManager | None, callbacks: tuple[Callback | None, ...],
              _resources: _Resources | None, routed_backend: Backend | None = None) -> None:
        """Set up an RLM from checked settings and this process's objects."""
        s = settings
        set_ = object.__setattr__
        set_(self, "settings", s)
        set_(self, "logger", logger)
        (self.on_subcall_start, self.on_subcall_complete, self.on_iteration_start,
         self.on_iteration_complete) = callbacks
        self._tools = normalize_tools(s.custom_tools)
        self._sub_tools = normalize_tools(s.custom_sub_tools, argument="custom_sub_tools")
        self._routed_backend = routed_backend
        self._owns_resources = _resources is None
        self._resources = _resources or _Resources(plugin_manager or get_plugin_manager())
        pm = self._resources.pm
        # Unknown names fail here, with the list of what is installed and the pip line.
        pm.entry("backend", s.backend)
        pm.entry("environment", s.environment)
        for name in s.other_backends:
            pm.entry("backend", name)
        for name in s.tool_providers:
            pm.entry("tool_provider", name)
        if s.compaction:
            pm.entry("compaction", s.compaction_strategy)
        # Children of rlm_query / rlm_query_batched on an executor (``"ray"``: Ray tasks), each
        # rebuilt from plain settings where it runs; see rlm._remote.
        if s.subcall_executor is not None:
            pm.entry("executor", s.subcall_executor)
        self._extra_sinks = self._build_sinks(sinks, s.verbose)
        self._env: Environment | None = None
        self._env_host: RunHost | None = None
        self._env_tools: dict[str, Tool] = {}
        self._context_count = 0
        self._history_count = 0
        self._warned: set[str] = set()
        self._closed = False
        self._runs_lock = threading.Lock()
        self._active_runs: set[_Run] = set()
        self._serial = threading.Lock()

    #: The job function of a child sent to an executor (picklable by reference).
    run_child = staticmethod(run_child)

    def __getattr__(self, name: str) -> Any:
        # Every setting reads as an attribute (``rlm.max_iterations``), from ``rlm.settings``.
        if name in _SETTING_NAMES and "settings" in self.__dict__:
            return getattr(self.__dict__["settings"], name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SETTING_NAMES or name in ("settings", "logger"):
            raise AttributeError(
                f"RLM settings are fixed when it is made: create a new RLM({name}=...) instead "
                "of changing this one")
        object.__setattr__(self, name, value)

    # -- plumbing shared with children --------------------------------------------------
    def _build_sinks(self, sinks: list[Any] | None, verbose: bool) -> list[Any]:
        out: list[Any] = []
        pm = self._resources.pm
        names = list(sinks or [])
        if verbose and "console" not in names:
            names.append("console")
        for s in names:
            if isinstance(s, str):
                out.append(pm.create("sink", s))
            elif hasattr(s, "handle"):
                out.append(s)
            else:
                raise ConfigurationError(f"sinks entries must be sink names or objects with handle(event); got {s!r}.")
        return out

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            warnings.warn(f"rlm: {message}", RuntimeWarning, stacklevel=3)

    def _default_backend(self) -> tuple[Backend, str]:
        return self._resources.backend(0, self.settings.backend, self.settings.backend_kwargs)

    def _other_backend(self, index: int) -> tuple[Backend, str]:
        return self._resources.backend(index + 1, self.settings.other_backends[index],
                                       self.settings.other_backend_kwargs[index])

    def _route(self, model: str | None, depth: int) -> tuple[Backend, str, dict[str, Any]]:
        """Backend for a call at ``depth``: an explicit model name first, then depth
        (depth d uses ``other_backends[d-1]`` when it exists), then the default backend."""
        if model:
            default, label = self._default_backend()
            if default.model_name == model:
                return default, label, {}
            for i, kwargs in enumerate(self.settings.other_backend_kwargs):
                if kwargs.get("model_name", kwargs.get("model")) == model:
                    b, lab = self._other_backend(i)
                    return b, lab, {}
            for i in range(len(self.settings.other_backends)):
                b, lab = self._other_backend(i)
                if b.model_name == model:
                    return b, lab, {}
            # Unknown model name: ask the routed backend for it by name.
            b, lab, _ = self._route(None, depth)
            return b, lab, {"model": model}
        if depth >= 1 and len(self.settings.other_backends) >= depth:
            b, lab = self._other_backend(depth - 1)
            return b, lab, {}
        b, lab = self._default_backend()
        return b, lab, {}

    @staticmethod
    def _usage_summary_of(backend: Backend, label: str, response: ModelResponse) -> UsageSummary:
        s = ModelUsageSummary()
        s.add(response.usage)
        return UsageSummary({response.model or backend.model_name: s})

    def _child_settings(self, run: _Run, model: str | None) -> tuple[Settings, Backend, str]:
        """What a child of ``run`` is (its settings, whether it runs here or on an executor),
        and the parent-side backend instance it maps to (shared by in-process children)."""
        backend, label, overrides = self._route(model, run.depth + 1)
        s = self.settings
        slot = self._resources.slot_of(backend)
        name, kwargs = s.backend, s.backend_kwargs
        if slot:
            name, kwargs = s.other_backends[slot - 1], s.other_backend_kwargs[slot - 1]
        child = s.for_child(backend=name, backend_kwargs=kwargs, sampling_overrides=overrides,
                            max_budget=run.limits.remaining_budget(),
                            max_timeout=run.limits.remaining_time(),
                            max_tokens=run.limits.remaining_tokens())
        return child, backend, label

    def _spawn_child(self, run: _Run, model: str | None) -> RLM:
        """A child RLM of ``run`` on this process: the same tree (backends, loop, sinks,
        callbacks), its own logger when this RLM has one."""
        settings, backend, _ = self._child_settings(run, model)
        child = object.__new__(RLM)
        child._init(settings, logger=RLMLogger() if self.logger is not None else None,
                    sinks=self._extra_sinks, plugin_manager=None,
                    callbacks=(self.on_subcall_start, self.on_subcall_complete,
                               self.on_iteration_start, self.on_iteration_complete),
                    _resources=self._resources, routed_backend=backend)
        return child

    def _root_backend(self) -> tuple[Backend, str]:
        """The backend of this RLM's own turns, with its label."""
        if self._routed_backend is None:
            return self._default_backend()
        backend = self._routed_backend
        label = next((lab for (b, lab) in self._resources.instances() if b is backend), "child")
        return backend, label

    @property
    def environment_type(self) -> str:
        """The environment's name (the reference library's spelling of ``environment``)."""
        return self.settings.environment

    @property
    def root_model_name(self) -> str:
        backend, _ = self._root_backend()
        return self.settings.sampling_args.get("model") or backend.model_name

    # -- public API ------------------------------------------------------------------
    def completion(self, prompt: str | dict[str, Any] | list[Any],
                   root_prompt: str | None = None) -> RLMChatCompletion:
        """Run the RLM on ``prompt`` (it becomes the REPL variable ``context``).

        Returns an :class:`RLMChatCompletion` in every case: at ``depth >= max_depth`` the RLM is a
        plain model call. Raises the limit exceptions (with ``partial_answer``) when a limit hits;
        Ctrl+C cancels in-flight sub-calls and children and raises :class:`CancellationError`.
        """
        return self._start_run(prompt, root_prompt).execute()

    async def acompletion(self, prompt: str | dict[str, Any] | list[Any],
                          root_prompt: str | None = None) -> RLMChatCompletion:
        """``completion`` for async code, with the same semantics and exceptions.

        The loop runs on a thread of its own (cells are synchronous code), so the event loop that
        awaits stays free. Cancelling the awaiting task (``asyncio.wait_for``, ``TaskGroup``,
        Ctrl+C under ``asyncio.run``) cancels the run: its in-flight sub-calls and children are
        stopped, then ``asyncio.CancelledError`` propagates as asyncio requires.
        """
        run = self._start_run(prompt, root_prompt)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[RLMChatCompletion] = loop.create_future()

        def settle(result: Any, error: BaseException | None) -> None:
            if done.done():
                return
            if error is not None:
                done.set_exception(error)
            else:
                done.set_result(result)

        def target() -> None:
            try:
                result = run.execute()
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
                _call_soon(loop, settle, None, exc)
            else:
                _call_soon(loop, settle, result, None)

        threading.Thread(target=target, name="rlm-acompletion", daemon=True).start()
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError:
            run.cancel(StopReason.CANCELLED)
            try:  # let the run unwind (children cancelled, logs complete), briefly
                await asyncio.wait_for(asyncio.shield(done), timeout=5.0)
            except BaseException:  # noqa: BLE001 - the CancellationError we caused, or a timeout
                pass
            raise

    def cancel(self) -> None:
        """Cancel every ``completion()`` of this RLM now running (from any thread).

        In-flight sub-calls and children are cancelled at once; each cancelled ``completion``
        raises :class:`CancellationError` with its partial answer.
        """
        with self._runs_lock:
            runs = list(self._active_runs)
        for run in runs:
            run.cancel(StopReason.CANCELLED)

    def _start_run(self, prompt: Any, root_prompt: str | None) -> _Run:
        if self._closed:
            raise RLMError("this RLM was closed; create a new one (or use persistent=True without close()).")
        run = _Run(self, prompt, root_prompt, parent=None)
        with self._runs_lock:
            self._active_runs.add(run)
        return run

    def _run_done(self, run: _Run) -> None:
        with self._runs_lock:
            self._active_runs.discard(run)

    def close(self) -> None:
        """Release the persistent environment and (for a root RLM) the backends' clients."""
        if self._env is not None:
            env, self._env = self._env, None
            try:
                env.shutdown()
            except Exception:  # noqa: BLE001
                pass
        if self._owns_resources and not self._resources.closed:
            self._resources.close()
            for sink in self._extra_sinks:
                close = getattr(sink, "close", None)
                if close:
                    try:
                        close()
                    except Exception:  # noqa: BLE001
                        pass
        if self._owns_resources:
            self._closed = True

    def __enter__(self) -> RLM:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if getattr(self, "_owns_resources", False) and not self._resources.closed:
                self._resources.loop.close()
        except Exception:  # noqa: BLE001
            pass

    def __repr__(self) -> str:
        return (f"RLM(backend={self.settings.backend!r}, environment={self.settings.environment!r}, "
                f"depth={self.settings.depth}, max_depth={self.settings.max_depth})")

    # -- environment ---------------------------------------------------------------
    def _all_tools(self, run: _Run) -> dict[str, Tool]:
        pm = self._resources.pm
        tools: dict[str, Tool] = {}
        reg = pm.registry("tool_provider")
        names = [n for n, e in reg.entries.items() if e.options.get("default") and n == e.name]
        names += [n for n in self.settings.tool_providers if n not in names]
        settings = {"depth": run.depth, "max_depth": self.settings.max_depth, "environment": self.settings.environment,
                    "backend": self.settings.backend}
        for name in names:
            entry = pm.entry("tool_provider", name)
            provider = pm.create("tool_provider", name)
            for tname, tool in normalize_tools(dict(provider.tools(settings)),
                                               argument=f"tools of provider {name!r}",
                                               source=entry.plugin).items():
                tools[tname] = tool
        tools.update(self._tools)
        return tools

    def _acquire_env(self, run: _Run) -> tuple[Environment, RunHost, dict[str, Tool], bool]:
        if self.settings.persistent and self._env is not None:
            assert self._env_host is not None
            self._env_host._run = run  # the same REPL now serves this run
            return self._env, self._env_host, self._env_tools, False
        env: Environment = self._resources.pm.create("environment", self.settings.environment,
                                                     **self.settings.environment_kwargs)
        if self.settings.persistent and not env.capabilities.persistent:
            raise ConfigurationError(
                f"environment {self.settings.environment!r} does not support persistent=True; use "
                "persistent=False or an environment that keeps state (for example 'local').")
        host = RunHost(run)
        tools = self._all_tools(run)
        try:
            env.start(host, tools)
            if self.settings.tool_code and self.settings.tool_code.strip():
                res = env.execute(self.settings.tool_code, timeout=self.settings.cell_timeout)
                if res.error:
                    raise ConfigurationError(f"tool_code failed in the environment: {res.error}")
        except BaseException:
            env.shutdown()
            raise
        if self.settings.persistent:
            self._env, self._env_host, self._env_tools = env, host, tools
        return env, host, tools, True


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> None:
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # the awaiting loop is closed: nobody is waiting any more
        pass


_SETTING_NAMES = frozenset(NAMES)
