"""The emulator itself, driven by the E2B SDK directly: what it checks (keys, access tokens),
what it records, how a killed sandbox answers, and that it only ever listens on 127.0.0.1.
Also: the plugin stays cheap to import, and bad settings are refused with the fix."""

from __future__ import annotations

import os
import threading
import urllib.error
import urllib.parse
import urllib.request

import pytest
from _e2b_support import EMULATOR, emulator_kwargs, needs_bwrap
from rlm.exceptions import ConfigurationError
from rlm_env_e2b.env import E2BREPL
from rlm_testkit.imports import packages_imported_by

pytestmark = needs_bwrap


@pytest.fixture
def sandbox():
    from e2b_code_interpreter import Sandbox

    sb = Sandbox.create(**EMULATOR.connection_kwargs)
    yield sb
    sb.kill()


def test_it_listens_on_loopback_only():
    for url in (EMULATOR.api_url, EMULATOR.sandbox_url):
        assert urllib.parse.urlsplit(url).hostname == "127.0.0.1"


def test_files_and_commands_round_trip_through_the_sdk(sandbox):
    sandbox.files.write("notes/a.txt", "héllo")
    assert sandbox.files.read("/home/user/notes/a.txt") == "héllo"
    result = sandbox.commands.run("cat notes/a.txt; echo; echo oops >&2; id -u; hostname")
    uid = 65534 if os.geteuid() == 0 else os.geteuid()  # root hands sandboxes to "nobody"
    assert result.stdout.split() == ["héllo", str(uid), sandbox.sandbox_id]
    assert result.stderr == "oops\n" and result.exit_code == 0
    ops = EMULATOR.ops(sandbox.sandbox_id)
    assert ops[:4] == ["create", "upload", "download", "start"]


def test_writes_outside_the_sandbox_home_and_tmp_are_refused(sandbox):
    import e2b

    with pytest.raises(e2b.SandboxException, match="permission denied"):
        sandbox.files.write("/etc/evil", b"x")
    with pytest.raises(e2b.SandboxException, match="permission denied"):
        sandbox.files.write("/home/user/../../etc/evil", b"x")


def test_a_background_command_takes_stdin_and_dies_by_signal(sandbox):
    import e2b

    handle = sandbox.commands.run("cat", background=True, stdin=True, timeout=0)
    out: list[str] = []
    done: list[object] = []

    def follow():
        try:
            handle.wait(on_stdout=out.append)
        except e2b.CommandExitException as exc:
            done.append(exc.exit_code)

    t = threading.Thread(target=follow)
    t.start()
    sandbox.commands.send_stdin(handle.pid, "echo me\n")
    for _ in range(100):
        if out:
            break
        threading.Event().wait(0.02)
    assert "".join(out) == "echo me\n"
    assert sandbox.commands.kill(handle.pid) is True
    t.join(10)
    assert done == [-1]  # envd's exit code for a process ended by a signal
    assert sandbox.commands.kill(999999) is False  # unknown pid: NOT_FOUND


def _envd_status(sandbox_id: str, token: str, path: str = "/health") -> int:
    req = urllib.request.Request(EMULATOR.sandbox_url + path, headers={
        "E2b-Sandbox-Id": sandbox_id, "X-Access-Token": token})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_tokens_are_checked_and_a_killed_sandbox_is_gone(sandbox):
    token = EMULATOR.sandboxes[sandbox.sandbox_id].access_token
    assert _envd_status(sandbox.sandbox_id, token) == 204
    assert _envd_status(sandbox.sandbox_id, "wrong") == 401
    assert _envd_status(sandbox.sandbox_id, token, "/files?path=/etc/passwd") == 404
    assert sandbox.is_running()
    EMULATOR.kill_sandbox(sandbox.sandbox_id)
    assert not sandbox.is_running()  # the SDK reads the 502 "... was not found" as "gone"
    assert _envd_status(sandbox.sandbox_id, token) == 502
    assert "expire" in EMULATOR.ops(sandbox.sandbox_id)


def test_sandbox_lifetime_is_enforced():
    from e2b_code_interpreter import Sandbox

    sb = Sandbox.create(timeout=1, **EMULATOR.connection_kwargs)
    threading.Event().wait(1.5)
    assert not sb.is_running()
    assert "expire" in EMULATOR.ops(sb.sandbox_id)


def test_importing_rlm_and_the_plugin_does_not_import_the_sdk():
    assert packages_imported_by("import rlm, rlm_env_e2b, rlm_env_e2b.plugin", [
        "e2b", "e2b_code_interpreter", "httpx", "pyqwest"]) == []


@pytest.mark.parametrize("kwargs,words", [
    ({"timeout": 5}, "timeout"),
    ({"timeout": "600"}, "timeout"),
    ({"envs": {"A": 1}}, "envs"),
    ({"template": ""}, "template"),
    ({"workdir": "rel"}, "workdir"),
    ({"disk_limit": "lots"}, "disk_limit"),
])
def test_bad_settings_are_refused_with_the_setting_named(kwargs, words):
    with pytest.raises(ConfigurationError, match=words):
        E2BREPL(**emulator_kwargs(**kwargs))
