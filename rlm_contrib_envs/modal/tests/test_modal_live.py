"""The same suites against the real Modal service: run only with ``RLM_LIVE_TESTS=1`` and Modal
credentials (``MODAL_TOKEN_ID`` / ``MODAL_TOKEN_SECRET``, or ``modal setup``). Never in CI.

    RLM_LIVE_TESTS=1 MODAL_TOKEN_ID=ak-... MODAL_TOKEN_SECRET=as-... \\
        .venv/bin/python -m pytest -q rlm_contrib_envs/modal/tests/test_modal_live.py

Each test creates (and terminates) real sandboxes in the app ``rlm-live-tests``: it costs a
little compute time.
"""

from __future__ import annotations

import os

import modal
import pytest
import rlm_env_modal.plugin
from rlm_testkit.environments import EnvironmentTests, EscapeTests
from rlm_testkit.live import live_only

CREDENTIALS = ("MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET")


def _modal_credentials() -> dict[str, str | None]:
    """The token as the SDK resolves it: its variables, or the profile ``modal setup`` wrote."""
    config = modal.config.config
    return {"MODAL_TOKEN_ID": config.get("token_id"),
            "MODAL_TOKEN_SECRET": config.get("token_secret")}


def _not_an_emulator() -> str | None:
    if "127.0.0.1" in os.environ.get("MODAL_SERVER_URL", ""):
        return "MODAL_SERVER_URL points at an emulator, not at Modal"
    return None


pytestmark = [pytest.mark.live,
              live_only("Modal", CREDENTIALS, environ=_modal_credentials(),
                        check=_not_an_emulator, hint="or a profile from `modal setup`")]

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
