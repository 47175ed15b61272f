"""What only the kernel mode has: the subprocess, its private run directory and IPC transport,
the authenticated link back to the host, the interrupt and the restart backstop."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("ipykernel", reason="mode 'ipython-kernel' needs rlm-env-ipython[kernel]")

from rlm.exceptions import ConfigurationError, RLMEnvironmentError
from rlm.types import Tool
from rlm_env_ipython.kernel import IPythonKernelREPL
from rlm_testkit.environments import RecordingHost


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def host() -> RecordingHost:
    return RecordingHost()


@pytest.fixture
def kernel(host: RecordingHost) -> Iterator[IPythonKernelREPL]:
    env = IPythonKernelREPL(interrupt_grace=1.0)
    env.add_context("the context", 0)
    env.start(host, {"double": Tool("double", "def double(x):\n    return 2 * x\n"),
                     "LIMITS": Tool("LIMITS", {"n": 3})})
    try:
        yield env
    finally:
        env.shutdown()


def test_private_run_directory_and_ipc_transport(kernel: IPythonKernelREPL) -> None:
    run_dir = kernel.run_dir
    assert run_dir is not None
    assert os.stat(run_dir).st_mode & 0o777 == 0o700  # (jupyter may add the sticky bit)
    with open(os.path.join(run_dir, "kernel.json")) as f:
        info = json.load(f)
    assert info["transport"] == "ipc"
    assert info["ip"].startswith(run_dir + os.sep)
    assert stat.S_IMODE(os.stat(os.path.join(run_dir, "secret")).st_mode) == 0o600
    # The kernel runs this interpreter, in its own process, in the private work directory.
    r = kernel.execute("import os, sys\nprint(sys.executable)\nprint(os.getpid())\n"
                       "print(os.getcwd())")
    exe, pid, cwd = r.stdout.split()
    assert os.path.realpath(exe) == os.path.realpath(os.sys.executable)
    assert int(pid) == kernel.kernel_pid != os.getpid()
    assert cwd == os.path.join(run_dir, "work")
    # The context was written once into the run directory and loaded there.
    assert os.path.exists(os.path.join(run_dir, "context_0.txt"))


def test_shutdown_stops_the_kernel_and_removes_the_run_dir(host: RecordingHost) -> None:
    env = IPythonKernelREPL()
    env.start(host, {})
    pid, run_dir = env.kernel_pid, env.run_dir
    assert pid is not None and _alive(pid)
    env.shutdown()
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)
    assert run_dir is not None and not os.path.exists(run_dir)
    with pytest.raises(RLMEnvironmentError, match="shut down"):
        env.execute("1")


def test_tools_contexts_and_histories_cross_into_the_kernel(kernel: IPythonKernelREPL) -> None:
    kernel.add_context({"rows": [1, 2]}, 1)
    kernel.add_history([{"role": "user", "content": "earlier"}], 0)
    r = kernel.execute("print(double(21), LIMITS['n'], context, context_1['rows'], "
                       "history[0]['content'])")
    assert r.stdout.strip() == "42 3 the context [1, 2] earlier"


def test_interrupt_keeps_the_namespace(kernel: IPythonKernelREPL) -> None:
    kernel.execute("kept = 'yes'")
    r = kernel.execute("import time\ntime.sleep(30)", timeout=0.5)
    assert r.timed_out and "interrupted; variables set before that point are kept" in r.error
    assert "KeyboardInterrupt" in r.error
    assert kernel.restarts == 0
    assert kernel.execute("print(kept)").stdout.strip() == "yes"


def test_a_cell_that_ignores_the_interrupt_gets_the_kernel_restarted(
        kernel: IPythonKernelREPL) -> None:
    first_pid = kernel.kernel_pid
    kernel.execute("lost = 1")
    t0 = time.perf_counter()
    r = kernel.execute("import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                       "time.sleep(60)", timeout=0.5)
    assert time.perf_counter() - t0 < 30
    assert r.timed_out
    assert "did not stop within 1 s of the interrupt" in r.error
    assert "variables you created are gone" in r.error
    assert kernel.restarts == 1 and kernel.kernel_pid != first_pid
    r = kernel.execute("print(context, double(2))\nlost")
    assert r.stdout.startswith("the context 4\n")  # contexts and tools are back
    assert r.error is not None and "NameError" in r.error  # variables are not


def test_kernel_death_mid_cell_is_reported_and_the_kernel_restarted(
        kernel: IPythonKernelREPL, host: RecordingHost) -> None:
    r = kernel.execute("import os\nprint('before', flush=True)\nos._exit(7)")
    assert r.error is not None and "the kernel died while running the cell" in r.error
    assert "exit status 7" in r.error and "A new kernel was started" in r.error
    assert kernel.restarts == 1
    r = kernel.execute("print(llm_query('again'), context)")
    assert r.stdout.strip() == "llm:again the context"
    assert host.calls[-1][:2] == ("llm_query", "again")


def test_setup_code_runs_again_after_a_restart(host: RecordingHost) -> None:
    env = IPythonKernelREPL(setup_code="import json\nREADY = json.dumps('set')")
    env.start(host, {})
    try:
        env.execute("import os\nos._exit(1)")
        assert env.execute("print(READY)").stdout.strip() == '"set"'
    finally:
        env.shutdown()


def test_failing_setup_code_stops_the_kernel(host: RecordingHost) -> None:
    env = IPythonKernelREPL(setup_code="raise RuntimeError('no setup')")
    with pytest.raises(RLMEnvironmentError, match="setup_code failed"):
        env.start(host, {})
    assert env.run_dir is None  # shut down, nothing left behind


def test_a_broken_tool_is_refused_with_its_traceback(host: RecordingHost) -> None:
    env = IPythonKernelREPL()
    with pytest.raises(ConfigurationError, match="ZeroDivisionError"):
        env.start(host, {"bad": Tool("bad", "bad = 1 / 0")})
    assert env.run_dir is None  # the kernel was stopped and its directory removed


def test_helper_calls_from_kernel_threads_are_served_concurrently(
        kernel: IPythonKernelREPL, host: RecordingHost) -> None:
    host.delay = 0.3
    t0 = time.perf_counter()
    r = kernel.execute("from concurrent.futures import ThreadPoolExecutor\n"
                       "with ThreadPoolExecutor(6) as ex:\n"
                       "    got = list(ex.map(llm_query, [f'p{i}' for i in range(6)]))\n"
                       "print(got)")
    assert r.stdout.strip() == repr([f"llm:p{i}" for i in range(6)])
    assert time.perf_counter() - t0 < 6 * 0.3


def test_the_link_needs_the_per_run_secret(tmp_path: Any) -> None:
    """The kernel side checks the host's HMAC proof first: a listener on the socket path that
    does not hold the run's secret gets nothing (and the kernel side refuses to attach)."""
    import socket

    from rlm_isolation.channel import Channel, new_secret
    from rlm_isolation.worker import ProtocolError
    from rlm_env_ipython._inkernel import Session

    (tmp_path / "secret").write_bytes(new_secret())
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(tmp_path / "host.sock"))
    listener.listen(1)
    outcome: dict[str, Any] = {}

    def impostor() -> None:
        conn, _ = listener.accept()
        channel = Channel(conn.recv, conn.sendall, RecordingHost(), new_secret())
        try:
            channel.handshake({"tools": {}})
        except Exception as exc:  # noqa: BLE001 - what the impostor sees
            outcome["host"] = exc
        finally:
            conn.close()

    t = threading.Thread(target=impostor)
    t.start()
    try:
        with pytest.raises(ProtocolError, match="the host failed to authenticate"):
            Session(object(), str(tmp_path))
    finally:
        t.join(10)
        listener.close()
    assert "host" in outcome  # the impostor never got the config exchange through


def test_execute_from_several_threads_is_serialised(kernel: IPythonKernelREPL) -> None:
    kernel.execute("n = 0")
    errors: list[str] = []

    def bump() -> None:
        for _ in range(5):
            r = kernel.execute("n += 1")
            if r.error:
                errors.append(r.error)

    threads = [threading.Thread(target=bump) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert kernel.execute("print(n)").stdout.strip() == "15"


def test_shutdown_does_not_wait_for_a_running_cell(host: RecordingHost) -> None:
    env = IPythonKernelREPL()
    env.start(host, {})
    result: dict[str, Any] = {}
    t = threading.Thread(target=lambda: result.update(r=env.execute("import time\n"
                                                                     "time.sleep(60)")))
    t.start()
    time.sleep(0.5)
    t0 = time.perf_counter()
    env.shutdown()
    t.join(15)
    assert not t.is_alive() and time.perf_counter() - t0 < 10
    assert "shut down while this cell was running" in result["r"].error


def test_a_failing_bootstrap_fails_fast_with_the_kernel_traceback(
        host: RecordingHost, monkeypatch: pytest.MonkeyPatch) -> None:
    import rlm_env_ipython.kernel as kernel_module

    monkeypatch.setattr(kernel_module, "_BOOT", "raise ImportError('no rlm here {run_dir}')")
    env = IPythonKernelREPL(startup_timeout=60)
    t0 = time.perf_counter()
    with pytest.raises(RLMEnvironmentError, match="bootstrap cell failed") as info:
        env.start(host, {})
    assert time.perf_counter() - t0 < 20  # not the whole startup_timeout
    assert "ImportError: no rlm here" in str(info.value)
    assert env.run_dir is None


@pytest.mark.parametrize("call", ["add_history", "add_context"])
def test_shutdown_during_a_control_message_still_frees_everything(host: RecordingHost,
                                                                  call: str) -> None:
    """``shutdown()`` from another thread while ``add_history`` / ``add_context`` waits for the
    kernel's acknowledgement: the call fails, and the run directory, the host socket and the
    kernel client are freed then, as after a cell, not whenever the REPL is collected."""
    env = IPythonKernelREPL()
    env.start(host, {})
    kernel = env._kernel
    assert kernel is not None and kernel.channel is not None
    run_dir, channel = env.run_dir, kernel.channel
    entered = threading.Event()
    real_request = channel.request

    def slow_request(message: dict[str, Any], **kwargs: Any) -> Any:
        entered.set()
        time.sleep(1.0)  # the REPL is shut down meanwhile: the kernel is killed
        return real_request(message, **kwargs)

    channel.request = slow_request  # type: ignore[method-assign]
    errors: list[BaseException] = []

    def add() -> None:
        try:
            if call == "add_history":
                env.add_history([{"role": "user", "content": "q"}], 1)
            else:
                env.add_context("late", 1)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    t = threading.Thread(target=add)
    t.start()
    assert entered.wait(10)
    env.shutdown()
    t.join(30)
    assert not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], RLMEnvironmentError), errors
    assert run_dir is not None and not os.path.exists(run_dir)
    assert kernel.client is None and kernel.listener.fileno() == -1


def test_interrupt_while_a_restart_runs_setup_code_does_not_close_the_repl(
        host: RecordingHost) -> None:
    """A cancelled run calls ``interrupt()`` whenever it is cancelled: landing while the kernel
    is being restarted (after a death or a stuck cell) it must not cancel the restart's
    ``setup_code``, which would close the whole REPL; the setup is not the caller's cell."""
    env = IPythonKernelREPL(setup_code="import time\ntime.sleep(1.5)\nREADY = 1")
    env.start(host, {})
    try:
        done = threading.Event()
        answers: list[bool] = []

        def keep_interrupting() -> None:
            while not done.is_set() and env.restarts == 0:
                time.sleep(0.005)
            while not done.is_set():
                answers.append(env.interrupt())
                time.sleep(0.02)

        t = threading.Thread(target=keep_interrupting)
        t.start()
        try:
            r = env.execute("import os\nos._exit(3)")
        finally:
            done.set()
            t.join(10)
        assert r.error is not None and "A new kernel was started" in r.error, r.error
        assert answers and not any(answers)  # no cell of the caller's was running
        assert env.execute("print(READY)").stdout.strip() == "1"
    finally:
        env.shutdown()
