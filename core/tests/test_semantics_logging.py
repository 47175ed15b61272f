"""Trajectories and logger sinks: RLMLogger's JSONL survives a crash, the context is stored once,
and the first-party sinks (jsonl, structlog, the rich console) are plugins that see every depth."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap

import pytest
import structlog

import rlm
from rlm import RLM
from rlm.logger import RLMLogger
from rlm_testkit.servers import OpenAICompatibleServer

from _semantics_support import context_chars, is_rlm_turn, make_rlm, repl, turn_no
from rlm_plugins.sinks.jsonl import JSONLSink, read_events


@pytest.fixture
def server():
    with OpenAICompatibleServer(model="root-model") as srv:
        yield srv


def two_level_answer(messages, body):
    if not is_rlm_turn(messages):
        return "plain"
    if context_chars(messages) == len("child-task"):
        return repl("x = llm_query('leaf')\nanswer.update(content='child:' + x, ready=True)")
    if turn_no(messages) == 0:
        return repl("print('looking')\nr = rlm_query('child-task')\nprint(r)")
    return "FINAL(all done)"


def test_crash_mid_run_leaves_a_readable_jsonl(server, tmp_path):
    """The process dies (os._exit) in the third turn: both JSONL files hold every record up to
    the crash, one valid JSON object per line."""
    def answer(messages, body):
        k = turn_no(messages)
        if k < 2:
            return repl(f"print('step {k + 1}')")
        return repl("import os\nos._exit(17)")

    server.responder = answer
    script = textwrap.dedent(f"""
        from rlm import RLM
        from rlm.logger import RLMLogger
        from rlm_plugins.sinks.jsonl import JSONLSink
        logger = RLMLogger(log_dir={str(tmp_path / 'traj')!r})
        print(logger.log_file_path, flush=True)
        r = RLM(backend="openai", backend_kwargs={{"base_url": {server.base_url!r},
                "api_key": "k", "model_name": "root-model", "max_retries": 0}},
                logger=logger, sinks=[JSONLSink(path={str(tmp_path / 'events.jsonl')!r})])
        r.completion("the context")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 17, proc.stderr
    path = proc.stdout.strip().splitlines()[0]
    records = [json.loads(line) for line in open(path)]
    assert [r["type"] for r in records] == ["metadata", "iteration", "iteration"]
    assert records[0]["prompt"] == "the context"
    assert [r["code_blocks"][0]["result"]["stdout"] for r in records[1:]] == ["step 1\n", "step 2\n"]
    events = read_events(tmp_path / "events.jsonl")
    types = [e["type"] for e in events]
    assert types[0] == "run_started" and types.count("iteration_completed") == 2
    assert types[-1] == "iteration_started"  # the third turn began, then the process died
    assert "run_finished" not in types


def test_context_is_stored_once_per_run(server, tmp_path):
    needle = "NEEDLE-7f3a"
    context = needle + "x" * 200_000

    def answer(messages, body):
        k = turn_no(messages)
        if k < 3:
            return repl("print(len(context))") + "\n" + repl("y = context[:10]")
        return "FINAL(ok)"

    logger = RLMLogger(log_dir=tmp_path / "t")
    sink = JSONLSink(path=tmp_path / "events.jsonl")
    with make_rlm(server, answer, logger=logger, sinks=[sink]) as r:
        assert r.completion(context).response == "ok"
    for path in (logger.log_file_path, sink.path):
        text = open(path).read()
        assert text.count(needle) == 1, path
        assert len(text) < len(context) + 30_000, (path, len(text))


def test_memory_logger_nests_children_and_keeps_no_file(server):
    logger = RLMLogger()
    with make_rlm(server, two_level_answer, max_depth=2, logger=logger) as r:
        result = r.completion("root ctx")
    assert logger.log_file_path is None
    traj = result.metadata
    assert traj["result"]["status"] == "completed" and traj["run_metadata"]["depth"] == 0
    child = traj["iterations"][0]["code_blocks"][0]["result"]["rlm_calls"][0]
    assert child["response"] == "child:plain"
    leaf = child["metadata"]["iterations"][0]["code_blocks"][0]["result"]["rlm_calls"][0]
    assert leaf["kind"] == "llm" and leaf["depth"] == 2 and leaf["response"] == "plain"


def test_jsonl_sink_is_a_plugin_and_records_the_whole_tree(server, tmp_path, monkeypatch):
    monkeypatch.setenv("RLM_LOG_DIR", str(tmp_path / "by-env"))
    assert rlm.get_plugin_manager().entry("sink", "jsonl").distribution == "rlm-plugins"
    with make_rlm(server, two_level_answer, max_depth=2, sinks=["jsonl"]) as r:
        r.completion("root ctx")
        path = r._extra_sinks[0].path
    assert os.path.dirname(path) == str(tmp_path / "by-env")
    events = read_events(path)
    runs = {e["run_id"]: e for e in events if e["type"] == "run_started"}
    assert sorted(e["depth"] for e in runs.values()) == [0, 1]
    child = next(e for e in runs.values() if e["depth"] == 1)
    root = next(e for e in runs.values() if e["depth"] == 0)
    assert child["parent_run_id"] == root["run_id"]
    kinds = {(e["type"], e["depth"]) for e in events}
    for expected in [("iteration_started", 0), ("cell_executed", 0), ("iteration_completed", 0),
                     ("subcall_started", 0), ("subcall_completed", 0), ("run_finished", 0),
                     ("iteration_started", 1), ("subcall_completed", 1), ("run_finished", 1)]:
        assert expected in kinds, expected
    it = next(e for e in events if e["type"] == "iteration_completed")
    assert "code_blocks" not in it and it["cells"] == 1
    assert "test-key" not in open(path).read()


def test_structlog_sink_logs_every_depth():
    def responder(messages):
        if messages[0]["role"] != "system":
            return "plain"
        if "10 total characters" in messages[1]["content"]:
            return repl("answer.update(content=llm_query('leaf'), ready=True)")
        return repl("r = rlm_query('child-task')\nanswer.update(content=r, ready=True)")

    with structlog.testing.capture_logs() as logs:
        r = RLM(backend="scripted", backend_kwargs={"responder": responder}, max_depth=2,
                sinks=["structlog"])
        assert r.completion("root").response == "plain"
        r.close()
    names = [(e["event"], e["depth"]) for e in logs]
    for expected in [("rlm.run.started", 0), ("rlm.iteration", 0), ("rlm.cell", 0),
                     ("rlm.subcall", 0), ("rlm.final_answer", 0), ("rlm.run.started", 1),
                     ("rlm.subcall", 1), ("rlm.final_answer", 1)]:
        assert expected in names, expected
    final = next(e for e in logs if e["event"] == "rlm.final_answer" and e["depth"] == 0)
    assert final["status"] == "completed" and final["response"] == "plain" and final["total_calls"] == 3
    assert final["log_level"] == "info"
    child_runs = [e for e in logs if e["event"] == "rlm.run.started" and e["depth"] == 1]
    assert child_runs[0]["parent_run_id"] is not None


def test_structlog_sink_logs_limits():
    with structlog.testing.capture_logs() as logs:
        r = RLM(backend="scripted", backend_kwargs={"replies": [repl("1/0")] * 3},
                sinks=["structlog"], max_errors=2)
        with pytest.raises(rlm.ErrorThresholdExceededError):
            r.completion("q")
        r.close()
    limit = next(e for e in logs if e["event"] == "rlm.limit")
    assert limit["error_type"] == "ErrorThresholdExceededError" and limit["log_level"] == "warning"
    final = next(e for e in logs if e["event"] == "rlm.final_answer")
    assert final["status"] == "errors" and final["log_level"] == "error"


def test_console_sink_renders_with_rich_at_every_depth():
    def responder(messages):
        if messages[0]["role"] != "system":
            return "plain"
        if "10 total characters" in messages[1]["content"]:
            return repl("print('child output')\nanswer.update(content='c', ready=True)")
        return repl("r = rlm_query('child-task')\nprint('root output')\nFINAL(r)")

    buf = io.StringIO()
    sink = rlm.get_plugin_manager().create("sink", "console", stream=buf, width=120)
    r = RLM(backend="scripted", backend_kwargs={"responder": responder}, max_depth=2, sinks=[sink])
    r.completion("root")
    r.close()
    text = buf.getvalue()
    assert "\x1b[" not in text  # not a terminal: plain text
    assert "== RLM run" in text and "(depth 1)" in text
    assert "  out: child output" in text  # the child's lines are indented
    assert "out: root output" in text and "final answer: c" in text
    assert "rlm_query -> scripted" in text and "finished (completed)" in text


def test_rich_and_structlog_are_imported_only_when_used():
    code = textwrap.dedent("""
        import sys
        from rlm import RLM
        r = RLM(backend="scripted", backend_kwargs={"replies": ["FINAL(1)"]})
        r.completion("q")
        quiet = [m for m in ("rich", "structlog") if m in sys.modules]
        r = RLM(backend="scripted", backend_kwargs={"replies": ["FINAL(1)"]}, verbose=True)
        r.completion("q")
        print(quiet, "rich" in sys.modules, "structlog" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         timeout=120)
    assert out.stdout.split("\n")[0].strip() == "[] True False"


def test_unknown_sink_name():
    with pytest.raises(rlm.UnknownPluginError, match="jsonl"):
        RLM(backend="scripted", backend_kwargs={"replies": []}, sinks=["jsnol"])


def test_lone_surrogates_keep_every_jsonl_record(server, tmp_path):
    """A cell printing a lone surrogate, and a context holding one, lose no record of the log:
    the text is written as JSON escapes and reads back as the same str (issue 16)."""
    def answer(messages, body):
        if turn_no(messages) == 0:
            return repl("print('\\udcff' + context[:1])")
        return repl("answer.update(content='done \\ud800', ready=True)")

    r = make_rlm(server, answer, logger=RLMLogger(tmp_path))
    try:
        result = r.completion("\udcffcontext")
    finally:
        r.close()
    assert result.response == "done \ud800"
    [path] = list(tmp_path.glob("*.jsonl"))
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [rec["type"] for rec in records] == ["metadata", "iteration", "iteration", "result"]
    assert records[0]["prompt"] == "\udcffcontext"
    assert records[1]["code_blocks"][0]["result"]["stdout"] == "\udcff\udcff\n"
    assert records[-1]["response"] == "done \ud800"


def test_a_context_nested_too_deeply_is_a_configuration_error(server):
    deep: dict = {}
    node = deep
    for _ in range(3000):
        node["a"] = {}
        node = node["a"]
    r = make_rlm(server, lambda messages, body: "FINAL(x)")
    try:
        with pytest.raises(rlm.ConfigurationError, match="nested too deeply.*recursion limit"):
            r.completion(deep)
    finally:
        r.close()
