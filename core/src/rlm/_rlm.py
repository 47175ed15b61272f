"""The RLM class and the loop of one completion."""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from . import prompts as P
from ._async import LoopRunner, wait
from ._host import RunHost
from ._manager import PluginManager, get_plugin_manager
from ._tools import normalize_tools
from ._tree import TreeSlots
from ._usage import UsageKey, UsageTracker
from .contract import RESET_ANSWER
from .events import (CellExecuted, Compacted, Event, IterationCompleted, IterationStarted,
                     LimitExceeded, RunFinished, RunStarted)
from .exceptions import (BudgetExceededError, CancellationError, ConfigurationError,
                         ContextWindowExceededError, ErrorThresholdExceededError, RLMError,
                         TimeoutExceededError, TokenLimitExceededError)
from .logger import RLMLogger
from .parsing import CODE_TAGS, find_code_blocks, find_final_answer, iter_fences
from .protocols import Backend, Environment
from .types import (AnswerSource, CellResult, CodeBlock, Message, ModelResponse, ModelUsageSummary,
                    RLMChatCompletion, RLMIteration, RunStatus, Tool, UsageSummary,
                    context_shape, to_jsonable)

_SENSITIVE = ("key", "token", "secret", "password", "authorization")

Callback = Callable[..., None]

#: The context window compaction assumes when the backend cannot tell.
DEFAULT_CONTEXT_WINDOW = 128_000

#: Seconds a cancelled run's cell may go on (its sub-calls already cancelled) before it is
#: stopped: enough to finish and keep its partial answer, short enough for Ctrl+C.
CANCEL_GRACE_ROOT = 1.0
CANCEL_GRACE_CHILD = 0.5


def _redact(kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """Settings as logged: values under a sensitive-looking key are masked, at any nesting depth
    (a key inside ``default_headers={"Authorization": ...}`` included)."""
    out: dict[str, Any] = {}
    for k, v in (kwargs or {}).items():
        if any(s in str(k).lower() for s in _SENSITIVE) and v:
            out[k] = "***"
        elif isinstance(v, Mapping):
            out[k] = _redact(v)
        else:
            out[k] = to_jsonable(v)
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
    """

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
        _check_type("backend", backend, str)
        _check_type("environment", environment, str)
        for name, value in (("max_depth", max_depth), ("max_iterations", max_iterations)):
            if not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name} must be an integer >= 1, got {value!r}.")
        if not isinstance(depth, int) or depth < 0:
            raise ConfigurationError(f"depth must be an integer >= 0, got {depth!r}.")
        for name, value in (("max_budget", max_budget), ("max_timeout", max_timeout),
                            ("cell_timeout", cell_timeout)):
            if value is not None and (not isinstance(value, (int, float)) or value <= 0):
                raise ConfigurationError(f"{name} must be a positive number or None, got {value!r}.")
        for name, value in (("max_tokens", max_tokens), ("max_errors", max_errors)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigurationError(f"{name} must be a positive integer or None, got {value!r}.")
        if not isinstance(max_concurrent_subcalls, int) or max_concurrent_subcalls < 1:
            raise ConfigurationError(
                f"max_concurrent_subcalls must be an integer >= 1, got {max_concurrent_subcalls!r}.")
        if not 0 < compaction_threshold_pct <= 1:
            raise ConfigurationError(
                f"compaction_threshold_pct must be in (0, 1], got {compaction_threshold_pct!r}.")
        other_backends = list(other_backends or [])
        other_backend_kwargs = list(other_backend_kwargs or [])
        if other_backend_kwargs and len(other_backend_kwargs) != len(other_backends):
            raise ConfigurationError(
                f"other_backend_kwargs has {len(other_backend_kwargs)} entries but other_backends has "
                f"{len(other_backends)}; give one kwargs dict per backend (in the same order).")
        if not other_backend_kwargs:
            other_backend_kwargs = [{} for _ in other_backends]
        if logger is not None and not hasattr(logger, "handle"):
            raise ConfigurationError("logger must be an rlm.logger.RLMLogger (or a logger sink).")
        for name, cb in (("on_subcall_start", on_subcall_start),
                         ("on_subcall_complete", on_subcall_complete),
                         ("on_iteration_start", on_iteration_start),
                         ("on_iteration_complete", on_iteration_complete)):
            if cb is not None and not callable(cb):
                raise ConfigurationError(f"{name} must be callable, got {type(cb).__name__}.")
        if tool_code is not None:
            try:
                compile(tool_code, "<tool_code>", "exec")
            except SyntaxError as exc:
                raise ConfigurationError(f"tool_code is not valid Python: {exc}") from exc

        self.backend = backend
        self.backend_kwargs = dict(backend_kwargs or {})
        self.environment = environment
        self.environment_type = environment
        self.environment_kwargs = dict(environment_kwargs or {})
        self.depth = depth
        self.max_depth = max_depth
        self.max_iterations = max_iterations
        self.max_budget = max_budget
        self.max_timeout = max_timeout
        self.max_tokens = max_tokens
        self.max_errors = max_errors
        self.custom_system_prompt = custom_system_prompt
        self.other_backends = other_backends
        self.other_backend_kwargs = other_backend_kwargs
        self.logger = logger
        self.verbose = verbose
        self.persistent = persistent
        self.custom_tools = custom_tools
        self.custom_sub_tools = custom_sub_tools if custom_sub_tools is not None else custom_tools
        self._tools = normalize_tools(custom_tools)
        self._sub_tools = normalize_tools(self.custom_sub_tools, argument="custom_sub_tools")
        self.compaction = compaction
        self.compaction_threshold_pct = compaction_threshold_pct
        self.on_subcall_start = on_subcall_start
        self.on_subcall_complete = on_subcall_complete
        self.on_iteration_start = on_iteration_start
        self.on_iteration_complete = on_iteration_complete
        self.sampling_args = dict(sampling_args or {})
        self.sub_sampling_args = dict(sub_sampling_args if sub_sampling_args is not None
                                      else self.sampling_args)
        self.max_concurrent_subcalls = max_concurrent_subcalls
        self.cell_timeout = cell_timeout
        self.tool_prompts = [tool_prompts] if isinstance(tool_prompts, str) else list(tool_prompts or [])
        self.tool_code = tool_code
        self.tool_providers = list(tool_providers or [])
        self.compaction_strategy = compaction_strategy
        self.compaction_kwargs = dict(compaction_kwargs or {})

        self._owns_resources = _resources is None
        self._resources = _resources or _Resources(plugin_manager or get_plugin_manager())
        pm = self._resources.pm
        # Unknown names fail here, with the list of what is installed and the pip line.
        pm.entry("backend", backend)
        pm.entry("environment", environment)
        for name in other_backends:
            pm.entry("backend", name)
        for name in self.tool_providers:
            pm.entry("tool_provider", name)
        if compaction:
            pm.entry("compaction", compaction_strategy)
        # Children of rlm_query / rlm_query_batched on an executor (``"ray"``: Ray tasks), each
        # rebuilt from plain settings where it runs; see rlm._remote.
        if subcall_executor is not None:
            _check_type("subcall_executor", subcall_executor, str)
            pm.entry("executor", subcall_executor)
        self.subcall_executor = subcall_executor
        self.subcall_executor_kwargs = dict(subcall_executor_kwargs or {})
        self._extra_sinks = self._build_sinks(sinks, verbose)
        self._env: Environment | None = None
        self._env_host: RunHost | None = None
        self._context_count = 0
        self._history_count = 0
        self._warned: set[str] = set()
        self._closed = False
        self._runs_lock = threading.Lock()
        self._active_runs: set[_Run] = set()
        self._serial = threading.Lock()

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
        return self._resources.backend(0, self.backend, self.backend_kwargs)

    def _other_backend(self, index: int) -> tuple[Backend, str]:
        return self._resources.backend(index + 1, self.other_backends[index],
                                       self.other_backend_kwargs[index])

    def _route(self, model: str | None, depth: int) -> tuple[Backend, str, dict[str, Any]]:
        """Backend for a call at ``depth``: an explicit model name first, then depth
        (depth d uses ``other_backends[d-1]`` when it exists), then the default backend."""
        if model:
            default, label = self._default_backend()
            if default.model_name == model:
                return default, label, {}
            for i, kwargs in enumerate(self.other_backend_kwargs):
                if kwargs.get("model_name", kwargs.get("model")) == model:
                    b, lab = self._other_backend(i)
                    return b, lab, {}
            for i in range(len(self.other_backends)):
                b, lab = self._other_backend(i)
                if b.model_name == model:
                    return b, lab, {}
            # Unknown model name: ask the routed backend for it by name.
            b, lab, _ = self._route(None, depth)
            return b, lab, {"model": model}
        if depth >= 1 and len(self.other_backends) >= depth:
            b, lab = self._other_backend(depth - 1)
            return b, lab, {}
        b, lab = self._default_backend()
        return b, lab, {}

    @staticmethod
    def _usage_summary_of(backend: Backend, label: str, response: ModelResponse) -> UsageSummary:
        s = ModelUsageSummary()
        s.add(response.usage)
        return UsageSummary({response.model or backend.model_name: s})

    def _spawn_child(self, run: _Run, model: str | None) -> RLM:
        child_depth = run.depth + 1
        backend, _, overrides = self._route(model, child_depth)
        # The child's own root model is the routed backend; find its slot so it shares the instance.
        name, kwargs = self.backend, self.backend_kwargs
        for i in range(len(self.other_backends)):
            if self._resources._backends.get((self.other_backends[i], i + 1), (None,))[0] is backend:
                name, kwargs = self.other_backends[i], self.other_backend_kwargs[i]
        child = RLM(
            backend=name, backend_kwargs=kwargs, environment=self.environment,
            environment_kwargs=self.environment_kwargs, depth=child_depth,
            max_depth=self.max_depth, max_iterations=self.max_iterations,
            max_budget=run.remaining_budget(), max_timeout=run.remaining_time(),
            max_tokens=run.remaining_tokens(), max_errors=self.max_errors,
            custom_system_prompt=self.custom_system_prompt, other_backends=self.other_backends,
            other_backend_kwargs=self.other_backend_kwargs,
            logger=RLMLogger() if self.logger is not None else None, verbose=False,
            persistent=False, custom_tools=self.custom_sub_tools, custom_sub_tools=self.custom_sub_tools,
            compaction=self.compaction, compaction_threshold_pct=self.compaction_threshold_pct,
            on_subcall_start=self.on_subcall_start, on_subcall_complete=self.on_subcall_complete,
            on_iteration_start=self.on_iteration_start,
            on_iteration_complete=self.on_iteration_complete,
            sampling_args={**self.sub_sampling_args, **overrides},
            sub_sampling_args=self.sub_sampling_args,
            max_concurrent_subcalls=self.max_concurrent_subcalls, cell_timeout=self.cell_timeout,
            tool_prompts=self.tool_prompts, tool_code=self.tool_code,
            tool_providers=self.tool_providers, sinks=self._extra_sinks,
            compaction_strategy=self.compaction_strategy, compaction_kwargs=self.compaction_kwargs,
            _resources=self._resources,
        )
        child._routed_backend = backend
        return child

    @property
    def root_model_name(self) -> str:
        backend = getattr(self, "_routed_backend", None)
        if backend is None:
            backend, _ = self._default_backend()
        return self.sampling_args.get("model") or backend.model_name

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
            run.cancel("cancelled")
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
            run.cancel("cancelled")

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

    def _completion_as_child(self, prompt: Any, parent: _Run) -> RLMChatCompletion:
        return _Run(self, prompt, None, parent=parent).execute()

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
        return (f"RLM(backend={self.backend!r}, environment={self.environment!r}, "
                f"depth={self.depth}, max_depth={self.max_depth})")

    # -- environment ---------------------------------------------------------------
    def _all_tools(self, run: _Run) -> dict[str, Tool]:
        pm = self._resources.pm
        tools: dict[str, Tool] = {}
        reg = pm.registry("tool_provider")
        names = [n for n, e in reg.entries.items() if e.options.get("default") and n == e.name]
        names += [n for n in self.tool_providers if n not in names]
        settings = {"depth": run.depth, "max_depth": self.max_depth, "environment": self.environment,
                    "backend": self.backend}
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
        if self.persistent and self._env is not None:
            assert self._env_host is not None
            self._env_host._run = run  # the same REPL now serves this run
            return self._env, self._env_host, self._env_tools, False
        env: Environment = self._resources.pm.create("environment", self.environment,
                                                     **self.environment_kwargs)
        if self.persistent and not env.capabilities.persistent:
            raise ConfigurationError(
                f"environment {self.environment!r} does not support persistent=True; use "
                "persistent=False or an environment that keeps state (for example 'local').")
        host = RunHost(run)
        tools = self._all_tools(run)
        try:
            env.start(host, tools)
            if self.tool_code and self.tool_code.strip():
                res = env.execute(self.tool_code, timeout=self.cell_timeout)
                if res.error:
                    raise ConfigurationError(f"tool_code failed in the environment: {res.error}")
        except BaseException:
            env.shutdown()
            raise
        if self.persistent:
            self._env, self._env_host, self._env_tools = env, host, tools
        return env, host, tools, True


class _Run:
    """One ``completion()``: the loop, its limits, its cancellation and its events.

    Every model call and child run of the run is registered here while it is in flight, so
    :meth:`cancel` (Ctrl+C, the deadline watchdog, an exhausted budget, ``RLM.cancel()``) stops
    all of them, children's children included.
    """

    def __init__(self, rlm: RLM, prompt: Any, root_prompt: str | None, parent: _Run | None,
                 parent_call_id: str | None = None):
        self.rlm = rlm
        self.prompt = prompt
        self.root_prompt = root_prompt
        self.parent = parent
        self.depth = rlm.depth
        self.run_id = uuid.uuid4().hex[:12]
        self.parent_run_id = parent.run_id if parent else None
        self.parent_call_id = parent_call_id
        self._call_ids = itertools.count(1)
        self.tracker = UsageTracker(parent.tracker if parent else None)
        self.t0 = time.perf_counter()
        self.deadline = self.t0 + rlm.max_timeout if rlm.max_timeout else None
        self.sinks: list[Any] = ([rlm.logger] if rlm.logger is not None else []) + rlm._extra_sinks
        self.best_partial: str | None = None
        self.last_response: str | None = None
        self.cancelled = threading.Event()
        self.cancel_reason: str | None = None
        self._cancel_source: _Run = self
        self.env: Environment | None = None
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._inflight: set[Any] = set()  # objects with cancel(): futures, batches
        self._children: set[_Run] = set()
        self._stop_watchdog: Callable[[], None] | None = None
        self._done = threading.Event()
        #: The tree's concurrency bound (rlm._tree); ``holds_slot`` while this child run works.
        self.slots: TreeSlots = parent.slots if parent else TreeSlots(rlm.max_concurrent_subcalls)
        self.holds_slot = False
        if parent is not None:
            parent._adopt(self)

    # -- the run tree and cancellation -------------------------------------------------
    def _adopt(self, child: _Run) -> None:
        with self._lock:
            self._children.add(child)
            reason, source = self.cancel_reason, self._cancel_source
        if reason is not None:
            child.cancel("cancelled" if reason == "finished" else reason, source=source)

    def _disown(self, child: _Run) -> None:
        with self._lock:
            self._children.discard(child)
            self._idle.notify_all()

    def track(self, item: Any) -> None:
        """Register an in-flight call (anything with ``cancel()``); cancelled at once if the
        run is already cancelled or finished."""
        with self._lock:
            reason = self.cancel_reason
            if reason is None:
                self._inflight.add(item)
        if reason is not None:
            item.cancel()

    def untrack(self, item: Any) -> None:
        with self._lock:
            self._inflight.discard(item)
            self._idle.notify_all()

    def submit(self, coro: Any) -> concurrent.futures.Future[Any]:
        """Schedule a model call on the tree's loop, registered with this run."""
        fut = self.rlm._resources.loop.submit(coro)
        self.track(fut)
        return fut

    def cancel(self, reason: str = "cancelled", *, source: _Run | None = None) -> None:
        """Cancel the run: in-flight calls and children now, the loop at its next check.

        ``reason`` is ``"cancelled"`` (Ctrl+C, ``RLM.cancel()``, a cancelled ``acompletion``),
        ``"timeout"``, ``"budget"``, ``"tokens"`` or ``"finished"`` (the run returned; calls that
        outlive it, from threads a cell left behind, are stopped).
        """
        with self._lock:
            first = self.cancel_reason is None
            if first:
                self.cancel_reason = reason
                self._cancel_source = source or self
            items, children = list(self._inflight), list(self._children)
        if reason != "finished":
            self.cancelled.set()
        for item in items:
            try:
                item.cancel()
            except Exception:  # noqa: BLE001
                pass
        for child in children:
            child.cancel("cancelled" if reason == "finished" else reason,
                         source=source or self)
        if first and reason == "cancelled":
            self._stop_env()

    def cancel_pending(self) -> None:
        """Cancel what is in flight (a stopped cell's calls and children), not the run."""
        with self._lock:
            items, children = list(self._inflight), list(self._children)
        for item in items:
            try:
                item.cancel()
            except Exception:  # noqa: BLE001
                pass
        for child in children:
            child.cancel("cancelled")

    def _stop_env(self) -> None:
        """Stop the cell still running in this run's (throw-away) environment.

        With its sub-calls cancelled a cell usually ends by itself at once, keeping what it
        wrote into ``answer`` (the partial answer). One that is still running after a short
        grace is interrupted (``env.interrupt()`` when the environment has it) or the
        environment is shut down. Off the caller's thread: stopping may take a while.
        """
        env = self.env
        if env is None:
            return
        grace = CANCEL_GRACE_CHILD if self.parent is not None else CANCEL_GRACE_ROOT

        def stop() -> None:
            if self._done.wait(grace):
                return
            try:
                interrupt = getattr(env, "interrupt", None)
                if callable(interrupt):
                    interrupt()
                elif not self.rlm.persistent:  # a persistent REPL is kept, state and all
                    env.shutdown()
            except Exception:  # noqa: BLE001
                pass

        threading.Thread(target=stop, name="rlm-cancel-env", daemon=True).start()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no call and no child of this run is in flight (at most ``timeout`` s)."""
        end = time.monotonic() + timeout
        with self._lock:
            while self._inflight or self._children:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(min(left, 0.05))
        return True

    def _on_deadline(self) -> None:  # runs on the loop thread: must not block
        self.cancel("timeout")

    # -- limits ------------------------------------------------------------------------
    def remaining_time(self) -> float | None:
        return None if self.deadline is None else max(0.001, self.deadline - time.perf_counter())

    def remaining_budget(self) -> float | None:
        b = self.rlm.max_budget
        return None if b is None else max(1e-12, b - self.tracker.cost)

    def remaining_tokens(self) -> int | None:
        t = self.rlm.max_tokens
        return None if t is None else max(1, t - self.tracker.total_tokens)

    def _own_limit(self) -> str | None:
        rlm = self.rlm
        if self.deadline is not None and time.perf_counter() >= self.deadline:
            return "timeout"
        if rlm.max_budget is not None and self.tracker.cost > rlm.max_budget:
            return "budget"
        if rlm.max_tokens is not None and self.tracker.total_tokens > rlm.max_tokens:
            return "tokens"
        return None

    def limit_state(self) -> tuple[_Run, str] | None:
        """The first limit hit by this run or an ancestor (whose limits cover this run too)."""
        run: _Run | None = self
        while run is not None:
            if run.cancel_reason is not None:
                return run._cancel_source, run.cancel_reason
            kind = run._own_limit()
            if kind is not None:
                return run, kind
            run = run.parent
        return None

    def limit_reason(self) -> str | None:
        state = self.limit_state()
        if state is None:
            return None
        run, kind = state
        where = "" if run is self else f" (by the run at depth {run.depth})"
        return {
            "cancelled": "the run was cancelled",
            "finished": "the run has already finished",
            "timeout": f"max_timeout of {run.rlm.max_timeout}s reached",
            "budget": f"max_budget of ${run.rlm.max_budget} spent",
            "tokens": f"max_tokens of {run.rlm.max_tokens} used",
        }[kind] + where

    def partial(self) -> str | None:
        return self.best_partial if self.best_partial else self.last_response

    def _limit_error(self, run: _Run, kind: str) -> RLMError:
        partial = self.partial()
        if kind == "timeout":
            return TimeoutExceededError(time.perf_counter() - self.t0,
                                        self.rlm.max_timeout or run.rlm.max_timeout or 0.0, partial)
        if kind == "budget":
            return BudgetExceededError(run.tracker.cost, run.rlm.max_budget or 0.0, partial)
        if kind == "tokens":
            return TokenLimitExceededError(run.tracker.total_tokens, run.rlm.max_tokens or 0,
                                           partial)
        return CancellationError(partial)

    def check_limits(self) -> None:
        state = self.limit_state()
        if state is not None and state[1] != "finished":
            raise self._limit_error(*state)

    def record_usage(self, backend: Backend, label: str, response: ModelResponse) -> None:
        self.tracker.record(UsageKey(id(backend), label, response.model or backend.model_name),
                            response.usage)
        self.enforce_spend()

    def enforce_spend(self) -> None:
        """A run over its budget or tokens stops spending at once: its in-flight calls and
        children (and those of every descendant) are cancelled."""
        run: _Run | None = self
        while run is not None:
            if run.cancel_reason is None:
                kind = run._own_limit()
                if kind in ("budget", "tokens"):
                    run.cancel(kind)
            run = run.parent

    # -- events ------------------------------------------------------------------------
    def new_call_id(self) -> str:
        """An id for the next sub-call of this run (``c1``, ``c2``, ...; unique within the run)."""
        return f"c{next(self._call_ids)}"

    def emit(self, event: Event) -> None:
        for sink in self.sinks:
            try:
                sink.handle(event)
            except Exception as exc:  # noqa: BLE001 - a broken sink never breaks the run
                self.rlm._warn_once(f"logger sink {type(sink).__name__} failed ({exc!r}); "
                                    "its later failures are not reported")

    def _fire(self, name: str, *args: Any) -> None:
        cb = getattr(self.rlm, name)
        if cb is not None:
            try:
                cb(*args)
            except Exception:  # noqa: BLE001
                self.rlm._warn_once(f"callback {name} raised; it is ignored")

    def _call_model(self, backend: Backend, label: str, messages: list[Message],
                    sampling: Mapping[str, Any] | None = None) -> ModelResponse:
        """One model call of this run's own (a turn, a summary), cancellable like a sub-call."""
        self.check_limits()
        args = self.rlm.sampling_args if sampling is None else sampling
        fut = self.submit(backend.acompletion(messages, **args))
        try:
            left = self.remaining_time()
            response = wait(fut, None if left is None else left + 1.0)
        except concurrent.futures.CancelledError:
            self.check_limits()
            raise CancellationError(self.partial()) from None
        except TimeoutError:
            if fut.done() and not fut.cancelled():
                raise  # the backend's own timeout error
            self.check_limits()
            raise TimeoutExceededError(time.perf_counter() - self.t0, self.rlm.max_timeout or 0.0,
                                       self.partial()) from None
        finally:
            self.untrack(fut)
        self.record_usage(backend, label, response)
        return response

    def trajectory(self) -> dict[str, Any] | None:
        logger = self.rlm.logger
        return logger.get_trajectory() if isinstance(logger, RLMLogger) else None

    def _result(self, response: str, backend: Backend, status: RunStatus = RunStatus.COMPLETED,
                source: AnswerSource = AnswerSource.MODEL) -> RLMChatCompletion:
        dt = time.perf_counter() - self.t0
        summary = self.tracker.summary()
        self.emit(RunFinished(run_id=self.run_id, depth=self.depth, parent_run_id=self.parent_run_id,
                              response=response, execution_time=dt, usage_summary=summary.to_dict(),
                              status=status.value, answer_source=source.value))
        return RLMChatCompletion(root_model=self.rlm.sampling_args.get("model") or backend.model_name,
                                 prompt=self.prompt, response=response, usage_summary=summary,
                                 execution_time=dt, metadata=self.trajectory(), depth=self.depth,
                                 status=status, answer_source=source)

    # -- the loop --------------------------------------------------------------------
    def execute(self) -> RLMChatCompletion:
        rlm = self.rlm
        try:
            if rlm.persistent and self.parent is None:
                # One REPL, one conversation: completions of a persistent RLM run one at a time
                # (concurrent acompletion() calls queue up in call order).
                with rlm._serial:
                    self.t0 = time.perf_counter()
                    self.deadline = self.t0 + rlm.max_timeout if rlm.max_timeout else None
                    return self._execute()
            return self._execute()
        finally:
            if self._stop_watchdog is not None:
                self._stop_watchdog()
            # Nothing outlives the run: calls still in flight (threads a cell left behind) and
            # children are cancelled, and later helper calls are refused.
            self.cancel("finished")
            self._done.set()
            if self.parent is not None:
                self.parent._disown(self)
            rlm._run_done(self)

    def _execute(self) -> RLMChatCompletion:
        rlm = self.rlm
        backend, label = getattr(rlm, "_routed_backend", None), None
        if backend is None:
            backend, label = rlm._default_backend()
        else:
            label = next((lab for (b, lab) in rlm._resources._backends.values() if b is backend), "child")
        ctype, lengths = context_shape(self.prompt)
        self.emit(RunStarted(
            run_id=self.run_id, depth=self.depth, parent_run_id=self.parent_run_id,
            root_model=rlm.sampling_args.get("model") or backend.model_name, backend=rlm.backend,
            environment=rlm.environment, context_type=ctype, context_lengths=lengths[:1000],
            root_prompt=self.root_prompt, parent_call_id=self.parent_call_id,
            settings={"prompt": self.prompt, "max_depth": rlm.max_depth,
                      "max_iterations": rlm.max_iterations, "max_budget": rlm.max_budget,
                      "max_timeout": rlm.max_timeout, "max_tokens": rlm.max_tokens,
                      "max_errors": rlm.max_errors, "backend_kwargs": _redact(rlm.backend_kwargs),
                      "environment_kwargs": _redact(rlm.environment_kwargs),
                      "other_backends": rlm.other_backends, "persistent": rlm.persistent}))
        try:
            if self.deadline is not None:
                self._stop_watchdog = rlm._resources.loop.call_later(
                    self.deadline - time.perf_counter(), self._on_deadline)
            self.check_limits()
            if self.depth >= rlm.max_depth:
                return self._plain_call(backend, label)
            return self._loop(backend, label)
        except KeyboardInterrupt:
            self.cancel("cancelled")
            self.wait_idle(2.0)
            exc: RLMError = CancellationError(self.partial())
            self._finish_error(exc, RunStatus.CANCELLED)
            raise exc from None
        except (TimeoutExceededError, BudgetExceededError, TokenLimitExceededError,
                ErrorThresholdExceededError, CancellationError) as limit:
            self._unwind(limit)
            if not isinstance(limit, CancellationError):
                self.emit(LimitExceeded(run_id=self.run_id, depth=self.depth,
                                        parent_run_id=self.parent_run_id,
                                        error_type=type(limit).__name__, message=str(limit),
                                        partial_answer=limit.partial_answer))
            self._finish_error(limit, limit.status)
            raise
        except Exception as other:
            if self.cancel_reason not in (None, "finished"):
                # The environment was stopped under a cancelled run: report the cancellation.
                state = self.limit_state()
                limit = self._limit_error(*state) if state else CancellationError(self.partial())
                self._unwind(limit)
                self._finish_error(limit, limit.status)
                raise limit from other
            self._unwind(other)
            if hasattr(other, "__dict__") and getattr(other, "partial_answer", None) is None:
                try:
                    other.partial_answer = self.partial()  # type: ignore[attr-defined]
                except Exception:  # noqa: BLE001
                    pass
            self._finish_error(other, RunStatus.ERROR)
            raise

    def _unwind(self, exc: BaseException) -> None:
        """On the way out with an error: cancel what is in flight and let it finish briefly, so
        children's records and logs are complete when the exception reaches the caller."""
        reason = "cancelled"
        if isinstance(exc, TimeoutExceededError):
            reason = "timeout"
        elif isinstance(exc, BudgetExceededError):
            reason = "budget"
        elif isinstance(exc, TokenLimitExceededError):
            reason = "tokens"
        with self._lock:
            busy = bool(self._inflight or self._children)
        if busy:
            self.cancel(reason)
            self.wait_idle(2.0)

    def _finish_error(self, exc: BaseException, status: RunStatus) -> None:
        partial = self.partial()
        self.emit(RunFinished(run_id=self.run_id, depth=self.depth, parent_run_id=self.parent_run_id,
                              response=partial, execution_time=time.perf_counter() - self.t0,
                              usage_summary=self.tracker.summary().to_dict(), status=status.value,
                              error=f"{type(exc).__name__}: {exc}",
                              answer_source=(AnswerSource.PARTIAL if partial else AnswerSource.NONE).value))

    def _plain_call(self, backend: Backend, label: str) -> RLMChatCompletion:
        from ._host import _as_messages

        response = self._call_model(backend, label, _as_messages(self.prompt))
        self.last_response = response.text
        return self._result(response.text, backend)

    def _execute_cell(self, env: Environment, host: RunHost, code: str) -> CellResult:
        res = env.execute(code, timeout=self._cell_timeout())
        res.rlm_calls = host.drain_calls()
        if res.timed_out:
            # The cell was stopped: the sub-calls and children it was waiting for go with it.
            self.cancel_pending()
        return res

    def _loop(self, backend: Backend, label: str) -> RLMChatCompletion:
        rlm = self.rlm
        env, host, tools, fresh = rlm._acquire_env(self)
        self.env = env
        try:
            context_index = rlm._context_count if rlm.persistent else 0
            env.add_context(self.prompt, context_index)
            if context_index > 0:  # persistent: a new completion starts with no answer (rlm.contract)
                env.execute(RESET_ANSWER, timeout=self._cell_timeout())
            question = P.question_of(self.prompt, self.root_prompt)
            if rlm.persistent:
                rlm._context_count += 1
            # A backend's prompt profile (``backend.system_prompt``, e.g. a short few-shot prompt
            # for a small local model) replaces the default prompt; custom_system_prompt wins.
            profile = getattr(backend, "system_prompt", None)
            system = P.build_system_prompt(
                custom_system_prompt=(rlm.custom_system_prompt if rlm.custom_system_prompt is not None
                                      else profile if isinstance(profile, str) else None),
                tools=tools,
                environment_instructions=env.usage_instructions(),
                extra_sections=[*rlm.tool_prompts, getattr(backend, "system_prompt_addendum", "") or ""],
                compaction=rlm.compaction)
            messages: list[Message] = [{"role": "system", "content": system},
                                       P.context_message(self.prompt, index=context_index,
                                                         preview_chars=_preview_chars(backend))]
            full_history: list[Message] = list(messages)
            consecutive_errors = 0
            last_error: str | None = None
            for i in range(rlm.max_iterations):
                self.check_limits()
                it_no = i + 1
                self._fire("on_iteration_start", self.depth, it_no)
                self.emit(IterationStarted(run_id=self.run_id, depth=self.depth,
                                           parent_run_id=self.parent_run_id, iteration=it_no))
                it_t0 = time.perf_counter()
                turn = P.turn_message(i, rlm.max_iterations, root_prompt=self.root_prompt,
                                      context_count=max(1, rlm._context_count),
                                      history_count=rlm._history_count, question=question)
                response = self._call_model(backend, label, messages + [turn])
                text = response.text
                self.last_response = text
                blocks: list[tuple[str, CellResult]] = []
                final: str | None = None
                note: str | None = None
                for code in find_code_blocks(text):
                    res = self._execute_cell(env, host, code)
                    blocks.append((code, res))
                    self.emit(CellExecuted(run_id=self.run_id, depth=self.depth,
                                           parent_run_id=self.parent_run_id, iteration=it_no,
                                           code=code, result=res.to_dict()))
                    if res.answer_content:
                        self.best_partial = res.answer_content
                    if res.final_answer is not None:
                        final = res.final_answer
                        break
                    if self.limit_state() is not None:
                        break  # out of time, budget or cancelled: later blocks do not run
                if final is None:
                    fa = find_final_answer(text)
                    if fa is not None and fa.kind == "text":
                        final = fa.value
                    elif fa is not None:
                        res = self._execute_cell(env, host, f"FINAL_VAR({fa.value!r})")
                        if res.final_answer is not None:
                            final = res.final_answer
                        else:
                            note = (f"FINAL_VAR({fa.value}) found no variable named {fa.value!r}. "
                                    "Create it in a ```repl``` block first, then call FINAL_VAR.")
                iteration = RLMIteration(it_no, text, [CodeBlock(c, r) for c, r in blocks], final,
                                         time.perf_counter() - it_t0, response.usage)
                self.emit(IterationCompleted(
                    run_id=self.run_id, depth=self.depth, parent_run_id=self.parent_run_id,
                    iteration=it_no, response=text,
                    code_blocks=[b.to_dict() for b in iteration.code_blocks], final_answer=final,
                    iteration_time=iteration.iteration_time,
                    usage={"input_tokens": response.usage.input_tokens,
                           "output_tokens": response.usage.output_tokens,
                           "cost": response.usage.cost}))
                self._fire("on_iteration_complete", self.depth, it_no, iteration.iteration_time)
                if final is not None:  # a finished run returns, whatever the limits say
                    if rlm.persistent:
                        self._save_history(env, full_history + [{"role": "assistant", "content": text}])
                    return self._result(final, backend)
                errors = [r.error for _, r in blocks if r.error]
                if errors:
                    consecutive_errors += 1
                    last_error = errors[-1]
                else:
                    consecutive_errors = 0
                self.check_limits()
                if rlm.max_errors is not None and consecutive_errors >= rlm.max_errors:
                    raise ErrorThresholdExceededError(consecutive_errors, rlm.max_errors,
                                                      last_error, self.partial())
                new = [{"role": "assistant", "content": text}]
                if blocks:
                    out = P.repl_output_message(blocks)
                    if note:
                        out["content"] += "\n\n" + note
                    new.append(out)
                elif note:
                    new.append({"role": "user", "content": note})
                else:
                    new.append(P.NO_CODE_MESSAGE)
                messages += new
                full_history += new
                if rlm.compaction:
                    messages = self._maybe_compact(env, backend, label, messages, full_history)
            # Out of turns: one more call asks for the answer.
            self.check_limits()
            response = self._call_model(backend, label, messages + [P.final_request_message(question)])
            self.last_response = response.text
            answer, source = self._answer_after_limit(env, host, response.text)
            if rlm.persistent:
                self._save_history(env, full_history + [{"role": "assistant", "content": response.text}])
            return self._result(answer, backend, RunStatus.MAX_ITERATIONS, source)
        finally:
            if not rlm.persistent:
                try:
                    env.shutdown()
                except Exception:  # noqa: BLE001
                    pass

    def _answer_after_limit(self, env: Environment, host: RunHost, text: str) -> tuple[str, AnswerSource]:
        """The answer to the request made after the last turn, and how it was obtained.

        FINAL/FINAL_VAR or code that sets ``answer`` count as an answer (models often answer in
        code: it is run, never returned). A reply that is still code is not an answer: the best
        partial ``answer["content"]`` is returned if a cell set one, else an empty answer with
        ``AnswerSource.NONE``.
        """
        fa = find_final_answer(text)
        if fa is not None and fa.kind == "text":
            return fa.value, AnswerSource.AFTER_LIMIT
        if fa is not None:
            res = self._execute_cell(env, host, f"FINAL_VAR({fa.value!r})")
            if res.final_answer is not None:
                return res.final_answer, AnswerSource.AFTER_LIMIT
        fences = iter_fences(text)
        for code in (f.code for f in fences if f.tag in CODE_TAGS):
            res = self._execute_cell(env, host, code)
            if res.answer_content:
                self.best_partial = res.answer_content
            if res.final_answer is not None:
                return res.final_answer, AnswerSource.AFTER_LIMIT
        if self.best_partial:  # what a cell set as answer["content"] beats prose said afterwards
            return self.best_partial, AnswerSource.PARTIAL
        if not fences and text.strip():
            return text.strip(), AnswerSource.AFTER_LIMIT
        return "", AnswerSource.NONE

    def _cell_timeout(self) -> float | None:
        limits = [t for t in (self.rlm.cell_timeout, self.remaining_time()) if t is not None]
        return min(limits) if limits else None

    def _save_history(self, env: Environment, messages: list[Message]) -> None:
        rlm = self.rlm
        env.add_history(messages, rlm._history_count)
        rlm._history_count += 1

    # -- compaction ------------------------------------------------------------------
    def _maybe_compact(self, env: Environment, backend: Backend, label: str,
                       messages: list[Message], full_history: list[Message]) -> list[Message]:
        rlm = self.rlm
        strategy = getattr(self, "_strategy", None)
        if strategy is None:
            strategy = self._strategy = rlm._resources.pm.create(
                "compaction", rlm.compaction_strategy,
                **{"threshold_pct": rlm.compaction_threshold_pct, **rlm.compaction_kwargs})
        tokens = count_tokens(backend, messages)
        window = context_window(backend, self.rlm.sampling_args.get("model"))
        if not strategy.should_compact(messages, tokens=tokens, context_window=window):
            return messages

        def summarize(msgs: Sequence[Message]) -> str:
            msgs = list(msgs)
            need = count_tokens(backend, msgs)
            if need > window:
                # Known to overflow: fail fast, without paying for the call. The strategy
                # degrades (a shorter request, or no summary).
                raise ContextWindowExceededError(
                    f"the summary request has about {need:,} tokens; the context window is "
                    f"{window:,}", backend=label, model=backend.model_name)
            return self._call_model(backend, label, msgs).text

        # The whole trajectory so far stays readable in the REPL, whatever the strategy keeps.
        env.add_history(list(full_history), rlm._history_count if rlm.persistent else 0)
        try:
            compacted = list(strategy.compact(messages, summarize=summarize))
        except RLMError:
            self.check_limits()  # a limit hit during the summary call is the run's limit
            compacted = _fallback_compaction(messages)
            rlm._warn_once(f"compaction strategy {rlm.compaction_strategy!r} failed; the oldest "
                           "turns were dropped instead")
        except Exception as exc:  # noqa: BLE001 - a broken strategy must not end the run
            compacted = _fallback_compaction(messages)
            rlm._warn_once(f"compaction strategy {rlm.compaction_strategy!r} raised {exc!r}; the "
                           "oldest turns were dropped instead")
        self.check_limits()
        if not compacted or compacted[0].get("role") != "system":
            compacted = _fallback_compaction(messages)
        self.emit(Compacted(run_id=self.run_id, depth=self.depth, parent_run_id=self.parent_run_id,
                            messages_before=len(messages), messages_after=len(compacted),
                            tokens_before=tokens, tokens_after=count_tokens(backend, compacted),
                            strategy=rlm.compaction_strategy))
        return compacted


def count_tokens(backend: Any, messages: Sequence[Message]) -> int:
    """Tokens of ``messages`` by the backend's own counter (``count_tokens``, e.g. tiktoken for
    OpenAI models), else about four characters per token."""
    from ._base import estimate_tokens

    counter = getattr(backend, "count_tokens", None)
    if callable(counter):
        try:
            n = counter(list(messages))
            if isinstance(n, int) and n >= 0:
                return n
        except Exception:  # noqa: BLE001 - a failing counter falls back to the estimate
            pass
    return estimate_tokens(list(messages))


def context_window(backend: Any, model: str | None = None,
                   default: int = DEFAULT_CONTEXT_WINDOW) -> int:
    """The model's context window as the backend reports it, else ``default``."""
    fn = getattr(backend, "context_window", None)
    if callable(fn):
        try:
            value = fn(model) if model else fn()
            if isinstance(value, int) and value > 0:
                return value
        except Exception:  # noqa: BLE001
            pass
    return default


def _preview_chars(backend: Any) -> int:
    """How much of the context a backend's prompt profile wants shown (0: none, the default)."""
    n = getattr(backend, "context_preview_chars", 0)
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 0


def _fallback_compaction(messages: list[Message]) -> list[Message]:
    """What the kernel keeps when a strategy fails: the opening messages and the last turn."""
    head = messages[:2]
    tail = messages[-2:] if len(messages) > 4 else messages[2:]
    note = {"role": "user", "content": "Earlier turns were dropped to fit the context window; the "
                                       "full record is in the REPL variable `history`."}
    return head + [note] + tail


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> None:
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # the awaiting loop is closed: nobody is waiting any more
        pass


def _check_type(name: str, value: Any, typ: type) -> None:
    if not isinstance(value, typ):
        raise ConfigurationError(f"{name} must be a {typ.__name__}, got {type(value).__name__}.")
