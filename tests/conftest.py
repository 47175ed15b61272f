"""Shared pytest fixtures (keep this file small and generic)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

PLUGIN_ENV_VARS = ("RLM_LOAD_PLUGINS", "RLM_DISABLE_PLUGINS", "RLM_TRACE_PLUGINS",
                   "RLM_STRICT_PLUGINS")


@pytest.fixture
def clean_plugin_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Unset the RLM_*_PLUGINS variables for one test (and reset the process-wide manager)."""
    for var in PLUGIN_ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    from rlm._manager import reset_plugin_manager

    reset_plugin_manager()
    yield monkeypatch
    reset_plugin_manager()
