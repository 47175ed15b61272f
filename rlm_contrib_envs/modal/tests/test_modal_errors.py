"""Errors a user can act on, and the sandbox terminated on every error path.

Provider faults are injected in the emulator as the gRPC statuses the real service answers
with; the SDK turns them into its exceptions and the environment into rlm's, quoting the
provider's message.
"""

from __future__ import annotations

import pytest
from grpclib import Status
from rlm.exceptions import ConfigurationError, RLMEnvironmentError
from rlm.types import Tool
from rlm_env_modal.env import ModalREPL
from rlm_testkit.environments import RecordingHost

KW = {"app_name": "my-rlm-app", "timeout": 600}


def created_ids(emulator):
    return [c.request for c in emulator.calls if c.method == "SandboxCreateV2"]


def assert_all_terminated(emulator):
    """Every sandbox the emulator created was terminated (by the client, or its own end)."""
    alive = [s.sandbox_id for s in emulator.sandboxes.values() if not s.terminated]
    assert not alive, f"sandboxes left running: {alive}"


# --- configuration ------------------------------------------------------------------------------

def test_missing_credentials_name_the_variables_and_the_login_command(monkeypatch, tmp_path):
    monkeypatch.delenv("MODAL_TOKEN_ID")
    monkeypatch.delenv("MODAL_TOKEN_SECRET")
    monkeypatch.setenv("MODAL_CONFIG_PATH", str(tmp_path / "none.toml"))
    with pytest.raises(ConfigurationError) as info:
        ModalREPL(**KW)
    text = str(info.value)
    for needle in ("MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET", "modal setup", "modal token new"):
        assert needle in text


def test_a_half_configured_token_names_the_missing_half(monkeypatch):
    monkeypatch.delenv("MODAL_TOKEN_SECRET")
    with pytest.raises(ConfigurationError, match="MODAL_TOKEN_SECRET is not set"):
        ModalREPL(**KW)


def test_refused_credentials_quote_the_provider(modal_emulator, monkeypatch):
    monkeypatch.setenv("MODAL_TOKEN_SECRET", "as-wrong")
    env = ModalREPL(**KW)
    with pytest.raises(ConfigurationError) as info:
        env.start(RecordingHost(), {})
    assert "Token ID or secret is invalid" in str(info.value)
    assert "modal token new" in str(info.value)


@pytest.mark.parametrize("kwargs, match", [
    ({"app_name": ""}, "app_name"),
    ({"timeout": 0}, "timeout"),
    ({"timeout": "600"}, "timeout"),
    ({"cpu": -1}, "cpu"),
    ({"memory": 1.5}, "memory"),
    ({"python": ""}, "python"),
    ({"disk_limit": "lots"}, "disk_limit"),
])
def test_bad_settings_are_configuration_errors(kwargs, match):
    with pytest.raises(ConfigurationError, match=match):
        ModalREPL(**{**KW, **kwargs})


# --- provider errors ----------------------------------------------------------------------------

def test_quota_errors_quote_the_provider(modal_emulator):
    modal_emulator.fail("SandboxCreateV2", Status.RESOURCE_EXHAUSTED,
                        "Workspace has reached its limit of 100 concurrent sandboxes")
    env = ModalREPL(**KW)
    with pytest.raises(RLMEnvironmentError) as info:
        env.start(RecordingHost(), {})
    assert "limit of 100 concurrent sandboxes" in str(info.value)
    assert "quota" in str(info.value)


def test_network_errors_quote_the_provider(modal_emulator):
    modal_emulator.fail("SandboxCreateV2", Status.UNAVAILABLE, "upstream connect error", times=20)
    modal_emulator.clear()
    env = ModalREPL(**KW)
    with pytest.raises(RLMEnvironmentError) as info:
        env.start(RecordingHost(), {})
    assert "upstream connect error" in str(info.value)
    assert "transient" in str(info.value)
    assert modal_emulator.methods().count("SandboxCreateV2") > 1  # the SDK retried first


def test_an_unknown_app_name_without_create_is_not_needed(modal_emulator):
    """The app is created when missing (``create_if_missing=True``): a new name just works."""
    env = ModalREPL(app_name="brand-new-app-xyz", timeout=60)
    env.start(RecordingHost(), {})
    try:
        assert env.execute("print('ok')").stdout == "ok\n"
    finally:
        env.shutdown()


# --- the sandbox terminated on every error path --------------------------------------------------

def test_exec_refused_terminates_the_sandbox(modal_emulator):
    modal_emulator.fail("TaskExecStart", Status.PERMISSION_DENIED, "exec is not allowed here")
    modal_emulator.clear()
    env = ModalREPL(**KW)
    with pytest.raises(RLMEnvironmentError, match="exec is not allowed here"):
        env.start(RecordingHost(), {})
    assert len(created_ids(modal_emulator)) == 1
    assert "SandboxTerminateV2" in modal_emulator.methods()
    assert_all_terminated(modal_emulator)


def test_a_worker_that_cannot_start_terminates_the_sandbox(modal_emulator):
    modal_emulator.clear()
    env = ModalREPL(**KW, python="no-such-python")
    with pytest.raises(RLMEnvironmentError, match="did not start"):
        env.start(RecordingHost(), {})
    assert "SandboxTerminateV2" in modal_emulator.methods()
    assert_all_terminated(modal_emulator)


def test_failing_setup_code_terminates_the_sandbox(modal_emulator):
    modal_emulator.clear()
    env = ModalREPL(**KW, setup_code="raise ValueError('bad setup')")
    with pytest.raises(RLMEnvironmentError, match="bad setup"):
        env.start(RecordingHost(), {})
    assert "SandboxTerminateV2" in modal_emulator.methods()
    assert_all_terminated(modal_emulator)


def test_a_failing_tool_terminates_the_sandbox(modal_emulator):
    modal_emulator.clear()
    env = ModalREPL(**KW)
    tool = Tool("helper", "def helper(x):\n    return x\nraise RuntimeError('tool broke')")
    with pytest.raises(ConfigurationError, match="tool broke"):
        env.start(RecordingHost(), {"helper": tool})
    assert "SandboxTerminateV2" in modal_emulator.methods()
    assert_all_terminated(modal_emulator)


def test_a_callable_tool_is_refused_before_any_sandbox_exists(modal_emulator):
    modal_emulator.clear()
    env = ModalREPL(**KW)
    with pytest.raises(ConfigurationError, match="source code as a string"):
        env.start(RecordingHost(), {"f": Tool("f", lambda x: x)})
    assert "SandboxCreateV2" not in modal_emulator.methods()


def test_a_cell_that_kills_its_worker_gets_a_fresh_sandbox(modal_emulator):
    env = ModalREPL(**KW)
    env.add_context("kept", 0)
    env.start(RecordingHost(), {})
    try:
        first = env.sandbox_id
        r = env.execute("import os\nos._exit(9)")
        assert r.error is not None and "fresh REPL" in r.error
        assert env.sandbox_id != first
        assert modal_emulator.sandboxes[first].terminated
        assert env.execute("print(context_0)").stdout == "kept\n"
    finally:
        env.shutdown()
    assert_all_terminated(modal_emulator)


# --- the sandbox ending under a run --------------------------------------------------------------

def test_a_sandbox_killed_by_the_provider_ends_the_run(modal_emulator):
    env = ModalREPL(**KW)
    env.start(RecordingHost(), {})
    sandbox_id = env.sandbox_id
    assert env.execute("x = 1").error is None
    modal_emulator.kill_sandbox(sandbox_id, "worker host lost")
    with pytest.raises(RLMEnvironmentError) as info:
        env.execute("print(x)")
    assert sandbox_id in str(info.value) and "ended under the run" in str(info.value)
    assert "internal_failure, 'worker host lost'" in str(info.value)  # the provider's words
    assert len([s for s in modal_emulator.sandboxes.values()
                if s.sandbox_id != sandbox_id and not s.terminated]) == 0  # no replacement
    with pytest.raises(RLMEnvironmentError, match="shut down"):
        env.execute("print(1)")


def test_a_sandbox_that_times_out_ends_the_run_with_the_fix(modal_emulator):
    env = ModalREPL(app_name="my-rlm-app", timeout=3)
    env.start(RecordingHost(), {})
    try:
        with pytest.raises(RLMEnvironmentError) as info:
            env.execute("import time\ntime.sleep(30)")
        text = str(info.value)
        assert "SandboxTimeoutError" in text and "environment_kwargs['timeout']" in text
    finally:
        env.shutdown()


def test_a_sandbox_terminated_elsewhere_says_so(modal_emulator):
    env = ModalREPL(**KW)
    env.start(RecordingHost(), {})
    try:
        modal_emulator.kill_sandbox(env.sandbox_id, "terminated by the CLI", terminated=True)
        with pytest.raises(RLMEnvironmentError, match="terminated from outside this run"):
            env.execute("print(1)")
    finally:
        env.shutdown()


def test_a_failed_terminate_is_reported_with_the_manual_fix(modal_emulator, caplog):
    env = ModalREPL(**KW)
    env.start(RecordingHost(), {})
    sandbox_id = env.sandbox_id
    modal_emulator.fail("SandboxTerminateV2", Status.PERMISSION_DENIED, "not allowed now")
    with caplog.at_level("WARNING", logger="rlm.env.modal"):
        env.shutdown()
    text = caplog.text
    assert sandbox_id in text and "not allowed now" in text
    assert f"modal sandbox terminate {sandbox_id}" in text
    modal_emulator.kill_sandbox(sandbox_id)  # tidy up what the failed call left running


def test_a_refused_stdin_write_is_an_environment_failure_quoting_the_provider(modal_emulator):
    """Writing to the worker's stdin fails on Modal's side (the exec is gone, the router refuses
    it): the cell gets rlm's error with Modal's words and a fresh sandbox, not the SDK's raw
    exception out of execute(); nothing is left running."""
    env = ModalREPL(**KW)
    env.start(RecordingHost(), {})
    try:
        first = env.sandbox_id
        modal_emulator.fail("TaskExecStdinWrite", Status.FAILED_PRECONDITION, "exec is gone",
                            times=1)
        result = env.execute("print(1)")
        assert result.error is not None and "exec is gone" in result.error
        assert "fresh REPL" in result.error
        assert env.sandbox_id != first and modal_emulator.sandboxes[first].terminated
        assert env.execute("print(2)").stdout == "2\n"
    finally:
        env.shutdown()
    assert_all_terminated(modal_emulator)


def test_a_refused_start_up_write_is_an_environment_error_and_terminates(modal_emulator):
    env = ModalREPL(**KW)
    modal_emulator.fail("TaskExecStdinWrite", Status.FAILED_PRECONDITION, "exec is gone")
    with pytest.raises(RLMEnvironmentError, match="exec is gone"):
        env.start(RecordingHost(), {})
    assert_all_terminated(modal_emulator)
