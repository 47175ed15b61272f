"""Reading the model's reply: code fences and final answers.

Code runs from fenced blocks tagged ``repl`` (the protocol's own tag) and also ``python`` / ``py``
(models trained on Markdown write those, and silently ignoring them wastes turns). A final answer
in prose is ``FINAL(text)`` or ``FINAL_VAR(name)`` at the start of a line outside any fence.

Every function here is linear in the reply's length, whatever the reply (a reply is untrusted input:
one line of a megabyte must not hold the host). Fence lines are read with ``str`` methods, not
regular expressions; the two FINAL patterns have no adjacent repeats that can match the same
character, so they cannot backtrack quadratically (``core/tests/test_parsing.py`` checks that
structurally). Line endings are universal, as in Python source: ``\r\n`` and ``\r`` end a line.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass

CODE_TAGS = frozenset({"repl", "python", "py", "python3"})

_TAG_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_+-")


@dataclass(frozen=True, slots=True)
class Fence:
    tag: str
    code: str
    start: int  # line index of the opening fence
    end: int  # line index of the closing fence


def _lines(text: str) -> list[str]:
    """``text`` split into lines with universal line endings (``\n``, ``\r\n``, ``\r``)."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.split("\n")


def _opening(line: str) -> tuple[str, str, str] | None:
    """``(indent, marker, tag)`` when ``line`` opens a fence, else None.

    An opening line is optional spaces/tabs, three or more backticks or tildes, then anything
    without a backtick; the tag is the first word after the marker (letters, digits, ``_+-``).
    """
    body = line.lstrip(" \t")
    if not body.startswith(("```", "~~~")):
        return None
    char = body[0]
    rest = body.lstrip(char)
    if "`" in rest:
        return None
    info = rest.lstrip(" \t")
    k = 0
    while k < len(info) and info[k] in _TAG_CHARS:
        k += 1
    return line[:len(line) - len(body)], body[:len(body) - len(rest)], info[:k]


def _closes(line: str, char: str, length: int) -> bool:
    """Whether ``line`` closes a fence opened by ``length`` times ``char``: as many or more, alone."""
    mark = line.strip(" \t")
    return len(mark) >= length and mark.count(char) == len(mark)


def iter_fences(text: str) -> list[Fence]:
    """Every closed fenced block, in order. Unclosed fences are ignored (the reply was cut off)."""
    lines = _lines(text)
    fences: list[Fence] = []
    i = 0
    n = len(lines)
    while i < n:
        opening = _opening(lines[i])
        if opening is None:
            i += 1
            continue
        indent, marker, tag = opening[0], opening[1], opening[2].lower()
        j = i + 1
        while j < n and not _closes(lines[j], marker[0], len(marker)):
            j += 1
        if j >= n:  # unclosed: not code
            break
        body = lines[i + 1:j]
        if indent:
            body = [ln[len(indent):] if ln.startswith(indent) else ln for ln in body]
        fences.append(Fence(tag, textwrap.dedent("\n".join(body)) if not indent else "\n".join(body), i, j))
        i = j + 1
    return fences


def find_code_blocks(text: str) -> list[str]:
    """The code of every ``repl``/``python`` block in ``text``, in order."""
    return [f.code for f in iter_fences(text) if f.tag in CODE_TAGS]


def strip_fences(text: str) -> str:
    """``text`` with every closed fenced block removed (used before looking for FINAL)."""
    lines = _lines(text)
    drop: set[int] = set()
    for f in iter_fences(text):
        drop.update(range(f.start, f.end + 1))
    return "\n".join(ln for k, ln in enumerate(lines) if k not in drop)


_FINAL_VAR = re.compile(r"^[ \t>*_]*FINAL_VAR\((.*)\)[ \t*_.]*$", re.MULTILINE)
_FINAL_START = re.compile(r"^[ \t>*_]*FINAL\(", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class FinalAnswer:
    kind: str  # "text" (FINAL) or "var" (FINAL_VAR)
    value: str


def _unquote(s: str) -> str:
    s = s.strip()
    if len(s) >= 6 and s[:3] == s[-3:] and s[:3] in ('"""', "'''"):
        return s[3:-3]
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "\"'":
        return s[1:-1]
    return s


def _balanced_end(text: str, start: int) -> int | None:
    """Index of the ')' closing the '(' just before ``start``, honouring nesting; None if none."""
    depth = 1
    for k in range(start, len(text)):
        c = text[k]
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return k
    return None


def find_final_answer(text: str) -> FinalAnswer | None:
    """A ``FINAL(...)`` or ``FINAL_VAR(...)`` written in prose (outside fences), else None.

    ``FINAL_VAR`` wins when both appear, as in the reference library. ``FINAL(...)`` takes
    everything up to its balanced closing parenthesis, or up to the last ``)`` in the reply when
    the parentheses inside the answer never balance. One layer of matching quotes is removed.
    """
    prose = strip_fences(text)
    m = _FINAL_VAR.search(prose)
    if m:
        name = _unquote(m.group(1)).strip()
        if name:
            return FinalAnswer("var", name)
    m = _FINAL_START.search(prose)
    if not m:
        return None
    start = m.end()
    end = _balanced_end(prose, start)
    if end is None:
        last = prose.rfind(")")
        if last < start:
            return None
        end = last
    return FinalAnswer("text", _unquote(prose[start:end]))
