"""rlm serve end to end: the real ``openai`` SDK as the client, the RLM's own model being the
repo's OpenAI-compatible test server on 127.0.0.1, uvicorn serving the app on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import httpx
import openai
import pytest
from hypothesis import given, settings, strategies as st

from rlm_cli.surface import InputError, Profile
from rlm_testkit.servers import OpenAICompatibleServer
from rlm_serve import BackgroundServer, ServeSettings, create_app
from rlm_serve.requests import parse_request

QUESTION = "Which services logged errors?"

# The root model's one turn: a sub-call, then an answer that describes the context it was given
# (so a test sees exactly what the request became) and whether the question reached it.
ROOT_CODE = """```repl
pong = llm_query("PING")
if isinstance(context, str):
    shape = "str:" + str(len(context))
else:
    shape = "dict:" + "|".join(context)
answer["content"] = shape + " sub=" + pong + " q=" + QFLAG
answer["ready"] = True
```"""


def responder(messages, body):
    text = json.dumps(messages)
    if messages[-1].get("content") == "PING":
        return "pong"
    return ROOT_CODE.replace("QFLAG", repr("yes" if QUESTION in text else "no"))


@pytest.fixture(scope="module")
def model_server():
    with OpenAICompatibleServer(responder=responder) as srv:
        yield srv


def openai_profile(srv, name="fast", **kw) -> Profile:
    return Profile(name=name, backend="openai", model="test-model", base_url=srv.base_url,
                   backend_kwargs={"api_key": "test", "max_retries": 0}, **kw)


@pytest.fixture
def serve(model_server, tmp_path):
    """Start rlm serve (in-process uvicorn on 127.0.0.1) with the given settings."""
    started = []

    def start(**kw):
        kw.setdefault("profiles", {"fast": openai_profile(model_server)})
        kw.setdefault("log", False)
        app = create_app(ServeSettings(**kw))
        srv = BackgroundServer(app).start()
        started.append(srv)
        return app, srv

    yield start
    for srv in started:
        srv.stop()


def client_for(srv, key="unused", **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.base_url, api_key=key, max_retries=0, **kw)


# -- the OpenAI surface ---------------------------------------------------------------------
def test_models_lists_each_profile(serve, model_server):
    profiles = {"fast": openai_profile(model_server),
                "deep": openai_profile(model_server, name="deep", max_depth=2)}
    _, srv = serve(profiles=profiles)
    models = client_for(srv).models.list()
    assert [m.id for m in models.data] == ["fast", "deep"]
    assert client_for(srv).models.retrieve("deep").id == "deep"
    with pytest.raises(openai.NotFoundError):
        client_for(srv).models.retrieve("gpt-4o")


def test_completion_carries_answer_usage_run_id_and_status(serve, model_server):
    _, srv = serve()
    raw = client_for(srv).chat.completions.with_raw_response.create(
        model="fast", messages=[{"role": "user", "content": QUESTION}])
    reply = raw.parse()
    # no context besides the question: the question is the context (as `rlm run PROMPT`)
    assert reply.choices[0].message.content == f"str:{len(QUESTION)} sub=pong q=yes"
    assert reply.choices[0].finish_reason == "stop"
    extra = reply.model_extra["rlm"]
    assert extra["status"] == "completed" and re.fullmatch(r"[0-9a-f]{12}", extra["run_id"])
    assert raw.headers["x-rlm-run-id"] == extra["run_id"]
    # tree-wide usage: the root turn and the llm_query sub-call, both counted
    models = extra["usage"]["model_usage_summaries"]
    assert sum(m["total_calls"] for m in models.values()) == 2
    assert reply.usage.prompt_tokens == extra["usage"]["total_input_tokens"] > 0
    assert reply.usage.completion_tokens == extra["usage"]["total_output_tokens"] > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_earlier_messages_and_attachments_are_context(serve):
    _, srv = serve()
    doc = base64.b64encode(b"svc-a ERROR\nsvc-b ok\n").decode()
    reply = client_for(srv).chat.completions.create(model="fast", messages=[
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": [
            {"type": "text", "text": QUESTION},
            {"type": "file", "file": {"filename": "app.log",
                                      "file_data": f"data:text/plain;base64,{doc}"}}]}])
    assert reply.choices[0].message.content == (
        "dict:message 1 (system)|attachment: app.log sub=pong q=yes")


def test_stream_shows_progress_then_answer_then_usage(serve):
    _, srv = serve()
    stream = client_for(srv).chat.completions.create(
        model="fast", messages=[{"role": "user", "content": QUESTION}], stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    progress = [c.choices[0].delta.model_extra.get("reasoning_content") for c in chunks
                if c.choices and c.choices[0].delta.model_extra.get("reasoning_content")]
    assert progress[0].startswith("turn 1/30")
    assert any(p.startswith("llm_query to test-model started") for p in progress)
    assert any(p.startswith("llm_query to test-model done") for p in progress)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == f"str:{len(QUESTION)} sub=pong q=yes"
    # progress comes before the answer, the finish reason after it
    first_answer = next(i for i, c in enumerate(chunks) if c.choices and c.choices[0].delta.content)
    last_progress = max(i for i, c in enumerate(chunks)
                        if c.choices and c.choices[0].delta.model_extra.get("reasoning_content"))
    assert last_progress < first_answer
    final = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
    assert final.choices[0].finish_reason == "stop"
    assert final.model_extra["rlm"]["status"] == "completed"
    assert final.usage.total_tokens > 0
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == final.usage.total_tokens
    counts = [c.model_extra["rlm"]["progress"] for c in chunks
              if c.choices and c.choices[0].delta.model_extra.get("reasoning_content")]
    assert {p["run_id"] for p in counts} == {final.model_extra["rlm"]["run_id"]}
    assert counts[-1]["subcalls_done"] == 1 and counts[-1]["turn"] == 1


def test_files_by_reference_under_the_root(serve, tmp_path):
    root = tmp_path / "data"
    (root / "logs").mkdir(parents=True)
    (root / "logs" / "a.log").write_text("svc-a ERROR\n")
    (root / "logs" / "b.log").write_text("svc-b ok\n")
    (tmp_path / "secret.txt").write_text("nope")
    _, srv = serve(files_root=str(root))
    c = client_for(srv)
    reply = c.chat.completions.create(model="fast", messages=[{"role": "user", "content": QUESTION}],
                                      extra_body={"rlm": {"files": ["logs/*.log"]}})
    assert reply.choices[0].message.content == "dict:file: logs/a.log|file: logs/b.log sub=pong q=yes"
    one = c.chat.completions.create(model="fast", messages=[{"role": "user", "content": QUESTION}],
                                    extra_body={"rlm": {"files": ["logs/a.log"]}})
    assert one.choices[0].message.content == "str:12 sub=pong q=yes"
    for bad in (["../secret.txt"], [str(tmp_path / "secret.txt")], ["logs/none-*.log"], ["logs"]):
        with pytest.raises(openai.BadRequestError) as info:
            c.chat.completions.create(model="fast", messages=[{"role": "user", "content": "q"}],
                                      extra_body={"rlm": {"files": bad}})
        assert info.value.body["code"] == "invalid_request"
    os.symlink(tmp_path / "secret.txt", root / "link.txt")
    with pytest.raises(openai.BadRequestError, match="outside the allowed root"):
        c.chat.completions.create(model="fast", messages=[{"role": "user", "content": "q"}],
                                  extra_body={"rlm": {"files": ["link.txt"]}})


def test_files_by_reference_need_a_root(serve):
    _, srv = serve()
    with pytest.raises(openai.BadRequestError, match="--files-root"):
        client_for(srv).chat.completions.create(
            model="fast", messages=[{"role": "user", "content": "q"}],
            extra_body={"rlm": {"files": ["a.log"]}})


def test_bearer_token_is_checked(serve):
    _, srv = serve(api_key="s3cret")
    with pytest.raises(openai.AuthenticationError) as info:
        client_for(srv, key="wrong").models.list()
    assert info.value.body["type"] == "authentication_error"
    assert httpx.get(srv.base_url + "/models").status_code == 401
    assert [m.id for m in client_for(srv, key="s3cret").models.list().data] == ["fast"]


def test_errors_use_openai_format(serve):
    _, srv = serve(max_request_bytes=2000)
    c = client_for(srv)
    with pytest.raises(openai.NotFoundError) as info:
        c.chat.completions.create(model="nope", messages=[{"role": "user", "content": "q"}])
    assert info.value.body["code"] == "model_not_found" and "fast" in info.value.body["message"]
    with pytest.raises(openai.APIStatusError) as info:
        c.chat.completions.create(model="fast", messages=[{"role": "user", "content": "x" * 5000}])
    assert info.value.status_code == 413 and "--files-root" in info.value.body["message"]
    with pytest.raises(openai.BadRequestError, match="last message must have the role 'user'"):
        c.chat.completions.create(model="fast", messages=[{"role": "assistant", "content": "q"}])
    with pytest.raises(openai.BadRequestError, match="tools"):
        c.chat.completions.create(model="fast", messages=[{"role": "user", "content": "q"}],
                                  tools=[{"type": "function", "function": {"name": "f"}}])
    bad = httpx.post(srv.base_url + "/chat/completions", content=b"{not json")
    assert bad.status_code == 400 and set(bad.json()["error"]) == {"message", "type", "param", "code"}
    assert httpx.get(srv.base_url + "/nowhere").json()["error"]["code"] == "not_found"


def test_backend_failure_is_a_502_in_openai_format(serve):
    dead = Profile(name="dead", backend="openai", model="m", base_url="http://127.0.0.1:9/v1",
                   backend_kwargs={"api_key": "test", "max_retries": 0, "timeout": 2})
    _, srv = serve(profiles={"dead": dead})
    with pytest.raises(openai.APIStatusError) as info:
        client_for(srv).chat.completions.create(model="dead",
                                                messages=[{"role": "user", "content": "q"}])
    assert info.value.status_code == 502 and info.value.body["code"] == "backend_error"
    stream = client_for(srv).chat.completions.create(
        model="dead", messages=[{"role": "user", "content": "q"}], stream=True)
    with pytest.raises(openai.APIError, match="Backend"):
        list(stream)


def scripted(name="s", replies=None, responder=None, **kw) -> Profile:
    backend_kwargs = {"replies": replies} if replies is not None else {"responder": responder}
    return Profile(name=name, backend="scripted", backend_kwargs=backend_kwargs, **kw)


def test_a_limit_returns_the_partial_answer_with_its_status(serve):
    never = "```repl\nanswer['content'] = 'so far: 3'\n```"
    _, srv = serve(profiles={"s": scripted(responder=lambda m: never, max_iterations=2)})
    reply = client_for(srv).chat.completions.create(model="s",
                                                    messages=[{"role": "user", "content": "q"}])
    assert reply.model_extra["rlm"]["status"] == "max_iterations"
    assert reply.choices[0].finish_reason == "length"
    slow = "```repl\nimport time; time.sleep(0.3)\nanswer['content'] = 'partial'\n```"
    _, srv = serve(profiles={"s": scripted(responder=lambda m: slow, max_timeout=1.0)})
    reply = client_for(srv).chat.completions.create(model="s",
                                                    messages=[{"role": "user", "content": "q"}])
    assert reply.model_extra["rlm"]["status"] == "timeout"
    assert reply.choices[0].finish_reason == "length"
    assert reply.choices[0].message.content == "partial"


def slow_profile(seconds: float) -> Profile:
    code = f"```repl\nimport time; time.sleep({seconds})\nanswer['content'] = 'slow'\nanswer['ready'] = True\n```"
    return scripted(name="slow", replies=[code])


def test_runs_off_the_event_loop_and_concurrency_is_bounded(serve):
    app, srv = serve(profiles={"slow": slow_profile(1.5)}, max_concurrent=2, max_queued=1)
    results: list = []

    def call():
        try:
            results.append(client_for(srv).chat.completions.create(
                model="slow", messages=[{"role": "user", "content": "q"}]).choices[0].message.content)
        except openai.RateLimitError as exc:
            results.append(exc)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    deadline = time.time() + 5
    while app.admitted < 3 and time.time() < deadline:
        time.sleep(0.02)
    t0 = time.perf_counter()
    assert client_for(srv).models.list().data  # the loop answers while three runs hold it
    assert time.perf_counter() - t0 < 0.5
    with pytest.raises(openai.RateLimitError) as info:  # 2 running + 1 queued: a fourth is refused
        client_for(srv).chat.completions.create(model="slow", messages=[{"role": "user", "content": "q"}])
    assert info.value.response.headers["retry-after"] == "1"
    for t in threads:
        t.join(10)
    assert results == ["slow", "slow", "slow"] and app.peak == 3 and app.admitted == 0


def test_a_client_that_goes_away_cancels_its_run(serve):
    app, srv = serve(profiles={"slow": slow_profile(20)})
    with pytest.raises(openai.APITimeoutError):
        client_for(srv, timeout=1.0).chat.completions.create(
            model="slow", messages=[{"role": "user", "content": "q"}])
    deadline = time.time() + 8
    while app.runs and time.time() < deadline:
        time.sleep(0.05)
    assert not app.runs, "the run kept going after its client disconnected"
    assert app.admitted == 0
    stream = client_for(srv, timeout=1.0).chat.completions.create(
        model="slow", messages=[{"role": "user", "content": "q"}], stream=True)
    next(iter(stream))
    stream.close()
    deadline = time.time() + 10  # noticed at the next keep-alive write (every 5 s)
    while app.runs and time.time() < deadline:
        time.sleep(0.05)
    assert not app.runs and app.admitted == 0


def test_runs_are_logged_under_their_run_id(serve, tmp_path, monkeypatch):
    monkeypatch.setenv("RLM_USER_DIR", str(tmp_path / "user"))
    _, srv = serve(log=True, profiles={"s": scripted(replies=["```repl\nFINAL('42')\n```"])})
    reply = client_for(srv).chat.completions.create(model="s",
                                                    messages=[{"role": "user", "content": "q"}])
    run_id = reply.model_extra["rlm"]["run_id"]
    out = subprocess.run([sys.executable, "-m", "rlm", "logs", "show", run_id],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "RLM_USER_DIR": str(tmp_path / "user")})
    assert out.returncode == 0, out.stderr
    assert run_id in out.stdout and "42" in out.stdout


# -- how a request becomes context and question (pure) --------------------------------------
PROFILES = {"p": Profile(name="p")}
texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30)
roles = st.sampled_from(["system", "user", "assistant", "developer", "tool"])


@settings(max_examples=150, deadline=None)
@given(earlier=st.lists(st.tuples(roles, texts), max_size=6), question=texts)
def test_last_user_message_is_the_question_and_the_rest_is_context(earlier, question):
    messages = [{"role": r, "content": t} for r, t in earlier] + [{"role": "user", "content": question}]
    if not question.strip():
        with pytest.raises(InputError):
            parse_request({"model": "p", "messages": messages}, PROFILES, files_root=None,
                          max_file_bytes=10)
        return
    req = parse_request({"model": "p", "messages": messages}, PROFILES, files_root=None,
                        max_file_bytes=10)
    if not earlier:
        assert (req.prompt, req.root_prompt) == (question, None)
    elif len(earlier) == 1:
        assert (req.prompt, req.root_prompt) == (earlier[0][1], question)
    else:
        assert req.root_prompt == question
        assert list(req.prompt.values()) == [t for _, t in earlier]
        assert list(req.prompt) == [f"message {i + 1} ({r})" for i, (r, _) in enumerate(earlier)]


@pytest.mark.parametrize("body, fragment", [
    ({"model": "p"}, "'messages'"),
    ({"model": "p", "messages": []}, "'messages'"),
    ({"model": "p", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "reads text"),
    ({"model": "p", "messages": [{"role": "user", "content": "q"}], "n": 2}, "'n' must be 1"),
    ({"model": "p", "messages": [{"role": "user", "content": "q"}], "rlm": {"file": []}}, "'files'"),
    ({"messages": [{"role": "user", "content": "q"}]}, "'model' is required"),
])
def test_malformed_requests_say_what_to_send(body, fragment):
    with pytest.raises(InputError, match=re.escape(fragment)):
        parse_request(body, PROFILES, files_root=None, max_file_bytes=10)


# -- the command ----------------------------------------------------------------------------
def test_rlm_serve_command_end_to_end(model_server, tmp_path):
    env = {**os.environ, "RLM_USER_DIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlm", "serve", "--port", "0", "--no-log", "--name", "cli",
         "--backend", "openai", "--model", "test-model", "--base-url", model_server.base_url,
         "--max-iterations", "5"],
        stderr=subprocess.PIPE, text=True, env={**env, "OPENAI_API_KEY": "test"})
    try:
        line = proc.stderr.readline()
        match = re.search(r"at (http://127\.0\.0\.1:\d+/v1)", line)
        assert match, line
        c = openai.OpenAI(base_url=match.group(1), api_key="x", max_retries=0)
        assert [m.id for m in c.models.list().data] == ["cli"]
        reply = c.chat.completions.create(model="cli", messages=[{"role": "user", "content": QUESTION}])
        assert reply.choices[0].message.content == f"str:{len(QUESTION)} sub=pong q=yes"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(15)
    assert proc.returncode == 0


def test_rlm_serve_refuses_a_public_address_without_a_token(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RLM_SERVE_API_KEY"}
    out = subprocess.run([sys.executable, "-m", "rlm", "serve", "--host", "0.0.0.0", "--port", "0",
                          "--backend", "scripted"], capture_output=True, text=True, timeout=60,
                         env={**env, "RLM_USER_DIR": str(tmp_path)})
    assert out.returncode == 2
    assert "--api-key" in out.stderr and "127.0.0.1" in out.stderr
