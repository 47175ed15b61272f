"""Kit subclasses for broken_impl, run in a subprocess by test_kit_catches_bugs.py."""

from __future__ import annotations

from typing import Any

import pytest

from rlm_testkit import (BackendTests, CompactionStrategyTests, InProcessProvider,
                         LoggerSinkTests, ToolProviderTests)


class _InProcess(BackendTests):
    plugin = "broken_plugins"
    capabilities = {"cost": True}

    @pytest.fixture
    def provider(self) -> InProcessProvider:
        return InProcessProvider()

    def connect_kwargs(self, provider: Any) -> dict[str, Any]:
        return {"responder": provider.respond}


class TestGood(_InProcess):
    backend_name = "good"


class TestSwappedUsage(_InProcess):
    backend_name = "swappedusage"


class TestDropsSampling(_InProcess):
    backend_name = "dropssampling"


class TestWrapsErrors(_InProcess):
    backend_name = "wrapserrors"


class TestIgnoresTimeout(_InProcess):
    backend_name = "ignorestimeout"
    timeout_grace = 1.0  # fail sooner: this backend never times out


class TestSharedState(_InProcess):
    backend_name = "sharedstate"


class TestBlocksLoop(_InProcess):
    backend_name = "blocksloop"


class TestOverridesWithoutXfail(_InProcess):
    backend_name = "good"

    def test_usage_is_reported(self) -> None:  # "fixed" by overriding: the guard catches it
        pass


class TestGoodSink(LoggerSinkTests):
    plugin = "broken_plugins"
    sink_name = "good"


class TestRaisingSink(LoggerSinkTests):
    plugin = "broken_plugins"
    sink_name = "raises"


class TestMutatingCompaction(CompactionStrategyTests):
    plugin = "broken_plugins"
    strategy_name = "mutating"


class TestGoodTools(ToolProviderTests):
    plugin = "broken_plugins"
    provider_name = "good"
    tool_examples = {"shout": [(("hi",), {})]}


class TestReservedTools(ToolProviderTests):
    plugin = "broken_plugins"
    provider_name = "reserved"
