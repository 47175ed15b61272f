"""``rlm_testkit.live``: live tests run only on ``RLM_LIVE_TESTS=1`` with every credential set,
and the skip reason always names what to set."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rlm_testkit.live import LIVE_FLAG, live_only, live_requested, live_skip_reason

VARS = ["ACME_API_KEY", "ACME_REGION"]


@pytest.fixture
def flag(monkeypatch):
    def set_flag(value: str | None) -> None:
        if value is None:
            monkeypatch.delenv(LIVE_FLAG, raising=False)
        else:
            monkeypatch.setenv(LIVE_FLAG, value)
    return set_flag


@pytest.mark.parametrize("value", [None, "", "0", "true", "yes", " 1"])
def test_anything_but_exactly_1_keeps_live_tests_off(flag, monkeypatch, value):
    flag(value)
    for name in VARS:
        monkeypatch.setenv(name, "set")
    assert not live_requested()
    reason = live_skip_reason("Acme", VARS)
    assert reason is not None
    assert f"{LIVE_FLAG}=1" in reason and "ACME_API_KEY and ACME_REGION" in reason
    assert "Acme" in reason


def test_on_with_every_credential(flag, monkeypatch):
    flag("1")
    for name in VARS:
        monkeypatch.setenv(name, "set")
    assert live_requested()
    assert live_skip_reason("Acme", VARS) is None
    mark = live_only("Acme", VARS)
    assert mark.name == "skipif" and mark.args == (False,)


@given(present=st.lists(st.sampled_from(VARS), unique=True))
def test_missing_credentials_are_named(present):
    environ = {name: ("x" if name in present else "") for name in VARS}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(LIVE_FLAG, "1")
        reason = live_skip_reason("Acme", VARS, environ=environ, hint="or `acme login`")
    missing = [name for name in VARS if name not in present]
    if not missing:
        assert reason is None
    else:
        assert reason is not None
        for name in VARS:
            assert (name in reason) == (name in missing)
        assert "or `acme login`" in reason


def test_environ_replaces_the_process_environment(flag, monkeypatch):
    flag("1")
    monkeypatch.setenv("ACME_API_KEY", "from-the-process")
    assert live_skip_reason("Acme", ["ACME_API_KEY"], environ={}) is not None
    assert live_skip_reason("Acme", ["ACME_API_KEY"], environ={"ACME_API_KEY": "kept"}) is None


def test_check_runs_last_and_only_when_live(flag):
    calls = []

    def check():
        calls.append(1)
        return "pointed at an emulator"

    flag(None)
    assert "RLM_LIVE_TESTS=1" in live_skip_reason("Acme", check=check)
    assert calls == []
    flag("1")
    assert live_skip_reason("Acme", ["ACME_API_KEY"], environ={}, check=check) != \
        "pointed at an emulator"
    assert calls == []
    mark = live_only("Acme", check=check)
    assert mark.args == (True,) and mark.kwargs["reason"] == "pointed at an emulator"
    assert calls == [1]
