"""The tree-wide concurrency bound (rlm._tree): child runs working at once and plain sub-calls
in flight across a whole run tree stay within the root's ``max_concurrent_subcalls``."""

from __future__ import annotations

import threading
import time

import pytest

from rlm import RLM
from rlm_testkit.servers import OpenAICompatibleServer


class Gauge:
    """Counts calls in flight at the model; the model answers each after a short delay."""

    def __init__(self, delay: float = 0.05):
        self.delay = delay
        self.now = 0
        self.peak = 0
        self._lock = threading.Lock()

    def __call__(self, messages, body=None):
        with self._lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        try:
            time.sleep(self.delay)
            if messages[0]["role"] != "system":
                return "leaf"
            turns = sum(1 for m in messages if m["role"] == "assistant")
            if turns:
                return '```repl\nanswer["content"] = "done"\nanswer["ready"] = True\n```'
            # Every run fans out: 4 children (or, past max_depth, 4 plain calls) and 4 llm calls.
            return ("```repl\nr = rlm_query_batched(['a', 'b', 'c', 'd'])\n"
                    "s = llm_query_batched(['1', '2', '3', '4'])\nprint(len(r), len(s))\n```")
        finally:
            with self._lock:
                self.now -= 1


def make(gauge: Gauge, server: OpenAICompatibleServer, limit: int) -> RLM:
    return RLM(backend="openai", backend_kwargs={"base_url": server.base_url, "api_key": "k",
                                                 "model_name": "m", "max_retries": 0},
               max_depth=3, max_concurrent_subcalls=limit, max_timeout=120)


@pytest.mark.parametrize("limit", [1, 3])
def test_a_deep_fan_out_stays_within_the_bound(limit):
    """A real HTTP server that answers concurrently: the calls in flight at it are counted."""
    gauge = Gauge()
    with OpenAICompatibleServer(responder=gauge) as server, make(gauge, server, limit) as r:
        result = r.completion("root")
        # Without the bound: 4 children at depth 1 and 16 at depth 2 at once (24 calls in
        # flight at the model with a limit of 3, measured).
    assert result.response == "done"
    # Each working run (the root, and at most ``limit`` children) has at most one model call
    # of its own in flight, plus at most ``limit`` plain sub-calls across the tree.
    assert gauge.peak <= 1 + limit + limit, gauge.peak


def test_the_bound_counts_children_across_batches_of_the_tree():
    seen = []
    gauge = Gauge(delay=0.02)
    with OpenAICompatibleServer(responder=gauge) as server, make(gauge, server, 2) as r:
        original = r._start_run

        def start(prompt, root_prompt):
            run = original(prompt, root_prompt)
            seen.append(run.slots)
            return run

        r._start_run = start
        r.completion("root")
    [slots] = seen
    assert 1 <= slots.peak <= 2 and slots.working == 0  # every slot given back
