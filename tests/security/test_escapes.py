"""The escape suite: every attempt of ``rlm_testkit.environments.ESCAPE_ATTEMPTS`` against each
environment. Isolated environments must block all of them; the local environment lists what it
does not block (the same list is in plugins/README.md), and those attempts are never run.
"""

from __future__ import annotations

import os
import shutil

import pytest

import rlm_plugins.local.plugin
from rlm_testkit.environments import ESCAPE_ATTEMPTS, EscapeTests

_IN_PROCESS = "cells run in the host process with the full builtins: not a security boundary"

LOCAL_NOT_BLOCKED = {a.id: _IN_PROCESS for a in ESCAPE_ATTEMPTS}


class TestLocalEscapes(EscapeTests):
    plugin = rlm_plugins.local.plugin
    environment_name = "local"
    not_blocked = LOCAL_NOT_BLOCKED


@pytest.mark.skipif(shutil.which("bwrap") is None and os.environ.get("CI") != "true",
                    reason="bubblewrap is not installed (scripts/ci/sandbox.sh installs it)")
class TestSandboxEscapes(EscapeTests):
    plugin = "rlm_env_sandbox.plugin"
    environment_name = "sandbox"
    environment_kwargs = {"memory_limit": "512m", "disk_limit": "64m", "pids_limit": 32}


@pytest.mark.skipif(shutil.which("bwrap") is None and os.environ.get("CI") != "true",
                    reason="bubblewrap is not installed (scripts/ci/sandbox.sh installs it)")
class TestSandboxWithoutCgroupEscapes(TestSandboxEscapes):
    """What a host that is not root gets: no memory or pids cgroup, only rlimits and the sizes
    of the sandbox's tmpfs."""

    environment_kwargs = {**TestSandboxEscapes.environment_kwargs, "cgroup": False}


def _docker_image() -> tuple[str | None, str | None]:
    try:
        from rlm_env_docker.testing import ready
    except ImportError:
        return None, "rlm-env-docker is not installed"
    return ready()


_DOCKER_IMAGE, _DOCKER_REASON = _docker_image()


@pytest.mark.skipif(_DOCKER_REASON is not None and os.environ.get("CI") != "true",
                    reason=_DOCKER_REASON or "")
class TestDockerEscapes(EscapeTests):
    plugin = "rlm_env_docker.plugin"
    environment_name = "docker"
    environment_kwargs = {"image": _DOCKER_IMAGE or "rlm-python:3.11-local", "pull": "never",
                          "memory_limit": "512m", "disk_limit": "64m", "pids_limit": 32}


def _runsc_registered() -> bool:
    if _DOCKER_IMAGE is None:
        return False
    import docker

    client = docker.from_env(version="auto")
    try:
        return "runsc" in (client.api.info().get("Runtimes") or {})
    finally:
        client.close()


@pytest.mark.skipif(not _runsc_registered(),
                    reason="gVisor's runsc is not registered with the Docker daemon "
                           "(scripts/ci/docker.sh installs and registers it)")
class TestDockerGVisorEscapes(TestDockerEscapes):
    environment_kwargs = {**TestDockerEscapes.environment_kwargs, "runtime": "runsc"}
