"""The shared environment conformance class and the escape suite, run against docker."""

from __future__ import annotations

import os

import pytest

import rlm_env_docker.plugin
from rlm_env_docker.testing import ready, runsc_registered
from rlm_testkit.environments import EnvironmentTests, EscapeTests

IMAGE, REASON = ready()
pytestmark = pytest.mark.skipif(REASON is not None and os.environ.get("CI") != "true",
                                reason=REASON or "")


class TestDockerConformance(EnvironmentTests):
    plugin = rlm_env_docker.plugin
    environment_name = "docker"
    environment_kwargs = {"image": IMAGE or "rlm-python:3.11-local", "memory_limit": "512m",
                          "pull": "never"}
    capabilities = {"isolated": True, "callables_as_tools": False, "memory_limit": True}

    def host_resources(self, host_pid: int) -> list[str]:
        """The containers of that host still running."""
        import docker

        client = docker.from_env(version="auto")
        try:
            found = client.api.containers(filters={"label": f"org.rlm.host-pid={host_pid}"})
        finally:
            client.close()
        return [f"container {c['Id'][:12]} ({c.get('State')})" for c in found]


class TestDockerEscapes(EscapeTests):
    plugin = "rlm_env_docker.plugin"
    environment_name = "docker"
    environment_kwargs = {"image": IMAGE or "rlm-python:3.11-local", "pull": "never",
                          "memory_limit": "512m", "disk_limit": "64m", "pids_limit": 32}


@pytest.mark.skipif(not runsc_registered(),
                    reason="gVisor's runsc is not registered with the Docker daemon "
                           "(scripts/ci/docker.sh installs and registers it)")
class TestDockerGVisorEscapes(TestDockerEscapes):
    environment_kwargs = {**TestDockerEscapes.environment_kwargs, "runtime": "runsc"}
