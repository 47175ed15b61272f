"""Usage accounting and custom-tool normalisation."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rlm import ConfigurationError
from rlm._tools import RESERVED_NAMES, normalize_tools
from rlm._usage import UsageKey, UsageTracker
from rlm.types import Tool, Usage

usage = st.builds(Usage, st.integers(0, 10_000), st.integers(0, 10_000),
                  st.one_of(st.none(), st.floats(0, 5, allow_nan=False)))
keys = st.sampled_from([UsageKey(1, "openai", "gpt-a"), UsageKey(2, "openai#1", "gpt-a"),
                        UsageKey(1, "openai", "gpt-b"), UsageKey(3, "anthropic", "claude")])


@given(st.lists(st.tuples(keys, usage), max_size=60))
def test_totals_equal_the_sum_of_calls(calls):
    t = UsageTracker()
    for k, u in calls:
        t.record(k, u)
    s = t.summary()
    assert s.total_calls == len(calls)
    assert s.total_input_tokens == sum(u.input_tokens for _, u in calls)
    assert s.total_output_tokens == sum(u.output_tokens for _, u in calls)
    costs = [u.cost for _, u in calls if u.cost is not None]
    if costs:
        assert s.total_cost == pytest.approx(sum(costs))
    else:
        assert s.total_cost is None


def test_two_instances_with_one_model_name_are_never_merged():
    t = UsageTracker()
    for _ in range(2):
        t.record(UsageKey(1, "openai", "gpt-a"), Usage(10, 1))
        t.record(UsageKey(2, "openai#1", "gpt-a"), Usage(20, 2))
    s = t.summary().model_usage_summaries
    assert set(s) == {"gpt-a [openai]", "gpt-a [openai#1]"}
    assert s["gpt-a [openai]"].total_calls == 2 and s["gpt-a [openai#1]"].total_input_tokens == 40


def test_child_usage_reaches_every_ancestor():
    root = UsageTracker()
    child = UsageTracker(root)
    grandchild = UsageTracker(child)
    grandchild.record(UsageKey(1, "x", "m"), Usage(5, 5, 0.5))
    child.record(UsageKey(1, "x", "m"), Usage(1, 1, 0.1))
    assert root.calls == 2 and root.cost == pytest.approx(0.6) and root.total_tokens == 12
    assert child.calls == 2 and grandchild.calls == 1


def test_concurrent_records_are_all_counted():
    t = UsageTracker()
    key = UsageKey(1, "x", "m")

    def work():
        for _ in range(1000):
            t.record(key, Usage(1, 1))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert t.summary().total_calls == 8000 and t.total_tokens == 16000


def test_usage_summary_round_trips():
    t = UsageTracker()
    t.record(UsageKey(1, "x", "m"), Usage(3, 4, 0.25))
    s = t.summary()
    from rlm.types import UsageSummary

    assert UsageSummary.from_dict(s.to_dict()).to_dict() == s.to_dict()


def test_tool_forms():
    def f():
        """Doc line."""

    tools = normalize_tools({"f": f, "v": 3, "d": {"tool": f, "description": "described"},
                             "t": Tool("t", 1, "pre-built")})
    assert tools["f"] == Tool("f", f, None) and tools["v"].value == 3
    assert tools["d"].description == "described" and tools["t"].description == "pre-built"


@pytest.mark.parametrize("name", sorted(RESERVED_NAMES) + ["context_0", "history_12"])
def test_reserved_names(name):
    with pytest.raises(ConfigurationError, match="reserved"):
        normalize_tools({name: 1})


@pytest.mark.parametrize("bad,match", [
    ({"not an identifier": 1}, "identifier"),
    ({"x": {"tool": 1, "desc": "typo"}}, "unexpected keys"),
    ({"x": {"tool": 1, "description": 5}}, "must be a string"),
])
def test_bad_tools_have_actionable_errors(bad, match):
    with pytest.raises(ConfigurationError, match=match):
        normalize_tools(bad)


def test_tools_must_be_a_dict():
    with pytest.raises(ConfigurationError, match="must be a dict"):
        normalize_tools([1, 2])  # type: ignore[arg-type]
