"""The ``console`` sink: what ``verbose=True`` shows, rendered with rich.

Each turn's model reply, the code it ran (highlighted), what the code printed, sub-calls with
their tokens, limits and the final answer, indented by depth so child runs read as a tree. On a
terminal it is coloured; into a file or a pipe it is plain text.

This module imports ``rich``; the kernel imports it only when a run is verbose (or names the
``console`` sink), so ``rich`` costs nothing otherwise.
"""

from __future__ import annotations

import sys
import threading
from typing import IO, Any

from rich.console import Console, Group
from rich.markup import escape
from rich.padding import Padding
from rich.panel import Panel
from rich.syntax import Syntax
from rich.text import Text

from rlm import events as E
from rlm.types import RunStatus


def _clip(text: str, n: int) -> str:
    text = text.rstrip()
    return text if len(text) <= n else text[:n] + f" ... [{len(text) - n:,} more chars]"


class ConsoleSink:
    """Args:
        stream: where to write (default: ``sys.stderr`` at the time of each write).
        max_chars: longest text shown for one reply, output or answer.
        show_code: show the code of each cell.
        width: console width (default: the terminal's, else 100).
    """

    def __init__(self, stream: IO[str] | None = None, max_chars: int = 2000,
                 show_code: bool = True, width: int | None = None):
        self._stream = stream
        self.max_chars = max_chars
        self.show_code = show_code
        self._width = width
        self._lock = threading.Lock()
        self._consoles: dict[int, Console] = {}

    @property
    def stream(self) -> IO[str]:
        return self._stream or sys.stderr

    def _console(self) -> Console:
        stream = self.stream
        console = self._consoles.get(id(stream))
        if console is None or console.file is not stream:
            is_tty = bool(getattr(stream, "isatty", lambda: False)())
            console = Console(file=stream, highlight=False, soft_wrap=False,
                              width=self._width or (None if is_tty else 100),
                              force_terminal=None if is_tty else False)
            self._consoles = {id(stream): console}
        return console

    def _out(self, depth: int, *renderables: Any) -> None:
        with self._lock:
            console = self._console()
            for r in renderables:
                console.print(Padding(r, (0, 0, 0, 2 * depth)) if depth else r)

    def _line(self, depth: int, text: str, style: str = "") -> None:
        self._out(depth, Text(text, style=style))

    def handle(self, event: E.Event) -> None:
        d = event.depth
        if isinstance(event, E.RunStarted):
            size = sum(event.context_lengths)
            self._line(d, f"== RLM run {event.run_id} (depth {d}) model={event.root_model} "
                          f"backend={event.backend} env={event.environment} "
                          f"context={event.context_type}[{size:,} chars]", "bold cyan")
        elif isinstance(event, E.IterationStarted):
            self._line(d, f"-- turn {event.iteration}", "bold")
        elif isinstance(event, E.IterationCompleted):
            parts: list[Any] = [Panel(Text(_clip(event.response, self.max_chars)),
                                      title="model", title_align="left", border_style="blue")]
            for block in event.code_blocks:
                res: dict[str, Any] = block.get("result", {})
                if self.show_code and block.get("code"):
                    parts.append(Syntax(_clip(block["code"], self.max_chars), "python",
                                        theme="ansi_dark", background_color="default"))
                if res.get("stdout"):
                    parts.append(Text("out: " + _clip(res["stdout"], self.max_chars)))
                if res.get("error"):
                    parts.append(Text("error: " + _clip(res["error"], self.max_chars), style="red"))
            if event.final_answer is not None:
                parts.append(Text("final answer: " + _clip(event.final_answer, self.max_chars),
                                  style="bold green"))
            parts.append(Text(f"(turn {event.iteration}: {event.iteration_time:.2f}s)", style="dim"))
            self._out(d, Group(*parts))
        elif isinstance(event, E.SubcallCompleted):
            status = f" error={event.error}" if event.error else ""
            cost = f" ${event.cost:.6f}" if event.cost is not None else ""
            self._line(d + 1, f"{event.kind}_query -> {event.model} {event.duration:.2f}s "
                              f"in={event.input_tokens} out={event.output_tokens}{cost}{status}",
                       "yellow" if event.error else "dim")
        elif isinstance(event, E.Compacted):
            self._line(d, f"~~ compacted ({event.strategy or 'strategy'}): {event.messages_before} "
                          f"-> {event.messages_after} messages, {event.tokens_before:,} -> "
                          f"{event.tokens_after:,} tokens", "magenta")
        elif isinstance(event, E.LimitExceeded):
            self._line(d, f"!! {event.error_type}: {event.message}", "bold red")
        elif isinstance(event, E.RunFinished):
            style = "bold green" if RunStatus.parse(event.status).is_success else "bold red"
            self._out(d, Text.from_markup(
                f"[{style}]== finished ({escape(event.status)}) in {event.execution_time:.2f}s:[/] ")
                + Text(_clip(str(event.response), self.max_chars)))

    def close(self) -> None:
        return None
