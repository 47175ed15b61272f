"""The shared environment conformance class and the escape suite, run against pyodide."""

from __future__ import annotations

import os

import pytest

import rlm_env_pyodide.plugin
from rlm.exceptions import RLMEnvironmentError
from rlm_testkit.environments import EnvironmentTests, EscapeTests


def _missing() -> str | None:
    try:
        from rlm_env_pyodide.install import find_deno, find_pyodide

        find_pyodide()
        find_deno()
    except RLMEnvironmentError as exc:
        return str(exc)
    return None


REASON = _missing()
# In CI (scripts/ci/pyodide.sh installs Pyodide) a missing installation is a failure, not a skip.
pytestmark = pytest.mark.skipif(REASON is not None and os.environ.get("CI") != "true",
                                reason=REASON or "")


class TestPyodideConformance(EnvironmentTests):
    plugin = rlm_env_pyodide.plugin
    environment_name = "pyodide"
    environment_kwargs = {"memory_limit": "512m"}
    startup_seconds = 120.0
    capabilities = {"isolated": True, "threads": False, "callables_as_tools": False,
                    "memory_limit": True}


class TestPyodideEscapes(EscapeTests):
    plugin = rlm_env_pyodide.plugin
    environment_name = "pyodide"
    environment_kwargs = {"memory_limit": "512m"}
    startup_seconds = 120.0
