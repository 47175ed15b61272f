"""Typed protocols for the hot path.

pluggy finds plugins and tells the kernel what they register; it cannot await, so model calls and
cell execution go through these protocols instead. A plugin implements one (usually by subclassing
the matching base class in :mod:`rlm.plugin`) and registers a factory for it from a hook.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .events import Event
    from .types import CellResult, EnvironmentCapabilities, Message, ModelResponse, Tool


@runtime_checkable
class Backend(Protocol):
    """A model provider client. Built once per run by ``factory(**backend_kwargs)``.

    Optional: ``aclose()`` (a coroutine) closes async clients on the loop they were made on;
    ``context_window(model=None) -> int | None`` and ``count_tokens(messages) -> int`` feed
    compaction. Both call paths take the chat messages and the sampling arguments (``temperature``,
    ``max_tokens``, ...) that the user passed as ``sampling_args``; they return the reply text and
    the call's :class:`~rlm.types.Usage`. Errors are raised as :class:`rlm.BackendError` subclasses.

    Optional class attribute ``sampling_options``: a mapping of the sampling-argument names the
    backend accepts to a one-line description. ``rlm run -o KEY VALUE`` refuses a ``KEY`` not in
    it (listing the valid ones) and ``rlm models`` shows it; without it every option is passed
    as given. ``rlm models`` also reads ``default_prices`` / ``PRICES``, ``CONTEXT_WINDOWS``,
    ``DEFAULT_MODEL`` and ``model_aliases`` when the backend defines them (see ``rlm_cli.models``).
    """

    model_name: str

    def completion(self, messages: Sequence[Message], **sampling: Any) -> ModelResponse: ...

    async def acompletion(self, messages: Sequence[Message], **sampling: Any) -> ModelResponse: ...

    def close(self) -> None: ...


class Host(Protocol):
    """What an environment calls back into: the sub-call helpers of the REPL.

    Every method returns a string (or a list of strings for the batched ones); failures come back
    as strings starting with ``"Error: "`` rather than exceptions, so model code keeps running.
    Depth, budget and time are enforced here, on the host, whatever the cell does.
    """

    @property
    def depth(self) -> int:
        """The depth of the run this host serves (0 for the root); a cell cannot change it."""
        ...

    def llm_query(self, prompt: str | list[Message], model: str | None = None) -> str: ...

    def llm_query_batched(self, prompts: Sequence[str | list[Message]],
                          model: str | None = None) -> list[str]: ...

    def rlm_query(self, prompt: Any, model: str | None = None) -> str: ...

    def rlm_query_batched(self, prompts: Sequence[Any], model: str | None = None) -> list[str]: ...


@runtime_checkable
class Environment(Protocol):
    """A REPL the model's code runs in. Built by ``factory(**environment_kwargs)``.

    Lifecycle: ``start(host, tools)`` once; ``add_context`` for each ``completion()`` (index 0,
    1, ... in persistent mode; ``context`` always names index 0); ``execute`` per code block;
    ``shutdown`` at the end of the run (or at ``RLM.close()`` in persistent mode).

    The REPL must offer the helpers ``llm_query``, ``llm_query_batched``, ``rlm_query``,
    ``rlm_query_batched`` (bound to ``host``), ``SHOW_VARS``, ``FINAL``, ``FINAL_VAR`` and the
    ``answer`` dict, and restore these reserved names after every cell.

    Optional: ``interrupt() -> bool``, callable from any thread, stops the cell running now (the
    kernel calls it when a run is cancelled, so a persistent REPL is not left busy); the cell
    ends with an error starting ``Cancelled``, the REPL's state is kept; ``False`` when no cell
    was running. Without it, a cancelled run's cell is left to finish (persistent mode) or the
    environment is shut down.
    """

    capabilities: EnvironmentCapabilities

    def start(self, host: Host, tools: Mapping[str, Tool]) -> None: ...

    def add_context(self, value: Any, index: int) -> None: ...

    def add_history(self, messages: list[Message], index: int) -> None: ...

    def execute(self, code: str, *, timeout: float | None = None) -> CellResult: ...

    def usage_instructions(self) -> str: ...

    def shutdown(self) -> None: ...


@runtime_checkable
class ToolProvider(Protocol):
    """Contributes tools to a run. ``tools`` is called once per run with the run's settings."""

    def tools(self, run: Mapping[str, Any]) -> Mapping[str, Tool]: ...


@runtime_checkable
class CompactionStrategy(Protocol):
    """Shrinks the root's message history when it nears the model's context window.

    ``should_compact`` is asked after every turn; ``compact`` returns the new message list. It may
    call ``summarize(messages) -> str`` (a model call made by the kernel, counted in usage).
    """

    def should_compact(self, messages: Sequence[Message], *, tokens: int,
                       context_window: int) -> bool: ...

    def compact(self, messages: Sequence[Message], *, summarize: Any) -> list[Message]: ...


@runtime_checkable
class LoggerSink(Protocol):
    """Receives the typed events of a run (:mod:`rlm.events`). Must not raise; the kernel guards
    every call anyway and reports a failing sink once."""

    def handle(self, event: Event) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class ExecutorRun(Protocol):
    """One :meth:`Executor.map` in progress: iterate it for ``(index, result, error)`` tuples.

    Tuples come in completion order, one per item, ``index`` being the item's position in the
    input; exactly one of ``result`` / ``error`` is meaningful (``error`` is ``None`` on
    success). ``cancel()`` may be called from any thread: no new item starts, in-flight items
    are stopped where the engine can, and the iteration ends soon after (items that never
    finished yield nothing).
    """

    def __iter__(self) -> Iterator[tuple[int, Any, BaseException | None]]: ...

    def cancel(self) -> None: ...


@runtime_checkable
class Executor(Protocol):
    """Runs many independent jobs with bounded concurrency: the lines of ``rlm.batch`` and, with
    ``RLM(subcall_executor=...)``, the child RLMs of ``rlm_query_batched``.

    Built by ``factory(**executor_kwargs)``. ``map(fn, items, *, concurrency)`` calls
    ``fn(item)`` for every item, at most ``concurrency`` at a time, and returns an
    :class:`ExecutorRun`. ``items`` is consumed lazily, one item each time a slot frees up, so
    the caller can decide an item's arguments (a remaining budget) at the moment it starts.
    ``fn`` and the items are picklable when the executor runs them in other processes; an
    exception raised by ``fn`` is reported as that item's ``error``, never raised by ``map``.
    ``close()`` releases the engine (threads, a cluster connection the executor opened).
    Optional: ``describe() -> str``, one line saying where jobs run.
    """

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any], *,
            concurrency: int) -> ExecutorRun: ...

    def close(self) -> None: ...
