"""Standard tests for tool-provider plugins.

    import rlm_tools_web.plugin
    from rlm_testkit import ToolProviderTests

    class TestWebTools(ToolProviderTests):
        plugin = rlm_tools_web.plugin
        provider_name = "web"
        expected_tools = ("fetch", "search")
        tool_examples = {"fetch": [(("http://127.0.0.1:1/",), {})]}

``tool_examples`` maps a tool name to calls ``(args, kwargs)`` whose arguments are Python
literals; each is run on the host and inside a real REPL, and the two results must be equal.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from rlm.protocols import ToolProvider
from rlm.types import Tool

from ._core import StandardTests, requires
from .helpers import RecordingSink, isolated_plugin_manager, scripted_rlm_reply

#: Names the REPL owns; a provider must not use them.
RESERVED = frozenset({"llm_query", "llm_query_batched", "rlm_query", "rlm_query_batched",
                      "SHOW_VARS", "FINAL", "FINAL_VAR", "answer", "context", "history"})

RUN_SETTINGS = {"depth": 0, "max_depth": 1, "environment": "local", "backend": "scripted"}


class ToolProviderTests(StandardTests, kit=True):
    """The contract of a tool provider: valid tools, described, stable, usable in a REPL."""

    CAPABILITIES = {
        "descriptions": (True, "every tool has a description for the system prompt"),
        "callables": (True, "the tools are Python callables (not only values)"),
    }
    REQUIRED = {
        "plugin": "the plugin module (or its dotted name) that registers the provider",
        "provider_name": "the name the plugin registers",
    }

    plugin: ClassVar[Any] = None
    provider_name: ClassVar[str | None] = None
    #: Tool names the provider must offer (checked exactly when given).
    expected_tools: ClassVar[tuple[str, ...] | None] = None
    #: ``{tool: [(args, kwargs), ...]}``: calls run on the host and in the REPL, results compared.
    tool_examples: ClassVar[dict[str, list[tuple[tuple[Any, ...], dict[str, Any]]]]] = {}
    #: The run settings passed to ``tools(run)``.
    run_settings: ClassVar[dict[str, Any]] = RUN_SETTINGS

    @pytest.fixture
    def tool_pm(self) -> Any:
        return isolated_plugin_manager(self.plugin, first_party=("local", "scripted"))

    @pytest.fixture
    def tool_provider(self, tool_pm: Any) -> Any:
        return tool_pm.create("tool_provider", self.provider_name)

    @pytest.fixture
    def tools(self, tool_provider: Any) -> dict[str, Tool]:
        return dict(tool_provider.tools(dict(self.run_settings)))

    def test_registers_its_name(self, tool_pm: Any) -> None:
        entry = tool_pm.entry("tool_provider", self.provider_name)
        assert entry.description, "registrar.add(..., description='one line') is missing"
        assert isinstance(entry.options.get("default", False), bool), "default= must be True or False"

    def test_is_a_tool_provider(self, tool_provider: Any) -> None:
        assert isinstance(tool_provider, ToolProvider), (
            f"{type(tool_provider).__name__} has no tools(run) method")

    def test_tools_are_valid(self, tools: dict[str, Tool]) -> None:
        assert tools, "the provider offers no tools"
        for name, tool in tools.items():
            assert isinstance(tool, Tool), f"{name!r} maps to {type(tool).__name__}, not rlm.types.Tool"
            assert tool.name == name, f"key {name!r} holds Tool(name={tool.name!r})"
            assert name.isidentifier(), f"{name!r} is not a Python identifier"
            assert name not in RESERVED and not name.startswith(("context_", "history_")), (
                f"{name!r} is reserved by the REPL")

    def test_expected_tools_are_offered(self, tools: dict[str, Tool]) -> None:
        if self.expected_tools is None:
            pytest.skip(f"{type(self).__qualname__} sets no expected_tools")
        assert sorted(tools) == sorted(self.expected_tools)

    @requires("descriptions")
    def test_tools_are_described(self, tools: dict[str, Tool]) -> None:
        missing = [n for n, t in tools.items() if not (t.description and t.description.strip())]
        assert not missing, f"tools without a description: {missing}"

    @requires("callables")
    def test_tools_are_callable(self, tools: dict[str, Tool]) -> None:
        assert all(callable(t.value) for t in tools.values())

    def test_tools_are_stable_across_runs(self, tool_provider: Any) -> None:
        first = dict(tool_provider.tools(dict(self.run_settings)))
        second = dict(tool_provider.tools({**self.run_settings, "depth": 1}))
        assert sorted(first) == sorted(second)

    def _run_cells(self, tool_pm: Any, cells: list[str]) -> list[dict[str, Any]]:
        from rlm import RLM

        name = self.provider_name
        assert name is not None, "provider_name is required (the kit checks it first)"
        sink = RecordingSink()
        replies = [f"```repl\n{cell}\n```" for cell in cells] + [scripted_rlm_reply("done")]
        rlm = RLM(backend="scripted", backend_kwargs={"replies": replies}, environment="local",
                  tool_providers=[name], max_iterations=len(replies),
                  sinks=[sink], plugin_manager=tool_pm)
        try:
            result = rlm.completion("context for the tool provider tests")
        finally:
            rlm.close()
        assert result.response == "done"
        from rlm.events import CellExecuted

        results = [e.result for e in sink.of(CellExecuted)]
        assert len(results) == len(cells) + 1, f"expected {len(cells) + 1} cells, ran {len(results)}"
        return results[:len(cells)]

    def test_tools_reach_the_repl(self, tool_pm: Any, tools: dict[str, Tool]) -> None:
        names = sorted(tools)
        cells = self._run_cells(tool_pm, [f"print(sorted(set({names!r}) & set(dir())))"])
        assert cells and not cells[0]["error"], cells
        assert cells[0]["stdout"].strip() == repr(names)

    def test_examples_agree_inside_the_repl(self, tool_pm: Any, tools: dict[str, Tool]) -> None:
        if not self.tool_examples:
            pytest.skip(f"{type(self).__qualname__} declares no tool_examples")
        expected, cells = [], []
        for name, calls in self.tool_examples.items():
            assert name in tools, f"tool_examples names {name!r}, which the provider does not offer"
            for args, kwargs in calls:
                expected.append(repr(tools[name].value(*args, **kwargs)))
                cells.append(f"print(repr({name}(*{tuple(args)!r}, **{dict(kwargs)!r})))")
        results = self._run_cells(tool_pm, cells)
        got = [r["stdout"].rstrip("\n") if not r["error"] else r["error"] for r in results]
        assert got == expected
