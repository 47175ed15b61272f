"""Keep the last K turns verbatim, fold everything older into a running summary.

``RLM(compaction=True, compaction_strategy="recent", compaction_kwargs={"keep_turns": 3})``

When the root's messages reach ``threshold_pct`` of the model's context window, the messages are
rebuilt as::

    system prompt, context description            (kept as they are)
    assistant: "Running summary of my earlier turns: ..."
    user:      "The full record is in `history`; my most recent turns follow verbatim."
    the last ``keep_turns`` turns (reply + REPL output), verbatim

The summary is *running*: the next compaction summarises the previous summary plus the turns that
have aged out since, so no model call ever re-reads the whole trajectory. The kernel keeps the
full trajectory in the REPL variable ``history`` either way.

It degrades instead of failing: if the summary call fails (the request overflows the context
window, the provider errors), it retries with the oldest of the aged-out turns trimmed away; if
that fails too, it keeps the previous summary and notes how many turns were dropped. Recent turns
that are too large on their own are shortened in the middle, so a compaction always shrinks the
conversation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from rlm.exceptions import ContextWindowExceededError
from rlm.types import Message

SUMMARY_PREFIX = "Running summary of my earlier turns:\n"
CONTINUE_TEXT = ("The full record of the earlier turns is in the REPL variable `history`. My most "
                 "recent turns follow verbatim; continue from there.")
UPDATE_REQUEST = (
    "Update the running summary of this work so it can replace every turn above: what the context "
    "is, what was tried, the key findings with exact values, the names of REPL variables that hold "
    "results, and what remains to do. Start from the previous summary (if any) and add what the "
    "newer turns found. Be concise but keep every fact that will be needed.")


class RecentTurnsCompaction:
    """``keep_turns`` recent turns verbatim plus a running summary of the older ones.

    Args:
        threshold_pct: compact when the messages reach this fraction of the context window.
        keep_turns: how many of the most recent turns (model reply + REPL output) to keep.
        keep_head: opening messages never touched (system prompt, context description).
        max_summary_input_chars: the summary request holds at most this many characters of
            aged-out turns (the most recent ones); older ones are trimmed.
        recent_share: the recent turns may take at most this fraction of the compaction
            threshold; longer messages among them are shortened in the middle.
    """

    def __init__(self, threshold_pct: float = 0.85, keep_turns: int = 3, keep_head: int = 2,
                 max_summary_input_chars: int = 200_000, recent_share: float = 0.5):
        if not 0 < threshold_pct <= 1:
            raise ValueError(f"threshold_pct must be in (0, 1], got {threshold_pct!r}")
        if not isinstance(keep_turns, int) or keep_turns < 1:
            raise ValueError(f"keep_turns must be an integer >= 1, got {keep_turns!r}")
        if not isinstance(keep_head, int) or keep_head < 1:
            raise ValueError(f"keep_head must be an integer >= 1, got {keep_head!r}")
        if not 0 < recent_share <= 1:
            raise ValueError(f"recent_share must be in (0, 1], got {recent_share!r}")
        self.threshold_pct = threshold_pct
        self.keep_turns = keep_turns
        self.keep_head = keep_head
        self.max_summary_input_chars = max_summary_input_chars
        self.recent_share = recent_share
        self._window: int | None = None
        self.dropped_turns = 0  # turns lost because no summary could be written
        self.compactions = 0

    def should_compact(self, messages: Sequence[Message], *, tokens: int, context_window: int) -> bool:
        self._window = context_window
        head, _summary, turns = self._split(messages)
        return len(turns) > self.keep_turns and tokens >= self.threshold_pct * context_window

    def compact(self, messages: Sequence[Message], *,
                summarize: Callable[[Sequence[Message]], str]) -> list[Message]:
        head, summary, turns = self._split(messages)
        old, recent = turns[:-self.keep_turns], turns[-self.keep_turns:]
        if not old:
            return list(messages)
        aged = [m for turn in old for m in turn]
        new_summary = self._summarize(head, summary, aged, summarize)
        self.compactions += 1
        if new_summary is None:
            self.dropped_turns += len(old)
            note = (f"({self.dropped_turns} earlier turns could not be summarised and were "
                    "dropped; they are in `history`.)")
            new_summary = f"{summary}\n{note}" if summary else note
        out = list(head) + [
            {"role": "assistant", "content": SUMMARY_PREFIX + new_summary},
            {"role": "user", "content": CONTINUE_TEXT},
        ]
        out += self._fit([m for turn in recent for m in turn])
        return out

    # -- helpers ------------------------------------------------------------------------
    def _split(self, messages: Sequence[Message]) -> tuple[list[Message], str | None, list[list[Message]]]:
        """(opening messages, previous running summary or None, turns). A turn starts at an
        assistant message and holds the user messages that follow it."""
        msgs = list(messages)
        head = msgs[: self.keep_head]
        rest = msgs[self.keep_head:]
        summary = None
        if (len(rest) >= 2 and rest[0].get("role") == "assistant"
                and str(rest[0].get("content", "")).startswith(SUMMARY_PREFIX)
                and rest[1].get("content") == CONTINUE_TEXT):
            summary = str(rest[0]["content"])[len(SUMMARY_PREFIX):]
            rest = rest[2:]
        turns: list[list[Message]] = []
        for m in rest:
            if m.get("role") == "assistant" or not turns:
                turns.append([m])
            else:
                turns[-1].append(m)
        return head, summary, turns

    def _request(self, head: list[Message], summary: str | None,
                 aged: list[Message]) -> list[Message]:
        msgs = list(head)
        if summary:
            msgs.append({"role": "assistant", "content": SUMMARY_PREFIX + summary})
        msgs += aged
        msgs.append({"role": "user", "content": UPDATE_REQUEST})
        return msgs

    def _summarize(self, head: list[Message], summary: str | None, aged: list[Message],
                   summarize: Callable[[Sequence[Message]], str]) -> str | None:
        attempts = [_trim(aged, self.max_summary_input_chars)]
        limit = self.max_summary_input_chars
        while limit > 2_000:  # shorter and shorter requests if the window still overflows
            limit //= 4
            attempts.append(_trim(aged, limit))
        failures = 0
        for body in attempts:
            try:
                text = summarize(self._request(head, summary, body))
            except ContextWindowExceededError:
                continue  # too long: a shorter request may fit
            except Exception:  # noqa: BLE001 - the provider failed: one more try, then give up
                failures += 1
                if failures >= 2:
                    return None
                continue
            if isinstance(text, str) and text.strip():
                return text.strip()
        return None

    def _fit(self, recent: list[Message]) -> list[Message]:
        """Shorten over-long recent messages so the recent turns stay within their share."""
        if self._window is None:
            return recent
        budget_chars = int(self.recent_share * self.threshold_pct * self._window * 4)
        total = sum(len(str(m.get("content", ""))) for m in recent)
        if total <= budget_chars or not recent:
            return recent
        per = max(200, budget_chars // len(recent))
        out = []
        for m in recent:
            content = str(m.get("content", ""))
            if len(content) > per:
                m = {**m, "content": _middle_cut(content, per)}
            out.append(m)
        return out


def _trim(body: list[Message], limit: int) -> list[Message]:
    """The most recent messages whose contents fit ``limit`` characters in total (the newest one
    is cut to fit if it alone is too long)."""
    out: list[Message] = []
    used = 0
    for m in reversed(body):
        content = str(m.get("content", ""))
        if used + len(content) > limit:
            if not out and limit > 0:
                out.append({**m, "content": _middle_cut(content, limit)})
            break
        out.append(m)
        used += len(content)
    return list(reversed(out))


def _middle_cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    half = max(1, limit // 2)
    cut = len(text) - 2 * half
    return f"{text[:half]}\n... [{cut:,} characters cut; the full text is in `history`] ...\n{text[-half:]}"


__all__ = ["RecentTurnsCompaction"]
