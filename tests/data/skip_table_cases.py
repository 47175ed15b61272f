"""Skips with the reasons the suite gives, run by tests/test_skip_table.py (not collected itself)."""

import pytest


@pytest.mark.parametrize("n", range(3))
def test_needs_bubblewrap(n):
    pytest.skip("bubblewrap is not installed (scripts/ci/sandbox.sh)")


def test_needs_docker():
    pytest.skip("no Docker daemon reachable (DockerException); scripts/ci/docker.sh starts one")


def test_live():
    pytest.skip("live Modal tests: set RLM_LIVE_TESTS=1 and MODAL_TOKEN_ID to run them")


def test_capability_off():
    pytest.skip("capability 'threads' is off for TestPyodideConformance (cells may start threads)")


def test_runs():
    pass
