"""Errors a user can act on, and the sandbox deleted on every error path: missing or rejected
credentials, quota / rate limits, provider and network failures, a worker that fails to start,
failing setup code, a worker that dies, a sandbox that dies mid-run (also under a whole RLM run,
which ends with its partial answer)."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from _e2b_support import EMULATOR, emulator_kwargs, needs_bwrap
from rlm import RLM
from rlm.exceptions import ConfigurationError, RLMEnvironmentError
from rlm_env_e2b.env import E2BREPL
from rlm_testkit.environments import RecordingHost
from rlm_testkit.helpers import is_root_turn, isolated_plugin_manager

pytestmark = needs_bwrap


def new_sandboxes(before: set[str]) -> list[str]:
    return [sid for sid in EMULATOR.sandboxes if sid not in before]


def assert_all_deleted(sids: list[str]) -> None:
    for sid in sids:
        assert not EMULATOR.sandboxes[sid].alive, f"sandbox {sid} was left running"
        recs = [r for r in EMULATOR.requests if r.sandbox_id == sid]
        ends = [i for i, r in enumerate(recs) if r.op in ("kill", "expire")]
        assert ends, f"sandbox {sid} was never deleted: {[r.op for r in recs]}"
        # after the end, the SDK's health probes and a last signal to the worker may still
        # arrive: they find the sandbox gone (envd 502, API 404)
        late = [(r.op, r.status) for r in recs[ends[0] + 1:]]
        assert all(status in (404, 502) for _, status in late), late


def start_fails(exc_type: type[Exception], **kw) -> tuple[Exception, list[str]]:
    before = set(EMULATOR.sandboxes)
    env = E2BREPL(**emulator_kwargs(**kw))
    with pytest.raises(exc_type) as info:
        env.start(RecordingHost(), {})
    return info.value, new_sandboxes(before)


# --- credentials -------------------------------------------------------------------------------


def test_missing_credentials_name_the_variable_and_the_login_command(monkeypatch):
    monkeypatch.delenv("E2B_API_KEY", raising=False)
    kwargs = emulator_kwargs()
    del kwargs["api_key"]
    with pytest.raises(ConfigurationError) as info:
        E2BREPL(**kwargs)
    text = str(info.value)
    assert "E2B_API_KEY" in text and "e2b auth login" in text
    assert "https://e2b.dev/dashboard" in text


def test_the_key_can_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("E2B_API_KEY", EMULATOR.api_key)
    kwargs = emulator_kwargs()
    del kwargs["api_key"]
    env = E2BREPL(**kwargs)
    env.start(RecordingHost(), {})
    try:
        assert env.execute("print(6 * 7)").stdout.strip() == "42"
    finally:
        env.shutdown()


def test_a_rejected_key_is_a_configuration_error_with_the_providers_message():
    exc, created = start_fails(ConfigurationError, api_key="e2b_wrong")
    assert "401" in str(exc) and "Invalid API key" in str(exc) and "E2B_API_KEY" in str(exc)
    assert created == []


# --- provider and network errors --------------------------------------------------------------


@pytest.mark.parametrize("status,message,words", [
    (429, "You have reached the maximum number of concurrent E2B sandboxes (20)",
     ["rate limit or quota", "maximum number of concurrent E2B sandboxes"]),
    (500, "internal error: the orchestrator is unavailable", ["orchestrator is unavailable"]),
    (503, "the cluster is at capacity", ["503", "at capacity"]),
])
def test_provider_errors_on_create_quote_the_provider(status, message, words):
    EMULATOR.fail("create", status, message, times=4, headers={"Retry-After": "0"})
    exc, created = start_fails(RLMEnvironmentError)
    assert isinstance(exc, RLMEnvironmentError)
    for word in words:
        assert word in str(exc), str(exc)
    assert created == []
    EMULATOR.clear_faults()


def test_an_unreachable_service_says_so():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exc, created = start_fails(RLMEnvironmentError, api_url=f"http://127.0.0.1:{port}")
    assert "could not reach E2B" in str(exc) and f"127.0.0.1:{port}" in str(exc)
    assert created == []


def test_a_dropped_connection_is_an_environment_error():
    EMULATOR.fail("create", None)
    exc, created = start_fails(RLMEnvironmentError)
    assert "create a sandbox" in str(exc)
    assert created == []


# --- the sandbox is deleted on every error path --------------------------------------------------


def test_failed_upload_deletes_the_sandbox():
    EMULATOR.fail("upload", 507, "not enough disk space")
    exc, created = start_fails(RLMEnvironmentError)
    assert "upload the REPL worker" in str(exc) and "not enough disk space" in str(exc)
    assert len(created) == 1
    assert_all_deleted(created)


def test_failed_worker_start_deletes_the_sandbox():
    EMULATOR.fail("start", 500, "envd could not start the process")
    exc, created = start_fails(RLMEnvironmentError)
    assert "start the REPL worker" in str(exc) and "envd could not start" in str(exc)
    assert_all_deleted(created)


def test_a_worker_that_cannot_run_deletes_the_sandbox_and_quotes_its_output():
    exc, created = start_fails(RLMEnvironmentError, python="python3-missing",
                               startup_timeout=20)
    assert "did not start" in str(exc) and "python3-missing" in str(exc)
    assert_all_deleted(created)


def test_failing_setup_code_deletes_the_sandbox():
    exc, created = start_fails(RLMEnvironmentError, setup_code="raise ValueError('bad setup')")
    assert "setup_code failed" in str(exc) and "bad setup" in str(exc)
    assert_all_deleted(created)


def test_a_crashed_worker_is_restarted_in_the_same_sandbox():
    env = E2BREPL(**emulator_kwargs())
    env.start(RecordingHost(), {})
    sid = env.sandbox_id
    try:
        env.add_context("kept", 0)
        r = env.execute("import os\nx = 1\nos._exit(3)")
        assert r.error is not None and "exited with status 3" in r.error
        assert "variables you created are gone" in r.error
        r = env.execute("print(context, 'x' in globals())")
        assert r.stdout.split() == ["kept", "False"]
        assert EMULATOR.ops(sid).count("start") == 2 and EMULATOR.ops(sid).count("create") == 1
    finally:
        env.shutdown()
    assert_all_deleted([sid])


def test_a_worker_that_cannot_be_restarted_deletes_the_sandbox():
    env = E2BREPL(**emulator_kwargs())
    env.start(RecordingHost(), {})
    sid = env.sandbox_id
    EMULATOR.fail("upload", 500, "disk error")
    with pytest.raises(RLMEnvironmentError, match="could not be restarted.*disk error"):
        env.execute("import os\nos._exit(1)")
    assert_all_deleted([sid])
    env.shutdown()


def test_a_sandbox_killed_mid_cell_ends_the_cell_promptly_with_the_reason():
    env = E2BREPL(**emulator_kwargs())
    env.start(RecordingHost(), {})
    sid = env.sandbox_id
    threading.Timer(1.0, EMULATOR.kill_sandbox, args=(sid,)).start()
    t0 = time.perf_counter()
    with pytest.raises(RLMEnvironmentError) as info:
        env.execute("import time\ntime.sleep(60)")
    assert time.perf_counter() - t0 < 15
    assert "no longer running" in str(info.value) and sid in str(info.value)
    with pytest.raises(RLMEnvironmentError, match="shut down"):
        env.execute("print(1)")
    env.shutdown()
    assert_all_deleted([sid])


def test_a_sandbox_that_dies_mid_run_ends_the_run_with_its_partial_answer():
    pm = isolated_plugin_manager("rlm_env_e2b.plugin", first_party=("scripted",))
    turns = iter([
        "```repl\nanswer['content'] = 'half done'\nprint('step 1')\n```",
        "```repl\nprint('step 2')\n```",
    ])
    created: list[str] = []

    def respond(messages):
        if not is_root_turn(messages):
            return "sub"
        turn = next(turns)
        if "step 2" in turn:  # the provider kills the sandbox between two turns
            created.extend(EMULATOR.live_sandboxes())
            for sid in created:
                EMULATOR.kill_sandbox(sid)
        return turn

    rlm = RLM(backend="scripted", backend_kwargs={"responder": respond}, environment="e2b",
              environment_kwargs=emulator_kwargs(), plugin_manager=pm)
    try:
        with pytest.raises(RLMEnvironmentError) as info:
            rlm.completion("task")
    finally:
        rlm.close()
    assert "no longer running" in str(info.value)
    assert getattr(info.value, "partial_answer", None) == "half done"
    assert created and all(not EMULATOR.sandboxes[s].alive for s in created)


def test_a_long_cell_keeps_its_sandbox_alive():
    """``timeout`` is the sandbox's life *without activity*: a cell that runs past the point
    where the lifetime is due for extension must not lose its sandbox. Set up as a sandbox
    whose extension falls due a moment into the cell, with 3 s of provider lifetime left."""
    env = E2BREPL(**emulator_kwargs(timeout=30))
    env.start(RecordingHost(), {})
    try:
        sid = env.sandbox_id
        env._touched = time.monotonic() - 14.5  # half of the lifetime passes 0.5 s into the cell
        EMULATOR.sandboxes[sid].deadline = time.monotonic() + 3.0
        result = env.execute("import time\ntime.sleep(5)\nprint('done')")
        assert result.error is None and result.stdout == "done\n", result.error
        assert "set_timeout" in EMULATOR.ops(sid)
    finally:
        env.shutdown()
