"""The shared environment conformance class and the escape suite, run against the real
``daytona`` SDK pointed at the local emulator (``daytona_emulator``)."""

from __future__ import annotations

import pytest
import rlm_env_daytona.plugin
from _daytona_support import BWRAP_REASON, NO_BWRAP, NOT_BLOCKED
from rlm_testkit.environments import EnvironmentTests, EscapeTests

from daytona_emulator import shared_emulator

pytestmark = pytest.mark.skipif(NO_BWRAP, reason=BWRAP_REASON)

EMULATOR = None if NO_BWRAP else shared_emulator()
EMULATED = {"api_url": EMULATOR.api_url if EMULATOR else "http://127.0.0.1:9/api",
            "api_key": EMULATOR.api_key if EMULATOR else "unused", "target": "us"}

class TestDaytonaConformance(EnvironmentTests):
    plugin = rlm_env_daytona.plugin
    environment_name = "daytona"
    environment_kwargs = {**EMULATED, "memory_limit": "512m"}
    capabilities = {"isolated": True, "callables_as_tools": False, "memory_limit": True}
    outlives_killed_host = ("a Daytona sandbox is deleted by its host; one whose host was killed "
                            "outright stays until its auto_stop_interval (15 minutes "
                            "of inactivity by default) stops it")


class TestDaytonaEscapes(EscapeTests):
    plugin = rlm_env_daytona.plugin
    environment_name = "daytona"
    environment_kwargs = {**EMULATED, "memory_limit": "512m", "disk_limit": "64m"}
    not_blocked = NOT_BLOCKED
