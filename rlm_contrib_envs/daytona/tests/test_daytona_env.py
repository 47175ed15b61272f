"""What is particular to daytona, against the real SDK and the emulator: the requests made (create,
upload, execute, read, delete), the sandbox deleted on every path, provider errors surfaced with
the provider's message, credentials, settings, a dying sandbox, whole RLM completions."""

from __future__ import annotations

import os
import threading
import time

import pytest
from _daytona_support import BWRAP_REASON, NO_BWRAP
from hypothesis import given, settings
from hypothesis import strategies as st
from rlm import RLM
from rlm.exceptions import ConfigurationError, RLMEnvironmentError
from rlm_testkit.servers import OpenAICompatibleServer
from rlm_env_daytona.env import DaytonaREPL
from rlm_testkit.environments import RecordingHost
from rlm_testkit.helpers import is_root_turn
from rlm_testkit.imports import packages_imported_by

needs_bwrap = pytest.mark.skipif(NO_BWRAP, reason=BWRAP_REASON)
CLOSED = "http://127.0.0.1:9/api"  # the discard port: nothing listens on it here


def kwargs_for(emu, **extra):
    return {"api_url": emu.api_url, "api_key": emu.api_key, "target": "us",
            "memory_limit": "512m", **extra}


@pytest.fixture
def make(emulator):
    envs = []

    def make(tools=None, start=True, **extra):
        env = DaytonaREPL(**kwargs_for(emulator, **extra))
        envs.append(env)
        if start:
            env.start(RecordingHost(), tools or {})
        return env

    yield make
    for env in envs:
        env.shutdown()


def first(flow, name):
    assert name in flow, f"no {name!r} request in {flow}"
    return flow.index(name)


# --- no sandbox needed ---------------------------------------------------------------------------


def test_plugin_and_rlm_import_without_the_sdk():
    assert packages_imported_by("import rlm, rlm_env_daytona.plugin", [
        "daytona", "daytona_api_client", "daytona_toolbox_api_client"]) == []


def test_missing_credentials_name_the_variables_and_the_login(monkeypatch, tmp_path):
    for name in ("DAYTONA_API_KEY", "DAYTONA_JWT_TOKEN", "DAYTONA_ORGANIZATION_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError) as info:
        DaytonaREPL()
    text = str(info.value)
    for needed in ("DAYTONA_API_KEY", "DAYTONA_API_URL", "DAYTONA_TARGET", "daytona login",
                   "dashboard"):
        assert needed in text


@pytest.mark.parametrize("kwargs,match", [
    ({"snapshot": "a", "image": "b"}, "either snapshot or image"),
    ({"resources": {"cpu": 2}}, "only to a sandbox built from an image"),
    ({"image": "python:3.12", "resources": {"ram": 2}}, "unknown resources"),
    ({"image": "python:3.12", "resources": {"cpu": -1}}, "whole number"),
    ({"timeout": 0}, "timeout"),
    ({"auto_stop_interval": -5}, "auto_stop_interval"),
    ({"ttl_minutes": 0}, "ttl_minutes"),
    ({"env_vars": {"A": 1}}, "env_vars"),
    ({"python": " "}, "python"),
    ({"memory_limit": "lots"}, "memory_limit"),
])
def test_bad_settings_are_refused_before_any_request(kwargs, match):
    with pytest.raises(ConfigurationError, match=match):
        DaytonaREPL(api_key="k", api_url=CLOSED, **kwargs)


@settings(max_examples=40, deadline=None)
@given(st.text(min_size=1, max_size=30))
def test_workdir_is_an_absolute_path_without_shell_characters(text):
    workdir = "/" + text
    ok = not any(c.isspace() or c in "'\"$`\\;&|<>" for c in workdir)
    if ok:
        env = DaytonaREPL(api_key="k", api_url=CLOSED, workdir=workdir)
        assert env.workdir == (workdir.rstrip("/") or "/tmp")
    else:
        with pytest.raises(ConfigurationError, match="workdir"):
            DaytonaREPL(api_key="k", api_url=CLOSED, workdir=workdir)


def test_network_errors_name_the_endpoint():
    env = DaytonaREPL(api_key="k", api_url=CLOSED, timeout=5)
    with pytest.raises(RLMEnvironmentError, match=r"cannot reach the Daytona API at "
                                                  r"http://127\.0\.0\.1:9/api"):
        env.start(RecordingHost(), {})


# --- the flow ----------------------------------------------------------------------------------


@needs_bwrap
def test_the_flow_create_upload_execute_read_delete(emulator, make):
    env = make(snapshot="rlm-test-snapshot", labels={"team": "qa"}, env_vars={"GREETING": "hi"})
    sandbox_id = env.sandbox_id
    r = env.execute("import os\nprint(os.environ.get('GREETING'), os.getpid())")
    assert r.error is None and r.stdout.split()[0] == "hi"
    pid = r.stdout.split()[1]
    env.add_context("the context " * 1000, 0)
    r = env.execute("x = len(context)\nprint(x, os.getpid())")
    assert r.stdout.split() == [str(len("the context " * 1000)), pid]  # one interpreter
    assert env.execute("print(x + 1)").stdout.strip() == str(len("the context " * 1000) + 1)
    secret = env.execute("import glob\nprint(open(glob.glob('/tmp/rlm/*/secret')[0]).read())"
                         ).stdout.strip()
    assert len(secret) >= 32
    env.shutdown()
    assert not any(secret in repr(r) for r in emulator.requests)  # never in a command or path

    flow = emulator.flow()
    order = [first(flow, n) for n in ("create", "upload", "permissions", "create-session",
                                      "exec", "logs", "input", "delete")]
    assert order == sorted(order), flow
    assert flow[-1] == "delete" and emulator.live() == []
    assert emulator.sandboxes[sandbox_id].state == "destroyed"

    create, = emulator.calls("create")
    assert create.summary["snapshot"] == "rlm-test-snapshot"
    assert create.summary["networkBlockAll"] is True
    assert create.summary["autoStopInterval"] == 15
    assert create.summary["autoDeleteInterval"] == 0  # ephemeral
    assert create.summary["labels"]["org.rlm.environment"] == "daytona"
    assert create.summary["labels"]["team"] == "qa"
    upload, = emulator.calls("upload")  # worker and secret once; the context never
    files = upload.summary["files"]
    assert sorted(p.rsplit("/", 1)[1] for p in files) == ["secret", "worker.py"]
    assert all(p.startswith("/tmp/rlm/") for p in files)
    perm, = emulator.calls("permissions")
    assert perm.summary["mode"] == "400" and perm.summary["path"].endswith("/secret")
    assert perm.summary["owner"] == "daytona"  # the sandbox's user, who runs the worker
    run, = emulator.calls("exec")  # one long-lived worker for every cell
    assert run.summary["runAsync"] is True and run.summary["suppressInputEcho"] is True
    assert "--text" in run.summary["command"] and "--secret-file" in run.summary["command"]
    assert len(emulator.calls("logs")) == 1


@needs_bwrap
def test_the_secret_is_readable_only_by_the_sandbox_user(make):
    env = make()
    r = env.execute("import glob, os, stat\n"
                    "p, = glob.glob('/tmp/rlm/*/secret')\n"
                    "print(oct(stat.S_IMODE(os.stat(p).st_mode)))")
    assert r.stdout.strip() == "0o400"


@needs_bwrap
def test_image_and_resources_reach_the_create_request(emulator, make):
    make(image="python:3.12-slim", resources={"cpu": 2, "memory": 2, "disk": 4},
         network_block_all=False, auto_stop_interval=5, ephemeral=False, ttl_minutes=30)
    create, = emulator.calls("create")
    assert "FROM python:3.12-slim" in create.summary["dockerfile"]
    assert (create.summary["cpu"], create.summary["memory"], create.summary["disk"]) == (2, 2, 4)
    assert create.summary["networkBlockAll"] is False
    assert create.summary["autoStopInterval"] == 5
    assert create.summary["ttlMinutes"] == 30
    assert "autoDeleteInterval" not in create.summary or \
        create.summary["autoDeleteInterval"] != 0


@needs_bwrap
def test_the_sandbox_has_no_route_to_the_host(make, emulator):
    env = make()
    r = env.execute("import socket\ntry:\n"
                    f"    socket.create_connection(('127.0.0.1', {emulator.port}), timeout=3)\n"
                    "    print('CONNECTED')\nexcept OSError as e:\n    print('refused', e)")
    assert "refused" in r.stdout and "CONNECTED" not in r.stdout


# --- every error path deletes the sandbox -----------------------------------------------------


@needs_bwrap
def test_a_sandbox_that_fails_to_start_is_deleted(emulator, make):
    emulator.start_error = "no runner available in region us"
    with pytest.raises(RLMEnvironmentError, match="no runner available in region us"):
        make()
    assert len(emulator.calls("create")) == 1
    assert emulator.calls("delete") and emulator.live() == []


@needs_bwrap
def test_failing_setup_code_deletes_the_sandbox(emulator, make):
    with pytest.raises(RLMEnvironmentError, match="setup_code failed"):
        make(setup_code="raise ValueError('boom')")
    assert emulator.flow()[-1] == "delete" and emulator.live() == []


@needs_bwrap
def test_a_worker_that_cannot_start_deletes_the_sandbox(emulator, make):
    with pytest.raises(RLMEnvironmentError, match="not found in the sandbox|did not start"):
        make(python="no-such-python3", startup_timeout=20)
    assert emulator.live() == []


@needs_bwrap
def test_a_toolbox_error_during_start_is_surfaced_and_deletes(emulator, make):
    emulator.fail("upload", 507, "disk quota exceeded on the runner")
    with pytest.raises(RLMEnvironmentError, match="disk quota exceeded on the runner"):
        make()
    assert emulator.live() == []


@needs_bwrap
def test_a_worker_that_dies_is_restarted_in_the_same_sandbox(emulator, make):
    env = make()
    r = env.execute("import os\nos._exit(3)")
    assert r.error is not None and "exited with status 3" in r.error
    assert env.execute("print('back')").stdout.strip() == "back"
    assert len(emulator.calls("create")) == 1 and len(emulator.calls("exec")) == 2
    assert len(emulator.calls("create-session")) == 2


@needs_bwrap
def test_a_sandbox_that_dies_mid_cell_ends_the_cell_without_hanging(emulator, make):
    env = make()
    killer = threading.Timer(0.5, emulator.kill_sandbox, args=(env.sandbox_id,
                                                               "the runner was lost"))
    killer.start()
    started = time.monotonic()
    with pytest.raises(RLMEnvironmentError, match="the runner was lost"):
        env.execute("import time\ntime.sleep(30)")
    assert time.monotonic() - started < 15
    env.shutdown()
    assert emulator.flow()[-1] == "delete" and emulator.live() == []


@needs_bwrap
def test_the_health_check_ends_a_stream_that_stays_open(emulator, make):
    """A sandbox that is gone while its log stream stays open: the watchdog ends the wait."""
    env = make(health_interval=0.3)
    sandbox_id = env.sandbox_id
    box = emulator.sandboxes[sandbox_id]
    box.state, box.error_reason = "stopped", "stopped by the provider"  # processes still run
    started = time.monotonic()
    with pytest.raises(RLMEnvironmentError, match="no longer running.*stopped"):
        env.execute("import time\ntime.sleep(30)")
    assert time.monotonic() - started < 15


@needs_bwrap
@pytest.mark.parametrize("status,message,expect", [
    (403, "Total CPU limit exceeded. Maximum allowed: 10", "quota"),
    (429, "Too many requests, slow down", "rate-limiting"),
    (500, "runner pool exhausted", "provider's side"),
    (503, "maintenance in progress", "provider's side"),
])
def test_provider_errors_carry_the_provider_message(emulator, make, status, message, expect):
    emulator.fail("create", status, message)
    with pytest.raises(RLMEnvironmentError) as info:
        make()
    assert message in str(info.value) and expect in str(info.value)
    assert f"HTTP {status}" in str(info.value)


@needs_bwrap
def test_a_wrong_key_is_a_configuration_error(emulator):
    env = DaytonaREPL(**{**kwargs_for(emulator), "api_key": "wrong"})
    with pytest.raises(ConfigurationError, match="rejected the credentials.*DAYTONA_API_KEY"):
        env.start(RecordingHost(), {})
    assert emulator.sandboxes == {}
    assert {r.status for r in emulator.requests} == {401}


@needs_bwrap
def test_tools_cross_as_code_strings_and_json_values(make):
    env = make(tools={"double": "def double(x):\n    return 2 * x",
                      "CITIES": ["Tokyo", "Lima"]})
    assert env.execute("print(double(21), CITIES[1])").stdout.split() == ["42", "Lima"]
    with pytest.raises(ConfigurationError, match="cannot be passed"):
        make(tools={"f": len})


# --- whole runs --------------------------------------------------------------------------------


@needs_bwrap
def test_rlm_completion_with_rlm_query_from_inside(emulator):
    """The root's cell calls rlm_query: a child RLM runs in a sandbox of its own; its answer comes
    back into the root's REPL; both sandboxes are gone at the end."""
    def respond(messages, body):
        if not is_root_turn(messages):
            return "plain"
        if "10 total characters" in messages[1]["content"]:  # the child: context "child task"
            return "```repl\nanswer.update(content='child saw ' + context, ready=True)\n```"
        return ("```repl\nr = rlm_query('child task')\nsub = llm_query('hi')\n"
                "answer.update(content=r + ' / ' + sub, ready=True)\n```")

    with OpenAICompatibleServer(responder=respond) as server, RLM(
            backend="openai", backend_kwargs={"base_url": server.base_url, "api_key": "k",
                                              "model_name": "scripted", "max_retries": 0},
            environment="daytona", environment_kwargs=kwargs_for(emulator),
            max_depth=2) as rlm:
        result = rlm.completion("root context")
    assert result.response == "child saw child task / plain"
    assert len(emulator.calls("create")) == 2
    assert emulator.live() == []


@needs_bwrap
def test_a_sandbox_that_dies_mid_run_ends_it_with_the_partial_answer(emulator):
    turns = iter([
        "```repl\nanswer['content'] = 'partial so far'\nprint('step 1')\n```",
        "```repl\nimport time\ntime.sleep(30)\n```",
    ])

    def respond(messages, body):
        text = next(turns)
        if "time.sleep" in text:  # the sandbox dies while this turn's cell runs
            sandbox_id, = emulator.live()
            threading.Timer(0.5, emulator.kill_sandbox, args=(sandbox_id,)).start()
        return text

    with OpenAICompatibleServer(responder=respond) as server, RLM(
            backend="openai", backend_kwargs={"base_url": server.base_url, "api_key": "k",
                                              "model_name": "scripted", "max_retries": 0},
            environment="daytona", environment_kwargs=kwargs_for(emulator)) as rlm:
        started = time.monotonic()
        with pytest.raises(RLMEnvironmentError) as info:
            rlm.completion("ctx")
    assert time.monotonic() - started < 20
    assert getattr(info.value, "partial_answer", None) == "partial so far"
    assert "runner was lost" in str(info.value)
    assert emulator.live() == []


# --- the emulator itself -----------------------------------------------------------------------


@needs_bwrap
def test_emulator_echoes_input_unless_suppressed(emulator):
    """As Daytona's daemon does; the environment must (and does) start its worker with
    suppress_input_echo, or its own frames would come back as the worker's."""
    from daytona import Daytona, DaytonaConfig, SessionExecuteRequest

    client = Daytona(DaytonaConfig(api_key=emulator.api_key, api_url=emulator.api_url,
                                   target="us"))
    sandbox = client.create(timeout=30)
    try:
        sandbox.process.create_session("s")
        outputs = {}
        for suppress in (False, True):
            cmd = sandbox.process.execute_session_command("s", SessionExecuteRequest(
                command="read line; echo got-$line", run_async=True,
                suppress_input_echo=suppress)).cmd_id
            sandbox.process.send_session_command_input("s", cmd, "abc\n")
            deadline = time.monotonic() + 10
            while sandbox.process.get_session_command("s", cmd).exit_code is None:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            outputs[suppress] = sandbox.process.get_session_command_logs("s", cmd).stdout
        assert outputs == {False: "abc\ngot-abc\n", True: "got-abc\n"}
    finally:
        sandbox.delete()
    assert emulator.live() == []


@needs_bwrap
def test_emulator_files_round_trip_and_refuse_outside_paths(emulator):
    from daytona import Daytona, DaytonaConfig, DaytonaError

    client = Daytona(DaytonaConfig(api_key=emulator.api_key, api_url=emulator.api_url,
                                   target="us"))
    sandbox = client.create(timeout=30)
    try:
        sandbox.fs.upload_file(b"\x00\xffdata", "sub/dir/f.bin")
        assert sandbox.fs.download_file("/home/daytona/sub/dir/f.bin") == b"\x00\xffdata"
        with pytest.raises(DaytonaError, match="outside the sandbox"):
            sandbox.fs.upload_file(b"x", "/etc/passwd")
        with pytest.raises(DaytonaError):
            sandbox.fs.download_file("/tmp/missing")
    finally:
        sandbox.delete()
    assert os.path.exists(emulator.root) and emulator.live() == []
