"""A real RLM run with batched llm sub-calls and a child rlm run, through the scripted backend.

Used by the store, logs and viewer tests and by benchmarks/bench_viewer.py. Not a test module.
"""

from __future__ import annotations

import os
from typing import Any

TURN1 = '''Let me look.
```repl
if context.startswith("ROOT"):
    parts = llm_query_batched([f"summarise part {i}" for i in range(N_LLM)])
    child = rlm_query("CHILD: find the needle")
    print(len(parts), "parts;", child)
else:
    print("child sees", context)
```'''
TURN2 = '''```repl
answer.update(content="done:" + context[:5], ready=True)
```'''


def responder(n_llm: int):
    def respond(messages: list[dict[str, Any]]) -> str:
        if messages[0]["role"] != "system":  # a plain llm_query
            return "summary of " + str(messages[-1]["content"])[:40]
        turns = sum(1 for m in messages if m["role"] == "assistant")
        return TURN1.replace("N_LLM", str(n_llm)) if turns == 0 else TURN2
    return respond


def run_completion(db_path: str | os.PathLike[str] | None, *, n_llm: int = 3, sink: Any = None,
                   prices: tuple[float, float] | None = (1.0, 2.0), latency: float = 0.0) -> Any:
    """One root run (2 turns, ``n_llm`` batched llm calls, one child run of 2 turns)."""
    from rlm import RLM
    from rlm_plugins.store.sink import StoreSink

    sink = sink or StoreSink(db_path)
    rlm = RLM(backend="scripted", backend_kwargs={"responder": responder(n_llm), "prices": prices,
                                                  "latency": latency},
              max_depth=2, sinks=[sink], max_concurrent_subcalls=8)
    with rlm:
        result = rlm.completion("ROOT context with a needle")
    return result, sink
