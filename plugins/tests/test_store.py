"""The trajectory store: the sink, the schema and its migrations, crash safety, JSONL export and
import, and the `rlm logs` command (run as a subprocess)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))
from _trajectories import run_completion

from rlm.exceptions import ConfigurationError
from rlm_plugins.store import db as dbmod
from rlm_plugins.store.db import Database
from rlm_plugins.store.query import (export_jsonl, import_file, import_runs, list_runs,
                                     load_tree, parse_jsonl, parse_when, resolve_id, walk)
from rlm_plugins.store.sink import StoreSink


def rlm_cli(*args: str, env: dict | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlm", *args], capture_output=True, text=True,
                          timeout=60, input=stdin, env={**os.environ, **(env or {})})


@pytest.fixture
def user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RLM_USER_DIR", str(tmp_path / "user"))
    monkeypatch.delenv("RLM_LOGS_DB", raising=False)
    return tmp_path / "user"


# --- the sink ------------------------------------------------------------------------------------


def test_sink_records_the_whole_tree(tmp_path: Path):
    db_path = tmp_path / "logs.db"
    result, sink = run_completion(db_path, n_llm=4)
    assert result.response == "done:ROOT "
    db = Database(db_path)
    tree = load_tree(db, sink.run_ids[0])
    assert tree["status"] == "completed" and tree["depth"] == 0 and tree["parent_id"] is None
    assert [it["iteration"] for it in tree["iterations"]] == [1, 2]
    cell = tree["iterations"][0]["cells"][0]
    assert "llm_query_batched" in cell["code"] and cell["stdout"].startswith("4 parts; done:CHILD")
    kinds = [s["kind"] for s in cell["subcalls"]]
    assert kinds.count("llm") == 4 and kinds.count("rlm") == 1
    llm = [s for s in cell["subcalls"] if s["kind"] == "llm"]
    assert sorted(s["prompt"] for s in llm) == [f"summarise part {i}" for i in range(4)]
    assert all(s["response"] == "summary of " + s["prompt"] for s in llm)
    child = next(s for s in cell["subcalls"] if s["kind"] == "rlm")["child"]
    assert child is not None and child["parent_id"] == tree["id"] and child["depth"] == 1
    assert child["prompt"] == "CHILD: find the needle" and child["response"] == "done:CHILD"
    assert [it["iteration"] for it in child["iterations"]] == [1, 2]
    # Usage: the root's totals are the whole tree's, equal to the run's usage_summary.
    u = result.usage_summary
    assert (tree["calls"], tree["input_tokens"], tree["output_tokens"]) == (
        u.total_calls, u.total_input_tokens, u.total_output_tokens)
    assert tree["cost"] == pytest.approx(u.total_cost)
    assert {x["model"]: x["calls"] for x in tree["usage"]} == {"scripted": u.total_calls}
    assert tree["iterations"][0]["input_tokens"] > 0 and all(s["duration"] >= 0 for s in llm)
    assert len(list(walk(tree))) == 2


def test_sink_tolerates_unknown_events_and_fields(tmp_path: Path):
    from dataclasses import dataclass

    from rlm.events import Event, RunStarted

    @dataclass(kw_only=True)
    class ToolCalled(Event):  # an event type a later kernel may add
        tool: str

    sink = StoreSink(tmp_path / "x.db")
    sink.handle(RunStarted(run_id="r1", root_model="m", backend="b", environment="local",
                           settings={"prompt": "p", "max_iterations": 3}, context_type="str",
                           context_lengths=[1]))
    sink.handle(ToolCalled(run_id="r1", tool="grep"))
    tree = load_tree(Database(tmp_path / "x.db"), "r1")
    assert tree["notes"][0]["data"] == {"tool": "grep"}


def test_crash_mid_run_keeps_what_was_written(tmp_path: Path):
    """A completion in a subprocess is killed (SIGKILL) during its third turn: the turns before
    it, their cells and sub-calls are all in the database, and the run reads as interrupted."""
    db_path = tmp_path / "crash.db"
    marker = tmp_path / "turn3"
    script = textwrap.dedent(f"""
        import time, pathlib
        from rlm import RLM
        from rlm_plugins.store.sink import StoreSink
        def respond(messages):
            if messages[0]["role"] != "system":
                return "sub answer"
            turns = sum(1 for m in messages if m["role"] == "assistant")
            if turns < 2:
                return "```repl\\nx = llm_query('q%d')\\nprint(x)\\n```" % turns
            pathlib.Path({str(marker)!r}).write_text("x")
            time.sleep(60)
        rlm = RLM(backend="scripted", backend_kwargs={{"responder": respond}},
                  sinks=[StoreSink({str(db_path)!r})])
        rlm.completion("ctx")
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.time() + 30
        while not marker.exists() and time.time() < deadline:
            time.sleep(0.05)
        assert marker.exists(), "the child never reached turn 3"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    db = Database(db_path)
    (run,) = list_runs(db)
    assert run["status"] == "interrupted"
    tree = load_tree(db, run["id"])
    its = tree["iterations"]
    assert [it["iteration"] for it in its] == [1, 2, 3]
    assert its[2]["finished_at"] is None  # killed during turn 3
    for it, q in zip(its[:2], ("q0", "q1"), strict=True):
        (cell,) = it["cells"]
        assert cell["stdout"] == "sub answer\n"
        (sub,) = cell["subcalls"]
        assert sub["prompt"] == q and sub["response"] == "sub answer"


# --- schema and migrations ------------------------------------------------------------------------


def test_migrates_a_version_1_database_keeping_its_data(tmp_path: Path):
    path = tmp_path / "old.db"
    old = Database(path, migrate_to=1)
    assert dbmod.schema_version(old.conn) == 1
    with old.transaction() as c:
        c.execute("INSERT INTO runs (id, root_id, status, started_at, finished_at, root_model, "
                  "iterations) VALUES ('abc', 'abc', 'ok', 100.0, 105.0, 'gpt-old', 2)")
    cols = {r[1] for r in old.conn.execute("PRAGMA table_info(runs)")}
    assert "source" not in cols
    old.close()
    new = Database(path)
    assert dbmod.schema_version(new.conn) == dbmod.SCHEMA_VERSION == 2
    (row,) = list_runs(new)
    assert row["id"] == "abc" and row["root_model"] == "gpt-old"
    assert row["source"] == "live" and row["updated_at"] == 105.0  # backfilled by migration 2
    versions = [r[0] for r in new.conn.execute("SELECT version FROM schema_version ORDER BY version")]
    assert versions == [1, 2]
    assert new.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_refuses_a_database_from_a_newer_rlm(tmp_path: Path):
    path = tmp_path / "new.db"
    Database(path).close()
    c = sqlite3.connect(path)
    c.execute("INSERT INTO schema_version (version) VALUES (99)")
    c.commit()
    c.close()
    with pytest.raises(ConfigurationError, match="upgrade: pip install --upgrade rlm-plugins"):
        Database(path)


def test_a_failed_migration_leaves_the_previous_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "m.db"
    Database(path, migrate_to=1).close()

    def broken(c):
        c.execute("ALTER TABLE runs ADD COLUMN half_done TEXT")
        raise RuntimeError("boom")

    monkeypatch.setitem(dbmod.MIGRATIONS, 2, broken)
    with pytest.raises(RuntimeError):
        Database(path)
    c = sqlite3.connect(path)
    assert c.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == 1
    assert "half_done" not in {r[1] for r in c.execute("PRAGMA table_info(runs)")}


# --- export and import ------------------------------------------------------------------------------


def test_export_is_rlmlogger_format_and_round_trips(tmp_path: Path):
    _, sink = run_completion(tmp_path / "a.db", n_llm=2)
    db = Database(tmp_path / "a.db")
    tree = load_tree(db, sink.run_ids[0])
    lines = [json.loads(x) for x in export_jsonl(tree)]
    assert [x["type"] for x in lines] == ["metadata", "iteration", "iteration", "result"]
    meta = lines[0]
    assert meta["run_id"] == tree["id"] and meta["root_model"] == "scripted"
    assert meta["max_iterations"] == 30 and meta["prompt"] == "ROOT context with a needle"
    calls = lines[1]["code_blocks"][0]["result"]["rlm_calls"]
    child_call = next(c for c in calls if c["kind"] == "rlm")
    assert child_call["metadata"]["run_metadata"]["run_id"] == tree["iterations"][0]["cells"][0][
        "subcalls"][-1]["child"]["id"]
    assert lines[3]["usage_summary"]["total_calls"] == tree["calls"]
    # Import into a fresh store: the same tree comes back, children included.
    other = Database(tmp_path / "b.db")
    out = tmp_path / "run.jsonl"
    out.write_text("\n".join(export_jsonl(tree)) + "\n")
    assert import_file(other, out) == [(tree["id"], True)]
    assert import_file(other, out) == [(tree["id"], False)]  # idempotent
    back = load_tree(other, tree["id"])
    assert back["source"] == "import:rlmlogger"
    assert (back["calls"], back["input_tokens"], back["output_tokens"]) == (
        tree["calls"], tree["input_tokens"], tree["output_tokens"])
    assert [len(it["cells"]) for it in back["iterations"]] == [len(it["cells"]) for it in tree["iterations"]]
    sub_prompts = sorted(s["prompt"] for s in back["iterations"][0]["cells"][0]["subcalls"])
    assert sub_prompts == sorted(s["prompt"] for s in tree["iterations"][0]["cells"][0]["subcalls"])
    assert [r["id"] for r in walk(back)] == [r["id"] for r in walk(tree)]


def test_imports_a_file_written_by_rlmlogger(tmp_path: Path):
    from rlm import RLM
    from rlm.logger import RLMLogger

    from _trajectories import responder

    logger = RLMLogger(log_dir=tmp_path / "logs")
    with RLM(backend="scripted", backend_kwargs={"responder": responder(2)}, max_depth=2,
             logger=logger) as rlm:
        rlm.completion("ROOT file")
    db = Database(tmp_path / "i.db")
    [(run_id, new)] = import_file(db, logger.log_file_path)
    assert new
    tree = load_tree(db, run_id)
    assert tree["response"] == "done:ROOT " and len(tree["iterations"]) == 2
    subs = tree["iterations"][0]["cells"][0]["subcalls"]
    assert [s["kind"] for s in subs].count("llm") == 2
    child = next(s for s in subs if s["kind"] == "rlm")["child"]  # nested in the call's metadata
    assert child is not None and child["response"] == "done:CHILD" and len(child["iterations"]) == 2


REFERENCE_LOG = [
    {"type": "metadata", "timestamp": "2025-01-02T10:00:00", "root_model": "gpt-5", "max_depth": 1,
     "max_iterations": 30, "backend": "openai", "backend_kwargs": {"model_name": "gpt-5"},
     "environment_type": "local", "environment_kwargs": {}, "other_backends": None},
    {"type": "iteration", "iteration": 1, "timestamp": "2025-01-02T10:00:03",
     "prompt": [{"role": "system", "content": "..."}], "response": "```repl\nprint(llm_query('hi'))\n```",
     "code_blocks": [{"code": "print(llm_query('hi'))", "result": {
         "stdout": "hello\n", "stderr": "", "locals": {"x": 1}, "execution_time": 0.5,
         "rlm_calls": [{"root_model": "gpt-5-mini", "prompt": "hi", "response": "hello",
                        "usage_summary": {"model_usage_summaries": {"gpt-5-mini": {
                            "total_calls": 1, "total_input_tokens": 10, "total_output_tokens": 2}}},
                        "execution_time": 0.4}]}}],
     "final_answer": None, "iteration_time": 2.0},
    {"type": "iteration", "iteration": 2, "timestamp": "2025-01-02T10:00:05", "prompt": [],
     "response": "FINAL(hello)", "code_blocks": [], "final_answer": "hello", "iteration_time": 1.0},
]


def test_imports_a_file_written_by_the_reference_library(tmp_path: Path):
    f = tmp_path / "rlm_2025-01-02_10-00-00_abcd1234.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in REFERENCE_LOG) + "\n")
    db = Database(tmp_path / "r.db")
    [(run_id, new)] = import_file(db, f)
    assert new
    assert import_file(db, f) == [(run_id, False)]  # the derived id finds it again
    tree = load_tree(db, run_id)
    assert tree["source"] == "import:rlms" and tree["status"] == "completed"
    assert tree["root_model"] == "gpt-5" and tree["environment"] == "local"
    assert tree["response"] == "hello" and tree["settings"]["max_iterations"] == 30
    (cell,) = tree["iterations"][0]["cells"]
    assert cell["stdout"] == "hello\n" and cell["variables"] == ["x"]
    (sub,) = cell["subcalls"]
    assert (sub["model"], sub["prompt"], sub["response"], sub["input_tokens"]) == ("gpt-5-mini", "hi", "hello", 10)
    assert tree["calls"] == 1 and tree["input_tokens"] == 10


def test_import_errors_name_the_problem(tmp_path: Path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type": "metadata"}\nnot json\n')
    with pytest.raises(ConfigurationError, match="line 2: not JSON"):
        import_file(Database(":memory:"), bad)
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"type": "other"}\n')
    with pytest.raises(ConfigurationError, match="holds no trajectory"):
        import_file(Database(":memory:"), empty)


texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=200)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(response=texts, code=texts, stdout=texts, prompt=texts, answer=texts)
def test_any_text_survives_export_and_import(response, code, stdout, prompt, answer):
    records = [
        {"type": "metadata", "run_id": "prop", "root_model": "m", "prompt": prompt},
        {"type": "iteration", "iteration": 1, "response": response, "final_answer": answer,
         "iteration_time": 0.1, "code_blocks": [{"code": code, "result": {
             "stdout": stdout, "rlm_calls": [{"root_model": "s", "prompt": prompt, "response": answer}]}}]},
    ]
    db = Database(":memory:")
    import_runs(db, parse_jsonl([json.dumps(r) for r in records]))
    tree = load_tree(db, "prop")
    db2 = Database(":memory:")
    import_runs(db2, parse_jsonl(list(export_jsonl(tree))))
    back = load_tree(db2, "prop")
    it = back["iterations"][0]
    assert it["response"] == response and it["final_answer"] == answer
    assert it["cells"][0]["code"] == code and it["cells"][0]["stdout"] == stdout
    assert it["cells"][0]["subcalls"][0]["prompt"] == prompt and back["prompt"] == prompt


def test_parse_when():
    from datetime import datetime

    now = datetime(2025, 3, 10, 15, 30)
    assert parse_when("2h", now=now) == now.timestamp() - 7200
    assert parse_when("today", now=now) == datetime(2025, 3, 10).timestamp()
    assert parse_when("2025-01-31", now=now) == datetime(2025, 1, 31).timestamp()
    with pytest.raises(ConfigurationError, match="2h, 3d"):
        parse_when("last tuesday")


def test_resolve_id_prefix_and_ambiguity(tmp_path: Path):
    db = Database(tmp_path / "p.db")
    with db.transaction() as c:
        for rid, t in (("aaa111", 1.0), ("aaa222", 2.0), ("bbb333", 3.0)):
            c.execute("INSERT INTO runs (id, root_id, started_at, status) VALUES (?, ?, ?, 'ok')", (rid, rid, t))
    assert resolve_id(db, "bbb") == "bbb333" and resolve_id(db, "latest") == "bbb333"
    with pytest.raises(ConfigurationError, match="matches several runs"):
        resolve_id(db, "aaa")
    with pytest.raises(ConfigurationError, match="rlm logs"):
        resolve_id(db, "zzz")


# --- the command line ------------------------------------------------------------------------------


def test_rlm_run_logs_by_default_and_logs_commands(user_dir: Path, tmp_path: Path):
    replies = json.dumps(["```repl\nprint(llm_query('ping'))\n```",
                          "pong", "```repl\nanswer.update(content='42', ready=True)\n```"])
    out = rlm_cli("run", "What is six times seven?", "--backend", "scripted",
                  "--backend-arg", f"replies={replies}")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "42"
    assert "logged as run" in out.stderr
    assert "\r" not in out.stderr  # no progress line when stderr is not a terminal
    run_id = out.stderr.split("logged as run ")[1].split()[0]
    assert (user_dir / "logs.db").exists()
    path = rlm_cli("logs", "path")
    assert path.stdout.strip() == str(user_dir / "logs.db")

    nolog = rlm_cli("run", "not logged", "--backend", "scripted", "--no-log",
                    "--backend-arg", 'replies=["FINAL(x)"]')
    assert nolog.returncode == 0 and "logged as run" not in nolog.stderr

    listing = rlm_cli("logs")
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(run_id) and " completed " in lines[0]
    assert "What is six times seven?" in lines[0]
    rows = json.loads(rlm_cli("logs", "--json", "--status", "completed", "--model", "script").stdout)
    assert [r["id"] for r in rows] == [run_id]
    assert json.loads(rlm_cli("logs", "--json", "--status", "error").stdout) == []
    assert json.loads(rlm_cli("logs", "list", "--json", "--since", "1h").stdout)[0]["id"] == run_id
    assert json.loads(rlm_cli("logs", "--json", "--until", "2000-01-01").stdout) == []

    show = rlm_cli("logs", "show", run_id[:6])
    assert show.returncode == 0, show.stderr
    for text in (f"run {run_id}", "iteration 1", "llm_query scripted", "prompt: ping",
                 "response: pong", "answer: 42"):
        assert text in show.stdout, text

    exported = rlm_cli("logs", "export", run_id, "--jsonl")
    recs = [json.loads(x) for x in exported.stdout.splitlines()]
    assert recs[0]["type"] == "metadata" and recs[-1]["type"] == "result"
    f = tmp_path / "exp.jsonl"
    f.write_text(exported.stdout)
    ref = tmp_path / "ref.jsonl"
    ref.write_text("\n".join(json.dumps(r) for r in REFERENCE_LOG) + "\n")
    imported = rlm_cli("logs", "import", str(f), str(ref))
    assert imported.returncode == 0, imported.stderr
    assert f"{run_id}  already in the store" in imported.stdout and "  imported  " in imported.stdout
    assert len(rlm_cli("logs", "-n", "0").stdout.strip().splitlines()) == 2

    missing = rlm_cli("logs", "show", "nope")
    assert missing.returncode == 1 and "no run 'nope'" in missing.stderr


def test_concurrent_children_with_one_prompt_link_to_their_own_call(tmp_path: Path):
    """Six rlm_query_batched children with the same prompt, finishing in a shuffled order: each
    child is linked to the very sub-call that started it (by call id, not by prompt)."""
    import itertools
    import random
    import threading

    from rlm import RLM
    from rlm.events import RunStarted, SubcallCompleted, SubcallStarted

    counter, lock = itertools.count(1), threading.Lock()
    rng = random.Random(7)

    def respond(messages):
        with lock:
            n = next(counter)  # 1 is the root's turn, 2..7 the children's
        time.sleep(rng.random() * 0.05)  # children finish in another order than they started
        return ("```repl\nif context == 'ROOT':\n"
                "    kids = rlm_query_batched(['same child prompt'] * 6)\n"
                "    answer.update(content=str(kids), ready=True)\n"
                f"else:\n    answer.update(content='child-{n}', ready=True)\n```")

    events = []

    class Recorder:
        def handle(self, event):
            events.append(event)

        def close(self):
            pass

    sink = StoreSink(tmp_path / "logs.db")
    with RLM(backend="scripted", backend_kwargs={"responder": respond}, max_depth=2,
             sinks=[sink, Recorder()], max_concurrent_subcalls=6) as rlm:
        result = rlm.completion("ROOT")
    root_id = sink.run_ids[0]
    started = {e.call_id: e for e in events if isinstance(e, SubcallStarted) and e.run_id == root_id}
    completed = [e.call_id for e in events if isinstance(e, SubcallCompleted) and e.run_id == root_id]
    assert len(started) == 6 and sorted(completed) == sorted(started)  # one id per call, paired
    children = [e for e in events if isinstance(e, RunStarted) and e.parent_run_id == root_id]
    assert sorted(c.parent_call_id for c in children) == sorted(started)
    tree = load_tree(Database(tmp_path / "logs.db"), root_id)
    calls = [s for it in tree["iterations"] for cell in it["cells"] for s in cell["subcalls"]]
    assert len(calls) == 6 and len({s["child"]["id"] for s in calls}) == 6
    for s in calls:
        assert s["response"] == s["child"]["response"]  # the call's answer is its child's
    assert sorted(s["response"] for s in calls) == [f"child-{n}" for n in range(2, 8)]
    assert result.response.count("child-") == 6
