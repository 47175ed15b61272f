"""Helpers for long contexts: split text into chunks, find matches with their surroundings."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from rlm.types import Tool


def chunk_text(text: str, size: int = 50_000, overlap: int = 0) -> list[str]:
    """Split ``text`` into pieces of at most ``size`` characters, cutting at a newline when one
    is near the end of a piece; consecutive pieces share ``overlap`` characters."""
    if size <= 0:
        raise ValueError("size must be positive")
    if not 0 <= overlap < size:
        raise ValueError("overlap must be >= 0 and smaller than size")
    chunks: list[str] = []
    start, n = 0, len(text)
    while start < n:
        end = min(n, start + size)
        if end < n:
            cut = text.rfind("\n", start + size // 2, end)
            if cut != -1:
                end = cut + 1
        chunks.append(text[start:end])
        if end >= n:
            break
        start = max(end - overlap, start + 1)
    return chunks


def grep_text(text: str, pattern: str, window: int = 200, max_matches: int = 50,
              ignore_case: bool = True) -> list[dict[str, Any]]:
    """Regex matches of ``pattern`` in ``text``: ``[{"start", "match", "snippet"}]`` where the
    snippet holds ``window`` characters on each side."""
    flags = re.IGNORECASE if ignore_case else 0
    out: list[dict[str, Any]] = []
    for m in re.finditer(pattern, text, flags):
        a, b = max(0, m.start() - window), min(len(text), m.end() + window)
        out.append({"start": m.start(), "match": m.group(0), "snippet": text[a:b]})
        if len(out) >= max_matches:
            break
    return out


class ContextTools:
    def tools(self, run: Mapping[str, Any]) -> dict[str, Tool]:
        return {
            "chunk_text": Tool("chunk_text", chunk_text,
                               "chunk_text(text, size=50000, overlap=0) -> list[str]: split text into "
                               "pieces, preferring newline boundaries"),
            "grep_text": Tool("grep_text", grep_text,
                              "grep_text(text, pattern, window=200, max_matches=50) -> list of "
                              "{start, match, snippet}: regex search with surrounding text"),
        }
