"""IPython behaviour both modes share: magics, the echo of the last expression, display(),
IPython's own names kept out of the variables, top-level await, timeouts from worker threads,
and a whole RLM run over HTTP that uses IPython syntax."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rlm import RLM
from rlm.exceptions import ConfigurationError
from rlm_testkit.servers import OpenAICompatibleServer
from rlm_env_ipython._names import CACHE_NAME, user_variables
from rlm_env_ipython.inprocess import IPythonREPL
from rlm_testkit.environments import RecordingHost

MODES = ["ipython", "ipython-kernel"]


def make(mode: str, **kwargs: Any) -> Any:
    if mode == "ipython":
        return IPythonREPL(**kwargs)
    pytest.importorskip("ipykernel")
    from rlm_env_ipython.kernel import IPythonKernelREPL

    return IPythonKernelREPL(**kwargs)


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def host() -> RecordingHost:
    return RecordingHost()


@pytest.fixture
def repl(mode: str, host: RecordingHost) -> Iterator[Any]:
    env = make(mode)
    env.start(host, {})
    try:
        yield env
    finally:
        env.shutdown()


def ok(env: Any, code: str, timeout: float | None = None) -> Any:
    result = env.execute(code, timeout=timeout)
    assert result.error is None, f"{code}\n---\n{result.error}"
    return result


def test_last_expression_is_echoed_like_ipython(repl: Any) -> None:
    r = ok(repl, "import sys\nprint('to out')\nsys.stdout.write('raw\\n')")
    assert r.stdout == "to out\nraw\nOut[1]: 4\n"
    assert ok(repl, "x = 6\nx * 7").stdout == "Out[2]: 42\n"
    assert ok(repl, "x * 7;").stdout == ""  # a trailing semicolon silences it, as in IPython
    assert ok(repl, "{'k': list(range(3))}").stdout == "Out[4]: {'k': [0, 1, 2]}\n"
    assert ok(repl, "print(_ , Out[2])").stdout == "{'k': [0, 1, 2]} 42\n"  # the output cache


def test_echo_can_be_turned_off_and_output_is_then_exact(mode: str, host: RecordingHost) -> None:
    env = make(mode, ast_node_interactivity="none")
    env.start(host, {})
    try:
        # The conformance kit's exact expectation, which IPython's echo otherwise adds to.
        r = ok(env, "import sys\nprint('to out')\nprint('to err', file=sys.stderr)\n"
                    "sys.stdout.write('raw\\n')")
        assert r.stdout == "to out\nraw\n"
        assert "to err" in r.stderr
        assert "not echoed" in env.usage_instructions()
    finally:
        env.shutdown()


def test_display_shows_the_text_representation(repl: Any) -> None:
    r = ok(repl, "class P:\n    def _repr_pretty_(self, p, cycle):\n        p.text('<pretty P>')\n"
                 "display(P(), [1, 2])")
    assert r.stdout.splitlines() == ["<pretty P>", "[1, 2]"]


def test_magics_work(repl: Any) -> None:
    r = ok(repl, "%time total = sum(range(1000))")
    assert "Wall time" in r.stdout
    assert ok(repl, "print(total)").stdout.strip() == "499500"
    ok(repl, "alpha = 1\nbeta = 'b'")
    who = ok(repl, "%who").stdout.split()
    # Only the model's names: not the helpers, IPython's caches, In / Out or answer.
    assert sorted(who) == ["alpha", "beta", "total"]
    r = ok(repl, "%timeit -n 1 -r 1 sum(range(10))")
    assert "per loop" in r.stdout
    r = ok(repl, "%%capture captured\nprint('hidden')")
    assert "hidden" not in r.stdout
    assert ok(repl, "print(captured.stdout)").stdout == "hidden\n\n"


def test_ipython_names_are_not_variables(repl: Any) -> None:
    ok(repl, "a = 1\na")
    ok(repl, "b = 2\nb")
    r = ok(repl, "In = 'mine'")  # rebinding one of IPython's names makes it the model's
    assert sorted(r.variables) == ["In", "a", "b"]
    shown = ok(repl, "SHOW_VARS();").stdout
    assert "'a'" in shown and "_i1" not in shown and "Out" not in shown


def test_top_level_await(repl: Any) -> None:
    r = ok(repl, "import asyncio\nasync def f():\n    await asyncio.sleep(0.01)\n    return 5\n"
                 "v = await f()\nprint(v)")
    assert r.stdout.strip() == "5"


def test_errors_are_ipython_tracebacks(repl: Any) -> None:
    r = repl.execute("def f():\n    raise KeyError('k')\nf()")
    assert r.error is not None and r.error.startswith("Traceback")
    assert "KeyError: 'k'" in r.error and "raise KeyError('k')" in r.error
    assert "\x1b[" not in r.error  # no colour codes
    r = repl.execute("import sys\nsys.exit(2)")
    assert "SystemExit: 2" in r.error and "end only the current code block" in r.error
    assert "To exit" not in r.stderr  # IPython's terminal advice is dropped


def test_timeout_from_a_worker_thread(repl: Any) -> None:
    """The run loop calls environments from worker threads: timeouts must work there too."""
    results: dict[str, Any] = {}

    def work() -> None:
        results["busy"] = repl.execute("kept = 1\nwhile True:\n    pass", timeout=0.5)
        results["sleep"] = repl.execute("import time\ntime.sleep(30)", timeout=0.5)
        results["after"] = repl.execute("print(kept)")

    t0 = time.perf_counter()
    t = threading.Thread(target=work)
    t.start()
    t.join(60)
    assert not t.is_alive()
    assert time.perf_counter() - t0 < 20
    assert results["busy"].timed_out and "time limit of 0.5 seconds" in results["busy"].error
    assert results["sleep"].timed_out
    assert results["after"].stdout.strip() == "1"


def test_bad_settings_name_the_fix(mode: str) -> None:
    with pytest.raises(ConfigurationError, match="xmode must be one of Plain"):
        make(mode, xmode="Fancy")
    with pytest.raises(ConfigurationError, match="ast_node_interactivity must be one of"):
        make(mode, ast_node_interactivity="sometimes")
    with pytest.raises(ConfigurationError, match="cell_timeout"):
        make(mode, cell_timeout=-1)


def test_context_mode_tracebacks(mode: str, host: RecordingHost) -> None:
    env = make(mode, xmode="Context")
    env.start(host, {})
    try:
        r = env.execute("y = 1\nraise ValueError('boom')")
        assert "----> 2 raise ValueError('boom')" in r.error and "ValueError: boom" in r.error
    finally:
        env.shutdown()


@given(names=st.lists(st.one_of(st.from_regex(CACHE_NAME, fullmatch=True),
                                st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,8}|_[a-z]{2,6}",
                                              fullmatch=True)), max_size=20))
def test_cache_names_are_filtered_and_nothing_else(names: list[str]) -> None:
    ns = {n: object() for n in names}
    kept = user_variables(names, ns, {})
    assert kept == [n for n in names if not CACHE_NAME.fullmatch(n)]
    hidden = {n: ns[n] for n in names[:3]}
    kept = user_variables(names, ns, hidden)
    assert not set(kept) & set(names[:3])


@pytest.mark.parametrize("mode", MODES)
def test_rlm_completion_over_http(mode: str) -> None:
    """A whole run: the openai backend over HTTP to the scripted server on 127.0.0.1, the
    "model" writing IPython code (a magic, the echo, llm_query from the environment)."""
    if mode == "ipython-kernel":
        pytest.importorskip("ipykernel")
    turns = ["```repl\n%time n = len(context)\nsub = llm_query('say ok')\nn\n```",
             "```repl\nFINAL(f'{n}:{sub}:{Out[1]}')\n```"]

    def is_root(messages: list[dict[str, Any]]) -> bool:
        return messages[0].get("role") == "system" and "REPL" in messages[0]["content"]

    def respond(messages: list[dict[str, Any]], body: Any) -> str:
        if not is_root(messages):
            return "ok"
        return turns[min(sum(m["role"] == "assistant" for m in messages), len(turns) - 1)]

    with OpenAICompatibleServer(model="scripted") as srv:
        srv._responder = respond
        rlm = RLM(backend="openai",
                  backend_kwargs={"base_url": srv.base_url, "api_key": "test",
                                  "model_name": "scripted", "max_retries": 0},
                  environment=mode, max_iterations=4)
        try:
            result = rlm.completion("HELLO world")
        finally:
            rlm.close()
        second = [r for r in srv.requests if is_root(r["messages"])][1]["messages"]
        second_prompt = "\n".join(str(m["content"]) for m in second[2:])
    assert result.response == "11:ok:11"
    assert "Wall time" in second_prompt and "Out[1]: 11" in second_prompt


def test_usage_instructions_describe_the_mode_and_its_settings(mode: str) -> None:
    env = make(mode, cell_timeout=7.5, max_output_chars=12345)
    try:
        text = env.usage_instructions()
        where = "separate process" if mode == "ipython-kernel" else "inside the host process"
        assert where in text and "(not a sandbox)" in text
        assert "at most 7.5 seconds" in text and "12,345 characters" in text
        assert "shown as Out[n]" in text  # the default echo setting
    finally:
        env.shutdown()


def test_interrupt_from_another_thread_cancels_the_cell_and_keeps_variables(repl: Any) -> None:
    """``interrupt()`` (what a cancelled run calls, from its own thread) stops the running cell
    at once; the cell ends as cancelled, not timed out; its variables stay, the kernel is not
    restarted; False when no cell runs."""
    assert repl.interrupt() is False
    results: dict[str, Any] = {}
    t = threading.Thread(target=lambda: results.update(
        r=repl.execute("kept = 7\nwhile True:\n    pass", timeout=60)))
    t.start()
    time.sleep(0.5)  # the cell has set ``kept`` and spins
    assert repl.interrupt() is True
    t0 = time.perf_counter()
    t.join(30)
    assert not t.is_alive() and time.perf_counter() - t0 < 10
    r = results["r"]
    assert r.error is not None and r.error.startswith("Cancelled: the cell was interrupted")
    assert not r.timed_out
    assert repl.interrupt() is False
    assert getattr(repl, "restarts", 0) == 0
    assert ok(repl, "print(kept)").stdout.strip() == "7"
