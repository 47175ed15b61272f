"""Recursion over HTTP: depth 1, 2 and 3 trees with exact usage totals, routing over any number of
other_backends, per-instance accounting, callbacks at every depth, host-enforced depth, and 50
concurrent children in one batch.

The "model" is a scripted OpenAI-compatible server on 127.0.0.1 that bills every reply with
known, distinct usage (see ``_semantics_support.Ledger``), driven through the real openai backend
and the real local REPL.
"""

from __future__ import annotations

import threading
import time

import pytest

from rlm import RLM
from rlm.logger import RLMLogger
from rlm_testkit.servers import OpenAICompatibleServer

from _semantics_support import Ledger, context_chars, is_rlm_turn, make_rlm, openai_kwargs, repl

# Tasks handed down the tree; their lengths tell the responder which level a turn belongs to.
TASKS = ["ROOT-CONTEXT", "task-for-level-1-xx", "task-for-level-2-xxxxxxxxx"]
LEVEL_OF_LENGTH = {len(t): i for i, t in enumerate(TASKS)}


@pytest.fixture
def server():
    with OpenAICompatibleServer(model="root-model") as srv:
        yield srv


def tree_answer(messages, body):
    """Level L (an RLM turn) asks llm_query one side question and rlm_query the next task."""
    if not is_rlm_turn(messages):
        return "leaf<" + messages[-1]["content"] + ">"
    level = LEVEL_OF_LENGTH[context_chars(messages)]
    nxt = TASKS[level + 1] if level + 1 < len(TASKS) else "task-for-the-last-level"
    return repl(f"side = llm_query('side-{level}')\n"
                f"down = rlm_query({nxt!r})\n"
                f"answer.update(content='L{level}(' + down + ')', ready=True)")


def expected_answer(max_depth: int) -> str:
    inner = f"leaf<{TASKS[max_depth] if max_depth < len(TASKS) else 'task-for-the-last-level'}>"
    for level in reversed(range(max_depth)):
        inner = f"L{level}({inner})"
    return inner


@pytest.mark.parametrize("max_depth", [1, 2, 3])
def test_trees_of_depth_1_2_3_have_exact_usage_totals(server, max_depth):
    ledger = Ledger(tree_answer)
    with make_rlm(server, ledger, max_depth=max_depth, logger=RLMLogger()) as r:
        result = r.completion(TASKS[0])
    assert result.response == expected_answer(max_depth)
    calls, inp, out, cost = ledger.totals()
    # one turn and one llm_query per RLM level, plus the plain call at max_depth
    assert calls == 2 * max_depth + 1
    s = result.usage_summary
    assert (s.total_calls, s.total_input_tokens, s.total_output_tokens) == (calls, inp, out)
    assert s.total_cost == pytest.approx(cost, abs=1e-12)
    assert sum(1 for b in ledger.billed if b.kind == "turn") == max_depth
    # the trajectory nests every child run in the cell that made it
    node = result.metadata
    for level in range(1, max_depth):
        calls_made = node["iterations"][0]["code_blocks"][0]["result"]["rlm_calls"]
        child = next(c for c in calls_made if c["kind"] == "rlm")
        assert child["depth"] == level
        node = child["metadata"]
        assert node["run_metadata"]["depth"] == level
    leaf = [c for c in node["iterations"][0]["code_blocks"][0]["result"]["rlm_calls"]
            if c["prompt"] != f"side-{max_depth - 1}"]
    assert leaf[0]["kind"] == "llm" and leaf[0]["depth"] == max_depth


def test_depth_routing_and_per_model_totals_with_other_backends(server):
    ledger = Ledger(tree_answer)
    server.responder = ledger
    with RLM(backend="openai", backend_kwargs=openai_kwargs(server, "m0"),
             other_backends=["openai", "openai"],
             other_backend_kwargs=[openai_kwargs(server, "m1"), openai_kwargs(server, "m2")],
             max_depth=3, max_iterations=4) as r:
        result = r.completion(TASKS[0])
    assert result.response == expected_answer(3)
    per = result.usage_summary.model_usage_summaries
    # depth d uses other_backends[d-1]; past the list, the default backend
    counts = {m: ledger.totals(m)[0] for m in ("m0", "m1", "m2")}
    assert counts == {"m0": 3, "m1": 2, "m2": 2}
    for model in ("m0", "m1", "m2"):
        n, inp, out, cost = ledger.totals(model)
        assert per[model].total_calls == n
        assert per[model].total_input_tokens == inp
        assert per[model].total_output_tokens == out
        assert per[model].total_cost == pytest.approx(cost, abs=1e-12)


def test_any_number_of_other_backends_routed_by_name_then_depth(server):
    names = [f"extra-{i}" for i in range(5)]

    def answer(messages, body):
        if is_rlm_turn(messages):
            asks = ", ".join(f"llm_query('q', model={n!r})" for n in names)
            return repl(f"r = [{asks}, llm_query('by-depth'), llm_query('unknown', model='nope-x')]\n"
                        "answer.update(content='|'.join(r), ready=True)")
        return f"{body['model']}"

    ledger = Ledger(answer)
    server.responder = ledger
    with RLM(backend="openai", backend_kwargs=openai_kwargs(server, "m0"),
             other_backends=["openai"] * 5,
             other_backend_kwargs=[openai_kwargs(server, n) for n in names]) as r:
        result = r.completion("x")
    # by name for each of the five; depth 1 -> other_backends[0]; an unknown name is asked of
    # the depth-routed backend by name
    assert result.response.split("|") == names + ["extra-0", "nope-x"]
    assert set(result.usage_summary.model_usage_summaries) == {"m0", *names, "nope-x"}
    assert result.usage_summary.model_usage_summaries["extra-0"].total_calls == 2


def test_two_backend_instances_with_one_model_name_are_reported_apart(server):
    ledger = Ledger(tree_answer)
    server.responder = ledger
    with RLM(backend="openai", backend_kwargs=openai_kwargs(server, "same"),
             other_backends=["openai"], other_backend_kwargs=[openai_kwargs(server, "same")],
             max_depth=2) as r:
        result = r.completion(TASKS[0])
    per = result.usage_summary.model_usage_summaries
    assert set(per) == {"same [openai]", "same [openai#1]"}
    # root: its turn and the plain call at depth 2 go to the default; the depth-1 side call and
    # the child's turn go to other_backends[0]
    assert per["same [openai]"].total_calls == 3 and per["same [openai#1]"].total_calls == 2
    assert result.usage_summary.total_input_tokens == ledger.totals()[1]


def test_all_four_callbacks_fire_at_every_depth(server):
    seen: list[tuple] = []
    lock = threading.Lock()

    def rec(name):
        def cb(*args):
            with lock:
                seen.append((name, *args))
        return cb

    with make_rlm(server, Ledger(tree_answer), max_depth=3,
                  on_iteration_start=rec("it_start"), on_iteration_complete=rec("it_done"),
                  on_subcall_start=rec("sub_start"), on_subcall_complete=rec("sub_done")) as r:
        r.completion(TASKS[0])
    depths = lambda name: sorted(s[1] for s in seen if s[0] == name)  # noqa: E731
    assert depths("it_start") == [0, 1, 2] and depths("it_done") == [0, 1, 2]
    # the child's depth: 1 and 2 are child RLMs, 3 the plain call rlm_query becomes at max_depth
    assert depths("sub_start") == [1, 2, 3] and depths("sub_done") == [1, 2, 3]
    # llm_query does not fire them (it goes to logger sinks only): 3 side calls, 0 callbacks
    starts = [s for s in seen if s[0] == "sub_start"]
    assert all(isinstance(s[2], str) and s[2] for s in starts)  # the model name
    assert [s[3] for s in sorted(starts, key=lambda s: s[1])][:2] == TASKS[1:3]  # previews
    done = [s for s in seen if s[0] == "sub_done"]
    assert all(s[3] >= 0 and s[4] is None for s in done)  # duration, no error


def test_depth_cannot_be_raised_from_a_cell(server, monkeypatch):
    """Environment variables, globals, rebound or wrapped helpers, a forged depth: the host
    decides the child's depth from the run that owns it."""
    monkeypatch.delenv("RLM_MAX_DEPTH", raising=False)
    tricks = (
        "import os, builtins\n"
        "os.environ['RLM_MAX_DEPTH'] = '50'; os.environ['RLM_DEPTH'] = '0'\n"
        "depth = 0; max_depth = 50; builtins.max_depth = 50\n"
        "attempts = []\n"
        # Dig from the helper to whatever holds a depth: closures, bound methods, attributes.
        "import types\n"
        "seen = set()\n"
        "def probe(obj, level):\n"
        "    if id(obj) in seen or level > 5 or isinstance(obj, (\n"
        "            dict, list, tuple, set, str, bytes, int, float, type, types.ModuleType)):\n"
        "        return\n"
        "    seen.add(id(obj))\n"
        "    if hasattr(obj, 'depth') and not callable(obj):\n"
        "        try:\n"
        "            obj.depth = 0\n"
        "            attempts.append('set')\n"
        "        except AttributeError:\n"
        "            attempts.append('refused')\n"
        "        return\n"
        "    for cell in (getattr(obj, '__closure__', None) or ()):\n"
        "        probe(cell.cell_contents, level + 1)\n"
        "    probe(getattr(obj, '__self__', None), level + 1)\n"
        "    for value in list(getattr(obj, '__dict__', {}).values()):\n"
        "        probe(value, level + 1)\n"
        "probe(rlm_query, 0)\n"
        "try:\n"
        "    rlm_query('x', depth=0)\n"
        "except TypeError:\n"
        "    attempts.append('no-depth-arg')\n"
        "_orig = rlm_query\n"
        "rlm_query = lambda p, **kw: _orig(p)\n"
    )

    def answer(messages, body):
        if not is_rlm_turn(messages):
            return "plain:" + messages[-1]["content"]
        level = LEVEL_OF_LENGTH.get(context_chars(messages))
        nxt = TASKS[level + 1]
        return repl(tricks + f"r = rlm_query({nxt!r})\n"
                    "answer.update(content=f'{attempts}|' + r, ready=True)")

    ledger = Ledger(answer)
    with make_rlm(server, ledger, max_depth=2) as r:
        result = r.completion(TASKS[0])
    # root (depth 0) and one child (depth 1) ran as RLMs; the child's rlm_query was a plain call
    assert sum(1 for b in ledger.billed if b.kind == "turn") == 2
    assert result.response.endswith("|plain:" + TASKS[2])
    assert "'set'" not in result.response and "'refused'" in result.response
    assert "'no-depth-arg'" in result.response


def test_fifty_concurrent_children_each_get_their_own_output(server):
    n = 50
    in_flight = [0, 0]  # current, peak of concurrent child turns at the server
    lock = threading.Lock()

    def answer(messages, body):
        if not is_rlm_turn(messages):
            return "plain"
        if context_chars(messages) == len("ROOT"):
            return repl(f"res = rlm_query_batched([f'CHILD-{{i:02d}}' for i in range({n})])\n"
                        "answer.update(content='\\n'.join(res), ready=True)")
        with lock:
            in_flight[0] += 1
            in_flight[1] = max(in_flight[1], in_flight[0])
        try:
            time.sleep(0.05)  # let the children overlap
        finally:
            with lock:
                in_flight[0] -= 1
        # every child prints its own context many times, from two threads, then echoes it
        return repl("import threading, time\n"
                    "def spam():\n"
                    "    for _ in range(50):\n"
                    "        print(context)\n"
                    "t = threading.Thread(target=spam); t.start()\n"
                    "for _ in range(50):\n"
                    "    print(context)\n"
                    "t.join()\n"
                    "answer.update(content='echo:' + context, ready=True)")

    logger = RLMLogger()
    t0 = time.perf_counter()
    with make_rlm(server, Ledger(answer), max_depth=2, max_concurrent_subcalls=n,
                  logger=logger) as r:
        result = r.completion("ROOT")
    elapsed = time.perf_counter() - t0
    assert result.response.split("\n") == [f"echo:CHILD-{i:02d}" for i in range(n)]
    assert in_flight[1] >= 10, f"children did not run concurrently (peak {in_flight[1]})"
    children = result.metadata["iterations"][0]["code_blocks"][0]["result"]["rlm_calls"]
    assert [c["prompt"] for c in children] == [f"CHILD-{i:02d}" for i in range(n)]
    for i, child in enumerate(children):
        out = child["metadata"]["iterations"][0]["code_blocks"][0]["result"]["stdout"]
        assert out.splitlines() == [f"CHILD-{i:02d}"] * 100, f"child {i} got foreign output"
    assert result.usage_summary.total_calls == n + 1
    assert elapsed < 30
