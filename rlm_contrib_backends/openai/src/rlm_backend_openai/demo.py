"""``rlm demo``: an RLM completion end to end, offline, with no API key.

It starts a *demo server* on 127.0.0.1: an OpenAI-compatible HTTP server whose "model" is a short
script that follows the RLM protocol (it is not a language model, and says so). The real
``openai`` backend talks to it over HTTP, the real local REPL runs the code it writes, and its
``llm_query_batched`` sub-calls go back over HTTP too. What you see is the whole machinery of an
RLM run with a stand-in for the model.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
from typing import Any

DEMO_MODEL = "rlm-demo-script (not a real model)"

_SERVICES = ["auth", "billing", "search", "db-proxy", "mailer", "gateway"]


def make_context(lines: int = 3000, seed: int = 7) -> str:
    """A synthetic service log: mostly INFO lines, with some ERROR lines."""
    rng = random.Random(seed)
    out = []
    for i in range(lines):
        svc = rng.choice(_SERVICES)
        if rng.random() < 0.03:
            out.append(f"2026-11-24T10:{i // 60 % 60:02d}:{i % 60:02d} ERROR {svc}: request {i} failed")
        else:
            out.append(f"2026-11-24T10:{i // 60 % 60:02d}:{i % 60:02d} INFO {svc}: request {i} ok")
    return "\n".join(out)


QUESTION = "How many ERROR lines are in the log, and which service has the most errors?"

_TURN1 = """I'll look at the context first.
```repl
lines = context.splitlines()
print(type(context).__name__, len(context), "chars,", len(lines), "lines")
print("\\n".join(lines[:3]))
```"""

_TURN2 = """The log is long, so I'll split it into chunks and ask a sub-model to list the errors of each chunk, concurrently.
```repl
chunks = ["\\n".join(lines[i:i + 500]) for i in range(0, len(lines), 500)]
replies = llm_query_batched([f"List the services of the ERROR lines, one per line:\\n{c}" for c in chunks])
from collections import Counter
per_service = Counter()
for r in replies:
    per_service.update(s for s in r.split() if s)
total = sum(per_service.values())
top, top_n = per_service.most_common(1)[0]
print(len(chunks), "chunks;", total, "errors;", dict(per_service))
```"""  # noqa: E501 - the scripted reply, one line per paragraph as a model writes it

_TURN3 = """I have what I need.
```repl
answer["content"] = f"{total} ERROR lines; the service with the most errors is {top} ({top_n})."
answer["ready"] = True
```"""


def demo_responder(messages: list[dict[str, Any]], body: dict[str, Any]) -> str:
    """The demo 'model': root turns follow a script; sub-calls are answered by a regex."""
    system = messages[0].get("content", "") if messages else ""
    if messages and messages[0].get("role") == "system" and "REPL" in system:
        turn = sum(1 for m in messages if m.get("role") == "assistant")
        return [_TURN1, _TURN2, _TURN3][min(turn, 2)]
    prompt = messages[-1].get("content", "") if messages else ""
    found = re.findall(r" ERROR ([\w-]+):", prompt)
    return "\n".join(found)


def run_demo(verbose: bool = False) -> int:
    from rlm import RLM
    from .emulator import OpenAICompatibleServer

    context = make_context()
    print(f"rlm demo: starting the demo server on 127.0.0.1 (model: {DEMO_MODEL})", file=sys.stderr)
    with OpenAICompatibleServer(responder=demo_responder, demo=True, model=DEMO_MODEL) as server:
        print(f"rlm demo: server at {server.base_url}; context: {len(context):,} characters of log; "
              f"question: {QUESTION}", file=sys.stderr)
        with RLM(backend="openai",
                 backend_kwargs={"base_url": server.base_url, "api_key": "demo-key-not-secret",
                                 "model_name": DEMO_MODEL},
                 environment="local", max_iterations=6, verbose=verbose) as rlm:
            result = rlm.completion(context, root_prompt=QUESTION)
    print(result.response)
    u = result.usage_summary
    print(f"rlm demo: {u.total_calls} model calls over HTTP ({u.total_input_tokens} in / "
          f"{u.total_output_tokens} out tokens), {result.execution_time:.2f}s", file=sys.stderr)
    return 0


def add_demo_parser(sub: Any) -> None:
    """The ``rlm demo`` subcommand (registered through ``rlm_register_commands``)."""
    demo = sub.add_parser("demo", help="run an RLM end to end against a local demo server "
                                       "(no API key, no network)")
    demo.add_argument("-v", "--verbose", action="store_true")
    demo.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    return run_demo(verbose=args.verbose)
