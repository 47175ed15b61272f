"""Batch runs (rlm.batch, rlm batch) on the threads executor, and rlm_query_batched children on
an executor (RLM(subcall_executor=...)): real RLM loops, the scripted backend or a real HTTP
server on 127.0.0.1 as the model."""

from __future__ import annotations

import json
import re
import threading

import pytest
from hypothesis import given, settings, strategies as st

import rlm
from rlm import RLM, BudgetExceededError, ConfigurationError
from rlm_cli.batching import OutputFile, read_items
from rlm_cli.cli import main

CALLS: list[str] = []
_lock = threading.Lock()


def answer_length(messages):
    """Root of a batch line: answers with the length of its context (or fails on demand)."""
    ctx = messages[1]["content"]
    n = int(re.search(r"with (\d+) total characters", ctx).group(1))
    with _lock:
        CALLS.append(ctx)
    if n == 13:  # the prompt "please fail!!" (13 characters): this line's backend fails
        from rlm.exceptions import ServerError
        raise ServerError("scripted failure", backend="scripted", model="scripted")
    return "```repl\nFINAL(str(len(context)))\n```"


def write_input(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


SCRIPTED = {"backend": "scripted", "backend_kwargs": {"responder": answer_length}}


def test_batch_records_every_line_with_its_tag_and_errors(tmp_path):
    rows = [{"prompt": "x" * (i + 1), "id": f"t{i}"} for i in range(6)]
    rows.insert(2, {"prompt": "please fail!!"})
    rows.insert(4, {"prompt": "y", "settings": {"max_itrations": 3}})
    rows.insert(5, {"no_prompt": 1})
    inp = write_input(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    report = rlm.batch(inp, output=out, concurrency=3, **SCRIPTED)
    recs = records(out)
    assert sorted(r["index"] for r in recs) == list(range(9))  # every line exactly once
    assert [r["line"] for r in report.results] == list(range(1, 10))
    by = {r["index"]: r for r in recs}
    assert by[0]["status"] == "ok" and by[0]["response"] == "1" and by[0]["id"] == "t0"
    assert by[0]["usage_summary"]["total_calls"] == 1
    assert by[2]["status"] == "error" and "ServerError" in by[2]["error"]
    assert by[4]["status"] == "error" and "max_itrations" in by[4]["error"]
    assert by[5]["status"] == "error" and '"prompt"' in by[5]["error"]
    assert (report.succeeded, report.failed, report.ran, report.skipped) == (6, 3, 9, 0)
    # The failing line's call raised before returning usage: six calls, as the records say.
    assert report.usage["scripted"]["total_calls"] == 6 == sum(
        r.get("usage_summary", {}).get("total_calls", 0) for r in recs)


def test_resume_skips_done_lines_and_drops_a_torn_tail(tmp_path):
    rows = [{"prompt": "z" * (i + 1)} for i in range(8)]
    inp = write_input(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    first = rlm.batch(rows[:5], **SCRIPTED)  # the same items, run elsewhere: not in `out`
    assert first.succeeded == 5
    # An interrupted earlier run: three complete records and a torn fourth.
    rlm.batch(inp, output=out, **SCRIPTED)
    complete = out.read_text().splitlines(keepends=True)
    out.write_text("".join(complete[:3]) + complete[3][:17])
    CALLS.clear()
    report = rlm.batch(inp, output=out, ordered=True, **SCRIPTED)
    assert report.skipped == 3 and report.ran == 5 and len(CALLS) == 5
    recs = records(out)
    assert [r["index"] for r in recs] == list(range(8))  # ordered, nothing twice, nothing lost
    assert [r["response"] for r in recs] == [str(i + 1) for i in range(8)]
    CALLS.clear()
    again = rlm.batch(inp, output=out, **SCRIPTED)
    assert again.ran == 0 and again.skipped == 8 and CALLS == []


def test_retry_errors_reruns_only_failed_lines_and_last_record_wins(tmp_path):
    inp = write_input(tmp_path / "in.jsonl", [{"prompt": "a"}, {"prompt": "please fail!!"}])
    out = tmp_path / "out.jsonl"
    assert rlm.batch(inp, output=out, **SCRIPTED).failed == 1
    CALLS.clear()
    report = rlm.batch(inp, output=out, retry_errors=True, **SCRIPTED)
    assert report.ran == 1 and len(CALLS) == 1 and report.failed == 1
    assert [r["index"] for r in report.results] == [0, 1]


def test_output_of_another_input_is_refused(tmp_path):
    out = tmp_path / "out.jsonl"
    rlm.batch(write_input(tmp_path / "a.jsonl", [{"prompt": "a"}]), output=out, **SCRIPTED)
    with pytest.raises(ConfigurationError, match="different input"):
        rlm.batch(write_input(tmp_path / "b.jsonl", [{"prompt": "b"}]), output=out, **SCRIPTED)
    (tmp_path / "junk.jsonl").write_text("hello\n")
    with pytest.raises(ConfigurationError, match="not a record of rlm batch"):
        rlm.batch(["a"], output=tmp_path / "junk.jsonl", **SCRIPTED)


def test_bad_input_and_settings_are_actionable(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\n{"prompt": \n')
    with pytest.raises(ConfigurationError, match=r"bad.jsonl:2 is not valid JSON"):
        read_items(bad)
    with pytest.raises(ConfigurationError, match="unknown RLM arguments"):
        rlm.batch(["a"], max_iteratons=2, **SCRIPTED)
    # An unknown name: what is installed and `rlm plugins`, never a guessed pip line.
    with pytest.raises(rlm.UnknownPluginError, match="rlm plugins") as unknown:
        rlm.batch(["a"], executor="dask", **SCRIPTED)
    assert "pip install" not in str(unknown.value)


def test_per_line_settings_override_the_batch(tmp_path):
    rep = rlm.batch([{"prompt": "abc", "settings": {"backend_kwargs": {"model_name": "other"}}},
                     "abcd"], **SCRIPTED)
    assert [r["root_model"] for r in rep.results] == ["other", "scripted"]
    assert set(rep.usage) == {"other", "scripted"}


@settings(max_examples=40, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(["a", "b", "é"]), st.integers() | st.text()),
                min_size=1, max_size=6),
       st.integers(min_value=1, max_value=60))
def test_output_file_keeps_complete_records_through_a_torn_write(tmp_path_factory, extras, cut):
    path = tmp_path_factory.mktemp("o") / "out.jsonl"
    f = OutputFile(path)
    for i, extra in enumerate(extras):
        f.append({**extra, "index": i})
    f.close()
    data = path.read_bytes()
    last_start = data.rstrip(b"\n").rfind(b"\n") + 1
    torn = data[:last_start] + data[last_start:][:max(0, len(data) - last_start - 1)][:cut]
    path.write_bytes(torn)
    again = OutputFile(path)
    assert sorted(again.records) == list(range(len(extras) - 1))
    assert path.read_bytes() == data[:last_start]  # the torn tail was cut away


def test_cli_batch_against_a_real_http_model(tmp_path):
    from rlm_testkit.servers import OpenAICompatibleServer

    def responder(messages, body):
        n = re.search(r"with (\d+) total characters", messages[1]["content"]).group(1)
        return f"```repl\nFINAL('n={n}')\n```"

    inp = write_input(tmp_path / "in.jsonl", [{"prompt": "q" * k} for k in (1, 2, 3)] + ["hello"])
    out = tmp_path / "out.jsonl"
    with OpenAICompatibleServer(responder=responder) as srv:
        code = main(["batch", str(inp), "-o", str(out), "--backend", "openai", "--model", "m",
                     "--base-url", srv.base_url, "--backend-arg", "api_key=test", "-j", "2",
                     "--ordered", "--no-progress"])
        assert code == 0
        assert [r["response"] for r in records(out)] == ["n=1", "n=2", "n=3", "n=5"]
        assert main(["batch", str(inp), "-o", str(out), "--backend", "openai", "--model", "m",
                     "--base-url", srv.base_url, "--backend-arg", "api_key=test"]) == 0
        assert len(srv.requests) == 4  # the rerun skipped every line


# -- rlm_query_batched children on an executor ------------------------------------------------


def fan_out(messages):
    ctx = messages[1]["content"]
    n = int(re.search(r"with (\d+) total characters", ctx).group(1))
    if n >= 20:  # the root: fan out, then answer with what the children said
        if any("REPL output" in m["content"] for m in messages if m["role"] == "user"):
            return "```repl\nFINAL('|'.join(r))\n```"
        return "```repl\nr = rlm_query_batched(['a', 'bb', 'ccc'])\nprint(r)\n```"
    return "```repl\nFINAL('child' + str(len(context)))\n```"


def test_children_on_an_executor_report_usage_into_the_root():
    seen = []
    with RLM(backend="scripted", backend_kwargs={"responder": fan_out, "prices": (1.0, 1.0)},
             max_depth=2, subcall_executor="threads",
             on_subcall_complete=lambda d, m, dt, err: seen.append((d, err))) as r:
        res = r.completion("r" * 40)
    assert res.response == "child1|child2|child3"
    assert seen == [(1, None)] * 3
    # 2 root turns + 3 children of one turn each, all in the root's usage
    assert res.usage_summary.total_calls == 5
    assert res.usage_summary.to_dict()["model_usage_summaries"].keys() == {"scripted"}


def test_the_root_budget_holds_over_remote_children():
    with RLM(backend="scripted", backend_kwargs={"responder": fan_out, "prices": (1.0, 1.0)},
             max_depth=2, subcall_executor="threads", max_concurrent_subcalls=1,
             max_budget=0.0025) as r:  # the root's first turn (~0.0008) + about two children
        with pytest.raises(BudgetExceededError) as info:
            r.completion("r" * 40)
    assert "0.0025" in str(info.value)
