"""The MCP server: one tool, ``rlm_answer``, on the official ``mcp`` SDK (``MCPServer``).

``rlm_answer(question, context=None, paths=None, glob=None, profile=None)`` runs an RLM whose
context is the given text, the files (paths and/or a glob, under the server's files root) or
both, and returns the answer as text content plus structured content ``{answer, status, run_id,
usage, ...}`` (:meth:`rlm_cli.surface.Outcome.to_dict`). While it runs, a client that sent a
progress token gets one progress notification per root turn (``progress`` = the turn,
``total`` = the profile's ``max_iterations``, ``message`` = the turn and the sub-calls so far).

Runs execute on worker threads (at most ``max_concurrent`` at once; more calls wait), so the
server keeps answering; a cancelled call (the client's ``notifications/cancelled``, or a closed
connection) cancels its run. A limit (timeout, budget, ...) returns the partial answer with its
status; a failure (backend, bad input) is a tool error (``isError``) whose text says what to fix.
"""

# No `from __future__ import annotations`: the SDK evaluates the tool's annotations, which
# name values local to build_server.
import asyncio
import contextlib
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent
from rlm.exceptions import RLMError
from rlm_cli.surface import InputError, Outcome, Profile, ProfileRun, Progress, assemble_context, read_files

MiB = 1024 * 1024

INSTRUCTIONS = (
    "rlm_answer answers a question over a context too large to read at once (logs, a code base, "
    "documents): a Recursive Language Model loads it into a Python REPL and reads it with code "
    "and sub-calls. Pass files by path or glob rather than pasting their text.")


@dataclass
class MCPSettings:
    """What ``rlm mcp``'s flags set. ``files_root=None`` refuses paths and globs."""

    profiles: Mapping[str, Profile]
    files_root: str | None = None
    max_concurrent: int = 2
    max_file_bytes: int = 256 * MiB
    log: bool = True
    plugin_manager: Any = field(default=None, repr=False)


def build_server(settings: MCPSettings) -> MCPServer:
    """The MCP server for ``settings`` (run it with ``.run("stdio")`` or serve
    ``.streamable_http_app()``)."""
    if not settings.profiles:
        raise RLMError("rlm mcp needs at least one profile.")
    names = list(settings.profiles)
    pool = ThreadPoolExecutor(max_workers=settings.max_concurrent, thread_name_prefix="rlm-mcp")
    slots = asyncio.Semaphore(settings.max_concurrent)
    root = str(Path(settings.files_root).resolve()) if settings.files_root else None
    server = MCPServer(name="rlm", instructions=INSTRUCTIONS)
    profile_help = (f"the RLM profile to run: one of {names} (default {names[0]!r})")

    @server.tool(
        name="rlm_answer",
        description=(
            "Answer a question over a large context with a Recursive Language Model. Give the "
            "context as text, as file paths, as a glob (e.g. 'logs/**/*.log'), or several of "
            f"these; paths are relative to {root or '(no files root: paths are refused)'}. "
            "Returns the answer, the run's status (completed, or the limit it hit), its run id "
            "and the token usage of every model call it made."))
    async def rlm_answer(
        question: Annotated[str, Field(description="the question to answer")],
        ctx: Context,
        context: Annotated[str | None, Field(description="the context as text")] = None,
        paths: Annotated[list[str] | None, Field(description="files to read as context")] = None,
        glob: Annotated[str | None, Field(description="a glob of files to read as context")] = None,
        profile: Annotated[str | None, Field(description=profile_help)] = None,
    ) -> CallToolResult:
        chosen = settings.profiles.get(profile or names[0])
        if chosen is None:
            raise ToolError(f"no profile {profile!r}; this server has {names}.")
        if not question.strip():
            raise ToolError("question is empty: say what to find out about the context.")
        specs = list(paths or []) + ([glob] if glob else [])
        try:
            files = await asyncio.get_running_loop().run_in_executor(
                pool, lambda: read_files(specs, root, max_bytes=settings.max_file_bytes,
                                         flag="--files-root"))
        except InputError as exc:
            raise ToolError(str(exc)) from None
        pieces = ([("context", context)] if context else []) + [
            (f"file: {name}", text) for name, text in files.items()]
        prompt, root_prompt = assemble_context(pieces, question)
        outcome = await _run(chosen, prompt, root_prompt, ctx)
        return CallToolResult(content=[TextContent(type="text", text=outcome.answer or
                                                   f"(no answer: {outcome.error})")],
                              structured_content={"answer": outcome.answer, **outcome.to_dict()},
                              is_error=False)

    async def _run(profile: Profile, prompt: Any, root_prompt: str | None, ctx: Context) -> Outcome:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Progress | None] = asyncio.Queue()

        def on_progress(progress: Progress) -> None:  # on the run's thread
            loop.call_soon_threadsafe(queue.put_nowait, progress)

        run = ProfileRun(profile, prompt, root_prompt, log=settings.log,
                         plugin_manager=settings.plugin_manager, on_progress=on_progress)

        async def report() -> None:
            while (update := await queue.get()) is not None:
                if update.kind != "turn":
                    continue
                note = (f"turn {update.turn}/{update.max_turns} · sub-calls "
                        f"{update.subcalls_done} done, {update.subcalls_running} running")
                with contextlib.suppress(Exception):  # a client gone away stops nothing here
                    await ctx.report_progress(update.turn, update.max_turns or None, note)

        async with slots:
            reporter = asyncio.create_task(report())
            fut = loop.run_in_executor(pool, run.execute)
            try:
                outcome = await asyncio.shield(fut)
            except asyncio.CancelledError:
                run.cancel()
                raise
            except RLMError as exc:
                raise ToolError(f"{type(exc).__name__}: {exc}") from None
            finally:
                queue.put_nowait(None)
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(reporter, 5)
        return outcome

    return server
