"""The shared environment conformance class and the escape suite, run against the sandbox."""

from __future__ import annotations

import os
import shutil

import pytest

import rlm_env_sandbox.plugin
from rlm_testkit.environments import EnvironmentTests, EscapeTests

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None and os.environ.get("CI") != "true",
                                reason="bubblewrap is not installed (scripts/ci/sandbox.sh)")


class TestSandboxConformance(EnvironmentTests):
    plugin = rlm_env_sandbox.plugin
    environment_name = "sandbox"
    environment_kwargs = {"memory_limit": "512m"}
    capabilities = {"isolated": True, "callables_as_tools": False, "memory_limit": True}


class TestSandboxEscapes(EscapeTests):
    plugin = "rlm_env_sandbox.plugin"
    environment_name = "sandbox"
    environment_kwargs = {"memory_limit": "512m", "disk_limit": "64m", "pids_limit": 32}


class TestSandboxWithoutCgroupEscapes(TestSandboxEscapes):
    """What a host that is not root gets: no memory or pids cgroup, only rlimits and the sizes
    of the sandbox's tmpfs."""

    environment_kwargs = {**TestSandboxEscapes.environment_kwargs, "cgroup": False}
