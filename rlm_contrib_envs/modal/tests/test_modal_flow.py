"""What the ``modal`` environment asks of Modal, read from the emulator's record of every RPC:
one app lookup and one sandbox per run with the settings given, one exec for the whole run (the
interpreter lives on), the context sent once, nothing secret in what the dashboard shows, and
the sandbox terminated at the end."""

from __future__ import annotations

import os
import threading
import time

import pytest
import rlm_isolation.repl as repl_mod
from hypothesis import given, settings
from hypothesis import strategies as st
from modal_proto import api_pb2
from rlm_env_modal.env import BASE_DIR, ModalREPL
from rlm_env_modal.transport import BOOT, WRITE_PIECE, ModalProcess, boot_payload
from rlm_testkit.environments import RecordingHost
from rlm_testkit.imports import packages_imported_by


def started(**kwargs):
    env = ModalREPL(**{"app_name": "my-rlm-app", "timeout": 600, **kwargs})
    env.start(RecordingHost(), {})
    return env


def requests(emulator, method):
    return [c.request for c in emulator.calls if c.method == method]


def test_one_sandbox_created_with_the_settings_and_terminated_at_the_end(modal_emulator):
    modal_emulator.clear()
    env = started(cpu=0.5, memory=768)
    sandbox_id = env.sandbox_id
    for i in range(3):
        assert env.execute(f"n = {i}\nprint(n * 2)").stdout == f"{i * 2}\n"
    env.shutdown()
    methods = modal_emulator.methods()
    assert methods.index("AppGetOrCreate") < methods.index("SandboxCreateV2") < \
        methods.index("TaskExecStart") < methods.index("SandboxTerminateV2")
    (lookup,) = requests(modal_emulator, "AppGetOrCreate")
    assert lookup.app_name == "my-rlm-app"
    assert lookup.object_creation_type == api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING
    (create,) = requests(modal_emulator, "SandboxCreateV2")
    definition = create.definition
    assert definition.timeout_secs == 600
    assert definition.network_access.network_access_type == \
        api_pb2.NetworkAccess.NetworkAccessType.BLOCKED
    assert definition.resources.milli_cpu == 500
    assert definition.resources.memory_mb == 768
    (start,) = requests(modal_emulator, "TaskExecStart")  # one exec: the REPL lives on
    assert list(start.command_args) == ["python", "-I", "-S", "-c", BOOT]
    assert [r.sandbox_id for r in requests(modal_emulator, "SandboxTerminateV2")] == [sandbox_id]
    assert modal_emulator.sandboxes[sandbox_id].terminated
    assert env.terminated == [sandbox_id]


def test_the_secret_never_appears_where_the_provider_shows_commands(modal_emulator, monkeypatch):
    secret = b"f" * 8 + os.urandom(8).hex().encode() + b"e" * 8
    monkeypatch.setattr(repl_mod, "new_secret", lambda: secret)
    modal_emulator.clear()
    env = started()
    try:
        assert env.execute("print(1)").stdout == "1\n"
    finally:
        env.shutdown()
    shown = [c for c in modal_emulator.calls if c.method != "TaskExecStdinWrite"]
    for call in shown:
        assert secret not in call.request.SerializeToString(), call.method
    (start,) = requests(modal_emulator, "TaskExecStart")
    assert not start.env and not start.secret_sources
    stdin = b"".join(r.data for r in requests(modal_emulator, "TaskExecStdinWrite"))
    assert secret in stdin[:200_000]  # it travels once, on the exec's stdin


def test_contexts_cross_once_and_are_written_inside_the_sandbox(modal_emulator):
    text = "".join(chr(0x41 + i % 26) for i in range(3 * 2**20)) + "\u00e9\U0001f600"
    env = ModalREPL(app_name="my-rlm-app", timeout=600)
    env.add_context(text, 0)
    env.add_context({"k": [1, 2, 3]}, 1)
    modal_emulator.clear()
    env.start(RecordingHost(), {})
    try:
        root = modal_emulator.sandboxes[env.sandbox_id].root
        for _ in range(3):
            r = env.execute("print(len(context_0), context_1['k'][2])")
            assert r.stdout == f"{len(text)} 3\n", r.error
        sent = sum(len(r.data) for r in requests(modal_emulator, "TaskExecStdinWrite"))
        encoded = len(text.encode("utf-8"))
        assert encoded <= sent < encoded + 2**20  # once, not per cell
        rel = BASE_DIR.removeprefix("/tmp/")
        with open(os.path.join(root, rel, "ctx", "context_0.txt"), encoding="utf-8") as f:
            assert f.read() == text
    finally:
        env.shutdown()


def test_model_calls_from_inside_are_served_concurrently(modal_emulator):
    class SlowHost(RecordingHost):
        def llm_query(self, prompt, model=None, **kw):
            time.sleep(0.5)
            return super().llm_query(prompt, model, **kw)

    env = ModalREPL(app_name="my-rlm-app", timeout=600)
    env.start(SlowHost(), {})
    try:
        started_at = time.perf_counter()
        r = env.execute("print(llm_query_batched(['a', 'b', 'c', 'd']))")
        elapsed = time.perf_counter() - started_at
        assert r.error is None, r.error
        assert "llm:a" in r.stdout and "llm:d" in r.stdout
        assert elapsed < 1.5, f"4 calls of 0.5 s took {elapsed:.2f} s: not concurrent"
    finally:
        env.shutdown()


def test_a_persistent_session_keeps_one_sandbox(modal_emulator):
    env = started()
    try:
        first = env.sandbox_id
        env.add_context("second context", 1)
        env.add_history([{"role": "user", "content": "hi"}], 0)
        r = env.execute("print(context_1, history_0[0]['content'])")
        assert r.stdout == "second context hi\n"
        assert env.sandbox_id == first
    finally:
        env.shutdown()


class _FakeStdin:
    """The SDK's stdin writer as the transport uses it: ``write`` buffers, ``drain`` sends."""

    def __init__(self):
        self.buffer = b""
        self.sent: list[bytes] = []

    def write(self, data):
        assert len(self.buffer) + len(data) <= 16 * 2**20
        self.buffer += data

    def drain(self):
        self.sent.append(self.buffer)
        self.buffer = b""


class _FakeProcess:
    def __init__(self, stdout_chunks):
        self.stdin = _FakeStdin()
        self.gate = threading.Event()  # output flows (and then ends) once the test opens it
        self.stdout = self._gated(stdout_chunks)
        self.stderr = iter([b"line one\nline ", b"two\n"])

    def _gated(self, chunks):
        self.gate.wait(10)
        yield from chunks

    def wait(self):
        return 0


class _FakeSandbox:
    def __init__(self):
        self.terminations = 0

    def terminate(self):
        self.terminations += 1


@settings(max_examples=40, deadline=None)
@given(chunks=st.lists(st.binary(min_size=1, max_size=300), max_size=8),
       reads=st.lists(st.integers(min_value=1, max_value=500), min_size=1, max_size=10),
       payload=st.binary(max_size=3 * WRITE_PIECE // 2 + 7))
def test_transport_keeps_bytes_whole_both_ways(chunks, reads, payload):
    """Stand-in SDK objects (``_Fake*``) in place of Modal's; the real ones are used above."""
    sandbox, process = _FakeSandbox(), _FakeProcess(chunks)
    proc = ModalProcess(sandbox, process)
    proc.write(payload)
    assert b"".join(process.stdin.sent) == payload
    assert all(len(piece) <= WRITE_PIECE for piece in process.stdin.sent)
    process.gate.set()
    got, i = b"", 0
    while data := proc.read(reads[i % len(reads)]):
        got, i = got + data, i + 1
    assert got == b"".join(chunks)
    for thread in proc._threads:
        thread.join(5)
    assert proc.returncode() == 0
    assert proc.stderr_tail() == "line one\nline two"
    proc.kill()
    proc.kill()
    assert sandbox.terminations == 1
    with pytest.raises(BrokenPipeError):
        proc.write(b"x")


@settings(max_examples=25, deadline=None)
@given(worker=st.binary(max_size=5000), secret=st.text(alphabet="0123456789abcdef", min_size=1,
                                                        max_size=64))
def test_boot_payload_header_matches_what_boot_reads(worker, secret):
    payload = boot_payload(worker, secret.encode(), "/tmp/x y")
    head, _, rest = payload.partition(b"\n")
    size, secret_size, base = head.decode().split(" ", 2)
    assert base == "/tmp/x y"
    assert rest[:int(size)] == worker
    assert rest[int(size):int(size) + int(secret_size)] == secret.encode()
    assert len(rest) == int(size) + int(secret_size)


def test_boot_hands_the_rest_of_stdin_to_the_worker(tmp_path):
    """BOOT itself, run locally with a stand-in worker that echoes its stdin and environment."""
    import subprocess
    import sys

    fake_worker = (b"import os, sys\nsecret = os.environ.pop('RLM_WORKER_SECRET')\n"
                   b"sys.stdout.write(secret + '|' + ' '.join(sys.argv[1:]) + '|')\n"
                   b"sys.stdout.flush()\nos.write(1, os.read(0, 100))\n")
    base = str(tmp_path / "rlm")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", BOOT],
                         input=boot_payload(fake_worker, b"abc123", base) + b"channel-bytes",
                         capture_output=True, timeout=30, check=True).stdout
    assert out == b"abc123|--stdio|channel-bytes"
    assert os.path.isdir(os.path.join(base, "ctx")) and os.path.isdir(os.path.join(base, "work"))


def test_concurrent_environments_get_separate_sandboxes(modal_emulator):
    envs: list[ModalREPL] = []
    errors: list[BaseException] = []

    def one():
        try:
            envs.append(started())
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert not errors
        assert len({e.sandbox_id for e in envs}) == 3
        for i, env in enumerate(envs):
            assert env.execute(f"print({i})").stdout == f"{i}\n"
    finally:
        for env in envs:
            env.shutdown()
    assert all(modal_emulator.sandboxes[e.sandbox_id].terminated for e in envs)


def test_importing_rlm_and_the_plugin_does_not_import_the_sdk():
    assert packages_imported_by("import rlm, rlm_env_modal.plugin", ["modal"]) == []


def test_the_environment_is_registered_by_its_entry_point():
    import rlm_env_modal.plugin
    from rlm_testkit.helpers import isolated_plugin_manager

    entry = isolated_plugin_manager(rlm_env_modal.plugin).entry("environment", "modal")
    assert entry.name == "modal" and "Modal" in entry.description
