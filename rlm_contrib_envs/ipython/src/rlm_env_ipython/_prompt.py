"""The REPL description both IPython modes give the model (``usage_instructions``)."""

from __future__ import annotations

import sys


def usage_text(where: str, *, max_output_chars: int, ast_node_interactivity: str,
               cell_timeout: float | None, on_timeout: str) -> str:
    """What the model is told about the REPL.

    Args:
        where: what the REPL is and where it runs ("an IPython shell (Python 3.11) ..." is
            built from it: ``"running inside the host process"``).
        on_timeout: what happens to a cell over its time limit ("is stopped").
    """
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    lines = [
        f"The REPL is an IPython {where.format(version=version)} (not a sandbox).",
        ("Variables, functions, classes and imports persist from one code block to the next "
         "(and across completion() calls in persistent mode: context_0, context_1, ... and "
         "history_0, history_1, ...)."),
        ("IPython syntax works: magics such as %time, %timeit and %who, !shell commands, "
         "top-level await, display(obj)."),
        ("What you print is shown back to you (stdout and stderr, each cut to "
         f"{max_output_chars:,} characters per block)"
         + ("; the value of a bare expression on the last line is shown as Out[n]."
            if ast_node_interactivity != "none" else "; bare expressions are not echoed.")),
    ]
    if cell_timeout is not None:
        lines.append(f"A code block may run for at most {cell_timeout:g} seconds; a longer one "
                     f"{on_timeout} and its variables are kept.")
    lines.append("input() is unavailable; exit() or sys.exit() only ends the current block.")
    return "\n".join(lines)
