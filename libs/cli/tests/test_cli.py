"""The `rlm` command line, run as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

RLM = [sys.executable, "-m", "rlm"]


def run(*args: str, stdin: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*RLM, *args], input=stdin, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_help_lists_commands():
    out = run("--help")
    assert out.returncode == 0
    for cmd in ("run", "plugins", "backends", "envs", "demo"):
        assert cmd in out.stdout


def test_plugins_json_lists_first_party_plugins():
    out = run("plugins", "--json")
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["local"]["distribution"] == "rlm-plugins"
    assert rows["local"]["registered"] == {"environment": ["local"]}
    assert rows["local"]["hooks"] == ["rlm_register_environments"]
    assert rows["openai"]["distribution"] == "rlm-backend-openai"
    assert sorted(rows["openai"]["registered"]["backend"]) == ["azure_openai", "openai"]
    assert all(r["status"] == "ok" for r in rows.values())


def test_plugins_text():
    out = run("plugins")
    assert out.returncode == 0
    assert "local  (rlm-plugins 0.1.0)" in out.stdout
    assert "environment: local" in out.stdout


def test_backends_and_envs():
    b = run("backends")
    assert "openai" in b.stdout and "scripted" in b.stdout
    e = json.loads(run("envs", "--json").stdout)
    local = next(x for x in e if x["name"] == "local")
    assert local["distribution"] == "rlm-plugins"


def test_run_with_scripted_backend_answer_on_stdout(tmp_path: Path):
    ctx = tmp_path / "ctx.txt"
    ctx.write_text("alpha\nbeta\ngamma\n")
    replies = json.dumps(["```repl\nanswer.update(content=str(len(context.splitlines())), ready=True)\n```"])
    out = run("run", "How many lines?", "--context", str(ctx), "--backend", "scripted",
              "--backend-arg", f"replies={replies}")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "3\n"
    assert "model calls" in out.stderr


def test_run_context_from_stdin_and_json():
    replies = json.dumps(["FINAL(got it)"])
    out = run("run", "q", "--context", "-", "--backend", "scripted", "--backend-arg",
              f"replies={replies}", "--json", stdin="some context")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["response"] == "got it" and data["usage_summary"]["total_calls"] == 1


def test_run_verbose_progress_goes_to_stderr():
    replies = json.dumps(["```repl\nprint('hello from the repl')\n```", "FINAL(done)"])
    out = run("run", "q", "--backend", "scripted", "--backend-arg", f"replies={replies}", "-v")
    assert out.returncode == 0
    assert out.stdout == "done\n"
    assert "hello from the repl" in out.stderr


def test_run_unknown_backend_is_actionable():
    # Installed but disabled: the error says how to enable it, not how to install it.
    out = run("run", "q", "--backend", "anthropic", env={"RLM_DISABLE_PLUGINS": "rlm-backend-anthropic"})
    assert out.returncode == 2
    assert "disabled" in out.stderr and "remove rlm-backend-anthropic from it" in out.stderr
    assert "RLM_DISABLE_PLUGINS" in out.stderr and "pip install" not in out.stderr
    out = run("run", "q", "--backend", "no-such-backend")
    assert out.returncode == 2 and "rlm plugins" in out.stderr


def test_run_limit_error_prints_partial_answer():
    replies = json.dumps(["```repl\nanswer['content'] = 'part'\n1/0\n```"] * 3)
    out = run("run", "q", "--backend", "scripted", "--backend-arg", f"replies={replies}",
              "--max-iterations", "5", "--backend-arg", "model_name=m")
    # 3 replies then the script runs out: a backend error, reported with the partial answer
    assert out.returncode == 1
    assert "partial answer: part" in out.stderr


def test_missing_context_file():
    out = run("run", "q", "--context", "/nonexistent/file", "--backend", "scripted")
    assert out.returncode != 0 and "cannot read --context" in out.stderr


def test_bad_backend_arg():
    out = run("run", "q", "--backend", "scripted", "--backend-arg", "novalue")
    assert out.returncode != 0 and "KEY=VALUE" in out.stderr


@pytest.mark.slow
def test_demo_runs_end_to_end():
    out = run("demo")
    assert out.returncode == 0, out.stderr
    assert "ERROR lines" in out.stdout
    assert "demo server" in out.stderr
