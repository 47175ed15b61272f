"""Tests of the local environment (``rlm_plugins.local``).

The Host is the environment's input, so a small fake one stands in for the kernel here: it
answers deterministically and records every call.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rlm
from rlm.exceptions import ConfigurationError, RLMEnvironmentError
from rlm.plugin import CellResult, Environment, Tool
from rlm_isolation.worker import BoundedText
from rlm_plugins.local.repl import RESERVED_NAMES, LocalREPL


class FakeHost:
    depth = 0

    def __init__(self, tag: str = "host"):
        self.tag = tag
        self.calls: list[tuple[str, object, object]] = []
        self._lock = threading.Lock()

    def _record(self, method: str, arg: object, model: object) -> None:
        with self._lock:
            self.calls.append((method, arg, model))

    def llm_query(self, prompt, model=None):
        self._record("llm_query", prompt, model)
        return f"{self.tag}:llm:{prompt}"

    def llm_query_batched(self, prompts, model=None):
        self._record("llm_query_batched", list(prompts), model)
        return [f"{self.tag}:llm:{p}" for p in prompts]

    def rlm_query(self, prompt, model=None):
        self._record("rlm_query", prompt, model)
        return f"{self.tag}:rlm:{prompt}"

    def rlm_query_batched(self, prompts, model=None):
        self._record("rlm_query_batched", list(prompts), model)
        return [f"{self.tag}:rlm:{p}" for p in prompts]


@pytest.fixture
def host() -> FakeHost:
    return FakeHost()


@pytest.fixture
def make_repl(host):
    made: list[LocalREPL] = []

    def make(tools=None, host_obj=None, **kwargs) -> LocalREPL:
        repl = LocalREPL(**kwargs)
        repl.start(host_obj or host, tools or {})
        made.append(repl)
        return repl

    yield make
    for repl in made:
        repl.shutdown()


@pytest.fixture
def repl(make_repl) -> LocalREPL:
    return make_repl()


def ok(result: CellResult) -> CellResult:
    assert result.error is None, result.error
    return result


# --- basics and persistence ---------------------------------------------------------------


def test_is_an_environment(repl):
    assert isinstance(repl, Environment)
    caps = LocalREPL.capabilities
    assert (caps.isolated, caps.persistent, caps.cell_timeout, caps.threads,
            caps.callables_as_tools) == (False, True, True, True, True)


def test_state_persists_across_cells(repl):
    ok(repl.execute("x = 40"))
    ok(repl.execute("x += 2\nimport math"))
    r = ok(repl.execute("print(x, math.sqrt(16))"))
    assert r.stdout == "42 4.0\n"
    assert r.variables == ["x"]  # modules are not user variables


def test_class_statements(repl):
    ok(repl.execute(textwrap.dedent("""
        class Counter:
            step = 2
            def __init__(self):
                self.n = 0
            def bump(self):
                self.n += self.step
                return self
        class Sub(Counter):
            step = 5
    """)))
    r = ok(repl.execute("c = Sub().bump().bump()\n"
                        "print(c.n, isinstance(c, Counter), [Sub().bump().n for _ in range(2)])"))
    assert r.stdout == "10 True [5, 5]\n"


def test_closures_and_comprehensions(repl):
    ok(repl.execute(textwrap.dedent("""
        def make_adder(k):
            def add(v):
                return v + k
            return add
        adders = [make_adder(i) for i in range(3)]
        scale = 10
        scaled = [scale * a(1) for a in adders]
        gen = list(x * scale for x in range(3))
    """)))
    r = ok(repl.execute("print(scaled, gen, (lambda: scale)())"))
    assert r.stdout == "[10, 20, 30] [0, 10, 20] 10\n"


def test_function_uses_global_defined_in_a_later_cell(repl):
    ok(repl.execute("def total():\n    return base + extra()\n"))
    r = repl.execute("total()")
    assert r.error is not None and "NameError" in r.error
    ok(repl.execute("base = 1\ndef extra():\n    return 2\n"))
    assert ok(repl.execute("print(total())")).stdout == "3\n"


def test_main_guard_runs_and_future_imports_do_not_leak(repl):
    # The REPL module uses `from __future__ import annotations`; cells must not inherit it.
    r = ok(repl.execute(textwrap.dedent("""
        def f(a: int) -> int:
            return a
        if __name__ == "__main__":
            print(f.__annotations__["a"] is int)
    """)))
    assert r.stdout == "True\n"


# --- helpers -------------------------------------------------------------------------------


def test_every_helper_reaches_the_host(repl, host):
    r = ok(repl.execute(textwrap.dedent("""
        print(llm_query("a"))
        print(llm_query("b", model="m1"))
        print(llm_query_batched(["c", "d"]))
        print(rlm_query("e", "m2"))
        print(rlm_query_batched(["f"], model="m3"))
    """)))
    assert r.stdout.splitlines() == [
        "host:llm:a", "host:llm:b", "['host:llm:c', 'host:llm:d']", "host:rlm:e", "['host:rlm:f']"]
    assert host.calls == [("llm_query", "a", None), ("llm_query", "b", "m1"),
                          ("llm_query_batched", ["c", "d"], None), ("rlm_query", "e", "m2"),
                          ("rlm_query_batched", ["f"], "m3")]


def test_helpers_are_bound_to_their_own_host(make_repl):
    a, b = FakeHost("A"), FakeHost("B")
    ra, rb = make_repl(host_obj=a), make_repl(host_obj=b)
    assert ok(ra.execute("print(llm_query('x'))")).stdout == "A:llm:x\n"
    assert ok(rb.execute("print(rlm_query('y'))")).stdout == "B:rlm:y\n"
    assert len(a.calls) == 1 and len(b.calls) == 1


def test_host_output_during_a_helper_call_is_not_the_cells(make_repl, capsys):
    class ChattyHost(FakeHost):
        def llm_query(self, prompt, model=None):
            print("kernel progress line")
            return super().llm_query(prompt, model)

    repl = make_repl(host_obj=ChattyHost())
    r = ok(repl.execute("print('before'); v = llm_query('q'); print('after', v)"))
    assert r.stdout == "before\nafter host:llm:q\n"
    assert "kernel progress line" in capsys.readouterr().out


def test_show_vars(repl):
    first = ok(repl.execute("SHOW_VARS()"))
    assert "No variables" in first.stdout
    repl.add_context("the context", 0)
    r = ok(repl.execute("n = 3\nname = 'z'\nimport json\ns = SHOW_VARS()\nprint(type(s).__name__)"))
    assert "Available variables: {'n': 'int', 'name': 'str'}" in r.stdout
    assert "'context': 'str'" in r.stdout
    assert "json" not in r.stdout.split("Loaded data")[0]
    assert r.stdout.endswith("str\n")


def test_answer_dict_ready_gives_final_answer(repl):
    r = ok(repl.execute("answer['content'] = 'partial'"))
    assert r.final_answer is None and r.answer_content == "partial"
    r = ok(repl.execute("answer['content'] = 42\nanswer['ready'] = True"))
    assert r.final_answer == "42" and r.answer_content == "42"


def test_answer_replaced_by_a_new_dict_counts(repl):
    r = ok(repl.execute("answer = {'content': 'done', 'ready': True}"))
    assert r.final_answer == "done"


def test_final(repl):
    r = ok(repl.execute("FINAL(['a', 1])"))
    assert r.final_answer == "['a', 1]"
    assert ok(repl.execute("print(answer)")).stdout == "{'content': \"['a', 1]\", 'ready': True}\n"


def test_final_var_existing_variable(repl):
    r = ok(repl.execute("result = {'k': 'v'}\nFINAL_VAR('result')"))
    assert r.final_answer == "{'k': 'v'}"


def test_final_var_quoted_name_and_non_string(make_repl):
    r = ok(make_repl().execute("res = 'yes'\nFINAL_VAR(' \"res\" ')"))
    assert r.final_answer == "yes"
    r = ok(make_repl().execute("FINAL_VAR(123)"))
    assert r.final_answer == "123"


def test_final_var_missing_variable_is_not_an_answer(repl):
    r = ok(repl.execute("msg = FINAL_VAR('missing')\nprint('returned:', msg)"))
    assert r.final_answer is None
    assert "Variable 'missing' not found" in r.stdout
    assert "Create it first" in r.stdout
    assert "returned: Error:" in r.stdout
    r = ok(repl.execute("missing = 'now here'\nFINAL_VAR('missing')"))
    assert r.final_answer == "now here"


def test_final_var_with_text_instead_of_a_name(repl):
    r = ok(repl.execute("FINAL_VAR('The answer is 42.')"))
    assert r.final_answer is None
    assert "FINAL(text)" in r.stdout


# --- reserved names ------------------------------------------------------------------------


HELPERS = ["llm_query", "llm_query_batched", "rlm_query", "rlm_query_batched", "SHOW_VARS",
           "FINAL", "FINAL_VAR"]


@pytest.mark.parametrize("name", HELPERS)
def test_helpers_restored_after_rebinding_or_deletion(repl, name):
    original = repl._ns[name]
    r = repl.execute(f"{name} = 'clobbered'\nprint(type({name}).__name__)")
    assert r.stdout == "str\n"  # the cell itself sees its own binding
    assert name not in r.variables
    assert repl._ns[name] is original
    ok(repl.execute(f"del {name}"))
    assert repl._ns[name] is original
    assert ok(repl.execute(f"print(callable({name}))")).stdout == "True\n"


def test_answer_restored_when_replaced_by_a_non_dict(repl):
    ok(repl.execute("answer['content'] = 'kept'"))
    r = ok(repl.execute("answer = 'not a dict'"))
    assert r.answer_content == "kept" and r.final_answer is None
    r = ok(repl.execute("print(type(answer).__name__, answer['content'])"))
    assert r.stdout == "dict kept\n"
    ok(repl.execute("del answer"))
    assert isinstance(repl._ns["answer"], dict)
    r = ok(repl.execute("answer = {}\nprint(sorted(answer))"))
    assert repl._ns["answer"] == {"content": "", "ready": False}


def test_context_and_history_restored(repl):
    ctx = ["chunk one", "chunk two"]
    hist = [{"role": "user", "content": "hi"}]
    repl.add_context(ctx, 0)
    repl.add_history(hist, 0)
    ok(repl.execute("context = 'x'\ncontext_0 = None\nhistory = []\ndel history_0"))
    assert repl._ns["context"] is ctx and repl._ns["context_0"] is ctx
    assert repl._ns["history"] == hist and repl._ns["history_0"] == hist
    r = ok(repl.execute("print(context[1], history[0]['content'])"))
    assert r.stdout == "chunk two hi\n"
    assert not set(r.variables) & {"context", "context_0", "history", "history_0"}


def test_tools_injected_and_restored(make_repl):
    def shout(s):
        return s.upper() + "!"

    table = {"a": 1}
    repl = make_repl(tools={"shout": Tool("shout", shout, "upper-cases"),
                            "table": Tool("table", table)})
    r = ok(repl.execute("print(shout('hey'), table['a'])\nshout = None\ndel table"))
    assert r.stdout == "HEY! 1\n"
    assert repl._ns["shout"] is shout and repl._ns["table"] is table
    r = ok(repl.execute("table['b'] = 2\nprint(shout('x'))"))
    assert r.stdout == "X!\n" and table == {"a": 1, "b": 2}
    assert "shout" not in r.variables and "table" not in r.variables


@pytest.mark.parametrize(
    "bad", sorted(RESERVED_NAMES) + ["context_3", "history_0", "not valid", "class", "__x__"])
def test_reserved_or_invalid_tool_names_are_rejected(host, bad):
    repl = LocalREPL()
    with pytest.raises(ConfigurationError):
        repl.start(host, {bad: Tool(bad, 1)})
    repl.shutdown()


# --- output capture -------------------------------------------------------------------------


def test_stdout_and_stderr_are_captured(repl):
    r = ok(repl.execute(textwrap.dedent("""
        import sys
        print("out 1")
        print("err 1", file=sys.stderr)
        sys.stdout.write("out 2\\n")
        sys.stderr.write("err 2\\n")
        sys.stdout.buffer.write("bytes é\\n".encode())
    """)))
    assert r.stdout == "out 1\nout 2\nbytes é\n"
    assert r.stderr == "err 1\nerr 2\n"


def test_error_traceback_goes_to_error_and_stderr(repl):
    ok(repl.execute("def inner(v):\n    return 10 // v\n"))
    r = repl.execute("print('start')\nvalue = inner(0)")
    assert r.stdout == "start\n"
    assert r.error is not None
    assert r.error.endswith("ZeroDivisionError: integer division or modulo by zero")
    assert 'File "<cell 2>", line 2, in <module>' in r.error
    assert "value = inner(0)" in r.error
    assert 'File "<cell 1>", line 2, in inner' in r.error and "return 10 // v" in r.error
    assert "repl.py" not in r.error and "_executor.py" not in r.error
    assert r.stderr.endswith(r.error + "\n")


def test_chained_exceptions_are_shown(repl):
    r = repl.execute("try:\n    {}['k']\nexcept KeyError as e:\n    raise ValueError('bad') from e")
    assert "KeyError: 'k'" in r.error and "ValueError: bad" in r.error
    assert "direct cause" in r.error


def test_threads_started_in_a_cell_are_captured(repl):
    r = ok(repl.execute(textwrap.dedent("""
        import threading, sys
        from concurrent.futures import ThreadPoolExecutor
        def work(i):
            print(f"worker {i}")
            print(f"warn {i}", file=sys.stderr)
            return i
        ts = [threading.Thread(target=work, args=(i,)) for i in range(3)]
        for t in ts: t.start()
        for t in ts: t.join()
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(work, range(3, 9)))
        def nested():
            t = threading.Thread(target=work, args=(99,))
            t.start(); t.join()
        t = threading.Thread(target=nested); t.start(); t.join()
    """)))
    assert sorted(r.stdout.splitlines()) == sorted([f"worker {i}" for i in [*range(9), 99]])
    assert sorted(r.stderr.splitlines()) == sorted([f"warn {i}" for i in [*range(9), 99]])


def test_background_thread_output_lands_in_a_later_cell(repl):
    ok(repl.execute(textwrap.dedent("""
        import threading
        go = threading.Event()
        def later():
            go.wait()
            print("from the background")
        bg = threading.Thread(target=later); bg.start()
    """)))
    r = ok(repl.execute("go.set(); bg.join(); print('cell 2')"))
    assert r.stdout == "from the background\ncell 2\n"


def test_output_of_other_threads_is_not_captured(repl, capsys):
    def chatter():
        for _ in range(20):
            print("outside the REPL")
            time.sleep(0.005)

    t = threading.Thread(target=chatter)
    t.start()
    r = ok(repl.execute("import time\n"
                        "for i in range(20):\n    print('inside')\n    time.sleep(0.005)"))
    t.join()
    assert r.stdout == "inside\n" * 20
    assert capsys.readouterr().out.count("outside the REPL") == 20


def test_concurrent_repls_never_swap_output(make_repl):
    n_repls, lines = 10, 200
    repls = [make_repl() for _ in range(n_repls)]
    barrier = threading.Barrier(n_repls)
    results: dict[int, CellResult] = {}
    code = textwrap.dedent(f"""
        import sys, threading
        for i in range({lines}):
            print(my_id)
            if i % 50 == 0:
                sys.stderr.write(f"e{{my_id}}\\n")
        def helper():
            for _ in range(10):
                print(my_id)
        t = threading.Thread(target=helper); t.start(); t.join()
    """)

    def run(k: int) -> None:
        repls[k].execute(f"my_id = 'repl-{k}'")
        barrier.wait()
        results[k] = repls[k].execute(code)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(n_repls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(n_repls):
        r = ok(results[k])
        assert r.stdout.splitlines() == [f"repl-{k}"] * (lines + 10)
        assert r.stderr.splitlines() == [f"erepl-{k}"] * 4


class RecursiveHost(FakeHost):
    """Serves rlm_query like the kernel does: a child REPL, run from the calling thread (or from a
    thread pool for the batched form), whose cell prints its own marker."""

    def __init__(self):
        super().__init__("parent")
        self.child_results: dict[str, CellResult] = {}

    def rlm_query(self, prompt, model=None):
        child = LocalREPL()
        child.start(FakeHost("child"), {})
        try:
            child.add_context(prompt, 0)
            result = child.execute("for _ in range(100):\n    print(context)")
        finally:
            child.shutdown()
        self.child_results[prompt] = result
        return f"child saw {prompt}"

    def rlm_query_batched(self, prompts, model=None):
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(prompts)) as pool:
            return list(pool.map(self.rlm_query, prompts))


def test_child_repls_inside_helper_calls_keep_their_own_output(make_repl):
    host = RecursiveHost()
    repl = make_repl(host_obj=host)
    r = ok(repl.execute(textwrap.dedent("""
        print("parent before")
        print(rlm_query("solo"))
        print(rlm_query_batched([f"kid{i}" for i in range(6)]))
        print("parent after")
    """)))
    assert r.stdout.splitlines() == [
        "parent before", "child saw solo", str([f"child saw kid{i}" for i in range(6)]),
        "parent after"]
    for prompt in ["solo", *(f"kid{i}" for i in range(6))]:
        assert host.child_results[prompt].stdout == f"{prompt}\n" * 100


def test_asyncio_tasks_and_worker_threads_are_captured(repl):
    r = ok(repl.execute(textwrap.dedent("""
        import asyncio
        def blocking(i):
            print(f"thread {i}")
            return i
        async def task(i):
            print(f"task {i}")
            return await asyncio.to_thread(blocking, i)
        async def main():
            return await asyncio.gather(*(task(i) for i in range(4)))
        print(asyncio.run(main()))
    """)))
    lines = r.stdout.splitlines()
    assert lines[-1] == "[0, 1, 2, 3]"
    assert sorted(lines[:-1]) == sorted([f"task {i}" for i in range(4)] +
                                        [f"thread {i}" for i in range(4)])


def test_output_truncation(make_repl):
    repl = make_repl(max_output_chars=100)
    r = ok(repl.execute("print('A' * 1000 + 'END')"))
    assert r.stdout.startswith("A" * 50)
    assert r.stdout.endswith("AEND\n")
    assert "904 of 1,004 characters cut" in r.stdout
    assert len(r.stdout) < 250
    r = ok(repl.execute("for i in range(100000):\n    print(i)"))
    assert r.stdout.endswith("99999\n") and "characters cut" in r.stdout
    assert ok(repl.execute("print('short')")).stdout == "short\n"


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(st.characters(blacklist_categories=("Cs",)), max_size=300))
def test_printed_text_comes_back_exactly(repl, text):
    r = ok(repl.execute(f"import sys\nprint({text!r}, end='')\nsys.stderr.write({text!r})"))
    assert r.stdout == text
    assert r.stderr == text


@given(chunks=st.lists(st.text(max_size=40), max_size=30), limit=st.integers(1, 120))
def test_bounded_text_keeps_head_and_tail(chunks, limit):
    buf = BoundedText(limit)
    for c in chunks:
        buf.write(c)
    full = "".join(chunks)
    value = buf.value()
    if len(full) <= limit:
        assert value == full
    else:
        head, tail = limit // 2, limit - limit // 2
        assert value.startswith(full[:head])
        assert value.endswith(full[len(full) - tail:])
        assert f"{len(full) - limit:,} of {len(full):,} characters cut" in value


# --- stopping cells ------------------------------------------------------------------------


def test_timeout_stops_a_busy_loop_and_state_survives(make_repl):
    repl = make_repl(cell_timeout=0.5)
    ok(repl.execute("kept = 'still here'"))
    t0 = time.monotonic()
    r = repl.execute("print('looping')\nwhile True:\n    pass")
    assert time.monotonic() - t0 < 3
    assert r.timed_out
    assert "exceeded its time limit of 0.5 seconds" in r.error
    assert "<cell 2>" in r.error  # where it was stopped
    assert r.stdout == "looping\n"
    r = ok(repl.execute("print(kept)"))
    assert r.stdout == "still here\n" and not r.timed_out


def test_timeout_is_not_swallowed_by_except_exception(repl):
    t0 = time.monotonic()
    r = repl.execute(textwrap.dedent("""
        n = 0
        while True:
            try:
                n += 1
            except Exception:
                pass
    """), timeout=0.3)
    assert r.timed_out and time.monotonic() - t0 < 3
    assert ok(repl.execute("print(n > 0)")).stdout == "True\n"


def test_timeout_in_a_blocking_sleep_returns_quickly(repl):
    ok(repl.execute("before = 1"))
    t0 = time.monotonic()
    r = repl.execute("import time\ntime.sleep(30)\nafter = 1", timeout=0.5)
    elapsed = time.monotonic() - t0
    assert r.timed_out and elapsed < 4, elapsed
    assert "abandoned" in r.error
    r = ok(repl.execute("print(before, 'after' in globals())"))
    assert r.stdout == "1 False\n"


def test_execute_timeout_argument_overrides_the_default(make_repl):
    repl = make_repl(cell_timeout=30)
    r = repl.execute("while True: pass", timeout=0.2)
    assert r.timed_out


@pytest.mark.parametrize("timeout", [0, -3])
def test_no_time_left_stops_the_cell_at_once(repl, timeout):
    t0 = time.monotonic()
    r = repl.execute("while True: pass", timeout=timeout)
    assert r.timed_out and time.monotonic() - t0 < 3
    assert ok(repl.execute("print('next')")).stdout == "next\n"


def test_shutdown_while_a_cell_runs(host):
    repl = LocalREPL()
    repl.start(host, {})
    results: list[CellResult] = []
    t = threading.Thread(target=lambda: results.append(repl.execute("while True: pass")))
    t.start()
    time.sleep(0.2)
    repl.shutdown()
    t.join(10)
    assert not t.is_alive()
    assert results[0].error is not None and "shut down" in results[0].error


def test_no_timeout_by_default(repl):
    assert repl.cell_timeout is None
    r = ok(repl.execute("import time\ntime.sleep(0.3)\nprint('slept')"))
    assert r.stdout == "slept\n" and not r.timed_out


@pytest.mark.parametrize("code, kind", [
    ("import sys\nsys.exit()", "SystemExit"),
    ("import sys\nsys.exit(3)", "SystemExit: 3"),
    ("exit()", "SystemExit"),
    ("quit(1)", "SystemExit: 1"),
    ("raise SystemExit('bye')", "SystemExit: bye"),
    ("raise KeyboardInterrupt", "KeyboardInterrupt"),
    ("raise GeneratorExit", "GeneratorExit"),
])
def test_exits_and_interrupts_raised_in_a_cell_are_cell_errors(repl, code, kind):
    ok(repl.execute("alive = True"))
    r = repl.execute(code)
    assert r.error is not None and kind in r.error
    assert not r.timed_out
    assert ok(repl.execute("print(alive)")).stdout == "True\n"
    assert not sys.stdin or not sys.stdin.closed


def test_input_does_not_block(repl):
    r = repl.execute("input('name? ')")
    assert r.error is not None and "input() is not available" in r.error


@pytest.mark.parametrize("code, fragment", [
    ("x = (1,", "SyntaxError"),
    ("def f(:\n    pass", "SyntaxError"),
    ("if True:\nprint(1)", "IndentationError"),
    ("x = 'a\0b'", "null"),
])
def test_syntax_errors_are_cell_errors(repl, code, fragment):
    r = repl.execute(code)
    assert r.error is not None and fragment in r.error
    assert r.stdout == ""
    assert ok(repl.execute("print('fine')")).stdout == "fine\n"


def test_syntax_error_shows_the_line(repl):
    r = repl.execute("a = 1\nb = (2 +\n")
    assert '<cell 1>' in r.error and "b = (2 +" in r.error


def test_real_ctrl_c_reaches_the_caller(tmp_path):
    script = tmp_path / "ctrl_c.py"
    script.write_text(textwrap.dedent("""
        import os, signal, threading, time
        from rlm_plugins.local.repl import LocalREPL

        class Host:
            depth = 0
            def llm_query(self, p, model=None): return p
            def llm_query_batched(self, ps, model=None): return list(ps)
            def rlm_query(self, p, model=None): return p
            def rlm_query_batched(self, ps, model=None): return list(ps)

        repl = LocalREPL()
        repl.start(Host(), {})
        repl.execute("kept = 7")
        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
        t0 = time.monotonic()
        try:
            repl.execute("while True:\\n    pass")
        except KeyboardInterrupt:
            print("caller interrupted after", round(time.monotonic() - t0, 1))
        r = repl.execute("raise KeyboardInterrupt")
        print("cell error:", r.error.splitlines()[-1])
        print("after:", repl.execute("print(kept)").stdout.strip())
        repl.shutdown()
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("caller interrupted after")
    assert lines[1:] == ["cell error: KeyboardInterrupt", "after: 7"]


# --- contexts, history, lifecycle --------------------------------------------------------------


class BigContext:
    """Stands in for a huge context: identity shows it was not copied."""

    def __str__(self) -> str:
        return "big"


def test_add_context_does_not_copy(repl):
    value = BigContext()
    repl.add_context(value, 0)
    ok(repl.execute("same = context is context_0"))
    assert repl._ns["context"] is value and repl._ns["context_0"] is value
    assert repl._ns["same"] is True
    big = "x" * 10_000_000
    repl.add_context(big, 1)
    assert repl._ns["context_1"] is big


def test_persistent_contexts_and_answer_reset(repl):
    repl.add_context("first", 0)
    r = ok(repl.execute("FINAL(context)"))
    assert r.final_answer == "first"
    repl.add_context("second", 1)
    r = ok(repl.execute("print(context, context_0, context_1)"))
    assert r.stdout == "first first second\n"
    assert r.final_answer is None  # a new task does not inherit the old answer


def test_add_history(repl):
    h0 = [{"role": "user", "content": "q0"}]
    h1 = [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"}]
    repl.add_history(h0, 0)
    repl.add_history(h1, 1)
    r = ok(repl.execute("print(len(history_0), len(history_1), history[-1]['content'])"))
    assert r.stdout == "1 2 a1\n"


def test_context_added_before_start(host):
    repl = LocalREPL()
    value = BigContext()
    repl.add_context(value, 0)
    repl.start(host, {})
    try:
        assert repl._ns["context"] is value
        assert ok(repl.execute("print(context)")).stdout == "big\n"
    finally:
        repl.shutdown()


def test_shutdown_is_idempotent_and_frees_everything(host):
    repl = LocalREPL()
    repl.start(host, {})
    value = BigContext()
    ref = weakref.ref(value)
    repl.add_context(value, 0)
    ok(repl.execute("alias = context\nholder = [context]\ndef keep():\n    return alias\n"))
    r = repl.execute("raise ValueError(context)")  # a traceback that refers to it, too
    assert r.error is not None
    workdir = repl.workdir
    assert workdir and os.path.isdir(workdir)
    del value, r
    repl.shutdown()
    repl.shutdown()
    gc.collect()
    assert ref() is None
    assert repl._ns == {}
    assert not os.path.exists(workdir)
    with pytest.raises(RLMEnvironmentError):
        repl.execute("1")


def test_dropped_repl_is_collected(host):
    repl = LocalREPL()
    repl.start(host, {})
    ok(repl.execute("x = 1"))
    workdir = repl.workdir
    ref = weakref.ref(repl)
    del repl
    gc.collect()
    assert ref() is None
    assert not os.path.exists(workdir)


def test_setup_code_runs_once(make_repl):
    repl = make_repl(
        setup_code="import json\ncount = 0\ndef encode(v):\n    return json.dumps(v)\n")
    r = repl.execute("count += 1\nprint(encode([count]))\n1/0")
    assert r.stdout == "[1]\n"
    assert '<cell 1>' in r.error  # setup code does not use up a cell number


def test_failing_setup_code_is_reported(host):
    repl = LocalREPL(setup_code="x = 1\nraise RuntimeError('nope')")
    with pytest.raises(RLMEnvironmentError, match="nope") as info:
        repl.start(host, {})
    assert '<setup_code>", line 2' in str(info.value)


def test_execute_before_start_fails():
    with pytest.raises(RLMEnvironmentError):
        LocalREPL().execute("1")


# --- working directories ----------------------------------------------------------------------


def test_cells_run_in_their_own_directory(make_repl, tmp_path):
    a = make_repl()
    b = make_repl(workdir=str(tmp_path / "given"))
    before = os.getcwd()
    ok(a.execute("open('note.txt', 'w').write('a')"))
    ok(b.execute("open('note.txt', 'w').write('b')"))
    assert Path(a.workdir, "note.txt").read_text() == "a"
    assert (tmp_path / "given" / "note.txt").read_text() == "b"
    assert os.getcwd() == before
    b.shutdown()
    assert (tmp_path / "given").is_dir()  # a given workdir is never removed


def test_chdir_in_a_cell_stays_in_its_repl(make_repl, tmp_path):
    a, b = make_repl(), make_repl()
    if not a.cwd_isolated:
        pytest.skip("threads cannot have their own working directory here")
    before = os.getcwd()
    (tmp_path / "sub").mkdir()
    ok(a.execute(f"import os\nos.chdir({str(tmp_path / 'sub')!r})"))
    ra = ok(a.execute(textwrap.dedent("""
        import os, threading
        out = []
        t = threading.Thread(target=lambda: out.append(os.getcwd()))
        t.start(); t.join()
        print(os.getcwd(), out[0])
    """)))
    rb = ok(b.execute("import os\nprint(os.getcwd())"))
    assert ra.stdout.split() == [str(tmp_path / "sub")] * 2
    assert rb.stdout.strip() == b.workdir
    assert os.getcwd() == before


def test_cwd_survives_an_abandoned_cell(make_repl, tmp_path):
    repl = make_repl()
    if not repl.cwd_isolated:
        pytest.skip("threads cannot have their own working directory here")
    ok(repl.execute(f"import os\nos.chdir({str(tmp_path)!r})"))
    assert repl.execute("import time\ntime.sleep(20)", timeout=0.2).timed_out
    assert ok(repl.execute("print(os.getcwd())")).stdout.strip() == str(tmp_path)


def test_threads_the_host_starts_keep_the_process_directory(make_repl):
    seen: list[str] = []

    class ThreadingHost(FakeHost):
        def llm_query(self, prompt, model=None):
            t = threading.Thread(target=lambda: seen.append(os.getcwd()))
            t.start()
            t.join()
            return super().llm_query(prompt, model)

    repl = make_repl(host_obj=ThreadingHost())
    if not repl.cwd_isolated:
        pytest.skip("threads cannot have their own working directory here")
    ok(repl.execute("llm_query('go')"))
    assert seen == [os.getcwd()]


# --- configuration and registration ---------------------------------------------------------


def test_unknown_kwarg_is_a_type_error():
    with pytest.raises(TypeError, match="'bogus'"):
        LocalREPL(bogus=1)


@pytest.mark.parametrize("kwargs", [{"cell_timeout": 0}, {"cell_timeout": -1},
                                    {"cell_timeout": "5"}, {"max_output_chars": 0},
                                    {"max_output_chars": 1.5}, {"setup_code": 3}])
def test_invalid_values_are_configuration_errors(kwargs):
    with pytest.raises(ConfigurationError):
        LocalREPL(**kwargs)


def test_registered_through_the_entry_point():
    pm = rlm.PluginManager()
    entry = pm.entry("environment", "local")
    assert entry.load() is LocalREPL
    assert entry.distribution == "rlm-plugins"
    env = pm.create("environment", "local", cell_timeout=5)
    assert isinstance(env, LocalREPL) and env.cell_timeout == 5.0
    env.shutdown()
    with pytest.raises(ConfigurationError, match="bogus"):
        pm.create("environment", "local", bogus=True)


def test_plugin_module_imports_cheaply():
    code = ("import sys, rlm_plugins.local.plugin\n"
            "print('rlm_plugins.local.repl' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_usage_instructions(make_repl):
    text = make_repl(cell_timeout=7, max_output_chars=1234).usage_instructions()
    assert "not a sandbox" in text and "7 seconds" in text and "1,234" in text
    assert "persist" in text
