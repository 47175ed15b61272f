"""rlm-testkit: the conformance kit for rlm plugins.

Subclass a standard test class, name your plugin and its parameters, and pytest runs the
standard tests against it::

    import my_backend.plugin
    from rlm_testkit import OpenAICompatibleBackendTests

    class TestMyBackend(OpenAICompatibleBackendTests):
        plugin = my_backend.plugin
        backend_name = "mine"

Classes: :class:`BackendTests` (and :class:`OpenAICompatibleBackendTests`),
:class:`EnvironmentTests`, :class:`ToolProviderTests`, :class:`CompactionStrategyTests`,
:class:`LoggerSinkTests`. Fixtures come from the ``pytest11`` plugin
(:mod:`rlm_testkit.pytest_plugin`): ``rlm_plugin_manager``, ``scripted_backend``,
``openai_server``, ``openai_provider``, ``recording_sink``.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from ._core import KitGuardError, StandardTests, requires, standard_tests, xfail_reason
from .backends import BackendTests, OpenAICompatibleBackendTests
from .compaction import CompactionStrategyTests
from .helpers import RecordingSink, is_root_turn, isolated_plugin_manager, scripted_rlm_reply
from .providers import (FAULTS, InProcessProvider, OpenAIServerProvider, ProviderRequest,
                        ScriptedProvider)
from .sinks import LoggerSinkTests, sample_events
from .tools import ToolProviderTests

__version__ = "0.1.0"

__all__ = [
    "FAULTS", "BackendTests", "CompactionStrategyTests", "EnvironmentTests", "InProcessProvider",
    "KitGuardError", "LoggerSinkTests", "OpenAICompatibleBackendTests", "OpenAIServerProvider",
    "ProviderRequest", "RecordingSink", "ScriptedProvider", "StandardTests", "ToolProviderTests",
    "is_root_turn", "isolated_plugin_manager", "requires", "sample_events", "scripted_rlm_reply",
    "standard_tests", "xfail_reason",
]


if importlib.util.find_spec(f"{__name__}.environments") is None:  # pragma: no cover
    __all__.remove("EnvironmentTests")


def __getattr__(name: str) -> Any:
    # The environment conformance class lives in its own module (rlm_testkit.environments),
    # imported on first use.
    if name in ("EnvironmentTests", "EscapeTests") and "EnvironmentTests" in __all__:
        from . import environments

        return getattr(environments, name)
    raise AttributeError(f"module 'rlm_testkit' has no attribute {name!r}")
