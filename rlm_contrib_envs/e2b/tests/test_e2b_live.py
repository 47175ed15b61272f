"""The same conformance class and escape suite against the real E2B service.

Skipped unless ``RLM_LIVE_TESTS=1`` and ``E2B_API_KEY`` are set (never in CI): each test creates
and deletes real sandboxes, which costs money and needs the network. Run them with::

    RLM_LIVE_TESTS=1 E2B_API_KEY=e2b_... .venv/bin/python -m pytest -q rlm_contrib_envs/e2b/tests/test_e2b_live.py
"""

from __future__ import annotations

import rlm_env_e2b.plugin
from _e2b_support import LIVE
from rlm_testkit.environments import EnvironmentTests, EscapeTests
from rlm_testkit.live import live_only

# _e2b_support took E2B_API_KEY out of the environment (nothing else may reach E2B): look there.
pytestmark = live_only("E2B", ["E2B_API_KEY"], environ={"E2B_API_KEY": LIVE["api_key"]})

LIVE_KWARGS = {**{k: v for k, v in LIVE.items() if v}, "memory_limit": "512m",
               "startup_timeout": 120.0}


class TestE2BLiveConformance(EnvironmentTests):
    plugin = rlm_env_e2b.plugin
    environment_name = "e2b"
    environment_kwargs = LIVE_KWARGS
    capabilities = {"isolated": True, "callables_as_tools": False, "memory_limit": True}
    startup_seconds = 120.0


class TestE2BLiveEscapes(EscapeTests):
    plugin = rlm_env_e2b.plugin
    environment_name = "e2b"
    environment_kwargs = {**LIVE_KWARGS, "disk_limit": "64m"}
    not_blocked = {
        "fork": "an E2B sandbox is a whole VM: cells may start processes inside it",
        "udp-and-raw": "an E2B sandbox has its own network stack: a datagram to 127.0.0.1 stays "
                       "in the sandbox",
    }
