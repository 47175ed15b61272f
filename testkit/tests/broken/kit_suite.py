"""Kit subclasses for broken_impl, run in a subprocess by test_kit_catches_bugs.py."""

from __future__ import annotations

from typing import Any

import pytest

from rlm_testkit import (BackendTests, CompactionStrategyTests, EnvironmentTests,
                         InProcessProvider, LoggerSinkTests, OpenAICompatibleBackendTests,
                         ToolProviderTests)


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


class TestDropsFinishReason(_InProcess):
    backend_name = "dropsfinishreason"


class TestHidesErrorMessage(_InProcess):
    backend_name = "hideserrormessage"


class TestHeavyPluginModule(_InProcess):
    plugin = "heavy_plugins"
    backend_name = "good"


class _Http(OpenAICompatibleBackendTests):
    """broken_http's backends against the kit's OpenAI-compatible server on 127.0.0.1."""

    plugin = "broken_plugins"
    backend_kwargs = {"model_name": "kit-http", "api_key": "sk-kit-http"}
    no_retry_kwargs = {"max_retries": 0}
    capabilities = {"cost": True, "retries": True, "key_hidden": True}


class TestGoodHttp(_Http):
    backend_name = "goodhttp"


class TestNoModel(_Http):
    backend_name = "nomodel"


class TestNoKey(_Http):
    backend_name = "nokey"


class TestLeaksConnections(_Http):
    backend_name = "leaksconnections"


class TestNeverRetries(_Http):
    backend_name = "neverretries"


class TestShowsKey(_Http):
    backend_name = "showskey"


class _Local(EnvironmentTests):
    """Copies of the first-party local REPL (broken_envs)."""

    plugin = "broken_plugins"
    capabilities = {"isolated": False, "callables_as_tools": True, "memory_limit": False}


class TestZeroTime(_Local):
    environment_name = "zerotime"


class TestShowsEverything(_Local):
    environment_name = "showseverything"


class TestClaimsIsolation(_Local):
    environment_name = "claimsisolation"
    capabilities = {"isolated": True}  # and no EscapeTests class runs for it


class TestLeavesSidecar(EnvironmentTests):
    plugin = "broken_plugins"
    environment_name = "leavessidecar"
    environment_kwargs = {"memory_limit": None}
    capabilities = {"memory_limit": False, "callables_as_tools": False}


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
