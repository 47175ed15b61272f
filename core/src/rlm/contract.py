"""The environment contract's exact texts and names, for plugin authors to import, not copy.

An environment (see :class:`rlm.protocols.Environment` and docs/plugins.md, "The environment
contract") owes the model a REPL that behaves the same everywhere. Where the kernel, the model's
prompt or the conformance kit (``rlm_testkit.EnvironmentTests``) recognise a behaviour by its text,
that text is defined here once: an environment puts it in the error or output it produces, the kit
checks for it, and docs/plugins.md names it (``tests/test_docs_plugins.py`` keeps the three in step).

Every constant is a substring the kit looks for, not a whole message: write a full, helpful
sentence around it, e.g. ``f"RuntimeError: {INPUT_REFUSED} in the REPL: nobody is there to type an
answer."``. Nothing here imports anything heavy; environments that run a worker in another process
without rlm installed (a sandbox image) keep a literal copy, checked by the kit.
"""

from __future__ import annotations

import ast

from ._tools import RESERVED_NAMES
from .types import context_depth_text as context_too_deep

__all__ = [
    "CANCELLED", "CODE_TOOL_FIX", "INPUT_REFUSED", "RESERVED_NAMES", "RESET_ANSWER", "TIME_LIMIT",
    "TRACEBACK", "TRUNCATED", "code_tool_defines", "context_too_deep", "variable_not_found",
]

INPUT_REFUSED = "input() is not available"
"""In the error of a cell that calls ``input()`` (nobody can type an answer): raise, never block."""

TRUNCATED = "truncated"
"""In a cell's stdout (or stderr) when it was cut to the environment's limit; the end is kept."""

TIME_LIMIT = "time limit"
"""In the error of a cell stopped by its timeout (``CellResult.timed_out`` is then ``True``)."""

CANCELLED = "Cancelled"
"""The error of a cell stopped by ``interrupt()`` starts with this; the REPL's state is kept."""

TRACEBACK = "Traceback"
"""A cell that raises: its error holds the Python traceback, and so does its stderr."""

CODE_TOOL_FIX = "source code as a string"
"""In the :class:`~rlm.exceptions.ConfigurationError` that ``start()`` raises for a callable tool
an environment cannot take (its REPL is in another process): the fix the user can apply."""

RESET_ANSWER = 'answer["content"] = ""\nanswer["ready"] = False\n'
"""The cell the kernel runs after ``add_context(value, index)`` with ``index > 0`` (persistent
mode): each ``completion()`` starts with no answer, whatever the environment kept from the last one.
It mutates the ``answer`` dict in place, so an environment that restores its own dict after every
cell sees the reset too."""


def variable_not_found(name: str) -> str:
    """What ``FINAL_VAR(name)`` prints for a variable that does not exist (no answer is set)."""
    return f"Variable {name!r} not found"


def code_tool_defines(value: object, name: str) -> bool:
    """Whether a string tool is code: Python source that binds ``name`` at its top level
    (``def name(``, ``class name``, ``name = ...``, ``import x as name``). The environment runs it
    and binds ``name``; any other string (prose, a URL, a non-parsing snippet) is a plain value."""
    if not isinstance(value, str):
        return False
    try:
        tree = ast.parse(value)
    except (SyntaxError, ValueError):
        return False
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and \
                node.name == name:
            return True
        targets: list[ast.AST] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = [node.target]
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            if any((a.asname or a.name.split(".")[0]) == name for a in node.names):
                return True
        for target in targets:
            if any(isinstance(n, ast.Name) and n.id == name for n in ast.walk(target)):
                return True
    return False
