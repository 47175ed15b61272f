"""Tracebacks of failed cells, cut down to what the model needs.

The frames of the REPL's own machinery (the ``exec`` call) are dropped, cell lines come from the
REPL's own copy of each cell's source (``linecache`` is never touched, so two REPLs that both
have a ``<cell 3>`` cannot show each other's code), and very deep stacks are shortened.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Mapping, Sequence

MAX_FRAMES = 20
HEAD_FRAMES = 4
_OWN_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


class _CellStack(traceback.StackSummary):
    def format(self) -> list[str]:
        if len(self) <= MAX_FRAMES:
            return super().format()
        head = traceback.StackSummary.from_list(list(self[:HEAD_FRAMES])).format()
        tail_count = MAX_FRAMES - HEAD_FRAMES
        tail = traceback.StackSummary.from_list(list(self[-tail_count:])).format()
        omitted = len(self) - HEAD_FRAMES - tail_count
        return [*head, f"  ... {omitted} more frames ...\n", *tail]


def _rewrite(te: traceback.TracebackException, sources: Mapping[str, Sequence[str]],
             seen: set[int]) -> None:
    if id(te) in seen:
        return
    seen.add(id(te))
    frames = list(te.stack)
    first_cell = next((i for i, f in enumerate(frames) if f.filename in sources), None)
    if first_cell is not None:
        # Drop the REPL's own machinery (the exec call, the exit() helper), keep the rest.
        frames = [f for f in frames[first_cell:] if not f.filename.startswith(_OWN_DIR)]
    rebuilt: list[traceback.FrameSummary] = []
    for frame in frames:
        lines = sources.get(frame.filename)
        if lines is not None:
            lineno = frame.lineno or 0
            line = lines[lineno - 1] if 0 < lineno <= len(lines) else ""
            frame = traceback.FrameSummary(
                frame.filename, frame.lineno, frame.name, lookup_line=False, line=line,
                end_lineno=frame.end_lineno, colno=frame.colno, end_colno=frame.end_colno)
        rebuilt.append(frame)
    te.stack = _CellStack.from_list(rebuilt)
    for linked in (te.__cause__, te.__context__):
        if linked is not None:
            _rewrite(linked, sources, seen)
    for member in getattr(te, "exceptions", None) or ():
        _rewrite(member, sources, seen)


def _summary(exc: BaseException, sources: Mapping[str, Sequence[str]]
             ) -> traceback.TracebackException:
    te = traceback.TracebackException.from_exception(exc, lookup_lines=False)
    _rewrite(te, sources, set())
    return te


def format_cell_exception(exc: BaseException, sources: Mapping[str, Sequence[str]]) -> str:
    """The usual ``Traceback ... ExceptionType: message`` text, limited to the cell's frames."""
    try:
        text = "".join(_summary(exc, sources).format()).rstrip("\n")
    except Exception:  # noqa: BLE001 - an exception whose __str__ fails must still be reported
        text = f"{type(exc).__name__}: <exception could not be formatted>"
    if isinstance(exc, SystemExit):
        text += ("\n(sys.exit(), exit() and quit() end only the current code block; the REPL and "
                 "its variables are still there.)")
    return text


def format_stack(exc: BaseException | None, sources: Mapping[str, Sequence[str]]) -> str:
    """Only the ``Traceback`` part (where the cell was when it was stopped), or ``""``."""
    if exc is None or exc.__traceback__ is None:
        return ""
    try:
        te = _summary(exc, sources)
    except Exception:  # noqa: BLE001
        return ""
    if not any(f.filename in sources for f in te.stack):
        return ""
    return "Traceback (most recent call last):\n" + "".join(te.stack.format())
