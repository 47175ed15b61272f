"""Tests of rlm_testkit.servers.OpenAICompatibleServer: raw httpx, http.client and the real openai SDK."""

from __future__ import annotations

import http.client as httpclient
import json
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlm_testkit.servers import Fault, OpenAICompatibleServer, Reply, demo_responder, estimate_tokens

MSGS = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hi"}]


@pytest.fixture
def server():
    with OpenAICompatibleServer() as srv:
        yield srv


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        yield client


def sdk(server, **kw):
    kw.setdefault("max_retries", 0)
    kw.setdefault("timeout", 10)
    return openai.OpenAI(base_url=server.base_url, api_key="sk-test", **kw)


def chat(http, messages=MSGS, **body):
    return http.post("/chat/completions", json={"model": "gpt-test", "messages": messages, **body})


# --- lifecycle and the plain reply -------------------------------------------------------


def test_base_url_and_context_manager():
    srv = OpenAICompatibleServer(replies=["x"])
    assert not srv.running
    with srv:
        assert srv.running
        assert srv.base_url.startswith("http://127.0.0.1:")
        assert srv.base_url.endswith("/v1")
        assert srv.port > 0
        assert srv.url + "/v1" == srv.base_url
    assert not srv.running
    srv.stop()  # idempotent


def test_start_returns_self_and_stop():
    srv = OpenAICompatibleServer(replies=["x"]).start()
    try:
        assert httpx.get(srv.url + "/health").json()["status"] == "ok"
    finally:
        srv.stop()
    with pytest.raises(httpx.TransportError):
        httpx.get(srv.url + "/health", timeout=2)


def test_reply_wire_format(server, http):
    server.add_replies("hello there")
    r = chat(http)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    data = r.json()
    assert data["id"].startswith("chatcmpl-")
    assert data["object"] == "chat.completion"
    assert isinstance(data["created"], int)
    assert data["model"] == "gpt-test"
    choice = data["choices"][0]
    assert choice["index"] == 0
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == "hello there"
    assert choice["finish_reason"] == "stop"
    assert set(data["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}


def test_ids_are_unique(server, http):
    server.add_replies("a", "b", "c")
    ids = {chat(http).json()["id"] for _ in range(3)}
    assert len(ids) == 3


def test_usage_is_estimated_from_characters(server, http):
    server.add_replies("x" * 9)
    usage = chat(http).json()["usage"]
    prompt_chars = len("You are terse.") + len("Say hi")  # 20
    assert usage["prompt_tokens"] == math.ceil(prompt_chars / 4) == 5
    assert usage["completion_tokens"] == 3  # ceil(9 / 4)
    assert usage["total_tokens"] == 8


def test_estimate_tokens_minimum_one():
    assert estimate_tokens(0) == 1
    assert estimate_tokens(1) == 1
    assert estimate_tokens(4) == 1
    assert estimate_tokens(5) == 2


def test_usage_counts_text_parts(server, http):
    server.add_replies("ok")
    msgs = [{"role": "user", "content": [{"type": "text", "text": "abcdefgh"},
                                         {"type": "text", "text": "ijkl"}]}]
    assert chat(http, msgs).json()["usage"]["prompt_tokens"] == 3


def test_explicit_usage_cost_model_and_finish_reason(server, http):
    server.add_replies(Reply("r", prompt_tokens=123, completion_tokens=45, cost=0.0042,
                             model="served-model", finish_reason="length"))
    data = chat(http).json()
    assert data["usage"] == {"prompt_tokens": 123, "completion_tokens": 45, "total_tokens": 168,
                             "cost": 0.0042}
    assert data["model"] == "served-model"
    assert data["choices"][0]["finish_reason"] == "length"


def test_usage_false_omits_usage(server, http):
    server.add_replies(Reply("no usage here", usage=False))
    data = chat(http).json()
    assert "usage" not in data
    assert data["choices"][0]["message"]["content"] == "no usage here"


def test_model_falls_back_to_server_model():
    with OpenAICompatibleServer(replies=["a"], model="my-model") as srv:
        data = httpx.post(srv.base_url + "/chat/completions",
                          json={"messages": [{"role": "user", "content": "q"}]}).json()
        assert data["model"] == "my-model"


def test_replies_in_order_then_responder(server, http):
    seen = []

    def responder(messages, body):
        seen.append((messages, body))
        return Reply(f"responder saw {messages[-1]['content']}", completion_tokens=7)

    server.add_replies("first", Reply("second"))
    server.responder = responder
    assert chat(http).json()["choices"][0]["message"]["content"] == "first"
    assert chat(http).json()["choices"][0]["message"]["content"] == "second"
    assert server.replies_left == 0
    data = chat(http, [{"role": "user", "content": "Q3"}], temperature=0.5).json()
    assert data["choices"][0]["message"]["content"] == "responder saw Q3"
    assert data["usage"]["completion_tokens"] == 7
    assert seen[0][0] == [{"role": "user", "content": "Q3"}]
    assert seen[0][1]["temperature"] == 0.5


def test_script_exhausted_is_a_loud_500(server, http):
    server.add_replies("only one")
    assert chat(http).status_code == 200
    r = chat(http)
    assert r.status_code == 500
    err = r.json()["error"]
    assert "ran out" in err["message"]
    assert err["code"] == "script_exhausted"


def test_script_exhausted_through_sdk(server):
    with pytest.raises(openai.InternalServerError, match="ran out"):
        sdk(server).chat.completions.create(model="m", messages=MSGS)


def test_responder_exception_is_a_500(server, http):
    def responder(messages, body):
        raise RuntimeError("boom in responder")

    server.responder = responder
    r = chat(http)
    assert r.status_code == 500
    assert "boom in responder" in r.json()["error"]["message"]


def test_requests_and_headers_are_recorded(server, http):
    server.add_replies("a", "b")
    chat(http, temperature=0.1, max_tokens=5)
    http.post("/chat/completions", json={"model": "m2", "messages": MSGS},
              headers={"Authorization": "Bearer sk-abc", "X-Custom": "1"})
    assert [r["model"] for r in server.requests] == ["gpt-test", "m2"]
    assert server.requests[0]["temperature"] == 0.1
    assert server.requests[0]["max_tokens"] == 5
    hdrs = server.headers[1]
    assert hdrs["Authorization"] == "Bearer sk-abc"
    assert hdrs["authorization"] == "Bearer sk-abc"
    assert "x-custom" in hdrs and "X-Custom" in hdrs
    assert hdrs.get("AUTHORIZATION") == "Bearer sk-abc"
    assert server.paths == ["/v1/chat/completions", "/v1/chat/completions"]


def test_reset_clears_requests_and_faults(server, http):
    server.add_replies("a", "b")
    chat(http)
    server.inject(Fault("status", status=500))
    server.inject(Fault("reset"))
    assert server.pending_faults == 2
    server.reset()
    assert server.requests == [] and server.headers == []
    assert server.pending_faults == 0
    assert chat(http).json()["choices"][0]["message"]["content"] == "b"


def test_bad_json_body_is_400(server, http):
    r = http.post("/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"
    r = http.post("/chat/completions", json={"model": "m"})
    assert r.status_code == 400
    assert "messages" in r.json()["error"]["message"]


# --- other endpoints ---------------------------------------------------------------------


def test_models_root_and_health(server, http):
    data = http.get("/models").json()
    assert data["object"] == "list"
    assert data["data"][0]["id"] == "scripted-model"
    assert http.get(server.url + "/health").json()["status"] == "ok"
    root = http.get(server.url + "/")
    assert root.status_code == 200
    assert "not a real model" not in root.text
    assert [m.id for m in sdk(server).models.list()] == ["scripted-model"]


def test_unknown_paths_are_404_json(server, http):
    for r in (http.get("/nope"), http.post("/embeddings", json={"input": "x"}),
              http.get(server.url + "/v2/models")):
        assert r.status_code == 404
        assert "message" in r.json()["error"]
    assert server.requests == []


def test_demo_mode():
    with OpenAICompatibleServer(demo=True) as srv:
        root = httpx.get(srv.url + "/")
        assert root.text.strip() == "rlm demo server (not a real model)"
        r = httpx.post(srv.base_url + "/chat/completions",
                       json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        assert r.headers["x-rlm-demo"] == "not a real model"
        assert "not a real model" in r.json()["system_fingerprint"]
        assert "demo reply" in r.json()["choices"][0]["message"]["content"]  # the default responder
        assert httpx.get(srv.url + "/health").json()["demo"] is True
    # the reply text itself is never altered: demo scripts parse it
    with OpenAICompatibleServer(demo=True, replies=["scripted"]) as srv:
        out = sdk(srv).chat.completions.create(model="m", messages=MSGS)
        assert out.choices[0].message.content == "scripted"
        assert "not a real model" in out.system_fingerprint


def test_responder_can_be_replaced_as_private_alias(server, http):
    server._responder = lambda messages, body: "via alias"
    assert server.responder is server._responder
    assert chat(http).json()["choices"][0]["message"]["content"] == "via alias"
    server.responder = None
    assert chat(http).status_code == 500


def test_demo_responder_drives_a_root_loop():
    first = demo_responder([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}], {})
    assert "```repl" in first and "answer" not in first
    second = demo_responder([{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                             {"role": "assistant", "content": first},
                             {"role": "user", "content": "REPL output"}], {})
    assert 'answer["ready"] = True' in second
    sub = demo_responder([{"role": "user", "content": "summarise this"}], {})
    assert "summarise this" in sub and "```" not in sub


def test_azure_deployment_path(server):
    server.add_replies("azure says hi")
    url = server.url + "/openai/deployments/my-dep/chat/completions?api-version=2024-06-01"
    data = httpx.post(url, json={"messages": MSGS}, headers={"api-key": "az-key"}).json()
    assert data["choices"][0]["message"]["content"] == "azure says hi"
    assert data["model"] == "my-dep"
    assert server.headers[0]["api-key"] == "az-key"
    assert server.paths[0].endswith("?api-version=2024-06-01")
    r = httpx.post(server.url + "/openai/deployments/my-dep/chat/completions", json={"messages": MSGS})
    assert r.status_code == 404


def test_azure_sdk_against_server(server):
    server.add_replies("via azure sdk")
    client = openai.AzureOpenAI(azure_endpoint=server.url, api_version="2024-06-01",
                                api_key="az-key", max_retries=0)
    out = client.chat.completions.create(model="dep-a", messages=MSGS)
    assert out.choices[0].message.content == "via azure sdk"
    assert server.paths[0].startswith("/openai/deployments/dep-a/chat/completions?")
    assert server.headers[0]["api-key"] == "az-key"


# --- the real SDK ------------------------------------------------------------------------


def test_sdk_reply_and_usage(server):
    server.add_replies(Reply("sdk hello", prompt_tokens=11, completion_tokens=2, cost=0.25))
    client = sdk(server)
    out = client.chat.completions.create(model="gpt-x", messages=MSGS, temperature=0, seed=7)
    assert out.choices[0].message.content == "sdk hello"
    assert out.usage.prompt_tokens == 11
    assert out.usage.completion_tokens == 2
    assert out.usage.total_tokens == 13
    assert out.usage.model_extra.get("cost") == 0.25
    assert server.requests[0]["seed"] == 7
    assert server.headers[0]["authorization"] == "Bearer sk-test"


async def _async_call(server):
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    try:
        out = await client.chat.completions.create(model="m", messages=MSGS)
        return out.choices[0].message.content
    finally:
        await client.close()


def test_async_sdk(server):
    import asyncio

    server.add_replies("async hello")
    assert asyncio.run(_async_call(server)) == "async hello"


# --- faults ------------------------------------------------------------------------------


def test_fault_validation():
    with pytest.raises(ValueError, match="unknown fault kind"):
        Fault("explode")
    with pytest.raises(ValueError):
        Fault("status", status=42)
    assert Fault("status").status == 500
    with pytest.raises(TypeError):
        OpenAICompatibleServer().inject("status")  # type: ignore[arg-type]


def test_fault_status_with_retry_after(server, http):
    server.add_replies("after the fault")
    server.inject(Fault("status", status=429, retry_after=2))
    r = chat(http)
    assert r.status_code == 429
    assert r.headers["retry-after"] == "2"
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "code"}
    assert err["type"] == "rate_limit_error"
    # the fault did not consume the scripted reply
    assert chat(http).json()["choices"][0]["message"]["content"] == "after the fault"
    assert len(server.requests) == 2


def test_fault_status_custom_body(server, http):
    server.inject(Fault("status", status=400, body={"error": {
        "message": "This model's maximum context length is 8192 tokens.",
        "type": "invalid_request_error", "code": "context_length_exceeded"}}))
    server.inject(Fault("status", status=503, body="overloaded, try later"))
    r = chat(http)
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    r = chat(http)
    assert r.status_code == 503 and r.json()["error"]["message"] == "overloaded, try later"
    assert "retry-after" not in r.headers


def test_fault_status_through_sdk(server):
    server.inject(Fault("status", status=401))
    server.inject(Fault("status", status=429, retry_after=1))
    client = sdk(server)
    with pytest.raises(openai.AuthenticationError) as info:
        client.chat.completions.create(model="m", messages=MSGS)
    assert info.value.status_code == 401
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="m", messages=MSGS)
    assert info.value.response.headers["retry-after"] == "1"


def test_faults_are_fifo(server, http):
    server.add_replies("ok")
    server.inject(Fault("status", status=500))
    server.inject(Fault("status", status=502))
    server.inject(Fault("status", status=503))
    assert [chat(http).status_code for _ in range(4)] == [500, 502, 503, 200]


def test_fault_stall(server, http):
    server.add_replies("late")
    server.inject(Fault("stall", seconds=0.3))
    t0 = time.perf_counter()
    r = chat(http)
    assert time.perf_counter() - t0 >= 0.29
    assert r.json()["choices"][0]["message"]["content"] == "late"


def test_fault_stall_times_out_client(server):
    server.add_replies("never seen", "seen")
    server.inject(Fault("stall", seconds=5))
    with httpx.Client(base_url=server.base_url, timeout=0.2) as client, pytest.raises(httpx.ReadTimeout):
        chat(client)
    server.inject(Fault("stall", seconds=5))
    with pytest.raises(openai.APITimeoutError):
        sdk(server, timeout=0.2).chat.completions.create(model="m", messages=MSGS)


def test_fault_reset(server, http):
    server.add_replies("after reset")
    server.inject(Fault("reset"))
    with pytest.raises(httpx.TransportError):
        chat(http)
    # a fresh connection works, the reply was not consumed
    assert chat(http).json()["choices"][0]["message"]["content"] == "after reset"
    server.inject(Fault("reset"))
    with pytest.raises(openai.APIConnectionError):
        sdk(server).chat.completions.create(model="m", messages=MSGS)


def test_fault_malformed(server, http):
    server.inject(Fault("malformed"))
    server.inject(Fault("malformed", body="{\"choices\": "))
    r = chat(http)
    assert r.status_code == 200
    with pytest.raises(ValueError):
        json.loads(r.text)
    assert chat(http).text == "{\"choices\": "
    assert server.replies_left == 0 and server.requests


def test_fault_no_usage(server, http):
    server.add_replies(Reply("plain", cost=1.0), "next")
    server.inject(Fault("no_usage"))
    data = chat(http).json()
    assert data["choices"][0]["message"]["content"] == "plain"
    assert "usage" not in data
    assert "usage" in chat(http).json()  # one fault, one request


# --- streaming ---------------------------------------------------------------------------


def _sse_events(response):
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            events.append(line[len("data: "):])
    return events


def test_stream_raw_sse(server, http):
    text = "streamed reply that is longer than one chunk, with ünïcödé ✓"
    server.add_replies(Reply(text, prompt_tokens=3, completion_tokens=4))
    with http.stream("POST", "/chat/completions",
                     json={"model": "m", "messages": MSGS, "stream": True,
                           "stream_options": {"include_usage": True}}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = _sse_events(r)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert content == text
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


def test_stream_without_include_usage_has_no_usage(server, http):
    server.add_replies("abc")
    with http.stream("POST", "/chat/completions",
                     json={"model": "m", "messages": MSGS, "stream": True}) as r:
        events = _sse_events(r)
    assert events[-1] == "[DONE]"
    assert all("usage" not in json.loads(e) for e in events[:-1])
    # the connection stays usable after a stream (chunked encoding, keep-alive)
    server.add_replies("after stream")
    assert chat(http).json()["choices"][0]["message"]["content"] == "after stream"


def test_stream_through_sdk(server):
    server.add_replies(Reply("one two three four five six seven eight nine ten", completion_tokens=10))
    stream = sdk(server).chat.completions.create(model="m", messages=MSGS, stream=True,
                                                 stream_options={"include_usage": True})
    parts, usage = [], None
    for chunk in stream:
        if chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
        if chunk.usage:
            usage = chunk.usage
    assert "".join(parts) == "one two three four five six seven eight nine ten"
    assert usage.completion_tokens == 10


# --- connections and concurrency ---------------------------------------------------------


def test_keep_alive_reuses_one_connection(server):
    server.responder = lambda messages, body: "r:" + messages[-1]["content"]
    conn = httpclient.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        socks = []
        for i in range(5):
            payload = json.dumps({"model": "m", "messages": [{"role": "user", "content": str(i)}]})
            conn.request("POST", "/v1/chat/completions", body=payload,
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = json.loads(resp.read())
            assert data["choices"][0]["message"]["content"] == f"r:{i}"
            assert not resp.will_close
            assert resp.getheader("Connection") == "keep-alive"
            socks.append(conn.sock)
        assert conn.sock is not None and all(s is socks[0] for s in socks)
        # GETs share the connection too
        conn.request("GET", "/health")
        assert json.loads(conn.getresponse().read())["status"] == "ok"
        assert conn.sock is socks[0]
    finally:
        conn.close()


def test_connection_close_is_honoured(server):
    server.add_replies("bye")
    r = httpx.post(server.base_url + "/chat/completions", json={"messages": MSGS},
                   headers={"Connection": "close"})
    assert r.headers["connection"] == "close"


def test_concurrent_requests_each_get_their_own_reply():
    def responder(messages, body):
        return Reply(f"answer to {messages[-1]['content']}", completion_tokens=int(messages[-1]["content"]) + 1)

    with OpenAICompatibleServer(responder=responder, latency=0.05) as srv, \
            httpx.Client(base_url=srv.base_url, timeout=10,
                         limits=httpx.Limits(max_connections=64)) as client:
        def one(i):
            data = client.post("/chat/completions", json={
                "model": "m", "messages": [{"role": "user", "content": str(i)}]}).json()
            return data["choices"][0]["message"]["content"], data["usage"]["completion_tokens"]

        with ThreadPoolExecutor(32) as pool:
            results = list(pool.map(one, range(64)))
        assert results == [(f"answer to {i}", i + 1) for i in range(64)]
        assert len(srv.requests) == 64
        assert sorted(int(r["messages"][0]["content"]) for r in srv.requests) == list(range(64))


def test_concurrent_scripted_replies_are_each_used_once():
    replies = [f"reply-{i}" for i in range(40)]
    with OpenAICompatibleServer(replies=replies) as srv, \
            httpx.Client(base_url=srv.base_url, timeout=10) as client:
        with ThreadPoolExecutor(8) as pool:
            got = list(pool.map(lambda _: chat(client).json()["choices"][0]["message"]["content"],
                                range(40)))
        assert sorted(got) == sorted(replies)
        assert chat(client).status_code == 500  # and then the script has run out


def test_stop_is_prompt_with_stalled_requests():
    srv = OpenAICompatibleServer(replies=["a", "b"]).start()
    srv.inject(Fault("stall", seconds=60))
    srv.inject(Fault("stall", seconds=60))
    errors = []

    def call():
        try:
            httpx.post(srv.base_url + "/chat/completions", json={"messages": MSGS}, timeout=30)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=call, daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while len(srv.requests) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    # an idle keep-alive connection is open too
    idle = httpclient.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    idle.request("GET", "/health")
    idle.getresponse().read()
    t0 = time.perf_counter()
    srv.stop()
    assert time.perf_counter() - t0 < 3
    for t in threads:
        t.join(timeout=5)
        assert not t.is_alive()
    idle.close()


# --- property: any text round-trips through the SDK --------------------------------------


@pytest.fixture(scope="module")
def shared_server():
    with OpenAICompatibleServer() as srv:
        yield srv


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=300))
def test_reply_text_round_trips_through_sdk(shared_server, text):
    shared_server.add_replies(Reply(text))
    client = _round_trip_client(shared_server)
    out = client.chat.completions.create(model="m", messages=[{"role": "user", "content": text or "x"}])
    assert out.choices[0].message.content == text
    assert out.usage.completion_tokens == estimate_tokens(len(text))


@settings(max_examples=25, deadline=None)
@given(text=st.text(min_size=1, max_size=120))
def test_reply_text_round_trips_through_sdk_stream(shared_server, text):
    shared_server.add_replies(Reply(text))
    stream = _round_trip_client(shared_server).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "q"}], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == text


_clients: dict[int, openai.OpenAI] = {}


def _round_trip_client(srv):
    client = _clients.get(srv.port)
    if client is None:
        client = _clients[srv.port] = openai.OpenAI(base_url=srv.base_url, api_key="k", max_retries=0)
    return client
