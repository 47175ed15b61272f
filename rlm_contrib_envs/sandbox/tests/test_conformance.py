"""The shared environment conformance class, run against the sandbox."""

from __future__ import annotations

import os
import shutil

import pytest

import rlm_env_sandbox.plugin
from rlm_testkit.environments import EnvironmentTests

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None and os.environ.get("CI") != "true",
                                reason="bubblewrap is not installed (scripts/ci/sandbox.sh)")


class TestSandboxConformance(EnvironmentTests):
    plugin = rlm_env_sandbox.plugin
    environment_name = "sandbox"
    environment_kwargs = {"memory_limit": "512m"}
    capabilities = {"isolated": True, "callables_as_tools": False, "memory_limit": True}
