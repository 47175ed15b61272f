"""The same suites against the real Daytona service: skipped unless ``RLM_LIVE_TESTS=1`` and
``DAYTONA_API_KEY`` are set (they create real sandboxes, billed to that account; CI never sets
them). ``DAYTONA_API_URL`` and ``DAYTONA_TARGET`` are honoured when set.

    RLM_LIVE_TESTS=1 DAYTONA_API_KEY=dtn_... .venv/bin/python -m pytest -q \\
        rlm_contrib_envs/daytona/tests/test_daytona_live.py
"""

from __future__ import annotations

import rlm_env_daytona.plugin
from _daytona_support import NOT_BLOCKED
from rlm_testkit.environments import EnvironmentTests, EscapeTests
from rlm_testkit.live import live_only

pytestmark = live_only("Daytona", ["DAYTONA_API_KEY"])

LIVE_KWARGS = {"memory_limit": "512m", "timeout": 180}


class TestDaytonaLiveConformance(EnvironmentTests):
    plugin = rlm_env_daytona.plugin
    environment_name = "daytona"
    environment_kwargs = LIVE_KWARGS
    capabilities = {"isolated": True, "callables_as_tools": False, "memory_limit": True}
    startup_seconds = 180.0


class TestDaytonaLiveEscapes(EscapeTests):
    plugin = rlm_env_daytona.plugin
    environment_name = "daytona"
    environment_kwargs = {**LIVE_KWARGS, "disk_limit": "64m"}
    not_blocked = NOT_BLOCKED
    startup_seconds = 180.0
