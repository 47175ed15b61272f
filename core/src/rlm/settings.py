"""The settings of an RLM, written once: :class:`Settings`.

``RLM(...)`` validates its arguments into one frozen :class:`Settings` (``rlm.settings``). Every
other place that needs "the same RLM, one level down" derives from it instead of listing the
arguments again: an in-process child of ``rlm_query`` (:meth:`Settings.for_child`), a child sent
to an executor (the same, as plain keyword arguments: :meth:`Settings.to_kwargs`), and the lines
of a batch (:data:`PER_LINE`: what a line's ``settings`` may set).

The arguments of ``RLM(...)`` that are not settings are objects of the calling process
(:data:`PROCESS_ARGUMENTS`: the logger, sinks, callbacks, the plugin manager): they never cross
to another process, and a child gets its own (a fresh logger) or shares the parent's (sinks,
callbacks).

Thread-safety: a :class:`Settings` is immutable after construction; its dict fields are private
copies that nothing mutates, so it is safe to share between threads and to pickle.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .exceptions import ConfigurationError

#: ``RLM(...)`` arguments that are objects of the calling process, not settings.
PROCESS_ARGUMENTS = ("logger", "sinks", "plugin_manager", "on_subcall_start",
                     "on_subcall_complete", "on_iteration_start", "on_iteration_complete")


def _setting(default: Any = None, *, per_line: bool = True, factory: Any = None) -> Any:
    meta = {"per_line": per_line}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Settings:
    """What an RLM is, as plain data (the arguments of ``RLM(...)`` minus process objects).

    Build it with :meth:`from_arguments`, which checks every value and says which argument to
    fix; the constructor itself does not validate.
    """

    backend: str
    backend_kwargs: dict[str, Any] = _setting(factory=dict)
    environment: str = _setting("local")
    environment_kwargs: dict[str, Any] = _setting(factory=dict)
    depth: int = _setting(0)
    max_depth: int = _setting(1)
    max_iterations: int = _setting(30)
    max_budget: float | None = _setting(None)
    max_timeout: float | None = _setting(None)
    max_tokens: int | None = _setting(None)
    max_errors: int | None = _setting(None)
    custom_system_prompt: str | None = _setting(None)
    other_backends: list[str] = _setting(factory=list)
    other_backend_kwargs: list[dict[str, Any]] = _setting(factory=list)
    verbose: bool = _setting(False)
    # One REPL across completions: an object of this process, so never per batch line.
    persistent: bool = _setting(False, per_line=False)
    custom_tools: dict[str, Any] | None = _setting(None)
    custom_sub_tools: dict[str, Any] | None = _setting(None)
    compaction: bool = _setting(False)
    compaction_threshold_pct: float = _setting(0.85)
    sampling_args: dict[str, Any] = _setting(factory=dict)
    sub_sampling_args: dict[str, Any] = _setting(factory=dict)
    max_concurrent_subcalls: int = _setting(16)
    cell_timeout: float | None = _setting(None)
    tool_prompts: list[str] = _setting(factory=list)
    tool_code: str | None = _setting(None)
    tool_providers: list[str] = _setting(factory=list)
    compaction_strategy: str = _setting("summarize")
    compaction_kwargs: dict[str, Any] = _setting(factory=dict)
    subcall_executor: str | None = _setting(None)
    subcall_executor_kwargs: dict[str, Any] = _setting(factory=dict)

    @classmethod
    def from_arguments(cls, **arguments: Any) -> Settings:
        """Check and normalise ``RLM(...)``-style arguments (``None`` for an optional mapping or
        list means empty; ``custom_sub_tools`` and ``sub_sampling_args`` default to their root
        counterparts). Raises :class:`ConfigurationError` naming the argument and the fix."""
        unknown = sorted(set(arguments) - set(NAMES))
        if unknown:
            raise ConfigurationError(f"unknown RLM settings {unknown}; the settings are {list(NAMES)}.")
        a = dict(arguments)
        for names, ok, what in _CHECKS:
            for name in names:
                if name in a and not ok(a[name]):
                    raise ConfigurationError(f"{name} must be {what}, got {a[name]!r}.")
        others = list(a.get("other_backends") or [])
        other_kwargs = [dict(k) for k in (a.get("other_backend_kwargs") or [])]
        if other_kwargs and len(other_kwargs) != len(others):
            raise ConfigurationError(
                f"other_backend_kwargs has {len(other_kwargs)} entries but other_backends has "
                f"{len(others)}; give one kwargs dict per backend (in the same order).")
        tool_code = a.get("tool_code")
        if tool_code is not None:
            try:
                compile(tool_code, "<tool_code>", "exec")
            except SyntaxError as exc:
                raise ConfigurationError(f"tool_code is not valid Python: {exc}") from exc
        prompts = a.get("tool_prompts")
        sampling = dict(a.get("sampling_args") or {})
        sub_sampling = a.get("sub_sampling_args")
        tools = a.get("custom_tools")
        sub_tools = a.get("custom_sub_tools")
        a.update(
            backend_kwargs=dict(a.get("backend_kwargs") or {}),
            environment_kwargs=dict(a.get("environment_kwargs") or {}),
            other_backends=others,
            other_backend_kwargs=other_kwargs or [{} for _ in others],
            custom_sub_tools=sub_tools if sub_tools is not None else tools,
            sampling_args=sampling,
            sub_sampling_args=dict(sub_sampling if sub_sampling is not None else sampling),
            tool_prompts=[prompts] if isinstance(prompts, str) else list(prompts or []),
            tool_providers=list(a.get("tool_providers") or []),
            compaction_kwargs=dict(a.get("compaction_kwargs") or {}),
            subcall_executor_kwargs=dict(a.get("subcall_executor_kwargs") or {}))
        return cls(**a)

    def for_child(self, *, backend: str, backend_kwargs: dict[str, Any],
                  sampling_overrides: dict[str, Any], max_budget: float | None,
                  max_timeout: float | None, max_tokens: int | None) -> Settings:
        """The settings of a child of ``rlm_query`` one level down, whether it runs on a thread
        of this process or on an executor: the routed backend, the tree's remaining limits, the
        sub-call tools and sampling, no persistence, no verbosity, and its own children on
        threads (never sent to the executor again)."""
        return dataclasses.replace(
            self, backend=backend, backend_kwargs=dict(backend_kwargs), depth=self.depth + 1,
            max_budget=max_budget, max_timeout=max_timeout, max_tokens=max_tokens,
            verbose=False, persistent=False, custom_tools=self.custom_sub_tools,
            sampling_args={**self.sub_sampling_args, **sampling_overrides},
            subcall_executor=None, subcall_executor_kwargs={})

    def to_kwargs(self) -> dict[str, Any]:
        """The settings as ``RLM(**kwargs)`` arguments (fresh copies of every dict and list)."""
        return {f.name: _copy(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


#: (arguments, check, what a valid value is): the checks of :meth:`Settings.from_arguments`.
_CHECKS: tuple[tuple[tuple[str, ...], Any, str], ...] = (
    (("backend", "environment", "compaction_strategy"), lambda v: isinstance(v, str), "a str"),
    (("subcall_executor",), lambda v: v is None or isinstance(v, str), "a str or None"),
    (("max_depth", "max_iterations", "max_concurrent_subcalls"),
     lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    (("depth",), lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    (("max_budget", "max_timeout", "cell_timeout"),
     lambda v: v is None or (_is_number(v) and v > 0), "a positive number or None"),
    (("max_tokens", "max_errors"), lambda v: v is None or (_is_int(v) and v >= 1),
     "a positive integer or None"),
    (("compaction_threshold_pct",), lambda v: _is_number(v) and 0 < v <= 1, "in (0, 1]"),
)


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return [dict(v) if isinstance(v, dict) else v for v in value]
    return value


#: Every setting's name, in ``RLM(...)`` order.
NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Settings))
#: The settings a line of a batch may set in its ``settings`` object.
PER_LINE: frozenset[str] = frozenset(f.name for f in dataclasses.fields(Settings)
                                     if f.metadata.get("per_line", True))

__all__ = ["NAMES", "PER_LINE", "PROCESS_ARGUMENTS", "Settings"]
