"""The messages the root model sees.

The prompt itself never enters the messages: it is the REPL variable ``context``. The model sees
a system prompt, one user message describing the context (type, total length, chunk lengths), and
per turn a short "Turn i/N" instruction, its own replies, and one combined REPL-output message.

``custom_system_prompt`` replaces the base text; the only placeholder substituted in it is
``{custom_tools_section}`` (plain string replacement, so literal braces are safe).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .types import CellResult, Message, Tool, context_shape

TOOLS_PLACEHOLDER = "{custom_tools_section}"
MAX_BLOCK_CHARS = 20_000

SYSTEM_PROMPT = """You answer a query about a context that you cannot see directly. The context \
lives in a Python REPL as the variable `context`; you explore it by writing code, and you may ask \
other language models for help from that code. You will be prompted turn by turn until you give a \
final answer.

The REPL gives you:
1. `context`: the data the query is about. Look at its type, size and structure before you rely on it.
2. `llm_query(prompt, model=None) -> str`: one plain model call (no REPL). Use it to read, classify, \
extract from or summarise a chunk of text. Sub-models can read a few hundred thousand characters.
3. `llm_query_batched(prompts, model=None) -> list[str]`: many `llm_query` calls run concurrently; \
answers come back in the order of the prompts. Prefer it to a loop of `llm_query`.
4. `rlm_query(prompt, model=None) -> str`: a recursive call: a child with its own REPL works on \
`prompt` as its context and returns its answer. Use it for sub-tasks that need several steps of \
their own. Past the recursion limit it behaves like `llm_query`.
5. `rlm_query_batched(prompts, model=None) -> list[str]`: several recursive calls run concurrently.
6. `SHOW_VARS()`: lists the variables you have created.
7. `print(...)`: the only way to see values. Output is cut after {max_chars} characters per block, \
so print summaries and slices, and pass large text to sub-models instead of printing it.
{custom_tools_section}
Write code in fenced blocks tagged `repl`:
```repl
print(type(context), len(context))
print(context[:500])
```
Every block in your reply runs, in order; variables persist between turns. A useful pattern for \
large contexts: split `context` into chunks, ask `llm_query_batched` the same question about every \
chunk, keep the answers in a variable, then combine them with one more call.

When you know the answer, finish from code by setting the `answer` dict:
```repl
answer["content"] = final_text
answer["ready"] = True
```
or write `FINAL(your answer)` on its own line outside code, or `FINAL_VAR(name)` to return an \
existing REPL variable. Do not finish before you have looked at the context. Answer the query \
itself, completely, in the final answer.
"""


def format_tools(tools: Mapping[str, Tool]) -> str:
    """The custom-tools section: one line per tool, with its description when it has one."""
    if not tools:
        return ""
    lines = []
    for name, tool in tools.items():
        desc = tool.description
        if not desc:
            value = tool.value
            if callable(value):
                doc = (getattr(value, "__doc__", None) or "").strip().splitlines()
                desc = doc[0] if doc else "a callable"
            else:
                desc = f"a value of type {type(value).__name__}"
        lines.append(f"- `{name}`: {desc}")
    return "8. Custom tools and data available in the REPL:\n" + "\n".join(lines) + "\n"


def build_system_prompt(*, custom_system_prompt: str | None, tools: Mapping[str, Tool],
                        environment_instructions: str = "", extra_sections: Sequence[str] = (),
                        compaction: bool = False, max_chars: int = MAX_BLOCK_CHARS) -> str:
    base = custom_system_prompt if custom_system_prompt is not None else SYSTEM_PROMPT
    section = format_tools(tools)
    if TOOLS_PLACEHOLDER in base:
        text = base.replace(TOOLS_PLACEHOLDER, section)
    else:
        text = base.rstrip() + ("\n\n" + section if section else "")
    if custom_system_prompt is None:
        text = text.replace("{max_chars}", f"{max_chars:,}")
    parts = [text.rstrip()]
    parts += [s.strip() for s in extra_sections if s and s.strip()]
    if environment_instructions.strip():
        parts.append("About this REPL: " + environment_instructions.strip())
    if compaction:
        parts.append("Older turns may be replaced by a summary when the conversation grows long; "
                     "the full record stays in the REPL variable `history` (a list of messages).")
    return "\n\n".join(parts) + "\n"


def context_message(context: Any, *, index: int = 0, preview_chars: int = 0) -> Message:
    """The user message describing the context: type, total length, chunk lengths.

    ``preview_chars`` > 0 adds the start of the context's ``repr`` (a backend asks for it through
    its ``context_preview_chars`` attribute: a small model that sees ``[12, 7, 30, ...`` writes
    code for a list, where "a list with 12 characters" is lost on it).
    """
    ctype, lengths = context_shape(context)
    shown: Any = lengths
    if len(lengths) > 100:
        shown = f"{lengths[:100]}... [{len(lengths) - 100} others]"
    name = "context" if index == 0 else f"context_{index}"
    text = (f"Your context (`{name}`) is a {ctype} with {sum(lengths)} total characters, "
            f"in chunks of these lengths: {shown}.")
    if preview_chars > 0:
        text += f" It begins: {preview(context, preview_chars)}"
    return {"role": "user", "content": text}


def preview(context: Any, limit: int) -> str:
    """At most ``limit`` characters of ``repr(context)``, built without rendering all of it."""
    if isinstance(context, str):
        shown = repr(context[:limit])
    elif isinstance(context, (list, tuple)):
        shown = repr(type(context)(context[:limit]))  # no item is longer than its repr needs
    elif isinstance(context, dict):
        shown = repr(dict(list(context.items())[:limit]))
    else:
        shown = repr(context)
    return shown if len(shown) <= limit else shown[:limit] + " ..."


#: A prompt shorter than this is shown as the question when there is no ``root_prompt``.
QUESTION_CHARS = 1_000


def question_of(context: Any, root_prompt: str | None) -> str | None:
    """The question a run answers: ``root_prompt``, else a short ``str`` prompt itself."""
    if root_prompt:
        return root_prompt
    if isinstance(context, str) and 0 < len(context.strip()) <= QUESTION_CHARS:
        return context.strip()
    return None


def turn_message(iteration: int, max_iterations: int, *, root_prompt: str | None,
                 context_count: int = 1, history_count: int = 0,
                 question: str | None = None) -> Message:
    """The user message that opens turn ``iteration`` (0-based).

    ``question`` is the prompt itself when there is no ``root_prompt`` and the prompt is a short
    string (``rlm run "What is 2**100?"``): the model is shown it rather than told to look for it.
    """
    head = f"Turn {iteration + 1}/{max_iterations}. "
    if iteration == 0:
        head += ("You have not looked at the REPL or the context yet: start by exploring it, "
                 "do not give a final answer in this turn. ")
    if root_prompt:
        task = f'Use the REPL to answer the original prompt: "{root_prompt}". '
    elif question:
        task = f'Use the REPL to answer the prompt (it is also `context`): "{question}". '
    else:
        task = "Use the REPL, which holds `context`, to work out the answer. "
    text = head + task + "Write ```repl``` blocks for your next step."
    if context_count > 1:
        text += (f"\n\nYou have {context_count} contexts: context_0 to context_{context_count - 1} "
                 "(`context` is context_0).")
    if history_count == 1:
        text += "\n\nThe earlier conversation is in the REPL variable `history`."
    elif history_count > 1:
        text += (f"\n\nEarlier conversations are in history_0 to history_{history_count - 1} "
                 "(`history` is the latest).")
    return {"role": "user", "content": text}


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n... [{len(text) - limit:,} more characters cut]"


def repl_output_message(blocks: Sequence[tuple[str, CellResult]], *,
                        limit: int = MAX_BLOCK_CHARS) -> Message:
    """One user message with what every block printed, its error, and the REPL's variables."""
    parts = []
    for k, (_, res) in enumerate(blocks, 1):
        head = f"[block {k}]" if len(blocks) > 1 else ""
        body = []
        if res.stdout:
            body.append(_cut(res.stdout, limit))
        if res.stderr and res.stderr.strip() and (res.error is None or res.stderr.strip() != res.error.strip()):
            body.append("stderr:\n" + _cut(res.stderr, limit))
        if res.error:
            body.append("Error:\n" + _cut(res.error, limit))
        if not body:
            body.append("(no output)")
        parts.append((head + "\n" if head else "") + "\n".join(body))
    variables = blocks[-1][1].variables if blocks else []
    shown_vars = ", ".join(variables[:100]) + (" ..." if len(variables) > 100 else "")
    text = "REPL output:\n" + "\n\n".join(parts)
    text += f"\n\nREPL variables: {shown_vars or '(none)'}"
    return {"role": "user", "content": text}


NO_CODE_MESSAGE: Message = {
    "role": "user",
    "content": "Your reply had no ```repl``` block and no final answer. Write code in a ```repl``` "
               "block, or finish by setting answer[\"ready\"] = True.",
}


FINAL_REQUEST = ("You have used every turn. Give your best final answer to the original query "
                 "now, as plain text, based on what you have found. Do not write code.")


def final_request_message(question: str | None = None) -> Message:
    """The request made after the last turn (it starts with :data:`FINAL_REQUEST`)."""
    text = FINAL_REQUEST + (f' The query: "{question}".' if question else "")
    return {"role": "user", "content": text}


__all__ = [
    "FINAL_REQUEST", "NO_CODE_MESSAGE", "QUESTION_CHARS", "SYSTEM_PROMPT", "build_system_prompt",
    "context_message", "final_request_message", "format_tools", "preview", "question_of",
    "repl_output_message", "turn_message",
]
