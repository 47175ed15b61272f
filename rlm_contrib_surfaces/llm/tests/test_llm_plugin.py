"""llm-rlm with the real `llm` command in a subprocess (a temporary LLM_USER_PATH, so the log
database is the test's), the RLM's model the repo's OpenAI-compatible test server."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from rlm_testkit.servers import OpenAICompatibleServer

LLM = shutil.which("llm", path=str(Path(sys.executable).parent)) or "llm"

CODE = """```repl
pong = llm_query("PING")
shape = ("str:" + str(len(context))) if isinstance(context, str) else ("dict:" + "|".join(context))
answer["content"] = shape + " sub=" + pong + " q=" + QUESTION
answer["ready"] = READY
```"""


def responder(messages, body):
    if messages[-1].get("content") == "PING":
        return "pong"
    # The root prompt (the question) reaches the model in the first user message.
    text = json.dumps(messages)
    question = re.search(r"QUESTION<([^>]*)>", text)
    ready = "NEVER" not in text
    return (CODE.replace("QUESTION", repr(question.group(1) if question else "none"))
            .replace("READY", str(ready)))


@pytest.fixture(scope="module")
def model_server():
    with OpenAICompatibleServer(responder=responder) as srv:
        yield srv


@pytest.fixture
def llm_env(model_server, tmp_path):
    user = tmp_path / "rlm-user"
    user.mkdir()
    (user / "config.toml").write_text(
        f'[profiles.fast]\nbackend = "openai"\nmodel = "test-model"\n'
        f'base_url = "{model_server.base_url}"\nmax_iterations = 3\n'
        f'backend_kwargs = {{ api_key = "test", max_retries = 0 }}\n')
    return {**os.environ, "LLM_USER_PATH": str(tmp_path / "llm-user"),
            "RLM_USER_DIR": str(user)}


def llm(env, *args, stdin: str | None = None):
    return subprocess.run([LLM, *args], input=stdin, capture_output=True, text=True, env=env,
                          timeout=120)


def last_log(env) -> dict:
    out = llm(env, "logs", "list", "-n", "1", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)[0]


def test_profiles_are_models(llm_env):
    out = llm(llm_env, "models", "list")
    assert out.returncode == 0, out.stderr
    assert "rlm-default" in out.stdout and "rlm-fast" in out.stdout
    assert "model test-model" in out.stdout  # the profile's summary


def test_piped_stdin_is_context_and_the_argument_the_question(llm_env):
    log = "svc-a ERROR\n" * 50
    out = llm(llm_env, "-m", "rlm-fast", "QUESTION<errors?>", stdin=log)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"str:{len(log)} sub=pong q=errors?"
    # progress (turns, sub-calls) streams as reasoning: on stderr, not in the answer
    assert "turn 1/3" in out.stderr and "llm_query to test-model done" in out.stderr
    entry = last_log(llm_env)
    assert entry["model"] == "rlm-fast"
    assert entry["response"] == f"str:{len(log)} sub=pong q=errors?"
    assert entry["input_tokens"] > 0 and entry["output_tokens"] > 0
    rlm = entry["response_json"]
    assert rlm["status"] == "completed" and re.fullmatch(r"[0-9a-f]{12}", rlm["run_id"])
    assert entry["input_tokens"] == rlm["usage"]["total_input_tokens"]
    assert json.loads(entry["token_details"])["model_calls"] == 2  # the root turn and the sub-call
    # also in rlm's own store, under the same run id
    db = Path(llm_env["RLM_USER_DIR"]) / "logs.db"
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM runs WHERE id = ?", (rlm["run_id"],)).fetchone()[0] == 1


def test_fragments_system_and_options(llm_env, tmp_path):
    doc = tmp_path / "big.log"
    doc.write_text("x" * 100)
    out = llm(llm_env, "-m", "rlm-fast", "-f", str(doc), "-s", "Be terse.", "QUESTION<f>",
              "-o", "rlm_log", "false")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"dict:system|fragment: {doc} sub=pong q=f"
    assert not (Path(llm_env["RLM_USER_DIR"]) / "logs.db").exists()  # -o rlm_log false
    # no context at all: the prompt is the context
    out = llm(llm_env, "-m", "rlm-fast", "QUESTION<alone>", "--no-stream")
    assert out.stdout.strip() == "str:15 sub=pong q=alone"  # the prompt itself is the context


def test_a_limit_is_reported_and_logged(llm_env):
    out = llm(llm_env, "-m", "rlm-fast", "NEVER", "-o", "max_iterations", "1", stdin="abc")
    assert out.returncode == 0, out.stderr
    assert "status max_iterations" in out.stderr
    assert last_log(llm_env)["response_json"]["status"] == "max_iterations"


def test_errors_are_llm_errors(llm_env, tmp_path):
    user = Path(llm_env["RLM_USER_DIR"])
    (user / "config.toml").write_text(
        '[profiles.dead]\nbackend = "openai"\nmodel = "m"\nbase_url = "http://127.0.0.1:9/v1"\n'
        'backend_kwargs = { api_key = "t", max_retries = 0, timeout = 2 }\n')
    out = llm(llm_env, "-m", "rlm-dead", "q", stdin="ctx")
    assert out.returncode != 0 and "Error:" in out.stderr and "Backend" in out.stderr
    (user / "config.toml").write_text('[profiles.bad]\nmax_iterations = "many"\n')
    out = llm(llm_env, "models", "list")
    assert out.returncode == 0 and "rlm-default" in out.stdout
    assert "profiles.bad.max_iterations must be an integer" in out.stderr
