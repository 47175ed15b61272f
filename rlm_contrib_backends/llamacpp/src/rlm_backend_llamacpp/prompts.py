"""Prompt profiles: the system prompt a backend gives the kernel for its models.

The kernel's default system prompt is written for large models (≈ 520 tokens of rules).
A 0.5B model on two cores pays for every prompt token (≈ 120 tokens/s on an idle 2-core machine,
far less on a busy one) before it writes a word, and follows a worked example far better than a list of rules. The ``small`` profile is
short (≈ 330 tokens) and few-shot: three complete examples of the protocol, in the exact shape the kernel's loop
expects (```repl blocks, output fed back, ``answer["ready"] = True``). It is a profile the backend
exposes as ``backend.system_prompt``, not a fork of the loop: ``custom_system_prompt`` still wins,
and ``{custom_tools_section}`` is filled in as in the default prompt.
"""

from __future__ import annotations

SMALL = """You answer a question about `context`, a Python variable you cannot see. Reply with one ```repl \
block of Python code and nothing else. Always compute from `context` itself; never type its data \
yourself and never guess what the code prints. You are then shown what the code printed. When \
that answers the question, reply with a block that sets answer["content"] to the answer and \
answer["ready"] = True.
llm_query(text) asks a language model about a text and returns its reply.
{custom_tools_section}
Example. Question: How many lines say ERROR?
Your reply:
```repl
n = len([line for line in context.splitlines() if "ERROR" in line])
print(n)
```
You are shown: 3
Your next reply:
```repl
answer["content"] = str(n)
answer["ready"] = True
```

Example. Question: What is the largest number? (context is a list)
Your reply:
```repl
result = max(context)
print(result)
```
You are shown: 42
Your next reply:
```repl
answer["content"] = str(result)
answer["ready"] = True
```

Example. Question: Which language is the text in?
Your reply:
```repl
reply = llm_query("Which language is this text in? One word.\\n" + context[:2000])
print(reply)
```
You are shown: French
Your next reply:
```repl
answer["content"] = reply.strip()
answer["ready"] = True
```
"""

#: name -> system prompt text; None means "use the kernel's default prompt".
PROFILES: dict[str, str | None] = {"small": SMALL, "default": None}

#: Stop sequences that go with a profile (added to the backend's sampling defaults).
STOP: dict[str, tuple[str, ...]] = {"small": ("You are shown", "REPL output")}
