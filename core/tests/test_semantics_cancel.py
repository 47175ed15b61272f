"""Limits and cancellation over HTTP: a budget exhausted inside a child, max_timeout stopping a
running cell and its in-flight sub-calls and children, a cell's own time limit taking its
sub-calls with it, Ctrl+C, RLM.cancel() and acompletion.

Slow replies block in the server until the test releases them (or 30 s pass), so a test that
finishes well under 30 s proves the client side stopped waiting and cancelled the calls (the
bounds are loose: the machine may be busy).
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time

import pytest

import rlm
from rlm import RLM
from rlm.events import SubcallCompleted
from rlm.logger import RLMLogger
from rlm_testkit.servers import OpenAICompatibleServer, Reply

from _semantics_support import (Ledger, child_threads, context_chars, is_rlm_turn, make_rlm,
                                pending_tasks, repl, turn_no, wait_until)


class Events:
    def __init__(self):
        self.events = []
        self.lock = threading.Lock()

    def handle(self, event):
        with self.lock:
            self.events.append(event)

    def close(self):
        pass

    def of(self, cls):
        with self.lock:
            return [e for e in self.events if isinstance(e, cls)]


@pytest.fixture
def server():
    release = threading.Event()
    with OpenAICompatibleServer(model="root-model") as srv:
        srv.release = release
        yield srv
        release.set()  # let blocked handler threads finish before the server stops


def slow(server, text="late"):
    server.release.wait(30)
    return text


def test_budget_exhausted_inside_a_child(server):
    """The child spends the parent's remaining budget, stops with its partial answer; the parent
    counts what the child spent and stops too."""
    def answer(messages, body):
        if not is_rlm_turn(messages):
            return Reply("plain", cost=0.0)
        if context_chars(messages) == len("ROOT"):
            if turn_no(messages) == 0:
                return Reply(repl("r = rlm_query('child-task')\n"
                                  "answer['content'] = 'root saw: ' + r"), cost=0.125)
            return Reply("FINAL(never)", cost=0.125)
        return Reply(repl("answer['content'] = 'child partial'\nprint('working')"), cost=0.25)

    ledger = Ledger(answer, cost_per_call=None)
    with make_rlm(server, ledger, max_depth=2, max_budget=1.0, max_iterations=20) as r:
        with pytest.raises(rlm.BudgetExceededError) as info:
            r.completion("ROOT")
    err = info.value
    # root turn 0.125; the child got 0.875 and stopped after the turn that passed it (4 x 0.25)
    child_turns = [b for b in ledger.billed if b.kind == "turn" and b.cost == 0.25]
    assert len(child_turns) == 4
    assert err.spent == pytest.approx(0.125 + 1.0) and err.budget == 1.0
    assert err.partial_answer.startswith("root saw: Error: BudgetExceededError")
    assert "partial answer: child partial" in err.partial_answer
    assert len(ledger.billed) == 5  # nothing was called after the budget was gone


def test_max_timeout_cancels_a_running_cell_and_its_in_flight_sub_calls(server):
    def answer(messages, body):
        if is_rlm_turn(messages):
            return repl("answer['content'] = 'partial-before'\n"
                        "res = llm_query_batched(['slow-1', 'slow-2', 'slow-3', 'fast'])\n"
                        "answer['content'] = 'after: ' + repr(res)\n"
                        "while True:\n"
                        "    pass")
        prompt = messages[-1]["content"]
        return "quick" if prompt == "fast" else slow(server)

    sink = Events()
    t0 = time.perf_counter()
    r = make_rlm(server, answer, max_timeout=1.5, sinks=[sink])
    with pytest.raises(rlm.TimeoutExceededError) as info:
        r.completion("q")
    elapsed = time.perf_counter() - t0
    assert elapsed < 10, elapsed  # the slow replies would take 30 s
    assert info.value.timeout == 1.5
    # At the deadline the cell is stopped while it waits for the batch (or, if the batch's
    # cancellation reaches it first, right after, in its endless loop)
    partial = info.value.partial_answer
    assert partial == "partial-before" or (
        partial.startswith("after: ['Error: sub-call cancelled: max_timeout") and "'quick']" in partial)
    done = sink.of(SubcallCompleted)
    assert sorted(e.error is None for e in done) == [False, False, False, True]
    assert all("cancelled" in e.error for e in done if e.error)
    assert wait_until(lambda: not pending_tasks(r), 2), pending_tasks(r)
    r.close()


def test_a_cell_over_its_own_time_limit_takes_its_sub_calls_with_it(server):
    def answer(messages, body):
        if is_rlm_turn(messages):
            if turn_no(messages) == 0:
                return repl("x = llm_query('slow')")
            return "FINAL(recovered)"
        return slow(server)

    t0 = time.perf_counter()
    with make_rlm(server, answer, cell_timeout=0.5, logger=RLMLogger()) as r:
        result = r.completion("q")
        assert not pending_tasks(r)
    assert time.perf_counter() - t0 < 10
    assert result.response == "recovered"
    cell = result.metadata["iterations"][0]["code_blocks"][0]["result"]
    assert cell["timed_out"] and "time limit" in cell["error"]


def test_max_timeout_cancels_in_flight_children(server):
    def answer(messages, body):
        if not is_rlm_turn(messages):
            return slow(server)
        if context_chars(messages) == len("ROOT"):
            return repl("answer['content'] = 'waiting for children'\n"
                        "res = rlm_query_batched(['child-a', 'child-b', 'child-c'])\n"
                        "answer['content'] = 'children: ' + repr(res)")
        return repl("answer['content'] = 'child ' + context\nx = llm_query('slow')")

    sink = Events()
    t0 = time.perf_counter()
    r = make_rlm(server, answer, max_depth=2, max_timeout=1.5, sinks=[sink])
    with pytest.raises(rlm.TimeoutExceededError) as info:
        r.completion("ROOT")
    assert time.perf_counter() - t0 < 10
    partial = info.value.partial_answer
    # the root's cell is stopped at its deadline, while it waits for the children (or just after
    # they came back with their own timeouts)
    assert partial == "waiting for children" or partial.startswith(
        "children: ['Error: TimeoutExceededError")
    assert wait_until(lambda: not child_threads() and not pending_tasks(r), 3)
    # every child stopped with its own partial answer, and said so to the sinks
    rlm_done = [e for e in sink.of(SubcallCompleted) if e.kind == "rlm"]
    assert len(rlm_done) == 3
    assert all(("TimeoutExceededError" in e.error or "CancellationError" in e.error)
               for e in rlm_done)
    llm_done = [e for e in sink.of(SubcallCompleted) if e.kind == "llm"]
    assert len(llm_done) == 3 and all("cancelled" in e.error for e in llm_done)
    r.close()


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="Ctrl+C is delivered to the main thread")
def test_ctrl_c_cancels_children_and_sub_calls_then_raises_with_the_partial_answer(server):
    started = threading.Event()

    def answer(messages, body):
        if not is_rlm_turn(messages):
            started.set()
            return slow(server)
        if context_chars(messages) == len("ROOT"):
            return repl("answer['content'] = 'root partial'\n"
                        "res = rlm_query_batched(['child-a', 'child-b'])")
        return repl("x = llm_query_batched(['s1', 's2'])")

    def interrupt():
        if started.wait(10):
            time.sleep(0.2)
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    sink = Events()
    r = make_rlm(server, answer, max_depth=2, sinks=[sink])
    killer = threading.Thread(target=interrupt)
    killer.start()
    t0 = time.perf_counter()
    with pytest.raises(rlm.CancellationError) as info:
        r.completion("ROOT")
    elapsed = time.perf_counter() - t0
    killer.join()
    assert elapsed < 10
    assert info.value.partial_answer is not None
    assert wait_until(lambda: not child_threads() and not pending_tasks(r), 3)
    llm_done = [e for e in sink.of(SubcallCompleted) if e.kind == "llm"]
    assert llm_done and all("cancelled" in (e.error or "") for e in llm_done)
    r.close()


def test_rlm_cancel_from_another_thread(server):
    started = threading.Event()

    def answer(messages, body):
        if is_rlm_turn(messages):
            return repl("answer['content'] = 'so far'\nx = llm_query('slow')\nprint(x)")
        started.set()
        return slow(server)

    r = make_rlm(server, answer)
    threading.Thread(target=lambda: started.wait(10) and r.cancel()).start()
    t0 = time.perf_counter()
    with pytest.raises(rlm.CancellationError) as info:
        r.completion("q")
    assert time.perf_counter() - t0 < 10
    assert info.value.partial_answer == "so far"
    r.close()


def test_acompletion_same_semantics(server):
    def answer(messages, body):
        if is_rlm_turn(messages):
            return repl("r = llm_query_batched(['a', 'b'])\n"
                        "answer.update(content=','.join(r), ready=True)")
        return "sub-" + messages[-1]["content"]

    async def main():
        with make_rlm(server, Ledger(answer)) as r:
            # several completions at once on one event loop
            return await asyncio.gather(*(r.acompletion(f"ctx{i}") for i in range(3)))

    results = asyncio.run(main())
    assert [x.response for x in results] == ["sub-a,sub-b"] * 3
    assert all(x.usage_summary.total_calls == 3 for x in results)


def test_acompletion_raises_the_limit_errors(server):
    def answer(messages, body):
        return repl("answer['content'] = 'half'\nwhile True:\n    pass")

    async def main():
        with make_rlm(server, answer, max_timeout=0.8) as r:
            await r.acompletion("q")

    with pytest.raises(rlm.TimeoutExceededError) as info:
        asyncio.run(main())
    assert info.value.partial_answer == "half"


def test_cancelling_the_awaiting_task_cancels_the_run(server):
    started = threading.Event()

    def answer(messages, body):
        if is_rlm_turn(messages):
            return repl("x = llm_query_batched(['slow', 'slow'])")
        started.set()
        return slow(server)

    r = make_rlm(server, answer)

    async def main():
        task = asyncio.ensure_future(r.acompletion("q"))
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 10)
        t0 = time.perf_counter()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.perf_counter() - t0

    assert asyncio.run(main()) < 8
    assert wait_until(lambda: not pending_tasks(r), 3)
    r.close()


def test_sibling_children_cannot_spend_the_same_budget_twice():
    """Each child is handed the remaining budget, but they share it: once the tree's spend passes
    the root's max_budget, every child stops (a child checks its ancestors' limits too)."""
    def responder(messages):
        if messages[0]["role"] != "system":
            return "plain"
        if "11 total characters" in messages[1]["content"]:  # the root
            return repl("res = rlm_query_batched([f'child-{i:05d}' for i in range(4)])\n"
                        "answer['content'] = str(res)")
        return repl("print('spending')")  # children never finish on their own

    r = RLM(backend="scripted",
            backend_kwargs={"responder": responder, "prices": (1e6, 0), "latency": 0.02},
            max_depth=2, max_budget=20_000.0, max_iterations=50, max_concurrent_subcalls=4)
    with pytest.raises(rlm.BudgetExceededError) as info:
        r.completion("root-contxt")
    spent = info.value.spent
    # without the shared check each of the 4 children would spend the whole remaining budget
    # (about 4x the budget: measured 80,000); with it, the overshoot is at most the calls that
    # were already in flight
    assert 20_000 < spent < 20_000 * 1.6, spent
    r.close()


@pytest.mark.parametrize("environment", ["local", "sandbox"])
def test_cancel_stops_a_busy_cell_of_a_persistent_repl(server, environment):
    """A cancelled run's cell is interrupted (env.interrupt()), so the persistent REPL is free
    for the next completion at once, with its variables."""
    import shutil

    if environment == "sandbox" and shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed (scripts/ci/sandbox.sh installs it)")
    calls = []

    def answer(messages, body):
        calls.append(1)
        if len(calls) == 1:
            return repl("kept = 41\nimport time\nwhile True:\n    time.sleep(0.05)")
        return repl("answer.update(content=str(kept + 1), ready=True)")

    r = make_rlm(server, answer, persistent=True, environment=environment)
    busy = threading.Timer(1.5, r.cancel)
    busy.start()
    t0 = time.perf_counter()
    with pytest.raises(rlm.CancellationError):
        r.completion("first")
    t1 = time.perf_counter()
    assert r.completion("second").response == "42"  # the same REPL, its cell stopped
    assert time.perf_counter() - t1 < 15 and t1 - t0 < 15
    r.close()
