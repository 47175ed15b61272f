"""Standard tests for environment plugins, and the escape suite for isolated ones.

    import rlm_env_sandbox.plugin
    from rlm_testkit.environments import EnvironmentTests, EscapeTests

    class TestSandbox(EnvironmentTests):
        plugin = rlm_env_sandbox.plugin
        environment_name = "sandbox"
        environment_kwargs = {"memory_limit": "512m"}
        capabilities = {"isolated": True, "callables_as_tools": False, "memory_limit": True}

    class TestSandboxEscapes(EscapeTests):
        plugin = rlm_env_sandbox.plugin
        environment_name = "sandbox"

:class:`EnvironmentTests` checks the REPL every environment owes the model: the helpers (reaching
the host, concurrently from threads), ``SHOW_VARS``, ``answer`` / ``FINAL`` / ``FINAL_VAR``,
custom tools (callables, or code strings and JSON values where callables cannot cross), reserved
names restored after every cell, state across cells, contexts and histories (persistent mode),
per-cell timeouts, output capture and truncation, memory caps, and a whole ``RLM`` run.

:class:`EscapeTests` runs :data:`ESCAPE_ATTEMPTS`, each a cell that tries to get out (recover the
builtins, walk frames, use ``ctypes``, read the host's environment and files, write outside the
private directory, open sockets, fork, signal the host, exhaust memory, disk or processes, reach
the host's model relay). Each attempt is judged **on the host** (did the secret show up, did the
file appear, did the listener get a connection, did the signal arrive), never by trusting the
cell. An environment that does not block an attempt names it in ``not_blocked = {id: reason}``:
the attempt is then reported as an expected failure and never run (some would harm the host).

Capabilities (``capabilities = {...}`` on the subclass) come from
:class:`rlm.types.EnvironmentCapabilities`; a test that needs one the environment lacks is skipped
with the reason.
"""

from __future__ import annotations

import gc
import json
import os
import re
import secrets
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlm.contract import (CANCELLED, CODE_TOOL_FIX, INPUT_REFUSED, RESERVED_NAMES, TIME_LIMIT,
                          TRACEBACK, TRUNCATED, variable_not_found)
from rlm.exceptions import ConfigurationError, RLMEnvironmentError
from rlm.protocols import Environment
from rlm.types import CellResult, Tool

from ._core import KitGuardError, StandardTests, requires
from .helpers import RecordingHost, is_root_turn, isolated_plugin_manager


class _EnvironmentKit(StandardTests):
    """What both kit classes share: the plugin, its settings, and how to make a REPL."""

    CAPABILITIES = {
        "isolated": (False, "a security boundary between model code and the host"),
        "persistent": (True, "keeps state across completion() calls: context_1, history_1, ..."),
        "cell_timeout": (True, "stops a cell that runs past its time limit"),
        "threads": (True, "cells may start threads that call the helpers concurrently"),
        "callables_as_tools": (True, "Python callables can be passed as custom tools"),
        "memory_limit": (False, "caps the memory a cell can use without harming the host"),
    }
    REQUIRED = {
        "plugin": "the plugin module (or its dotted name) that registers the environment",
        "environment_name": "the name the plugin registers (environment='...')",
    }

    plugin: ClassVar[Any] = None
    environment_name: ClassVar[str | None] = None
    #: Keyword arguments for the factory (``environment_kwargs``).
    environment_kwargs: ClassVar[dict[str, Any]] = {}
    #: Seconds the kit waits for a start-up (slow runtimes such as Pyodide raise it).
    startup_seconds: ClassVar[float] = 60.0

    def _name(self) -> str:
        """``environment_name``: set by every ``Test*`` class (REQUIRED; checked at definition)."""
        if not self.environment_name:
            raise KitGuardError(f"{type(self).__qualname__} must set environment_name "
                                f"({self.REQUIRED['environment_name']})")
        return self.environment_name

    def make_environment(self, **overrides: Any) -> Any:
        pm = isolated_plugin_manager(self.plugin)
        return pm.create("environment", self.environment_name,
                         **{**self.environment_kwargs, **overrides})

    def started(self, host: Any = None, tools: dict[str, Any] | None = None,
                **overrides: Any) -> Any:
        env = self.make_environment(**overrides)
        env.start(host if host is not None else RecordingHost(),
                  {k: v if isinstance(v, Tool) else Tool(k, v) for k, v in (tools or {}).items()})
        return env


def _plugin_name(plugin: Any) -> str | None:
    return plugin if isinstance(plugin, str) or plugin is None else getattr(plugin, "__name__", None)


def run(env: Any, code: str, timeout: float | None = None) -> CellResult:
    result = env.execute(code, timeout=timeout)
    assert isinstance(result, CellResult), f"execute() returned {type(result).__name__}"
    return result


def ok(env: Any, code: str, timeout: float | None = None) -> CellResult:
    """Run a cell that must succeed; fail the test with its error otherwise."""
    result = run(env, code, timeout)
    assert result.error is None, f"the cell failed:\n{code}\n---\n{result.error}"
    return result


class EnvironmentTests(_EnvironmentKit, kit=True):
    """The REPL contract every environment honours (see the module docstring)."""

    @classmethod
    def _kit_session_problems(cls, session: pytest.Session) -> list[str]:
        """``capabilities = {"isolated": True}`` is a claim the escape suite proves: an
        :class:`EscapeTests` class for the same plugin and environment must run in this session."""
        if not cls.has("isolated"):
            return []
        mine = (_plugin_name(cls.plugin), cls.environment_name)
        for item in session.items:
            other = getattr(item, "cls", None)
            if isinstance(other, type) and issubclass(other, EscapeTests) and \
                    (_plugin_name(other.plugin), other.environment_name) == mine:
                return []
        return [f"{cls.__qualname__} declares capabilities['isolated'] = True, but no EscapeTests "
                f"class for environment {cls.environment_name!r} runs in this session: add "
                f"`class {cls.__name__}Escapes(EscapeTests)` with the same plugin and "
                f"environment_name next to it (attempts it does not block go in not_blocked with "
                f"the reason), or declare isolated=False."]

    @pytest.fixture
    def host(self) -> RecordingHost:
        return RecordingHost()

    @pytest.fixture
    def env(self, host: RecordingHost) -> Iterator[Any]:
        env = self.started(host)
        try:
            yield env
        finally:
            env.shutdown()

    # --- registration and shape --------------------------------------------------------------

    def test_registers_its_name(self) -> None:
        entry = isolated_plugin_manager(self.plugin).entry("environment", self.environment_name)
        assert entry.name == self.environment_name
        assert entry.kind == "environment"

    def test_is_an_environment_with_honest_capabilities(self) -> None:
        env = self.make_environment()
        try:
            assert isinstance(env, Environment)
            caps = env.capabilities
            for flag in self.CAPABILITIES:
                assert getattr(caps, flag) == self.has(flag), (
                    f"the environment says capabilities.{flag}={getattr(caps, flag)} but the test "
                    f"class declares {self.has(flag)}: make them agree")
        finally:
            env.shutdown()

    # --- cells ---------------------------------------------------------------------------------

    def test_output_is_captured(self, env: Any) -> None:
        r = ok(env, "import sys\nprint('to out')\nprint('to err', file=sys.stderr)\n"
                    "sys.stdout.write('raw\\n')")
        assert r.stdout == "to out\nraw\n"
        assert "to err" in r.stderr
        assert r.execution_time >= 0

    def test_execution_time_is_measured(self, env: Any) -> None:
        """``CellResult.execution_time`` is the cell's wall time in seconds: a cell that sleeps
        0.2 s reports at least 0.15 s."""
        r = ok(env, "import time\ntime.sleep(0.2)")
        assert r.execution_time >= 0.15, (
            f"a cell that slept 0.2 s reports execution_time={r.execution_time!r}: measure the "
            "cell's wall time (time.perf_counter() around the run)")

    def test_state_persists_across_cells(self, env: Any) -> None:
        ok(env, "import math\nx = 41\ndef inc(v):\n    return v + 1\nclass K:\n    n = 2")
        r = ok(env, "print(inc(x), K.n, math.floor(2.5))")
        assert r.stdout.strip() == "42 2 2"
        assert {"x", "inc", "K"} <= set(r.variables)
        assert "math" not in r.variables  # modules are not variables

    def test_errors_are_reported_and_the_repl_survives(self, env: Any) -> None:
        r = run(env, "y = 1\nraise ValueError('boom')")
        assert r.error is not None and "ValueError: boom" in r.error
        assert "ValueError: boom" in r.stderr
        assert TRACEBACK in r.error and TRACEBACK in r.stderr
        r = run(env, "def broken(:\n    pass")
        assert r.error is not None and "SyntaxError" in r.error
        assert ok(env, "print(y)").stdout.strip() == "1"

    def test_sys_exit_ends_only_the_cell(self, env: Any) -> None:
        r = run(env, "import sys\nz = 5\nsys.exit(3)")
        assert r.error is not None and "SystemExit" in r.error
        r = run(env, "exit()")
        assert r.error is not None
        assert ok(env, "print(z)").stdout.strip() == "5"

    def test_input_is_refused_with_a_reason(self, env: Any) -> None:
        r = run(env, "input('name? ')")
        assert r.error is not None and INPUT_REFUSED in r.error

    def test_long_output_is_truncated(self, env: Any) -> None:
        r = ok(env, "print('a' * 300000)\nprint('END')")
        assert len(r.stdout) < 60000
        assert TRUNCATED in r.stdout and r.stdout.rstrip().endswith("END")

    # --- helpers ---------------------------------------------------------------------------

    def test_helpers_reach_the_host(self, env: Any, host: RecordingHost) -> None:
        r = ok(env, "print(llm_query('a'))\nprint(llm_query('b', model='m2'))\n"
                    "print(llm_query_batched(['c', 'd']))\nprint(rlm_query('e'))\n"
                    "print(rlm_query_batched(['f', 'g']))\n"
                    "print(llm_query([{'role': 'user', 'content': 'h'}]))")
        lines = r.stdout.splitlines()
        assert lines[:5] == ["llm:a", "llm:b@m2", "['llm:c', 'llm:d']", "rlm:e",
                             "['rlm:f', 'rlm:g']"]
        methods = [c[0] for c in host.calls]
        assert methods == ["llm_query", "llm_query", "llm_query_batched", "rlm_query",
                           "rlm_query_batched", "llm_query"]
        assert host.calls[1][2] == "m2"
        assert host.calls[5][1] == [{"role": "user", "content": "h"}]

    def test_helper_failures_come_back_as_strings(self, env: Any) -> None:
        r = ok(env, "r = llm_query('fail')\nprint(type(r).__name__, r)")
        assert r.stdout.startswith("str Error: ")

    @requires("threads")
    def test_concurrent_helper_calls_from_threads(self, env: Any, host: RecordingHost) -> None:
        host.delay = 0.2
        t0 = time.perf_counter()
        r = ok(env, "import threading\nout = {}\n"
                    "def work(i):\n    out[i] = llm_query(f'q{i}')\n"
                    "ts = [threading.Thread(target=work, args=(i,)) for i in range(8)]\n"
                    "[t.start() for t in ts]\n[t.join() for t in ts]\n"
                    "print(sorted(out.items()))")
        elapsed = time.perf_counter() - t0
        assert r.stdout.strip() == repr(sorted((i, f"llm:q{i}") for i in range(8)))
        assert elapsed < 8 * 0.2, f"8 calls of 0.2 s took {elapsed:.2f} s: they were serialised"

    # --- the answer ------------------------------------------------------------------------

    def test_answer_dict_finishes(self, env: Any) -> None:
        r = ok(env, "answer['content'] = 'partial'")
        assert r.final_answer is None and r.answer_content == "partial"
        r = ok(env, "answer['content'] = 'done'\nanswer['ready'] = True")
        assert r.final_answer == "done"

    def test_final_and_final_var(self, env: Any) -> None:
        assert ok(env, "FINAL(6 * 7)").final_answer == "42"
        env.add_context("fresh task", 0)  # a new context starts a fresh answer
        r = ok(env, "FINAL_VAR('nope')")
        assert r.final_answer is None and variable_not_found("nope") in r.stdout
        assert ok(env, "result = [1, 2]\nFINAL_VAR('result')").final_answer == "[1, 2]"

    def test_show_vars(self, env: Any) -> None:
        ok(env, "alpha = 1\nbeta = 'b'")
        r = ok(env, "SHOW_VARS()")
        assert "alpha" in r.stdout and "beta" in r.stdout and "str" in r.stdout

    def test_show_vars_lists_only_user_variables(self, env: Any) -> None:
        """``SHOW_VARS()`` lists what the cells created, never the helpers or the other reserved
        names (``rlm.contract.RESERVED_NAMES``: ``llm_query``, ``answer``, ``context``, ...)."""
        ok(env, "gamma = 3\ndef delta():\n    return 4")
        out = ok(env, "SHOW_VARS()").stdout
        assert "gamma" in out and "delta" in out, f"SHOW_VARS() left out the user's names: {out!r}"
        shown = sorted(n for n in RESERVED_NAMES if re.search(rf"(?<!\w){n}(?!\w)", out))
        assert not shown, (f"SHOW_VARS() lists reserved names {shown} (it printed {out!r}): list "
                           "only the variables the cells created")

    def test_reserved_names_are_restored(self, env: Any) -> None:
        env.add_context("the context", 0)
        ok(env, "llm_query = None\nFINAL = 1\nSHOW_VARS = 2\ncontext = 'changed'\nanswer = 7")
        r = ok(env, "print(callable(llm_query), callable(FINAL), callable(SHOW_VARS), context, "
                    "type(answer).__name__)")
        assert r.stdout.strip() == "True True True the context dict"

    # --- contexts and history --------------------------------------------------------------

    def test_context_of_each_type(self, env: Any) -> None:
        for value in ("plain text", {"a": [1, 2], "b": None}, [{"content": "x"}, "y", 3.5]):
            env.add_context(value, 0)
            r = ok(env, "import json\nprint(json.dumps(context, sort_keys=True))")
            assert json.loads(r.stdout) == value

    # One kit test runs for every subclass (one per environment): differing executors are the
    # point, and the REPL fixture is reused across examples on purpose (contexts replace).
    @settings(max_examples=25, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.differing_executors])
    @given(text=st.text(min_size=0, max_size=2000))
    def test_any_text_context_arrives_intact(self, env: Any, text: str) -> None:
        # Quotes, backslashes, newlines, NUL, surrogate-free Unicode: never embedded in code.
        env.add_context(text, 0)
        r = ok(env, "import hashlib\nprint(len(context), hashlib.sha256(context.encode("
                    "'utf-8', 'surrogatepass')).hexdigest(), context is context_0)")
        import hashlib

        expected = [str(len(text)), hashlib.sha256(text.encode("utf-8", "surrogatepass"))
                    .hexdigest(), "True"]
        assert r.stdout.split() == expected

    def test_lone_surrogates_cross_and_the_repl_survives(self, env: Any) -> None:
        # Any Python str crosses every boundary: a lone surrogate no UTF-8 codec takes (what
        # os.fsdecode makes of a bad file name) must not lose the REPL or its variables.
        ok(env, "kept = 7")
        r = ok(env, "print('a\\udcffb')\nimport sys\nprint('\\ud800', file=sys.stderr)")
        assert r.stdout == "a\udcffb\n" and "\ud800" in r.stderr
        r = ok(env, "answer['content'] = '\\udcff'\nprint(kept)")
        assert r.stdout == "7\n" and r.answer_content == "\udcff"
        env.add_context("x\udcffy", 0)
        env.add_context({"k": ["\ud83d", "ok"]}, 1)
        r = ok(env, "print(context_0 == 'x\\udcffy', context_1 == {'k': ['\\ud83d', 'ok']})")
        assert r.stdout.split() == ["True", "True"]

    def test_a_context_nested_too_deeply_is_refused_clearly(self, env: Any) -> None:
        deep: dict[str, Any] = {}
        node = deep
        for _ in range(3000):
            node["a"] = {}
            node = node["a"]
        try:
            env.add_context(deep, 0)
        except ConfigurationError as exc:  # an environment that must encode the context
            assert "nested too deeply" in str(exc) and "recursion limit" in str(exc)
            return
        r = ok(env, "d, n = context_0, 0\nwhile d:\n    d, n = d['a'], n + 1\nprint(n)")
        assert r.stdout.strip() == "3000"

    def test_large_context(self, env: Any) -> None:
        text = ("0123456789abcdef" * 65536) * 8  # 8 MiB
        env.add_context(text, 0)
        r = ok(env, "import hashlib\nprint(len(context), hashlib.sha256(context.encode())"
                    ".hexdigest())")
        import hashlib

        assert r.stdout.split() == [str(len(text)), hashlib.sha256(text.encode()).hexdigest()]

    @requires("persistent")
    def test_numbered_contexts_and_histories(self, env: Any) -> None:
        env.add_context("first", 0)
        env.add_context({"second": 2}, 1)
        env.add_history([{"role": "user", "content": "hi"}], 0)
        env.add_history([{"role": "assistant", "content": "later"}], 1)
        r = ok(env, "print(context, context_0, context_1['second'], history_0[0]['content'], "
                    "history[0]['content'])")
        assert r.stdout.strip() == "first first 2 hi later"
        assert not {"context_1", "history_0"} & set(r.variables)

    # --- tools -------------------------------------------------------------------------------

    def test_value_tools(self, host: RecordingHost) -> None:
        env = self.started(host, {"CONFIG": {"url": "http://127.0.0.1:1", "n": 3},
                                  "CITIES": ["Tokyo", "Lima"], "API_KEY": "not-a-real-key"})
        try:
            r = ok(env, "print(CONFIG['n'], CITIES[1], API_KEY)")
            assert r.stdout.strip() == "3 Lima not-a-real-key"
            ok(env, "CONFIG = None")
            assert ok(env, "print(CONFIG['n'])").stdout.strip() == "3"  # restored
        finally:
            env.shutdown()

    def test_function_tools(self, host: RecordingHost) -> None:
        if self.has("callables_as_tools"):
            def double(x: int) -> int:
                return x * 2
            tools: dict[str, Any] = {"double": double}
        else:
            tools = {"double": "def double(x):\n    return x * 2\n"}
        env = self.started(host, tools)
        try:
            assert ok(env, "print(double(21))").stdout.strip() == "42"
        finally:
            env.shutdown()

    def test_callables_refused_with_the_fix_when_they_cannot_cross(self) -> None:
        if self.has("callables_as_tools"):
            pytest.skip("this environment takes Python callables as tools")
        env = self.make_environment()
        try:
            with pytest.raises(ConfigurationError) as info:
                env.start(RecordingHost(), {"f": Tool("f", lambda x: x)})
            text = str(info.value)
            assert "'f'" in text and CODE_TOOL_FIX in text
        finally:
            env.shutdown()

    def test_reserved_tool_names_are_refused(self) -> None:
        env = self.make_environment()
        try:
            with pytest.raises(ConfigurationError):
                env.start(RecordingHost(), {"llm_query": Tool("llm_query", "x")})
        finally:
            env.shutdown()

    def test_setup_code_runs_first(self, host: RecordingHost) -> None:
        env = self.started(host, setup_code="import json\nPREPARED = json.dumps([1])")
        try:
            assert ok(env, "print(PREPARED)").stdout.strip() == "[1]"
        finally:
            env.shutdown()

    # --- limits ------------------------------------------------------------------------------

    @requires("cell_timeout")
    def test_timeout_stops_a_busy_cell_and_keeps_state(self, env: Any) -> None:
        t0 = time.perf_counter()
        r = run(env, "kept = 1\nwhile True:\n    pass", timeout=0.5)
        assert r.timed_out and r.error is not None and TIME_LIMIT in r.error
        assert time.perf_counter() - t0 < 10
        assert ok(env, "print(kept)").stdout.strip() == "1"

    @requires("cell_timeout")
    def test_the_answer_becomes_text_inside_the_time_limit(self, env: Any) -> None:
        # A hostile __str__ on the answer runs where the cell's time limit holds, never on the
        # host outside every limit (it spins 20 s here; the limit is 1 s).
        t0 = time.perf_counter()
        r = run(env, "import time\nclass Slow:\n    def __str__(self):\n"
                     "        end = time.time() + 20\n        while time.time() < end:\n"
                     "            pass\n        return 'slow'\n"
                     "answer['content'] = Slow()\nanswer['ready'] = True", timeout=1)
        # Outside the limit it would take the full 20 s; 18 leaves room for an environment that
        # restarts its runtime after the limit (pyodide) on a loaded machine (parallel tests).
        assert time.perf_counter() - t0 < 18, "the answer's __str__ ran outside the time limit"
        assert r.final_answer in (None, "slow") and r.error is not None
        ok(env, "answer['content'] = ''\nanswer['ready'] = False")

    @requires("cell_timeout")
    def test_timeout_stops_a_blocked_cell(self, env: Any) -> None:
        t0 = time.perf_counter()
        r = run(env, "import time\ntime.sleep(60)", timeout=0.5)
        assert r.timed_out
        assert time.perf_counter() - t0 < 15
        assert ok(env, "print('alive')").stdout.strip() == "alive"

    def test_interrupt_stops_the_running_cell(self, env: Any) -> None:
        """``interrupt()`` (optional; what a cancelled run calls) stops a cell from another
        thread, keeps the state, and returns False when no cell runs."""
        interrupt = getattr(env, "interrupt", None)
        if not callable(interrupt):
            pytest.skip("the environment has no interrupt(): a cancelled run's cell is left "
                        "to finish, or the environment is shut down")
        ok(env, "kept = 1")
        assert interrupt() is False
        out: dict[str, Any] = {}
        cell = threading.Thread(target=lambda: out.update(r=env.execute(
            "import time\nfor _ in range(1200):\n    time.sleep(0.05)\nnever = 1")))
        t0 = time.perf_counter()
        cell.start()
        while cell.is_alive() and time.perf_counter() - t0 < 30:
            interrupt()  # again until it lands: the cell may not have started yet
            cell.join(0.3)
        assert not cell.is_alive(), "interrupt() did not stop the cell within 30 s"
        r = out["r"]
        assert r.error is not None and r.error.startswith(CANCELLED), r.error
        after = ok(env, "print(kept, 'never' in globals())")
        assert after.stdout.strip() == "1 False"

    @requires("memory_limit")
    def test_memory_cap_protects_the_host(self, env: Any) -> None:
        r = run(env, "hog = []\nwhile True:\n    hog.append(bytearray(64 * 1024 * 1024))",
                timeout=60)
        assert r.error is not None and ("MemoryError" in r.error or "memory" in r.error.lower())
        assert ok(env, "print('still here')").stdout.strip() == "still here"

    # --- lifecycle ---------------------------------------------------------------------------

    def test_shutdown_is_idempotent_and_final(self, host: RecordingHost) -> None:
        env = self.started(host)
        env.shutdown()
        env.shutdown()
        with pytest.raises(RLMEnvironmentError):
            env.execute("print(1)")

    def test_shutdown_leaves_no_process_or_file(self, host: RecordingHost) -> None:
        """Within 5 s of ``shutdown()``, every process the environment started (a worker, a
        runtime, a kernel) is gone and every file or directory it made in the temporary
        directory (``TMPDIR``, ``tempfile.gettempdir()``) is removed."""
        from .hostdeath import alive, descendants, private_tmpdir

        tmp = private_tmpdir()
        before = descendants(os.getpid())
        saved = tempfile.tempdir, os.environ.get("TMPDIR")
        tempfile.tempdir = os.environ["TMPDIR"] = tmp
        try:
            env = self.started(host)
            try:
                env.add_context("a context", 0)
                ok(env, "print(len(context))")
                started = descendants(os.getpid()) - before
            finally:
                env.shutdown()
            deadline = time.monotonic() + 5.0
            while (alive(started) or os.listdir(tmp)) and time.monotonic() < deadline:
                time.sleep(0.1)
            running, files = alive(started), sorted(os.listdir(tmp))
            assert not running, (f"still running after shutdown(): {running}; shutdown() must "
                                 "stop every process the environment started")
            assert not files, (f"left in the temporary directory after shutdown(): {files}; "
                               "shutdown() must remove what the environment made there")
        finally:
            tempfile.tempdir = saved[0]
            if saved[1] is None:
                os.environ.pop("TMPDIR", None)
            else:
                os.environ["TMPDIR"] = saved[1]
            shutil.rmtree(tmp, ignore_errors=True)

    def test_usage_instructions(self, env: Any) -> None:
        text = env.usage_instructions()
        assert isinstance(text, str) and text.strip()

    def test_runs_an_rlm_completion(self) -> None:
        from rlm import RLM

        pm = isolated_plugin_manager(self.plugin, first_party=("scripted",))
        turns = iter(["```repl\nhead = context[:5]\nsub = llm_query('say ok')\nprint(head, sub)"
                      "\n```",
                      "```repl\nanswer['content'] = head + '|' + sub\nanswer['ready'] = True\n```"])

        def respond(messages: list[dict[str, Any]]) -> str:
            return next(turns) if is_root_turn(messages) else "ok"

        rlm = RLM(backend="scripted", backend_kwargs={"responder": respond},
                  environment=self._name(), environment_kwargs=self.environment_kwargs,
                  plugin_manager=pm)
        try:
            result = rlm.completion("HELLO world")
        finally:
            rlm.close()
        assert result.response == "HELLO|ok"

    @requires("persistent")
    @pytest.mark.parametrize("completions", [2, 3])
    def test_persistent_completions_each_return_their_own_answer(self, completions: int) -> None:
        """``persistent=True``: completion k sees ``context_k`` and what earlier ones left, and
        returns its own answer, never the one an earlier completion set (the kernel resets
        ``answer`` with :data:`rlm.contract.RESET_ANSWER`; the REPL must keep that reset)."""
        from rlm import RLM

        pm = isolated_plugin_manager(self.plugin, first_party=("scripted",))
        turns = iter(
            reply for k in range(completions) for reply in (
                f"```repl\nseen_{k} = context_{k}\n```",
                f"```repl\nanswer['content'] = '|'.join(str(globals().get(f'seen_{{i}}')) "
                f"for i in range({k + 1}))\nanswer['ready'] = True\n```"))

        def respond(messages: list[dict[str, Any]]) -> str:
            return next(turns) if is_root_turn(messages) else "ok"

        rlm = RLM(backend="scripted", backend_kwargs={"responder": respond},
                  environment=self._name(), environment_kwargs=self.environment_kwargs,
                  plugin_manager=pm, persistent=True)
        try:
            got = [rlm.completion(f"task {k}") for k in range(completions)]
        finally:
            rlm.close()
        for k, result in enumerate(got):
            expected = "|".join(f"task {i}" for i in range(k + 1))
            assert result.response == expected, (
                f"completion {k + 1} of {completions} in persistent mode returned "
                f"{result.response!r}, expected {expected!r}" + (
                    ": an earlier completion's answer (add_context with index > 0 must leave the "
                    "kernel's reset of `answer` in place)" if k and result.response != expected
                    else ""))


    # --- what outlives the host (a host process of its own: rlm_testkit.hostdeath) ----------

    #: Why what the environment starts outlives a host killed outright (a cloud sandbox stays
    #: until the provider's own lifetime runs out): ``test_nothing_outlives_a_killed_host`` is
    #: skipped with this reason. ``None``: the kit checks nothing outlives it.
    outlives_killed_host: ClassVar[str | None] = None

    def host_resources(self, host_pid: int) -> list[str]:
        """What the environment runs outside the host's process tree for the host ``host_pid``
        (a Docker container, a cloud sandbox): override to list what is still running, as
        short descriptions. The kit checks it is empty once the host is gone."""
        return []

    def _host_args(self) -> tuple[str, dict[str, Any]]:
        plugin = self.plugin if isinstance(self.plugin, str) else getattr(
            self.plugin, "__name__", None)
        if not isinstance(self.plugin, str) and getattr(self.plugin, "__spec__", None) is None:
            plugin = None  # made at run time (types.ModuleType): no other process can import it
        try:
            kwargs = json.loads(json.dumps(self.environment_kwargs))
        except (TypeError, ValueError):
            kwargs = None
        if not isinstance(plugin, str) or kwargs is None:
            pytest.skip("the host-death tests start the environment in a process of their own: "
                        "they need the plugin as an importable module and JSON "
                        "environment_kwargs")
        return plugin, kwargs

    def _gone(self, host: Any, seconds: float) -> list[str]:
        from .hostdeath import alive

        deadline = time.monotonic() + seconds
        while True:
            left = alive(host.processes) + self.host_resources(host.pid)
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.2)

    def test_run_files_are_private_to_the_run(self) -> None:
        """Every file and directory the environment keeps on the host for a run (context,
        per-run secret, worker code) is for the run alone: no group or other access (0700 and
        0600); nothing is left once the environment is shut down."""
        from .hostdeath import private_tmpdir, start_host

        plugin, kwargs = self._host_args()
        tmp = private_tmpdir()
        try:
            host = start_host(plugin, self._name(), kwargs, tmpdir=tmp, mode="close",
                              timeout=self.startup_seconds + 60)
            host.proc.wait(60)
            opened = {path: oct(mode) for path, (mode, _) in host.info["files"].items()
                      if mode & 0o077}
            assert not opened, f"run files readable or writable by others: {opened}"
            assert host.left_files() == [], f"left after shutdown: {host.left_files()}"
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def test_nothing_outlives_a_killed_host(self) -> None:
        """A host killed outright (SIGKILL, the out-of-memory killer) in the middle of a cell that
        never ends: within 10 s nothing of the environment runs any more (worker processes,
        containers); its run directory is removed when the next host starts one."""
        from .hostdeath import private_tmpdir, start_host

        if self.outlives_killed_host:
            pytest.skip(self.outlives_killed_host)
        plugin, kwargs = self._host_args()
        tmp = private_tmpdir()
        try:
            host = start_host(plugin, self._name(), kwargs, tmpdir=tmp,
                              timeout=self.startup_seconds + 60)
            host.kill(signal.SIGKILL)
            left = self._gone(host, 10.0)
            assert not left, f"still running 10 s after the host was killed: {left}"
            start_host(plugin, self._name(), kwargs, tmpdir=tmp, mode="close",
                       timeout=self.startup_seconds + 60).proc.wait(60)
            assert host.left_files() == [], (
                f"the killed host's run files were not reaped by the next start: "
                f"{host.left_files()}")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def test_sigterm_leaves_nothing_behind(self) -> None:
        """A host ended by SIGTERM (its default action) mid-cell releases everything first: no
        process, container or run file is left."""
        from .hostdeath import private_tmpdir, start_host

        plugin, kwargs = self._host_args()
        tmp = private_tmpdir()
        try:
            host = start_host(plugin, self._name(), kwargs, tmpdir=tmp,
                              timeout=self.startup_seconds + 60)
            host.kill(signal.SIGTERM)
            assert host.proc.returncode == -signal.SIGTERM, "SIGTERM must still end the host"
            left = self._gone(host, 10.0)
            assert not left, f"still running after the host's SIGTERM: {left}"
            assert host.left_files() == [], f"left after SIGTERM: {host.left_files()}"
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

# --- the escape suite ----------------------------------------------------------------------------


@dataclass
class EscapeTarget:
    """What the host holds and watches while the attempts run."""

    secret: str
    env_var: str
    planted_dir: str
    planted_file: str
    host_pid: int
    tcp_port: int
    unix_path: str
    relay_port: int
    accepted: dict[str, int] = field(default_factory=lambda: {"tcp": 0, "unix": 0, "relay": 0})
    signals: list[int] = field(default_factory=list)

    @property
    def token(self) -> str:
        """A unique file name for writes outside the private directory."""
        return "rlm-escape-" + os.path.basename(self.planted_dir)

    def fill(self, code: str) -> str:
        half = len(self.secret) // 2
        code = code.replace("{secret_a}", self.secret[:half])
        code = code.replace("{secret_b}", self.secret[half:])
        for key in ("token", "secret", "env_var", "planted_dir", "planted_file", "host_pid", "tcp_port",
                    "unix_path", "relay_port"):
            code = code.replace("{" + key + "}", str(getattr(self, key)))
        return code


@dataclass(frozen=True)
class EscapeAttempt:
    id: str
    what: str
    code: str
    #: Extra host-side check: returns a description of the escape, or None when blocked.
    check: Callable[[EscapeTarget, CellResult], str | None] | None = None
    timeout: float = 30.0


def _leaked(target: EscapeTarget, result: CellResult) -> str | None:
    text = (result.stdout or "") + (result.stderr or "")
    if target.secret in text:
        return "the host's secret appeared in the cell's output"
    return None


def _file_created(name: str) -> Callable[[EscapeTarget, CellResult], str | None]:
    def check(target: EscapeTarget, result: CellResult) -> str | None:
        path = os.path.join(target.planted_dir, name)
        return f"the cell created {path} on the host" if os.path.exists(path) else None
    return check


def _accepted(kind: str) -> Callable[[EscapeTarget, CellResult], str | None]:
    def check(target: EscapeTarget, result: CellResult) -> str | None:
        time.sleep(0.1)
        n = target.accepted[kind]
        return f"the host's {kind} listener accepted {n} connection(s)" if n else None
    return check


def _marker(word: str) -> Callable[[EscapeTarget, CellResult], str | None]:
    def check(target: EscapeTarget, result: CellResult) -> str | None:
        return f"the cell printed {word!r}: it succeeded" if word in (result.stdout or "") else None
    return check


def _signalled(target: EscapeTarget, result: CellResult) -> str | None:
    time.sleep(0.2)
    return f"the host received signal(s) {target.signals}" if target.signals else None


def _survived(target: EscapeTarget, result: CellResult) -> str | None:
    # The host is this process: it is alive if we are here. The cell must have been stopped.
    if "EXHAUSTED-NOT" in (result.stdout or ""):
        return "the cell used more than the limit without being stopped"
    return None


_FIND = """
NEEDLE = '{secret_a}' + '{secret_b}'  # never whole in the cell's own source


def _hunt(obj, depth=0, seen=None):
    seen = set() if seen is None else seen
    if depth > 6 or id(obj) in seen:
        return
    seen.add(id(obj))
    try:
        if isinstance(obj, str):
            if obj is not NEEDLE and NEEDLE in obj:
                print('FOUND', obj)
            return
        if isinstance(obj, dict):
            for v in list(obj.values())[:500]:
                _hunt(v, depth + 1, seen)
            return
        if isinstance(obj, (list, tuple, set)):
            for v in list(obj)[:500]:
                _hunt(v, depth + 1, seen)
            return
        d = getattr(obj, '__dict__', None)
        if isinstance(d, dict):
            _hunt(d, depth + 1, seen)
        for cell in getattr(obj, '__closure__', None) or ():
            _hunt(cell.cell_contents, depth + 1, seen)
    except Exception:
        pass
"""

ESCAPE_ATTEMPTS: tuple[EscapeAttempt, ...] = (
    EscapeAttempt("builtins-recovery",
                  "recover __import__ through a function's __globals__ / __builtins__ and read "
                  "the host's key file",
                  "b = (lambda: 0).__globals__['__builtins__']\n"
                  "imp = b['__import__'] if isinstance(b, dict) else b.__import__\n"
                  "try:\n    print(imp('builtins').open('{planted_file}').read())\n"
                  "except Exception as e:\n    print('blocked', type(e).__name__)"),
    EscapeAttempt("subclasses-walk",
                  "find os through object.__subclasses__() and read the host's environment",
                  "for c in ().__class__.__base__.__subclasses__():\n"
                  "    g = getattr(getattr(c, '__init__', None), '__globals__', None)\n"
                  "    if isinstance(g, dict) and 'environ' in str(g.get('os', '')) or "
                  "(isinstance(g, dict) and 'os' in g):\n"
                  "        env = g['os'].environ\n"
                  "        print(env.get('{env_var}'))\n        break"),
    EscapeAttempt("generator-frame-walk",
                  "walk from a generator's frame to the frames that run the cell and look for the "
                  "host's secret in their variables",
                  _FIND + "g = (i for i in [1])\nf = g.gi_frame\nnext(g, None)\n"
                  "import sys\nf = sys._getframe()\nwhile f is not None:\n"
                  "    _hunt(f.f_locals)\n    _hunt(f.f_globals)\n    f = f.f_back"),
    EscapeAttempt("traceback-frame-walk",
                  "raise and catch an exception, climb its traceback frames and every thread's "
                  "frames looking for the host's secret",
                  _FIND + "import sys\ntry:\n    raise ValueError\nexcept ValueError as e:\n"
                  "    tb = e.__traceback__\nf = tb.tb_frame\nwhile f is not None:\n"
                  "    _hunt(f.f_locals); f = f.f_back\n"
                  "for fr in sys._current_frames().values():\n"
                  "    while fr is not None:\n        _hunt(fr.f_locals); fr = fr.f_back"),
    EscapeAttempt("helper-closures",
                  "follow the helpers' closures and globals back to the host and its keys",
                  _FIND + "for h in (llm_query, rlm_query, llm_query_batched, FINAL):\n"
                  "    _hunt(h)\n    _hunt(getattr(h, '__globals__', {}))"),
    EscapeAttempt("gc-objects",
                  "scan every object the garbage collector knows for the host's secret",
                  _FIND + "import gc\nfor o in gc.get_objects():\n"
                  "    if isinstance(o, dict):\n        _hunt(o, 5)"),
    EscapeAttempt("ctypes-memory",
                  "use ctypes to ptrace the parent and read the host process's memory",
                  "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                  "r = libc.ptrace(16, {host_pid}, 0, 0)\n"
                  "print('ptrace', r, ctypes.get_errno())\n"
                  "if r == 0:\n    print('PTRACED')\n"
                  "try:\n    with open('/proc/{host_pid}/mem', 'rb') as f:\n"
                  "        print('MEMOPEN')\nexcept Exception as e:\n    print('blocked', e)",
                  check=lambda t, r: _marker("PTRACED")(t, r) or _marker("MEMOPEN")(t, r)),
    EscapeAttempt("host-environment",
                  "read the host's environment variables (os.environ, /proc/*/environ)",
                  "import os\nprint(os.environ.get('{env_var}'))\n"
                  "for p in ('/proc/1/environ', '/proc/{host_pid}/environ', "
                  "f'/proc/{os.getppid()}/environ'):\n"
                  "    try:\n        print(open(p, 'rb').read().decode('latin-1'))\n"
                  "    except Exception as e:\n        print('blocked', p, type(e).__name__)"),
    EscapeAttempt("host-key-file",
                  "read a key file on the host by its path, and through /proc/<host>/root",
                  "for p in ('{planted_file}', '/proc/{host_pid}/root{planted_file}', "
                  "'/proc/1/root{planted_file}'):\n"
                  "    try:\n        print(open(p).read())\n"
                  "    except Exception as e:\n        print('blocked', p, type(e).__name__)"),
    EscapeAttempt("system-files",
                  "read the host's account and SSH files",
                  "import glob\nfound = []\n"
                  "for p in ['/etc/shadow', '/etc/passwd'] + glob.glob('/root/.ssh/*') + "
                  "glob.glob('/home/*/.ssh/*'):\n"
                  "    try:\n        open(p).read(1)\n        found.append(p)\n"
                  "    except Exception:\n        pass\n"
                  "print('READ-SHADOW' if '/etc/shadow' in found else '', "
                  "'READ-SSH' if any('.ssh' in p for p in found) else '')",
                  check=lambda t, r: _marker("READ-SHADOW")(t, r) or _marker("READ-SSH")(t, r)),
    EscapeAttempt("write-outside",
                  "write a file outside the private directory (the host's directories, /usr)",
                  "for p in ('{planted_dir}/pwned', '/usr/{token}', '/etc/{token}'):\n"
                  "    try:\n        open(p, 'w').write('x')\n        print('WROTE', p)\n"
                  "    except Exception as e:\n        print('blocked', p, type(e).__name__)",
                  check=lambda t, r: _file_created("pwned")(t, r) or next(
                      (f"the cell wrote {p}" for p in (f"/usr/{t.token}", f"/etc/{t.token}")
                       if os.path.exists(p)), None)),
    EscapeAttempt("write-through-proc-root",
                  "write into the host's filesystem through /proc/<pid>/root",
                  "for p in ('/proc/{host_pid}/root{planted_dir}/pwned2', "
                  "'/proc/1/root{planted_dir}/pwned2'):\n"
                  "    try:\n        open(p, 'w').write('x')\n        print('WROTE', p)\n"
                  "    except Exception as e:\n        print('blocked', type(e).__name__)",
                  check=_file_created("pwned2")),
    EscapeAttempt("tcp-socket",
                  "open a TCP connection to a server on the host's loopback",
                  "import socket\ntry:\n    s = socket.create_connection(('127.0.0.1', "
                  "{tcp_port}), timeout=3)\n    s.sendall(b'hi')\n    print('CONNECTED')\n"
                  "except Exception as e:\n    print('blocked', type(e).__name__)",
                  check=_accepted("tcp")),
    EscapeAttempt("unix-socket",
                  "connect to a Unix socket the host listens on",
                  "import socket\ntry:\n    s = socket.socket(socket.AF_UNIX)\n"
                  "    s.connect('{unix_path}')\n    print('CONNECTED')\n"
                  "except Exception as e:\n    print('blocked', type(e).__name__)",
                  check=_accepted("unix")),
    EscapeAttempt("lm-relay-without-secret",
                  "call the host's model relay directly over HTTP, without the per-run secret",
                  "import urllib.request, json\n"
                  "req = urllib.request.Request('http://127.0.0.1:{relay_port}/v1/chat/completions',"
                  " data=json.dumps({'model': 'x', 'messages': []}).encode(), "
                  "headers={'Content-Type': 'application/json'})\n"
                  "try:\n    print(urllib.request.urlopen(req, timeout=3).read()[:100])\n"
                  "except Exception as e:\n    print('blocked', type(e).__name__)",
                  check=_accepted("relay")),
    EscapeAttempt("udp-and-raw",
                  "send UDP datagrams and open a raw socket",
                  "import socket\nfor fam, kind in ((socket.AF_INET, socket.SOCK_DGRAM), "
                  "(socket.AF_INET, socket.SOCK_RAW)):\n"
                  "    try:\n        s = socket.socket(fam, kind, 0 if kind == socket.SOCK_DGRAM "
                  "else socket.IPPROTO_ICMP)\n"
                  "        s.sendto(b'x', ('127.0.0.1', {tcp_port}))\n        print('SENT')\n"
                  "    except Exception as e:\n        print('blocked', type(e).__name__)",
                  check=_marker("SENT")),
    EscapeAttempt("fork",
                  "fork a child process and run a program",
                  "import os, subprocess\ntry:\n    pid = os.fork()\n    if pid == 0:\n"
                  "        os._exit(0)\n    os.waitpid(pid, 0)\n    print('FORKED')\n"
                  "except Exception as e:\n    print('blocked', type(e).__name__)\n"
                  "try:\n    subprocess.run(['true'])\n    print('SPAWNED')\n"
                  "except Exception as e:\n    print('blocked', type(e).__name__)",
                  check=lambda t, r: _marker("FORKED")(t, r) or _marker("SPAWNED")(t, r)),
    EscapeAttempt("signal-host",
                  "send signals to the host process, the parent and every process",
                  "import os, signal\nfor pid in ({host_pid}, os.getppid(), 1):\n"
                  "    try:\n        os.kill(pid, signal.SIGUSR1)\n        print('sent', pid)\n"
                  "    except Exception as e:\n        print('blocked', pid, type(e).__name__)",
                  check=_signalled),
    EscapeAttempt("namespaces-and-mounts",
                  "leave the sandbox with unshare / setns / mount / chroot, or become root",
                  "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                  "res = {'unshare': libc.unshare(0x10000000), 'mount': libc.mount(b'none', b'/mnt',"
                  " b'tmpfs', 0, None)}\n"
                  "try:\n    os.setuid(0)\n    res['setuid'] = 0\nexcept Exception:\n"
                  "    res['setuid'] = -1\n"
                  "try:\n    os.chroot('/')\n    res['chroot'] = 0\nexcept Exception:\n"
                  "    res['chroot'] = -1\n"
                  "print('ESCALATED' if 0 in res.values() else 'blocked', res)",
                  check=_marker("ESCALATED")),
    EscapeAttempt("unprivileged-syscalls",
                  "make syscalls that need no privilege but reach past the sandbox's limits: a "
                  "pidfd on a process, memory in memfd and System V shared memory or message "
                  "queues (outside every tmpfs and file-size limit)",
                  "import ctypes, os\ntry:\n    libc = ctypes.CDLL(None, use_errno=True)\n"
                  "except Exception as e:\n    libc = None\n"
                  "    print('blocked', type(e).__name__)\n"
                  "if libc is not None:\n"
                  "    calls = {'pidfd_open': lambda: libc.syscall(434, os.getpid(), 0),\n"
                  "             'memfd_create': lambda: libc.memfd_create(b'x', 0),\n"
                  "             'shmget': lambda: libc.shmget(0, 4096, 0o1600),\n"
                  "             'msgget': lambda: libc.msgget(0, 0o1600),\n"
                  "             'semget': lambda: libc.semget(0, 1, 0o1600)}\n"
                  "    for name, call in calls.items():\n"
                  "        try:\n            r = call()\n        except Exception as e:\n"
                  "            r = -1\n"
                  "        print('ALLOWED' if r >= 0 else 'blocked', name, r)",
                  check=_marker("ALLOWED")),
    EscapeAttempt("exhaust-memory",
                  "allocate memory until something breaks",
                  "hog = []\ntry:\n    for i in range(512):\n"
                  "        hog.append(bytearray(64 * 1024 * 1024))\n"
                  "    print('EXHAUSTED-NOT', len(hog))\nexcept MemoryError:\n"
                  "    print('blocked MemoryError')\nfinally:\n    hog = None",
                  check=_survived, timeout=120),
    EscapeAttempt("exhaust-disk",
                  "fill the disk from the working directory",
                  "import os\nwritten = 0\nchunk = b'x' * (16 * 1024 * 1024)\ntry:\n"
                  "    with open('filler.bin', 'wb') as f:\n        for i in range(2048):\n"
                  "            f.write(chunk); written += len(chunk)\n"
                  "    print('EXHAUSTED-NOT', written)\nexcept (OSError, MemoryError) as e:\n"
                  "    print('blocked', type(e).__name__, written)\nfinally:\n"
                  "    try:\n        os.remove('filler.bin')\n    except OSError:\n        pass",
                  check=_survived, timeout=120),
    EscapeAttempt("fill-every-writable-place",
                  "park data in every place that may be writable (the root, /rlm, /dev, "
                  "/dev/shm, /var/tmp, /run, the working and home directories), in files of "
                  "16 MiB each, up to 1 GiB per place: each must be read-only or size-limited, "
                  "whether or not a memory cgroup is there to catch it",
                  "import os\nchunk = b'x' * (16 * 1024 * 1024)\n"
                  "places = dict.fromkeys(['/', '/rlm', '/dev', '/dev/shm', '/var/tmp', '/run', "
                  "os.getcwd(), os.path.expanduser('~')])\n"
                  "for place in places:\n    made = []\n    try:\n"
                  "        for i in range(64):\n"
                  "            path = os.path.join(place, f'rlm-fill-{i}.bin')\n"
                  "            with open(path, 'wb') as f:\n                made.append(path)\n"
                  "                f.write(chunk)\n"
                  "        print('EXHAUSTED-NOT', place, len(made) * 16, 'MiB')\n"
                  "    except (OSError, MemoryError) as e:\n"
                  "        print('blocked', place, type(e).__name__, max(len(made) - 1, 0) * 16, "
                  "'MiB')\n"
                  "    finally:\n        for path in made:\n            try:\n"
                  "                os.remove(path)\n            except OSError:\n"
                  "                pass",
                  check=_survived, timeout=120),
    EscapeAttempt("exhaust-processes",
                  "start processes and threads until the machine runs out",
                  "import os, threading, time\nstop = threading.Event()\nn = 0\ntry:\n"
                  "    for i in range(2000):\n"
                  "        threading.Thread(target=stop.wait, daemon=True).start(); n += 1\n"
                  "    print('EXHAUSTED-NOT', n)\nexcept Exception as e:\n"
                  "    print('blocked', type(e).__name__, n)\nfinally:\n    stop.set()",
                  check=_survived, timeout=60),
)


class EscapeTests(_EnvironmentKit, kit=True):
    """Runs every attempt of :data:`ESCAPE_ATTEMPTS` in one REPL of the environment.

    ``not_blocked = {attempt_id: reason}`` names the attempts the environment does not block
    (they are reported as expected failures and never run).
    """

    not_blocked: ClassVar[dict[str, str]] = {}

    @pytest.fixture(scope="class")
    @classmethod
    def escape_target(cls) -> Iterator[EscapeTarget]:
        secret = "rlm-escape-" + secrets.token_hex(12)
        planted = tempfile.mkdtemp(prefix="rlm-escape-")
        os.chmod(planted, 0o777)  # world-writable: only the sandbox itself may stop the writes
        key = os.path.join(planted, "id_ed25519")
        with open(key, "w") as f:
            f.write(f"-----BEGIN OPENSSH PRIVATE KEY-----\n{secret}\n")
        os.chmod(key, 0o644)
        env_var = "RLM_ESCAPE_SECRET"
        old_env = os.environ.get(env_var)
        os.environ[env_var] = secret
        tcp = socket.socket()
        tcp.bind(("127.0.0.1", 0))
        tcp.listen(8)
        relay = socket.socket()
        relay.bind(("127.0.0.1", 0))
        relay.listen(8)
        unix_path = os.path.join(planted, "relay.sock")
        unix = socket.socket(socket.AF_UNIX)
        unix.bind(unix_path)
        os.chmod(unix_path, 0o777)
        unix.listen(8)
        target = EscapeTarget(secret, env_var, planted, key, os.getpid(), tcp.getsockname()[1],
                              unix_path, relay.getsockname()[1])
        stop = threading.Event()

        def accept(sock: socket.socket, kind: str) -> None:
            sock.settimeout(0.2)
            while not stop.is_set():
                try:
                    conn, _ = sock.accept()
                except (TimeoutError, OSError):
                    continue
                target.accepted[kind] += 1
                conn.close()

        threads = [threading.Thread(target=accept, args=(s, k), daemon=True)
                   for s, k in ((tcp, "tcp"), (unix, "unix"), (relay, "relay"))]
        for t in threads:
            t.start()
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGUSR1, lambda s, f: target.signals.append(s))
        try:
            yield target
        finally:
            stop.set()
            for t in threads:
                t.join(2)
            for s in (tcp, relay, unix):
                s.close()
            if previous is not None:
                signal.signal(signal.SIGUSR1, previous)
            if old_env is None:
                os.environ.pop(env_var, None)
            else:
                os.environ[env_var] = old_env
            import shutil

            shutil.rmtree(planted, ignore_errors=True)
            gc.collect()

    @pytest.fixture(scope="class")
    @classmethod
    def escape_env(cls, escape_target: EscapeTarget) -> Iterator[Any]:
        host = RecordingHost(api_key=escape_target.secret)
        env = cls.started(cls(), host)
        env.add_context("nothing to see", 0)
        try:
            yield env
        finally:
            env.shutdown()
            host.api_key = ""

    @pytest.mark.parametrize("attempt", ESCAPE_ATTEMPTS, ids=[a.id for a in ESCAPE_ATTEMPTS])
    def test_escape_is_blocked(self, attempt: EscapeAttempt, escape_target: EscapeTarget,
                               request: pytest.FixtureRequest) -> None:
        reason = self.not_blocked.get(attempt.id)
        if reason is not None:
            pytest.xfail(f"{self.environment_name} does not block {attempt.id}: {reason}")
        env = request.getfixturevalue("escape_env")
        escape_target.signals.clear()
        result = env.execute(escape_target.fill(attempt.code), timeout=attempt.timeout)
        problems = [p for p in (_leaked(escape_target, result),
                                attempt.check(escape_target, result) if attempt.check else None)
                    if p]
        assert not problems, (f"escape {attempt.id!r} ({attempt.what}) was not blocked: "
                              + "; ".join(problems) + f"\nstdout: {result.stdout[-800:]}"
                              f"\nerror: {result.error}")
        alive = env.execute("print('alive')", timeout=30)
        assert alive.stdout.strip() == "alive", f"the REPL is unusable after {attempt.id}"

    def test_every_not_blocked_entry_names_a_real_attempt(self) -> None:
        known = {a.id for a in ESCAPE_ATTEMPTS}
        unknown = set(self.not_blocked) - known
        assert not unknown, f"not_blocked names unknown attempts {sorted(unknown)}; known: " \
                            f"{sorted(known)}"
