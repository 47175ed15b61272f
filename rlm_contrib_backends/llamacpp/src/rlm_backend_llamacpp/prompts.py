"""Prompt profiles: how the backend's models are asked, and what shape their replies may take.

The kernel's default system prompt is written for large models (≈ 520 tokens of rules). A 0.5B
model on two cores pays for every prompt token before it writes a word, follows a worked example
far better than a list of rules, and left free it writes prose, ```` ```python ```` blocks, the
output it expects, or the same code again. The ``small`` profile is what makes it follow the
protocol:

* a short few-shot system prompt (:data:`SMALL`) in the exact shape of the kernel's loop;
* the start of the context shown in the context message (``context_preview_chars``), so the
  model writes code for the data it has (a list, a dict, lines of text);
* constrained decoding: llama.cpp's GBNF grammar makes every reply exactly one ```` ```repl ````
  block (:data:`CODE_GRAMMAR`); the request made after the last turn gets one line of plain text
  (:data:`TEXT_GRAMMAR`), so a code fence can never come back as the answer;
* a repetition guard: the same code twice in a row (that ran) means the model has nothing new
  to try, so the next reply must set the answer (:data:`ANSWER_GRAMMAR`);
* after a failed cell the failed attempt is not shown again (a small model copies the error into
  its answer): the question is asked afresh and another sample drawn (temperature 0.8, a seed
  per attempt), and no line of the reply may set ``answer`` (:data:`FIX_GRAMMAR`).

All of it is the backend's business (:meth:`SmallProfile.adapt`, applied to each request): the
kernel's loop, messages and final-answer rules are the same for every model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rlm import prompts as kernel_prompts
from rlm.parsing import find_code_blocks

#: Where the worked examples go in :data:`SMALL`; the profile fills it per request with the
#: examples for the context's type (:data:`EXAMPLES`). Its presence also tells the profile that
#: a request is the loop's own conversation under this prompt (not a custom prompt, not an
#: ``llm_query``).
EXAMPLES_MARK = "<<examples>>"

SMALL = """You answer a question about `context`, a Python variable. Reply with one ```repl \
block of Python code. Compute from `context` itself; never type its data yourself. You are then \
shown what the code printed. When that answers the question, reply with a block that sets \
answer["content"] to the answer and answer["ready"] = True. If the code failed, write different code.
llm_query(text) asks a language model about a text and returns its reply.
{custom_tools_section}
""" + EXAMPLES_MARK + "\n"


@dataclass(frozen=True)
class Example:
    """One worked example: a question, the code that answers it, what it printed, the answer."""

    question: str
    ctype: str  # the context's type it is for: "str", "list", "dict", or "question" (no context)
    code: str
    shown: str
    answer: str

    def render(self) -> str:
        return (f"Example. Question: {self.question} (context is a "
                f"{'str' if self.ctype == 'question' else self.ctype})\nYour reply:\n```repl\n"
                f"{self.code}\n```\nYou are shown: {self.shown}\nYour next reply:\n```repl\n"
                f"answer[\"content\"] = {self.answer}\nanswer[\"ready\"] = True\n```\n")

    @property
    def words(self) -> frozenset[str]:
        return _words(self.question)


_STOPWORDS = frozenset("a an the is are of in on to what which who how many much does do there "
                       "say says with for by it its this that".split())


def _words(text: str) -> frozenset[str]:
    return frozenset(w for w in "".join(c.lower() if c.isalnum() else " " for c in text).split()
                     if w not in _STOPWORDS)


#: Worked examples, per type from the most specific to the most generally useful. A small model
#: copies the example nearest the end of its prompt, so :func:`choose_examples` shows the ones
#: closest to the question, the closest last. They cost
#: prompt tokens on a run's first turn only: the system prompt then stays in the KV cache.
EXAMPLES: tuple[Example, ...] = (
    Example("Which language is the text in?", "str",
            'reply = llm_query("Which language is this text in? One word.\\n" + context[:2000])\nprint(reply)',
            "French", "reply.strip()"),
    Example("What is the value of timeout?", "str",
            'values = [line.split("=", 1)[1] for line in context.splitlines()'
            ' if line.startswith("timeout=")]\nprint(values)',
            "['30']", "values[0]"),
    Example("What is the total of the price column?", "str",
            'rows = [line.split(",") for line in context.splitlines()]\ncol = rows[0].index("price")\n'
            "total = sum(int(row[col]) for row in rows[1:])\nprint(total)", "310", "str(total)"),
    Example("How many times does the word cat appear?", "str",
            'n = context.split().count("cat")\nprint(n)', "4", "str(n)"),
    Example("How many lines are there?", "str", "n = len(context.splitlines())\nprint(n)", "25", "str(n)"),
    Example("How many lines say ERROR?", "str",
            'n = len([line for line in context.splitlines() if "ERROR" in line])\nprint(n)', "3", "str(n)"),
    Example("What is the password?", "str",
            'lines = [line for line in context.splitlines() if "password" in line]\nprint(lines)',
            "['Note: the password is swordfish.']", '"swordfish"'),
    Example("How many items are there?", "list", "n = len(context)\nprint(n)", "7", "str(n)"),
    Example("What is the sum of the numbers?", "list", "total = sum(context)\nprint(total)", "88", "str(total)"),
    Example("What is the largest number?", "list", "result = max(context)\nprint(result)", "42", "str(result)"),
    Example("What is the value of timeout?", "dict", 'value = context["timeout"]\nprint(value)', "30", "str(value)"),
    Example("Who is the tallest person? (heights)", "dict",
            "key = max(context, key=context.get)\nprint(key)", "Sam", "str(key)"),
    Example("What is 3**5?", "question", "result = 3**5\nprint(result)", "243", "str(result)"),
)

#: How many examples a request shows.
EXAMPLES_SHOWN = 3


def choose_examples(question: str, ctype: str, k: int = EXAMPLES_SHOWN) -> list[Example]:
    """Up to ``k`` examples for a context of type ``ctype``, the closest to ``question`` last."""
    pool = [e for e in EXAMPLES if e.ctype == ctype] or [e for e in EXAMPLES if e.ctype == "str"]
    asked = _words(question)
    # Ties keep the pool's order: its last examples are the most generally useful.
    def closeness(example: Example) -> float:  # Jaccard similarity of the questions' words
        union = example.words | asked
        return len(example.words & asked) / len(union) if union else 0.0

    ranked = sorted(enumerate(pool), key=lambda ie: (closeness(ie[1]), ie[0]))
    return [e for _, e in ranked[-k:]]


#: name -> system prompt text; None means "use the kernel's default prompt".
PROFILES: dict[str, str | None] = {"small": SMALL, "default": None}

#: Stop sequences that go with a profile (added to the backend's sampling defaults).
STOP: dict[str, tuple[str, ...]] = {"small": ("You are shown", "REPL output")}

#: How much of the context's repr the ``small`` profile shows the model (the kernel's
#: ``context_preview_chars``).
PREVIEW_CHARS = 160

#: One ```repl block of 1 to 12 lines, nothing before or after it.
CODE_GRAMMAR = r'''root ::= "```repl\n" line (line)? (line)? (line)? (line)? (line)? (line)? (line)? (line)? (line)? (line)? (line)? "```"
line ::= [^`\n] [^`\n]* "\n"
'''  # noqa: E501 - a GBNF rule is one line

#: After a failed cell: one ```repl block in which no line starts with ``answer`` (the model must
#: fix its code, not answer with the error).
FIX_GRAMMAR = r'''root ::= "```repl\n" line (line)? (line)? (line)? (line)? (line)? (line)? (line)? (line)? (line)? (line)? "```"
line ::= ([^a`\n] | "a" [^n`\n] | "an" [^s`\n] | "ans" [^w`\n] | "answ" [^e`\n] | "answe" [^r`\n] | "answer" [A-Za-z0-9_]) [^`\n]* "\n"
'''  # noqa: E501 - a GBNF rule is one line

#: The block that finishes a run: set the answer from one expression.
ANSWER_GRAMMAR = r'''root ::= "```repl\nanswer[\"content\"] = " expr "\nanswer[\"ready\"] = True\n```"
expr ::= [^`\n] [^`\n]*
'''

#: One line of plain text: the answer asked for after the last turn.
TEXT_GRAMMAR = r'''root ::= [^`\n] [^`\n]*
'''

#: The request after the last turn, as the small profile words it.
_FINAL_ASK = "You have used every turn. Write the answer to the question in plain words, no code.\nAnswer:"

#: Said to the model when its code printed nothing.
NO_OUTPUT = "Your code printed nothing: print the result with print(...)."

@dataclass(frozen=True)
class Adapted:
    """A request as the small profile sends it: the messages and the sampling to add."""

    messages: list[Mapping[str, Any]]
    sampling: dict[str, Any]
    reason: str  # "code", "fix" (after a failed or silent cell), "answer" (repetition guard),
    #              "text" (after the last turn), "plain" (not the loop's conversation)


def _is_root_conversation(messages: Sequence[Mapping[str, Any]]) -> bool:
    """True for the RLM loop's own turns (system prompt, context message, ...); False for a
    plain ``llm_query`` sub-call, which gets no grammar."""
    return (len(messages) >= 3 and messages[0].get("role") == "system"
            and EXAMPLES_MARK in str(messages[0].get("content", ""))
            and str(messages[1].get("content", "")).startswith("Your context ("))


_NEXT = "\nYour next reply:"


def _is_final_request(message: Mapping[str, Any]) -> bool:
    return str(message.get("content", "")).startswith(kernel_prompts.FINAL_REQUEST)


def _question(turn: str) -> str:
    """The question quoted in the kernel's turn message (rlm.prompts.turn_message) or in its
    request after the last turn (rlm.prompts.final_request_message)."""
    for marker in ('original prompt: "', '(it is also `context`): "', 'The query: "'):
        start = turn.find(marker)
        if start >= 0:
            start += len(marker)
            end = max(turn.rfind('". '), turn.rfind('".'))
            if end > start:
                return turn[start:end]
    return "Work out the answer from `context`."


def _shown(output: str, limit: int = 600) -> str:
    """What a REPL-output message says, the way the examples show it: the printed text, or the
    error's last line."""
    body = output[len("REPL output:"):].split("\n\nREPL variables:", 1)[0].strip()
    if "Error:\n" in body:
        printed, _, error = body.partition("Error:\n")
        last = [ln for ln in error.strip().splitlines() if ln.strip()][-1:] or ["an error"]
        body = (printed.strip() + "\n" if printed.strip() else "") + "Error: " + last[0].strip()
    return body if len(body) <= limit else body[:limit] + " ..."


def _failed(content: str) -> bool:
    """True for a REPL-output message whose cell raised."""
    return content.startswith("REPL output:") and "\nError:\n" in content


def _context_type(messages: Sequence[Mapping[str, Any]]) -> str:
    text = str(messages[1].get("content", ""))
    after = text[len("Your context ("):]
    words = after.split(" is a ", 1)
    return words[1].split(" ", 1)[0] if len(words) == 2 else "value"


class SmallProfile:
    """The per-request part of the ``small`` profile (grammar and repetition guard).

    Stateless: everything is read from the messages of the request, so one backend serves
    concurrent runs. Thread-safe.
    """

    def adapt(self, messages: Sequence[Mapping[str, Any]] | str) -> Adapted:
        if isinstance(messages, str) or not _is_root_conversation(messages):
            return Adapted(list(messages) if not isinstance(messages, str) else
                           [{"role": "user", "content": messages}], {}, "plain")
        msgs = list(messages)
        rendered = self.render(msgs)
        if _is_final_request(msgs[-1]):
            last = str(rendered[-1]["content"]).removesuffix(_NEXT).removesuffix("\nYour reply:")
            rendered[-1] = {"role": "user", "content": last + "\n" + _FINAL_ASK}
            return Adapted(rendered, {"grammar": TEXT_GRAMMAR}, "text")
        replies = [str(m.get("content", "")) for m in msgs if m.get("role") == "assistant"]
        output = self._last_output(msgs)
        if len(replies) >= 2:
            blocks, before = find_code_blocks(replies[-1]), find_code_blocks(replies[-2])
            if (blocks and [c.strip() for c in blocks] == [c.strip() for c in before]
                    and output is not None and not _failed(output)):
                return Adapted(rendered, {"grammar": ANSWER_GRAMMAR}, "answer")
        if output is not None and _failed(output):
            # The failed attempt is left out of the rendered conversation (a small model copies
            # the error into its answer); the question is asked again and another sample drawn.
            failures = sum(1 for m in msgs if _failed(str(m.get("content", ""))))
            return Adapted(rendered, {"grammar": FIX_GRAMMAR, "temperature": 0.8,
                                      "seed": failures}, "fix")
        if output is not None and _shown(output) == "(no output)":
            shown = str(rendered[-1]["content"]).removesuffix(_NEXT)
            rendered[-1] = {"role": "user", "content": shown + "\n" + NO_OUTPUT + _NEXT}
            return Adapted(rendered, {"grammar": FIX_GRAMMAR}, "fix")
        return Adapted(rendered, {"grammar": CODE_GRAMMAR}, "code")

    @staticmethod
    def render(msgs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """The loop's conversation in the shape of the examples: "Question: ... Your reply:",
        the model's blocks, "You are shown: ... Your next reply:"."""
        system, ctx, turn = msgs[0], str(msgs[1].get("content", "")), str(msgs[-1].get("content", ""))
        question = _question(turn)
        ctype = _context_type(msgs)
        begins = ctx.split(" It begins: ", 1)[1] if " It begins: " in ctx else ""
        # No separate context: the prompt is the question (rlm run "What is 2**100?").
        bank = "question" if ctype == "str" and begins == repr(question) else ctype
        examples = "\n".join(e.render() for e in choose_examples(question, bank))
        system = {**system, "content": str(system.get("content", "")).replace(EXAMPLES_MARK, examples)}
        head = f"Question: {question} (context is a {ctype}"
        head += f"; it begins: {begins})" if begins else ")"
        out: list[Mapping[str, Any]] = [system, {"role": "user", "content": head + "\nYour reply:"}]
        history = list(msgs[2:-1])
        for k, m in enumerate(history):
            content = str(m.get("content", ""))
            if m.get("role") == "assistant":
                following = str(history[k + 1].get("content", "")) if k + 1 < len(history) else ""
                if _failed(following):
                    continue  # a failed attempt is not shown: the model is asked afresh
                out.append({"role": "assistant", "content": content})
            elif _failed(content):
                continue
            elif content.startswith("REPL output:"):
                out.append({"role": "user", "content": f"You are shown: {_shown(content)}{_NEXT}"})
            else:
                out.append({"role": "user", "content": content + _NEXT})
        return out

    @staticmethod
    def _last_output(msgs: Sequence[Mapping[str, Any]]) -> str | None:
        for m in reversed(msgs):
            if m.get("role") == "assistant":
                return None
            content = str(m.get("content", ""))
            if m.get("role") == "user" and content.startswith("REPL output:"):
                return content
        return None
