"""The reference library's compaction: summarise everything after the opening messages.

When the root's messages reach ``threshold_pct`` of the model's context window, the turns after
the system prompt and the context description are replaced by one summary written by the model.
The full trajectory is kept in the REPL variable ``history`` by the kernel before compacting.

If the summary call itself fails (for example because the history no longer fits), the strategy
degrades: it summarises a trimmed copy, and as a last resort keeps the most recent turns only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rlm.types import Message

SUMMARY_REQUEST = (
    "Summarise the work so far so you can continue without the earlier turns: what the context "
    "is, what you tried, the key findings with exact values, the names of REPL variables that "
    "hold results, and what remains to do. Be concise but keep every fact you will need.")


class SummarizeCompaction:
    def __init__(self, threshold_pct: float = 0.85, keep_head: int = 2, max_summary_input_chars: int = 200_000):
        self.threshold_pct = threshold_pct
        self.keep_head = keep_head
        self.max_summary_input_chars = max_summary_input_chars

    def should_compact(self, messages: Sequence[Message], *, tokens: int, context_window: int) -> bool:
        return len(messages) > self.keep_head + 1 and tokens >= self.threshold_pct * context_window

    def compact(self, messages: Sequence[Message], *,
                summarize: Callable[[Sequence[Message]], str]) -> list[Message]:
        head = list(messages[: self.keep_head])
        body = list(messages[self.keep_head:])
        request = {"role": "user", "content": SUMMARY_REQUEST}
        summary: str | None = None
        try:
            summary = summarize(head + body + [request])
        except Exception:  # noqa: BLE001 - the summary call overflowed or failed: degrade
            trimmed = _trim(body, self.max_summary_input_chars)
            try:
                summary = summarize(head + trimmed + [request])
            except Exception:  # noqa: BLE001
                summary = None
        if summary is None:
            tail = body[-2:]
            note = {"role": "user", "content": "Earlier turns were dropped to fit the context window; "
                                               "the full record is in the REPL variable `history`."}
            return head + [note] + tail
        return head + [
            {"role": "assistant", "content": "Summary of my work so far:\n" + summary},
            {"role": "user", "content": "Continue from the summary. The full earlier record is in "
                                        "the REPL variable `history`."},
        ]


def _trim(body: list[Message], limit: int) -> list[Message]:
    """The most recent messages whose contents fit ``limit`` characters in total."""
    out: list[Message] = []
    used = 0
    for m in reversed(body):
        n = len(str(m.get("content", "")))
        if used + n > limit:
            break
        out.append(m)
        used += n
    return list(reversed(out))
