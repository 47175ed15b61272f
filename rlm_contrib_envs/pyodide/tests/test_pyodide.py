"""What is particular to the pyodide environment: installation errors, Deno's permissions as
seen from inside, the per-run secret's route, interrupts of a single-threaded interpreter, and a
fresh process when the old one dies."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlm.exceptions import ConfigurationError, RLMEnvironmentError
from rlm_env_pyodide.env import PyodideREPL
from rlm_env_pyodide.install import PYODIDE_VERSION, find_pyodide
from rlm_testkit.environments import RecordingHost



def _missing() -> str | None:
    from rlm_env_pyodide.install import find_deno, find_pyodide

    try:
        find_pyodide()
        find_deno()
    except RLMEnvironmentError as exc:
        return str(exc)
    return None


REASON = _missing()

needs_pyodide = pytest.mark.skipif(REASON is not None and os.environ.get("CI") != "true",
                                   reason=REASON or "")


def test_missing_pyodide_names_the_install_command(tmp_path) -> None:
    with pytest.raises(RLMEnvironmentError) as info:
        find_pyodide(str(tmp_path))
    text = str(info.value)
    assert "rlm-env-pyodide install" in text and f"pyodide@{PYODIDE_VERSION}" in text
    assert "pyodide.asm.wasm" in text


def test_missing_deno_names_the_package(monkeypatch) -> None:
    from rlm_env_pyodide import install

    with pytest.raises(RLMEnvironmentError) as info:
        install.find_deno("/nonexistent/deno")
    assert "not an executable Deno binary" in str(info.value)


@needs_pyodide
@settings(max_examples=20, deadline=None)
@given(limit=st.one_of(st.integers(min_value=4 * 2**30 + 1, max_value=2**40),
                       st.integers(min_value=1, max_value=64 * 2**20 - 1)))
def test_memory_limit_outside_what_wasm32_can_do_is_refused(limit: int) -> None:
    with pytest.raises(ConfigurationError) as info:
        PyodideREPL(memory_limit=limit)
    assert "4 GiB" in str(info.value) or "64m" in str(info.value)


@needs_pyodide
def test_deno_is_denied_everything_but_reading_its_own_files() -> None:
    env = PyodideREPL(memory_limit="256m")
    argv = env.deno_argv()
    flags = [a for a in argv if a.startswith("--allow")]
    assert len(flags) == 1 and flags[0].startswith("--allow-read=")
    readable = flags[0].split("=", 1)[1].split(",")
    runner, pyodide_dir, worker_py, bridge_py = argv[-4:]
    assert readable == [env.pyodide_dir, os.path.dirname(runner), worker_py]
    assert pyodide_dir == env.pyodide_dir and os.path.dirname(bridge_py) == readable[1]
    assert "--no-prompt" in argv and f"--v8-flags=--wasm-max-mem-pages={256 * 16}" in argv
    env.shutdown()


@pytest.fixture(scope="module")
def host() -> RecordingHost:
    return RecordingHost()


@pytest.fixture(scope="module")
def env(host: RecordingHost):
    if REASON is not None and os.environ.get("CI") != "true":
        pytest.skip(REASON)
    env = PyodideREPL(memory_limit="256m")
    env.start(host, {"GREETING": "hi"})
    env.add_context("the context", 0)
    yield env
    env.shutdown()


@pytest.mark.parametrize("code", [
    "js.Deno.readTextFileSync('/etc/passwd')",
    "js.Deno.writeTextFileSync('/tmp/rlm-pyodide-pwned', 'x')",
    "js.Deno.env.get('PATH')",
    "js.Deno.Command.new('true').outputSync()",
    "js.Deno.listen(js.eval('({port: 0})'))",
    "js.Deno.dlopen('libc.so.6', js.eval('({})'))",
], ids=["read", "write", "env", "run", "listen", "ffi"])
def test_javascript_reached_from_python_meets_deno_permissions(env, code: str) -> None:
    r = env.execute(f"import js\ntry:\n    {code}\n    print('ALLOWED')\n"
                    "except Exception as e:\n    print('refused', type(e).__name__, str(e)[:200])",
                    timeout=30)
    assert r.error is None, r.error
    assert "ALLOWED" not in r.stdout and "refused" in r.stdout
    assert not os.path.exists("/tmp/rlm-pyodide-pwned")


def test_fetch_has_no_network(env) -> None:
    r = env.execute("import js\nfrom pyodide.ffi import run_sync\n"
                    "try:\n    run_sync(js.fetch('http://127.0.0.1:9/'))\n    print('FETCHED')\n"
                    "except Exception as e:\n    print('refused', str(e)[:200])", timeout=30)
    assert "FETCHED" not in r.stdout
    assert "refused" in r.stdout or r.error is not None


def test_the_secret_is_in_neither_argv_nor_environment(env) -> None:
    pid = env._proc.proc.pid
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        cmdline = f.read()
    with open(f"/proc/{pid}/environ", "rb") as f:
        environ = f.read()
    assert b"--allow-net" not in cmdline and b"--allow-all" not in cmdline
    for blob in (cmdline, environ):
        assert b"the context" not in blob
    assert {k.split(b"=")[0] for k in environ.split(b"\0") if k} <= {
        b"PATH", b"HOME", b"DENO_DIR", b"NO_COLOR", b"DENO_NO_UPDATE_CHECK", b"DENO_NO_PROMPT",
        b"LANG"}


def test_a_cell_that_swallows_the_interrupt_is_interrupted_again(env) -> None:
    r = env.execute("kept_value = 7\ntry:\n    while True:\n        pass\n"
                    "except KeyboardInterrupt:\n    print('caught once')\nwhile True:\n    pass",
                    timeout=0.5)
    assert r.timed_out and "time limit" in (r.error or "")
    assert "caught once" in r.stdout
    assert env.execute("print(kept_value, GREETING)").stdout.strip() == "7 hi"


def test_no_threads_is_said_plainly(env) -> None:
    r = env.execute("import threading\nthreading.Thread(target=print).start()")
    assert r.error is not None and "can't start new thread" in r.error
    assert "no threads" in env.usage_instructions()


def test_javascript_memory_is_capped_too(env) -> None:
    r = env.execute("import js\nkept = 3\n"
                    "js.eval('globalThis.h = []; while (true) h.push(new Uint8Array(1 << 26)"
                    ".fill(1))')", timeout=60)
    assert r.error is not None and "allocation failed" in r.error
    assert env.execute("import js\njs.eval('globalThis.h = null')\nprint(kept)").stdout.strip() \
        == "3"


def test_a_dead_process_is_replaced_with_contexts_and_tools(env) -> None:
    before = env.restarts
    # Fill the in-memory working directory past the process's cap: the process dies (Pyodide
    # cannot survive a failed allocation in its file system), the host starts a fresh one.
    r = env.execute("lost = 1\nwith open('filler.bin', 'wb') as f:\n"
                    "    for i in range(256):\n        f.write(b'x' * (16 * 1024 * 1024))",
                    timeout=60)
    assert r.error is not None
    if env.restarts == before:  # the write failed cleanly instead: the cap held, state kept
        assert env.execute("print(lost)").stdout.strip() == "1"
        return
    assert "variables you created are gone" in r.error
    r = env.execute("print(context, GREETING, 'lost' in dir())")
    assert r.stdout.strip() == "the context hi False"
