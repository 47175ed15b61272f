"""The whole E2B flow as the real SDK drives it, asserted on the emulator's record of requests:
create, upload, start the worker, cells and helper calls over stdin/stdout, delete."""

from __future__ import annotations

import threading
import time

import pytest
from _e2b_support import EMULATOR, emulator_kwargs, needs_bwrap
from hypothesis import given, settings
from hypothesis import strategies as st
from rlm.types import Tool
from rlm_env_e2b.env import E2BREPL
from rlm_testkit.environments import RecordingHost

pytestmark = needs_bwrap


def started(host=None, tools=None, **kw) -> E2BREPL:
    env = E2BREPL(**emulator_kwargs(**kw))
    env.start(host or RecordingHost(), tools or {})
    return env


def records(sandbox_id: str):
    return [r for r in EMULATOR.requests if r.sandbox_id == sandbox_id]


def test_create_upload_execute_delete_in_order():
    host = RecordingHost()
    env = started(host, metadata={"case": "flow"}, envs={"GREETING": "hi"})
    sid = env.sandbox_id
    try:
        env.add_context("the context", 0)
        r = env.execute("import os\nprint(context.upper(), llm_query('ping'), "
                        "os.environ.get('GREETING'), os.getcwd())")
        assert r.error is None, r.error
        assert r.stdout.split() == ["THE", "CONTEXT", "llm:ping", "hi", "/home/user"]
    finally:
        env.shutdown()
    ops = [op for op in EMULATOR.ops(sid) if op != "health"]
    assert ops[:3] == ["create", "upload", "start"]
    assert ops[-2:] == ["send_signal", "kill"]  # the worker stopped, then the sandbox deleted
    assert set(ops[3:-2]) == {"send_input"}
    sandbox = EMULATOR.sandboxes[sid]
    assert not sandbox.alive and sid not in EMULATOR.live_sandboxes()
    assert sandbox.metadata == {"rlm_environment": "e2b", "case": "flow"}
    assert sandbox.env_vars == {"GREETING": "hi"}  # nothing of the host's environment
    assert sandbox.allow_internet is False
    create, upload, start = records(sid)[:3]
    assert create.headers["x-api-key"] == EMULATOR.api_key
    assert "template=code-interpreter-v1 timeout=600" in create.summary
    assert "/home/user/.rlm/worker.py" in upload.summary
    assert "/home/user/.rlm/secret (64 B)" in upload.summary
    assert upload.headers["x-access-token"] == sandbox.access_token
    assert "--stdio --text --secret-file" in start.summary and " -I -S " in start.summary
    assert host.calls == [("llm_query", "ping", None)]


def test_the_secret_does_not_stay_on_the_sandbox_disk():
    env = started()
    try:
        host_path = EMULATOR.sandboxes[env.sandbox_id].host_path("/home/user/.rlm/secret")
        r = env.execute("import os\nprint(sorted(os.listdir('/home/user/.rlm')))")
        assert r.error is None, r.error
        assert "secret" not in r.stdout and "worker.py" in r.stdout
        import os

        assert host_path is not None and not os.path.exists(host_path)
    finally:
        env.shutdown()


def test_state_lives_in_one_worker_and_the_context_crosses_once():
    env = started()
    sid = env.sandbox_id
    text = "x" * 300_000
    try:
        env.add_context(text, 0)
        before = [r for r in records(sid) if r.op == "send_input"]
        for i in range(5):
            r = env.execute(f"n = {i} if {i} == 0 else n + 1\nprint(n, len(context))")
            assert r.stdout.split() == [str(i), str(len(text))]
    finally:
        env.shutdown()
    starts = [r for r in records(sid) if r.op == "start"]
    assert len(starts) == 1  # one long-lived interpreter, never restarted or re-pickled
    sent = sum(int(r.summary.split(" B")[0].rsplit(" ", 1)[1])
               for r in records(sid) if r.op == "send_input")
    after_context = sum(int(r.summary.split(" B")[0].rsplit(" ", 1)[1])
                        for r in records(sid) if r.op == "send_input" and r not in before)
    assert sent >= len(text) * 4 // 3  # base64 of the context went in ...
    assert after_context < len(text) // 10  # ... once: the cells themselves carry no context


def test_helper_calls_from_threads_are_served_concurrently():
    host = RecordingHost()
    host.delay = 0.6
    env = started(host)
    try:
        t0 = time.perf_counter()
        r = env.execute("import threading\nout = []\n"
                        "ts = [threading.Thread(target=lambda i=i: out.append(llm_query(str(i))))"
                        " for i in range(4)]\n[t.start() for t in ts]\n[t.join() for t in ts]\n"
                        "print(sorted(out))")
        elapsed = time.perf_counter() - t0
        assert r.error is None, r.error
        assert r.stdout.strip() == str(sorted(f"llm:{i}" for i in range(4)))
        assert elapsed < 4 * 0.6, f"calls were served one after another ({elapsed:.2f} s)"
        r = env.execute("print(rlm_query('deep'), llm_query_batched(['a', 'b']))")
        assert r.stdout.strip() == "rlm:deep ['llm:a', 'llm:b']"
    finally:
        env.shutdown()


def test_tools_cross_as_code_strings_and_json_values():
    env = started(tools={"double": Tool("double", "def double(x):\n    return 2 * x"),
                         "limits": Tool("limits", {"max": 3, "names": ["a"]})})
    try:
        r = env.execute("print(double(21), limits['max'], limits['names'])")
        assert r.stdout.strip() == "42 3 ['a']"
    finally:
        env.shutdown()


def test_a_long_run_extends_the_sandbox_lifetime():
    env = started(timeout=40)
    sid = env.sandbox_id
    try:
        env._touched -= 25  # more than half of the lifetime has passed since the last extension
        assert env.execute("print(1)").stdout.strip() == "1"
        extended = [r for r in records(sid) if r.op == "set_timeout"]
        assert len(extended) == 1 and extended[0].summary == "timeout=40"
        assert env.execute("print(2)").stdout.strip() == "2"  # no second extension yet
        assert len([r for r in records(sid) if r.op == "set_timeout"]) == 1
    finally:
        env.shutdown()


@settings(max_examples=5, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=3000))
def test_any_output_text_comes_back_intact(text):
    env = _shared()
    env.add_context(text, 0)
    r = env.execute("import sys\nsys.stdout.write(context)")
    assert r.error is None and r.stdout == text


_SHARED: list[E2BREPL] = []
_SHARED_LOCK = threading.Lock()


def _shared() -> E2BREPL:
    with _SHARED_LOCK:
        if not _SHARED:
            _SHARED.append(started())
        return _SHARED[0]


@pytest.fixture(scope="module", autouse=True)
def _close_shared():
    yield
    for env in _SHARED:
        env.shutdown()
