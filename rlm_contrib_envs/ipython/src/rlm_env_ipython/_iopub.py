"""What one cell's iopub messages from the kernel say, turned into a :class:`CellResult`."""

from __future__ import annotations

import re
from typing import Any

from rlm_isolation.worker import BoundedText
from rlm.plugin import CellResult

from ._names import SUMMARY_MIME

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class CellOutput:
    """What one cell's iopub messages say: its output, its error and the kernel's summary."""

    def __init__(self, limit: int):
        self.out = BoundedText(limit)
        self.err = BoundedText(limit)
        self.error: str | None = None
        self.summary: dict[str, Any] = {}

    def take(self, msg: dict[str, Any]) -> bool:
        """Take one message of the cell; True when the kernel is done with it (idle)."""
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            stream = self.err if content.get("name") == "stderr" else self.out
            stream.write(content.get("text", ""))
        elif kind == "execute_result":
            text = content.get("data", {}).get("text/plain", "")
            self.out.write(f"Out[{content.get('execution_count')}]: {text}\n")
        elif kind in ("display_data", "update_display_data"):
            data = content.get("data", {})
            if SUMMARY_MIME in data:
                summary = data[SUMMARY_MIME]
                self.summary = summary if isinstance(summary, dict) else {}
            elif "text/plain" in data:
                self.out.write(data["text/plain"] + "\n")
        elif kind == "error":
            error = ANSI.sub("", "\n".join(content.get("traceback") or [])).strip("\n")
            if not error:
                error = f"{content.get('ename')}: {content.get('evalue')}"
            if content.get("ename") == "SystemExit":
                error += ("\n(sys.exit(), exit() and quit() end only the current code block; "
                          "the REPL and its variables are still there.)")
            self.error = error
        elif kind == "status" and content.get("execution_state") == "idle":
            return True
        return False

    def result(self, error: str | None, timed_out: bool, elapsed: float) -> CellResult:
        if error is not None:
            text = self.err.value()
            if text and not text.endswith("\n"):
                self.err.write("\n")
            self.err.write(error + "\n")
        variables = self.summary.get("variables")
        return CellResult(stdout=self.out.value(), stderr=self.err.value(), error=error,
                          variables=[v for v in variables if isinstance(v, str)]
                          if isinstance(variables, list) else [],
                          execution_time=elapsed,
                          final_answer=_opt_str(self.summary.get("final_answer")),
                          answer_content=_opt_str(self.summary.get("answer_content")),
                          timed_out=timed_out)


def reply_error(reply: dict[str, Any] | None) -> str:
    if reply is None or reply["content"].get("status") == "ok":
        return ""
    content = reply["content"]
    tb = ANSI.sub("", "\n".join(content.get("traceback") or []))
    return f":\n{tb or content.get('ename', '')}"


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None
