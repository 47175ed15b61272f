"""The same suites against the real Modal service: run only with ``RLM_LIVE_TESTS=1`` and Modal
credentials (``MODAL_TOKEN_ID`` / ``MODAL_TOKEN_SECRET``, or ``modal setup``). Never in CI.

    RLM_LIVE_TESTS=1 MODAL_TOKEN_ID=ak-... MODAL_TOKEN_SECRET=as-... \\
        .venv/bin/python -m pytest -q rlm_contrib_envs/modal/tests/test_modal_live.py

Each test creates (and terminates) real sandboxes in the app ``rlm-live-tests``: it costs a
little compute time.
"""

from __future__ import annotations

import os

import pytest
import rlm_env_modal.plugin
from rlm_testkit.environments import EnvironmentTests, EscapeTests


def _live_reason() -> str | None:
    if os.environ.get("RLM_LIVE_TESTS") != "1":
        return "live Modal tests run only with RLM_LIVE_TESTS=1 (and Modal credentials)"
    if "127.0.0.1" in os.environ.get("MODAL_SERVER_URL", ""):
        return "MODAL_SERVER_URL points at an emulator, not at Modal"
    try:
        import modal
    except ImportError:
        return "the modal SDK is not installed"
    config = modal.config.config
    if not (config.get("token_id") and config.get("token_secret")):
        return "no Modal credentials (MODAL_TOKEN_ID / MODAL_TOKEN_SECRET, or `modal setup`)"
    return None


REASON = _live_reason()
pytestmark = [pytest.mark.live, pytest.mark.skipif(REASON is not None, reason=REASON or "")]

LIVE_KWARGS = {"app_name": "rlm-live-tests", "timeout": 600, "memory_limit": "512m",
               "startup_timeout": 300}
#: As on the emulator (see test_modal_conformance.MODAL_ALLOWS): the sandbox is the boundary.
LIVE_ALLOWS = {
    "fork": "processes may be started inside the sandbox; they stay in it",
    "namespaces-and-mounts": "the worker runs as the image's root user inside Modal's gVisor "
                             "container; the container is the boundary",
    "udp-and-raw": "datagrams to the sandbox's own loopback are allowed; with block_network "
                   "nothing leaves the sandbox",
}


class TestModalLiveConformance(EnvironmentTests):
    plugin = rlm_env_modal.plugin
    environment_name = "modal"
    environment_kwargs = LIVE_KWARGS
    capabilities = {"isolated": True, "callables_as_tools": False, "memory_limit": True}
    startup_seconds = 300.0


class TestModalLiveEscapes(EscapeTests):
    plugin = rlm_env_modal.plugin
    environment_name = "modal"
    environment_kwargs = {**LIVE_KWARGS, "disk_limit": "64m"}
    not_blocked = LIVE_ALLOWS
