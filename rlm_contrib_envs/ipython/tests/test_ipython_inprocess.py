"""What only the in-process mode has: shells that share the host process without touching its
global state, and that are freed when the REPL is shut down."""

from __future__ import annotations

import builtins
import gc
import sys
import threading
import weakref
from typing import Any

from rlm.types import Tool
from rlm_env_ipython.inprocess import IPythonREPL
from rlm_testkit.environments import RecordingHost


def started(**kwargs: Any) -> IPythonREPL:
    env = IPythonREPL(**kwargs)
    env.start(RecordingHost(), {})
    return env


def test_each_repl_has_its_own_shell_not_the_singleton() -> None:
    from IPython.core.interactiveshell import InteractiveShell

    a, b = started(), started()
    try:
        assert a.shell is not None and b.shell is not None and a.shell is not b.shell
        assert not InteractiveShell.initialized()  # nobody created the global instance
        a.execute("x = 'a'")
        b.execute("x = 'b'")
        assert a.execute("print(x, get_ipython() is not None)").stdout == "a True\n"
        assert b.execute("print(x)").stdout == "b\n"
    finally:
        a.shutdown()
        b.shutdown()


def test_process_state_is_left_alone() -> None:
    main = sys.modules["__main__"]
    names = set(vars(builtins))
    env = started()
    try:
        env.execute("import sys\nexit_code = 1\n%time y = 2\ny")
        assert sys.modules["__main__"] is main
        assert set(vars(builtins)) == names  # no get_ipython / display / exit games
    finally:
        env.shutdown()


def test_concurrent_repls_keep_their_own_echo_and_output() -> None:
    envs = [started() for _ in range(3)]
    failures: list[str] = []

    def work(i: int, env: IPythonREPL) -> None:
        env.execute(f"me = {i}")
        for n in range(15):
            r = env.execute(f"print('p', me)\nme * 1000 + {n}")
            expected = f"p {i}\nOut[{n + 2}]: {i * 1000 + n}\n"
            if r.stdout != expected:
                failures.append(f"{i}: {r.stdout!r} != {expected!r}")

    threads = [threading.Thread(target=work, args=(i, e)) for i, e in enumerate(envs)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        for e in envs:
            e.shutdown()
    assert not failures, failures[:3]


def test_the_shell_is_freed_after_shutdown() -> None:
    """Nothing keeps the shell alive: not IPython's atexit hook (unregistered), not the REPL."""
    env = started()
    env.execute("data = list(range(10))\ndata")
    ref = weakref.ref(env.shell)
    ipython_dir = env.shell.ipython_dir
    env.shutdown()
    gc.collect()
    assert ref() is None
    import os

    assert not os.path.exists(ipython_dir)


def test_callable_tools_and_their_names_stay_bound() -> None:
    calls = []

    def lookup(key: str) -> str:
        calls.append(key)
        return key.upper()

    env = IPythonREPL()
    env.start(RecordingHost(), {"lookup": Tool("lookup", lookup)})
    try:
        env.execute("lookup = None")
        r = env.execute("print(lookup('abc'))\n%who")
        assert r.stdout.splitlines()[0] == "ABC"
        assert "lookup" not in r.stdout.splitlines()[1]
        assert calls == ["abc"]
    finally:
        env.shutdown()
