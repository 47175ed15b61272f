"""`rlm PROMPT` / `rlm run` as people who use `llm` expect it, through the real `rlm` executable.

Model traffic goes to the repository's OpenAI-compatible test server (real HTTP on 127.0.0.1) or
to the `scripted` backend plugin; every test gets its own user directory (config, keys, logs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlm_testkit.servers import OpenAICompatibleServer

RLM_EXE = str(Path(sys.executable).with_name("rlm"))
FINAL = "```repl\nanswer.update(content=str(len(context)), ready=True)\n```"


def rlm(*args: str, stdin: str | bytes | None = None, home: Path, env: dict | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "RLM_BACKEND")}
    full_env.update({"RLM_USER_DIR": str(home), **(env or {})})
    return subprocess.run([RLM_EXE, *args], input=stdin, capture_output=True, timeout=timeout,
                          env=full_env, stdin=None if stdin is not None else subprocess.DEVNULL,
                          text=not isinstance(stdin, bytes))


def scripted(*replies: str) -> list[str]:
    return ["-b", "scripted", "--backend-arg", f"replies={json.dumps(list(replies))}"]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    d = tmp_path / "user"
    d.mkdir()
    return d


@pytest.fixture
def server():
    with OpenAICompatibleServer(replies=[]) as srv:
        yield srv


def test_bare_prompt_runs_like_run(home: Path):
    out = rlm("What is the length?", *scripted(FINAL), home=home)
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"{len('What is the length?')}\n"


def test_piped_stdin_is_the_context_and_prompt_the_question(home: Path):
    out = rlm("Count errors", *scripted("```repl\nanswer.update(content=str(context.count('ERROR')), "
                                        "ready=True)\n```"),
              stdin="ERROR a\nok\nERROR b\nERROR c\n", home=home)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "3\n"


def test_repeated_context_gives_a_list_or_a_dict(home: Path, tmp_path: Path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("first")
    b.write_text("second file")
    show = "```repl\nanswer.update(content=repr(context), ready=True)\n```"
    out = rlm("q", "--context", str(a), "--context", str(b), *scripted(show), home=home)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == repr(["first", "second file"])
    out = rlm("q", "-c", str(a), "-c", str(b), "--context-dict", *scripted(show), home=home)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == repr({"a.txt": "first", "b.txt": "second file"})


def test_model_system_and_options_reach_the_server(home: Path, server: OpenAICompatibleServer):
    server.replies[:] = ["FINAL(ok)"]
    out = rlm("q", "--base-url", server.base_url, "-m", "my-model", "-s", "Answer in French.",
              "-o", "temperature", "0.2", "-o", "stop", '["END"]', home=home)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "ok\n"
    body = server.requests[0]
    assert body["model"] == "my-model"
    assert body["temperature"] == 0.2 and body["stop"] == ["END"]
    assert "Answer in French." in body["messages"][0]["content"]
    assert "```repl" in body["messages"][0]["content"]  # the REPL instructions are kept
    assert "backend openai, model my-model (--base-url given" in out.stderr


def test_unknown_option_lists_the_valid_ones(home: Path, server: OpenAICompatibleServer):
    out = rlm("q", "--base-url", server.base_url, "-m", "m", "-o", "temprature", "0.2", home=home)
    assert out.returncode == 2
    assert "no option 'temprature'" in out.stderr and "Did you mean -o temperature?" in out.stderr
    assert "top_p" in out.stderr and "max_tokens" in out.stderr
    assert server.requests == []


def test_sub_model_routes_sub_calls(home: Path, server: OpenAICompatibleServer):
    server.replies[:] = ["```repl\nprint(llm_query('hi'))\n```", "sub says hello", "FINAL(done)"]
    out = rlm("q", "--base-url", server.base_url, "-m", "root-m", "--sub-model", "sub-m", home=home)
    assert out.returncode == 0, out.stderr
    assert [r["model"] for r in server.requests] == ["root-m", "sub-m", "root-m"]


def test_base_url_alone_means_openai_whatever_the_environment(home: Path,
                                                               server: OpenAICompatibleServer):
    server.replies[:] = ["FINAL(ok)"]
    # No OPENAI_API_KEY (the embedded model would be the default): still the OpenAI backend,
    # with none of the embedded model's sampling defaults.
    out = rlm("q", "--base-url", server.base_url, "-m", "served", home=home)
    assert out.returncode == 0, out.stderr
    assert "max_tokens" not in server.requests[0] and "temperature" not in server.requests[0]
    assert "backend openai" in out.stderr


def test_base_url_without_model_names_the_flag(home: Path, server: OpenAICompatibleServer):
    out = rlm("q", "--base-url", server.base_url, home=home)
    assert out.returncode == 2
    assert "-m/--model" in out.stderr and "gpt-4o" not in out.stderr
    assert server.requests == []


def test_base_url_without_scheme_is_a_usage_error(home: Path):
    out = rlm("q", "--base-url", "127.0.0.1:8000/v1", "-m", "m", home=home, timeout=20)
    assert out.returncode == 2
    assert "--base-url http://127.0.0.1:8000/v1" in out.stderr


def test_empty_prompt_is_refused(home: Path):
    for prompt in ("", "   "):
        out = rlm(prompt, *scripted(FINAL), home=home)
        assert out.returncode == 2 and "prompt is empty" in out.stderr


def test_binary_context_is_refused_with_the_way_out(home: Path, tmp_path: Path):
    png = tmp_path / "img.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    out = rlm("describe", "--context", str(png), *scripted(FINAL), home=home)
    assert out.returncode == 2 and "binary" in out.stderr and "base64" in out.stderr
    latin = tmp_path / "latin.txt"
    latin.write_bytes("café\n".encode("latin-1"))
    out = rlm("q", "--context", str(latin), *scripted(FINAL), home=home)
    assert out.returncode == 2 and "--encoding latin-1" in out.stderr
    out = rlm("q", "--context", str(latin), "--encoding", "latin-1", *scripted(FINAL), home=home)
    assert out.returncode == 0 and out.stdout == "5\n"
    out = rlm("describe", *scripted(FINAL), stdin=b"\x00\x01\x02binary", home=home)
    assert out.returncode == 2 and b"piped on stdin looks binary" in out.stderr


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
               min_size=1, max_size=200).filter(lambda t: t.strip()))
def test_any_text_context_arrives_unchanged(tmp_path_factory, text: str):
    home = tmp_path_factory.mktemp("u")
    f = home / "ctx.txt"
    f.write_bytes(text.encode("utf-8"))
    out = rlm("q", "--context", str(f), "-n",
              *scripted("```repl\nanswer.update(content=context.encode('utf-8').hex(), ready=True)\n```"),
              home=home)
    assert out.returncode == 0, out.stderr
    assert bytes.fromhex(out.stdout.strip()) == text.encode("utf-8")


# -- exit codes and --json -------------------------------------------------------------------

def test_json_success_has_status_and_run_id(home: Path):
    out = rlm("q", "--json", *scripted("FINAL(yes)"), home=home)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["status"] == "completed" and data["answer_source"] == "model"
    assert data["response"] == "yes" and data["usage_summary"]["total_calls"] == 1
    assert data["run_id"] and data["exit_code"] == 0


def test_json_error_object_on_failure(home: Path, server: OpenAICompatibleServer):
    from rlm_testkit.servers import Fault

    for _ in range(10):
        server.inject(Fault("status", status=401, body="bad key"))
    out = rlm("q", "--json", "--base-url", server.base_url, "-m", "m", home=home)
    assert out.returncode == 1
    data = json.loads(out.stdout)
    assert data["status"] == "error" and data["error_type"] == "AuthenticationError"
    assert "bad key" in data["error"] and data["exit_code"] == 1
    out = rlm("q", "--json", "-b", "no-such-backend", home=home)
    assert out.returncode == 2 and json.loads(out.stdout)["error_type"] == "UnknownPluginError"


def test_limit_with_partial_answer_exits_3_and_prints_it(home: Path):
    failing = "```repl\nanswer['content'] = 'part'\n1/0\n```"
    out = rlm("q", "--max-errors", "2", *scripted(failing, failing, failing), home=home)
    assert out.returncode == 3, out.stderr
    assert out.stdout == "part\n"
    assert "warning: the run did not complete (errors)" in out.stderr
    out = rlm("q", "--max-errors", "2", "--json", *scripted(failing, failing, failing), home=home)
    data = json.loads(out.stdout)
    assert out.returncode == 3 and data["status"] == "errors" and data["response"] == "part"


def test_max_iterations_exits_3_with_a_warning(home: Path):
    loop = "```repl\nprint(1)\n```"
    out = rlm("q", "--max-iterations", "2", "--json", *scripted(loop, loop, "the answer"),
              home=home)
    data = json.loads(out.stdout)
    assert data["status"] == "max_iterations", (data, out.stderr)
    assert out.returncode == 3
    assert "warning: the run did not complete" in out.stderr
    assert len([ln for ln in out.stderr.splitlines() if "warning" in ln]) == 1


def test_backend_error_exits_1_with_partial_on_stderr(home: Path):
    out = rlm("q", *scripted("```repl\nanswer['content'] = 'part'\n```"), home=home)
    assert out.returncode == 1  # the script runs out: a backend error, not a limit
    assert "partial answer: part" in out.stderr and out.stdout == ""


def test_usage_errors_exit_2(home: Path):
    assert rlm("q", "--max-iterations", "x", home=home).returncode == 2
    out = rlm("q", "-b", "scripted", "--backend-arg", "novalue", home=home)
    assert out.returncode == 2 and "KEY=VALUE" in out.stderr
    out = rlm("q", "--context", "/nonexistent/file", *scripted(FINAL), home=home)
    assert out.returncode == 2 and "cannot read --context" in out.stderr


def test_closed_pipe_is_quiet(home: Path):
    proc = subprocess.run(f"'{RLM_EXE}' plugins | head -1", shell=True, capture_output=True,
                          text=True, env={**os.environ, "RLM_USER_DIR": str(home)}, timeout=60)
    assert proc.stdout.count("\n") == 1
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr


def test_backend_line_and_plain_progress_when_stderr_is_not_a_terminal(home: Path):
    loop = "```repl\nprint(1)\n```"
    out = rlm("q", "--backend-arg", "latency=6", *scripted(loop, "FINAL(done)"), home=home)
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    assert lines[0] == "rlm: backend scripted, model scripted (from -b/--backend)"
    assert any(ln.startswith("rlm: run started on scripted") for ln in lines)
    assert any("turn 1: waiting for the model" in ln for ln in lines)  # during the first turn
    assert any(ln.startswith("rlm: turn 1/30 done in") and "1 code block run" in ln for ln in lines)
    assert any(ln.startswith("rlm: turn 2/30 done in") and "answer set" in ln for ln in lines)
    assert "\r" not in out.stderr and "\x1b" not in out.stderr


def test_backend_line_says_why_and_names_the_embedded_demo_model(home: Path):
    # The reason comes from the default choice; with -b llamacpp the embedded note is added.
    pytest.importorskip("rlm_backend_llamacpp")
    out = rlm("q", "-b", "llamacpp", "--max-iterations", "1", "--timeout", "0.01", home=home,
              timeout=60)
    first = out.stderr.splitlines()[0]
    assert first.startswith("rlm: backend llamacpp, model ") and "0.5B demo model" in first
