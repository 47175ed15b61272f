"""The local environment: a persistent, in-process Python REPL (``environment="local"``).

Importing this package is cheap; :class:`~rlm_plugins.local.repl.LocalREPL` loads on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LocalREPL"]


def __getattr__(name: str) -> Any:
    if name == "LocalREPL":
        from .repl import LocalREPL

        return LocalREPL
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
