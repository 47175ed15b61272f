"""The IPython settings both modes accept, checked before anything starts (stdlib only)."""

from __future__ import annotations

from typing import Any

from rlm.exceptions import ConfigurationError

#: IPython's traceback modes (``%xmode``).
XMODES = ("Plain", "Context", "Verbose", "Minimal")
#: IPython's ``ast_node_interactivity``: which bare expressions of a cell are echoed as Out[n].
INTERACTIVITY = ("last_expr", "none", "all", "last", "last_expr_or_assign")


def check_shell_options(xmode: Any, interactivity: Any, kind: str) -> None:
    """Refuse a traceback mode or echo setting IPython does not know, naming the valid ones."""
    if xmode not in XMODES:
        raise ConfigurationError(f"xmode must be one of {', '.join(XMODES)} (IPython's traceback "
                                 f"modes), not {xmode!r}")
    if interactivity not in INTERACTIVITY:
        raise ConfigurationError(
            f"ast_node_interactivity must be one of {', '.join(INTERACTIVITY)} (which bare "
            f"expressions of a cell the {kind} REPL echoes as Out[n]), not {interactivity!r}")
