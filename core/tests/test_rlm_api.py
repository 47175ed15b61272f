"""The public API through the scripted backend (no HTTP): constructor, results, limits, routing."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys

import pytest

import rlm
from rlm import RLM
from rlm.logger import RLMLogger


def repl(code: str) -> str:
    return f"```repl\n{code}\n```"


def scripted(replies=None, responder=None, **kw) -> RLM:
    bk = {"replies": replies} if replies is not None else {"responder": responder}
    bk.update(kw.pop("backend_extra", {}))
    return RLM(backend="scripted", backend_kwargs=bk, **kw)


def test_top_level_exports():
    for name in ("RLM", "BudgetExceededError", "TimeoutExceededError", "TokenLimitExceededError",
                 "ErrorThresholdExceededError", "CancellationError", "RLMChatCompletion",
                 "RLMLogger"):
        assert hasattr(rlm, name), name
    from rlm.logger import RLMLogger as L  # the spec's import path

    assert L is rlm.RLMLogger


def test_import_is_cheap():
    code = ("import sys, rlm; heavy=[m for m in ('openai','httpx','pluggy','rlm._rlm') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("kwargs,match", [
    ({"max_iterations": 0}, "max_iterations"),
    ({"max_depth": 0}, "max_depth"),
    ({"max_budget": -1}, "max_budget"),
    ({"max_timeout": 0}, "max_timeout"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_errors": 0}, "max_errors"),
    ({"max_concurrent_subcalls": 0}, "max_concurrent_subcalls"),
    ({"compaction_threshold_pct": 1.5}, "compaction_threshold_pct"),
    ({"other_backends": ["scripted"], "other_backend_kwargs": [{}, {}]}, "one kwargs dict per backend"),
    ({"on_iteration_start": 3}, "callable"),
    ({"tool_code": "def f(:"}, "tool_code"),
    ({"backend": 3}, "backend must be a str"),
])
def test_constructor_validation(kwargs, match):
    base = {"backend": "scripted", "backend_kwargs": {"replies": []}}
    base.update(kwargs)
    with pytest.raises(rlm.ConfigurationError, match=match):
        RLM(**base)


def test_scripted_backend_needs_a_script():
    r = RLM(backend="scripted")
    with pytest.raises(rlm.ConfigurationError, match="replies"):
        r.completion("x")


def test_wrong_backend_kwarg_names_the_plugin():
    r = RLM(backend="scripted", backend_kwargs={"replies": [], "api_kee": "x"})
    with pytest.raises(rlm.ConfigurationError, match="scripted.*api_kee"):
        r.completion("x")


def test_completion_at_max_depth_is_a_plain_call():
    r = scripted(["plain answer"], depth=1, max_depth=1)
    result = r.completion("question")
    assert result.response == "plain answer"
    assert result.depth == 1 and result.usage_summary.total_calls == 1


def test_scripted_backend_usage_and_sampling_args():
    r = scripted([repl("FINAL('x')")], sampling_args={"temperature": 0.1, "seed": 3})
    result = r.completion("q")
    backend, _ = r._default_backend()
    assert backend.sampling == [{"temperature": 0.1, "seed": 3}]
    s = result.usage_summary.model_usage_summaries["scripted"]
    assert s.total_calls == 1 and s.total_input_tokens > 0 and s.total_output_tokens > 0


def test_sub_sampling_args_apply_to_sub_calls():
    r = scripted(responder=lambda m: repl("answer.update(content=llm_query('q'), ready=True)")
                 if m[0]["role"] == "system" else "sub", sampling_args={"temperature": 0},
                 sub_sampling_args={"temperature": 1.0})
    assert r.completion("x").response == "sub"
    backend, _ = r._default_backend()
    assert backend.sampling == [{"temperature": 0}, {"temperature": 1.0}]


def test_other_backends_route_by_depth_and_name():
    root = {"responder": lambda m: repl(
        "answer.update(content=llm_query('a') + '|' + llm_query('b', model='named'), ready=True)")}
    r = RLM(backend="scripted", backend_kwargs=root,
            other_backends=["scripted", "scripted"],
            other_backend_kwargs=[{"replies": ["from depth-1 backend"], "model_name": "d1"},
                                  {"replies": ["from named backend"], "model_name": "named"}])
    result = r.completion("x")
    assert result.response == "from depth-1 backend|from named backend"
    assert set(result.usage_summary.model_usage_summaries) == {"scripted", "d1", "named"}


def test_budget_counts_children_and_child_gets_remaining_budget():
    seen_budgets = []

    def responder(messages):
        if messages[0]["role"] != "system":
            return "leaf"
        if "child" in messages[1]["content"] or "5 total characters" in messages[1]["content"]:
            return repl("answer.update(content='c', ready=True)")
        return repl("r = rlm_query('child')\nanswer.update(content=r, ready=True)")

    r = RLM(backend="scripted", backend_kwargs={"responder": responder, "prices": (1e6, 0)},
            max_depth=2, max_budget=10_000.0)
    orig = r._spawn_child

    def spy(run, model):
        child = orig(run, model)
        seen_budgets.append((child.max_budget, run.tracker.cost))
        return child

    r._spawn_child = spy
    result = r.completion("the root context")
    assert result.response == "c"
    (child_budget, spent_before), = seen_budgets
    assert child_budget == pytest.approx(10_000.0 - spent_before)
    # root's usage includes the child's call
    assert result.usage_summary.total_calls == 2
    assert result.usage_summary.total_cost == pytest.approx(
        sum(s.total_input_tokens for s in result.usage_summary.model_usage_summaries.values()))


def test_budget_exhausted_inside_a_child_stops_the_root():
    def responder(messages):
        if "5 total characters" in messages[1]["content"]:  # the child
            return repl("print('child working')")
        return repl("r = rlm_query('child')\nprint(r)")

    r = RLM(backend="scripted", backend_kwargs={"responder": responder, "prices": (1e6, 0)},
            max_depth=2, max_budget=3000.0, max_iterations=50)
    with pytest.raises(rlm.BudgetExceededError) as info:
        r.completion("the root context")
    assert info.value.spent > 3000.0


def test_acompletion():
    r = scripted([repl("FINAL('async ok')")])
    assert asyncio.run(r.acompletion("q")).response == "async ok"


def test_closed_rlm_refuses_work():
    r = scripted(["FINAL(1)"])
    r.close()
    with pytest.raises(rlm.RLMError, match="closed"):
        r.completion("q")


def test_verbose_console_sink(capsys):
    r = scripted([repl("print('visible')"), "FINAL(done)"], verbose=True)
    r.completion("q")
    err = capsys.readouterr().err
    assert "turn 1" in err and "out: visible" in err and "finished (completed)" in err


def test_broken_sink_never_breaks_the_run():
    class Broken:
        def handle(self, event):
            raise RuntimeError("sink down")

    r = scripted(["FINAL(fine)"], sinks=[Broken()])
    with pytest.warns(RuntimeWarning, match="sink"):
        assert r.completion("q").response == "fine"


def test_memory_logger_and_metadata():
    logger = RLMLogger()
    r = scripted([repl("x = 1"), "FINAL(done)"], logger=logger)
    result = r.completion("ctx")
    assert logger.log_file_path is None
    traj = result.metadata
    assert traj["run_metadata"]["prompt"] == "ctx"
    assert [i["iteration"] for i in traj["iterations"]] == [1, 2]
    assert traj["result"]["status"] == "completed"


def test_jsonl_survives_a_crash_mid_run(tmp_path):
    logger = RLMLogger(log_dir=tmp_path)
    boom = RuntimeError("backend exploded")
    r = scripted([repl("print('step one')"), boom], logger=logger)
    with pytest.raises(RuntimeError):
        r.completion("ctx")
    records = [json.loads(line) for line in open(logger.log_file_path)]
    assert [x["type"] for x in records] == ["metadata", "iteration", "result"]
    assert records[1]["code_blocks"][0]["result"]["stdout"] == "step one\n"
    assert records[2]["status"] == "error" and "backend exploded" in records[2]["error"]


def test_tool_providers_contribute_tools():
    r = scripted([repl("answer.update(content=str(len(chunk_text('a'*10, size=3))), ready=True)")],
                 tool_providers=["context"])
    assert r.completion("q").response == "4"


def test_unknown_tool_provider():
    with pytest.raises(rlm.UnknownPluginError, match="tool provider"):
        scripted(["x"], tool_providers=["nope"])


def test_tool_code_runs_before_the_first_turn():
    r = scripted([repl("answer.update(content=helper(2), ready=True)")],
                 tool_code="def helper(x):\n    return str(x * 21)")
    assert r.completion("q").response == "42"


def test_compaction_summarises_and_keeps_history():
    calls = {"n": 0}

    def responder(messages):
        calls["n"] += 1
        last = messages[-1]["content"]
        if "Summarise the work so far" in last:
            return "SUMMARY: x is 5"
        if any("SUMMARY: x is 5" in m["content"] for m in messages):
            return repl("answer.update(content=f'{len(history)} msgs in history', ready=True)")
        return repl("x = 5\nprint('a' * 400)")

    r = RLM(backend="scripted", backend_kwargs={"responder": responder, "context_window": 1000},
            compaction=True, compaction_threshold_pct=0.5, max_iterations=10)
    result = r.completion("q")
    assert result.response.endswith("msgs in history")
    assert int(result.response.split()[0]) >= 4


def test_plain_text_console_sink_is_a_plugin():
    pm = rlm.get_plugin_manager()
    entry = pm.entry("sink", "console")
    assert entry.distribution == "rlm-plugins"
    buf = io.StringIO()
    sink = entry.load()(stream=buf)
    r = scripted(["FINAL(x)"], sinks=[sink])
    r.completion("q")
    assert "finished (completed)" in buf.getvalue()
