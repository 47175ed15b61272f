"""Normalising ``custom_tools`` and collecting tools from tool-provider plugins."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .exceptions import ConfigurationError
from .types import Tool

RESERVED_NAMES = frozenset({
    "llm_query", "llm_query_batched", "rlm_query", "rlm_query_batched", "SHOW_VARS",
    "FINAL", "FINAL_VAR", "answer", "context", "history",
})
"""Names the REPL owns. They are restored after every cell and cannot be tool names."""


def normalize_tools(tools: Mapping[str, Any] | None, *, argument: str = "custom_tools",
                    source: str = "user") -> dict[str, Tool]:
    """``{name: value | {"tool": value, "description": str}}`` -> ``{name: Tool}``.

    Raises :class:`ConfigurationError` for reserved or invalid names and malformed entries.
    """
    if tools is None:
        return {}
    if not isinstance(tools, Mapping):
        raise ConfigurationError(
            f"{argument} must be a dict of name -> callable or value, got {type(tools).__name__}.")
    out: dict[str, Tool] = {}
    for name, spec in tools.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ConfigurationError(
                f"{argument} key {name!r} is not a valid Python identifier; the model calls tools by "
                "name, so use a name like 'fetch_weather'.")
        if name in RESERVED_NAMES or _is_indexed_reserved(name):
            raise ConfigurationError(
                f"{argument} key {name!r} is reserved by the REPL ({', '.join(sorted(RESERVED_NAMES))}, "
                "context_N, history_N); rename the tool.")
        if isinstance(spec, Tool):
            out[name] = spec
            continue
        if isinstance(spec, Mapping) and "tool" in spec:
            extra = set(spec) - {"tool", "description"}
            if extra:
                raise ConfigurationError(
                    f"{argument}[{name!r}] has unexpected keys {sorted(extra)}; the dict form is "
                    '{"tool": callable_or_value, "description": "..."}.')
            desc = spec.get("description")
            if desc is not None and not isinstance(desc, str):
                raise ConfigurationError(f"{argument}[{name!r}]['description'] must be a string.")
            out[name] = Tool(name, spec["tool"], desc, source)
        else:
            out[name] = Tool(name, spec, None, source)
    return out


def _is_indexed_reserved(name: str) -> bool:
    for prefix in ("context_", "history_"):
        if name.startswith(prefix) and name[len(prefix):].isdigit():
            return True
    return False
