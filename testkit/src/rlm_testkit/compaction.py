"""Standard tests for compaction-strategy plugins.

    import rlm_compaction_extra.plugin
    from rlm_testkit import CompactionStrategyTests

    class TestDropOldest(CompactionStrategyTests):
        plugin = rlm_compaction_extra.plugin
        strategy_name = "drop-oldest"
        capabilities = {"uses_summary": False}
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rlm.protocols import CompactionStrategy

from ._core import StandardTests, property_test, requires
from .helpers import RecordingSink, isolated_plugin_manager, is_root_turn, scripted_rlm_reply

ROLES = ("system", "user", "assistant")


def history(turns: int, size: int = 400) -> list[dict[str, Any]]:
    """A root history: system prompt, context description, then ``turns`` exchanges."""
    msgs = [{"role": "system", "content": "SYSTEM PROMPT " + "s" * 50},
            {"role": "user", "content": "Your context is a str of 1000 characters."}]
    for i in range(turns):
        msgs.append({"role": "assistant", "content": f"turn {i} " + "a" * size})
        msgs.append({"role": "user", "content": f"REPL output {i} " + "u" * size})
    return msgs


def _chars(messages: list[dict[str, Any]]) -> int:
    return sum(len(str(m.get("content", ""))) for m in messages)


_turns = st.integers(min_value=3, max_value=30)


class CompactionStrategyTests(StandardTests, kit=True):
    """The contract of a compaction strategy: when to compact, and a valid, smaller history."""

    CAPABILITIES = {
        "uses_summary": (True, "compact() asks the kernel's summarize() for a summary"),
        "survives_summary_failure": (True, "compact() still returns a valid history when "
                                           "summarize() raises"),
    }
    REQUIRED = {
        "plugin": "the plugin module (or its dotted name) that registers the strategy",
        "strategy_name": "the name the plugin registers",
    }

    plugin: ClassVar[Any] = None
    strategy_name: ClassVar[str | None] = None
    #: Extra keyword arguments for the factory (the user's ``compaction_kwargs``).
    strategy_kwargs: ClassVar[dict[str, Any]] = {}

    @pytest.fixture
    def compaction_pm(self) -> Any:
        return isolated_plugin_manager(self.plugin, first_party=("local", "scripted"))

    @pytest.fixture
    def strategy(self, compaction_pm: Any) -> Any:
        return compaction_pm.create("compaction", self.strategy_name, threshold_pct=0.85,
                                    **self.strategy_kwargs)

    @staticmethod
    def summarize_stub(calls: list[list[dict[str, Any]]]) -> Any:
        def summarize(messages: Any) -> str:
            calls.append([dict(m) for m in messages])
            return "SUMMARY: found x = 1"
        return summarize

    def test_registers_its_name(self, compaction_pm: Any) -> None:
        entry = compaction_pm.entry("compaction", self.strategy_name)
        assert entry.description, "registrar.add(..., description='one line') is missing"

    def test_accepts_the_kernels_arguments(self, compaction_pm: Any) -> None:
        strategy = compaction_pm.create("compaction", self.strategy_name, threshold_pct=0.5,
                                        **self.strategy_kwargs)
        assert isinstance(strategy, CompactionStrategy), (
            f"{type(strategy).__name__} lacks should_compact() or compact()")

    def test_does_not_compact_a_short_history(self, strategy: Any) -> None:
        msgs = history(2, size=20)
        assert strategy.should_compact(msgs, tokens=100, context_window=128_000) is False

    def test_compacts_a_full_window(self, strategy: Any) -> None:
        msgs = history(20)
        assert strategy.should_compact(msgs, tokens=127_000, context_window=128_000) is True

    def test_compacting_is_monotonic_in_tokens(self, strategy: Any) -> None:
        @property_test(max_examples=25)
        @given(window=st.integers(min_value=1_000, max_value=2_000_000),
               fraction=st.floats(min_value=0.0, max_value=1.0))
        def check(window: int, fraction: float) -> None:
            msgs = history(10)
            tokens = int(window * fraction)
            if strategy.should_compact(msgs, tokens=tokens, context_window=window):
                assert strategy.should_compact(msgs, tokens=window, context_window=window), (
                    "should_compact() said yes at fewer tokens but no at a full window")

        check()

    def test_compact_returns_a_smaller_valid_history(self, strategy: Any) -> None:
        @property_test(max_examples=20)
        @given(turns=_turns)
        def check(turns: int) -> None:
            msgs = history(turns)
            before = copy.deepcopy(msgs)
            out = strategy.compact(msgs, summarize=self.summarize_stub([]))
            assert msgs == before, "compact() must not modify the list it was given"
            assert isinstance(out, list) and out
            for m in out:
                assert (isinstance(m, dict) and m.get("role") in ROLES
                        and isinstance(m.get("content"), str)), m
            assert _chars(out) < _chars(msgs), "the compacted history is not smaller"
            assert out[0] == msgs[0], "the system prompt must stay first and unchanged"
            assert out[-1]["role"] in ("user", "assistant")

        check()

    @requires("uses_summary")
    def test_summary_is_kept(self, strategy: Any) -> None:
        calls: list[list[dict[str, Any]]] = []
        out = strategy.compact(history(12), summarize=self.summarize_stub(calls))
        assert calls, "compact() never called summarize()"
        assert any("SUMMARY: found x = 1" in m["content"] for m in out), (
            "the summary written by the model is not in the compacted history")

    @requires("survives_summary_failure")
    def test_survives_a_failing_summary(self, strategy: Any) -> None:
        def failing(messages: Any) -> str:
            raise RuntimeError("the summary call overflowed")

        msgs = history(12)
        out = strategy.compact(msgs, summarize=failing)
        assert out and out[0] == msgs[0]
        assert _chars(out) < _chars(msgs)

    def test_compacts_inside_a_run(self, compaction_pm: Any) -> None:
        from rlm import RLM
        from rlm.events import Compacted

        sink = RecordingSink()
        state = {"turn": 0}
        strategy = self.strategy_name
        assert strategy is not None, "strategy_name is required (the kit checks it first)"

        def responder(messages: list[dict[str, Any]]) -> str:
            # Root turns and summary requests look alike to a backend: every reply works as both.
            if not is_root_turn(messages):
                return "SUMMARY: the answer is 7"
            state["turn"] += 1
            if state["turn"] < 4:
                return f"Turn {state['turn']}\n```repl\nprint('x' * 1500)\n```"
            return scripted_rlm_reply("seven")

        rlm = RLM(backend="scripted",
                  backend_kwargs={"responder": responder, "context_window": 2_000},
                  environment="local", compaction=True, compaction_strategy=strategy,
                  compaction_kwargs=dict(self.strategy_kwargs), max_iterations=8,
                  sinks=[sink], plugin_manager=compaction_pm)
        try:
            result = rlm.completion("a small context")
        finally:
            rlm.close()
        assert result.response == "seven"
        assert sink.of(Compacted), "the strategy never compacted a run that overflowed its window"
