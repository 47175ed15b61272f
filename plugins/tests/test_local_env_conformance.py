"""The shared environment conformance class, run against the local environment."""

from __future__ import annotations

import rlm_plugins.local.plugin
from rlm_testkit.environments import EnvironmentTests


class TestLocalConformance(EnvironmentTests):
    plugin = rlm_plugins.local.plugin
    environment_name = "local"
    capabilities = {"isolated": False, "callables_as_tools": True, "memory_limit": False}
