"""The worker channel (rlm_isolation): framing, authentication, untrusted frames."""

from __future__ import annotations

import socket
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlm_isolation import worker as W
from rlm_isolation.channel import Channel, new_secret
from rlm_isolation.repl import _defines, context_chunks, tool_specs
from rlm.exceptions import ConfigurationError

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20)


def reader_of(data: bytes) -> W.FrameReader:
    view = memoryview(data)
    pos = [0]

    def read(n: int) -> bytes:
        chunk = bytes(view[pos[0]:pos[0] + min(n, 7)])  # short reads on purpose
        pos[0] += len(chunk)
        return chunk

    return W.FrameReader(read)


@settings(max_examples=60, deadline=None)
@given(messages=st.lists(st.dictionaries(st.text().filter(lambda k: k != "t"), json_values,
                                         max_size=3), max_size=5),
       blob=st.binary(max_size=300))
def test_frames_round_trip(messages, blob):
    data = b"".join(W.encode_json({"t": "m", **m}) for m in messages) + W.encode_blob(7, blob)
    reader = reader_of(data)
    for m in messages:
        assert reader.read() == (W.KIND_JSON, {"t": "m", **m})
    assert reader.read() == (W.KIND_BLOB, (7, blob))
    with pytest.raises(EOFError):
        reader.read()


@pytest.mark.parametrize("data, message", [
    (b"\xff\xff\xff\xff\x00", "over the"),
    (b"\x00\x00\x00\x03\x00{x", "not UTF-8 JSON"),
    (b"\x00\x00\x00\x03\x00[]", "'t' field"),
    (b"\x00\x00\x00\x02\x09x", "unknown frame kind"),
    (b"\x00\x00\x00\x09\x00{", "in the middle"),
])
def test_bad_frames_are_protocol_errors(data, message):
    with pytest.raises(W.ProtocolError, match=message):
        reader_of(data).read()


def _pair(worker_secret: bytes, host_secret: bytes):
    a, b = socket.socketpair()
    result: dict = {}

    def run_worker():
        worker = W.Worker(lambda n: b.recv(n), b.sendall, worker_secret)
        try:
            result["config"] = worker.handshake()
        except (W.ProtocolError, EOFError) as exc:
            result["error"] = exc
        b.close()

    t = threading.Thread(target=run_worker, daemon=True)
    t.start()
    channel = Channel(lambda n: a.recv(n), a.sendall, None, host_secret)
    return channel, t, result, a


def test_wrong_secret_is_refused_both_ways():
    channel, t, result, a = _pair(b"worker-secret", new_secret())
    with pytest.raises((W.ProtocolError, EOFError)):  # the worker hangs up on a wrong proof
        channel.handshake({"x": 1})
    a.close()
    t.join(5)
    assert "config" not in result  # the worker never got its configuration


def test_right_secret_authenticates_and_calls_are_validated():
    secret = new_secret()
    channel, t, result, a = _pair(secret, secret)
    # The worker expects config then stops (our fake worker sends no 'ready'): read only auth.
    hello = channel._read_json("hello")
    channel.send({"t": "auth", "mac": W.mac(secret, "host", hello["nonce"]), "nonce": "n1"})
    reply = channel._read_json("auth")
    assert reply["mac"] == W.mac(secret, "worker", "n1")
    channel.send({"t": "config", "k": 1})
    t.join(5)
    assert result["config"]["k"] == 1
    assert channel._dispatch({"m": "os.system", "a": ["x", None]}).startswith("Error: unknown")
    assert channel._dispatch({"m": "llm_query", "a": "x"}).startswith("Error:")
    assert channel._dispatch({"m": "llm_query", "a": ["x", 3]}).startswith("Error: model")
    a.close()


def test_tools_cross_as_code_or_json_and_callables_are_refused():
    specs = tool_specs({"f": "def f(x):\n    return x", "K": "just a string", "N": [1, {"a": 2}]},
                       "sandbox")
    assert specs == {"f": {"code": "def f(x):\n    return x"}, "K": {"value": "just a string"},
                     "N": {"value": [1, {"a": 2}]}}
    with pytest.raises(ConfigurationError, match="source code as a string"):
        tool_specs({"g": len}, "sandbox")
    with pytest.raises(ConfigurationError, match="JSON values"):
        tool_specs({"s": {1, 2}}, "sandbox")
    with pytest.raises(ConfigurationError, match="reserved"):
        tool_specs({"context_3": 1}, "sandbox")
    assert _defines("import json as helper", "helper")
    assert not _defines("helper", "helper")


@settings(max_examples=40, deadline=None)
@given(value=json_values)
def test_context_chunks_are_json(value):
    import json

    fmt, chunks = context_chunks(value)
    data = b"".join(chunks)
    if isinstance(value, str):
        assert fmt == "text" and data.decode("utf-8", "surrogatepass") == value
    else:
        assert fmt == "json" and json.loads(data) == value


def test_a_worker_flooding_calls_gets_errors_beyond_the_pending_limit():
    """Calls beyond max_pending_calls are answered at once with an error; the others are served
    when the host is free again: the host never queues an unbounded number of calls."""
    a, b = socket.socketpair()
    release = threading.Event()

    class BlockingHost:
        def llm_query(self, prompt, model=None):
            release.wait(10)
            return "ok " + prompt

    channel = Channel(lambda n: a.recv(n), a.sendall, BlockingHost(), new_secret(),
                      max_concurrent_calls=2, max_pending_calls=5)
    reader = threading.Thread(target=channel._read_loop, daemon=True)
    reader.start()
    for i in range(12):
        b.sendall(W.encode_json({"t": "call", "id": i, "m": "llm_query", "a": [f"p{i}", None]}))
    frames = W.FrameReader(lambda n: b.recv(n))
    refused = [frames.read()[1] for _ in range(7)]  # answered before any call could finish
    assert all(r["t"] == "reply" and "already running or waiting" in r["v"] for r in refused)
    release.set()
    served = [frames.read()[1] for _ in range(5)]
    assert sorted(r["v"] for r in served) == sorted(f"ok p{r['id']}" for r in served)
    assert {r["id"] for r in refused} | {r["id"] for r in served} == set(range(12))
    assert channel._pending_calls == 0
    a.close()
    b.close()


class _BlockingHost:
    """Serves helper calls only once ``release`` is set; counts the prompts it was given."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.prompts = 0

    def llm_query(self, prompt, model=None):
        self.release.wait(10)
        self.prompts += 1
        return "ok"

    def llm_query_batched(self, prompts, model=None):
        self.release.wait(10)
        self.prompts += len(prompts)
        return ["ok"] * len(prompts)


def _served(channel: Channel):
    a, b = socket.socketpair()
    channel._reader = W.FrameReader(lambda n: a.recv(n))
    channel._write = a.sendall
    threading.Thread(target=channel._read_loop, daemon=True).start()
    return a, b, W.FrameReader(lambda n: b.recv(n))


def test_a_batched_call_counts_each_prompt_against_the_pending_limit():
    """One small frame of 150,000 prompts is refused (the host would hold them all); batches
    within the item budget are served, and their prompts count until they end (issue 16)."""
    host = _BlockingHost()
    channel = Channel(None, None, host, new_secret(), max_pending_items=1000)
    a, b, frames = _served(channel)
    big = ["p"] * 150_000
    b.sendall(W.encode_json({"t": "call", "id": 1, "m": "llm_query_batched", "a": [big, None]}))
    reply = frames.read()[1]
    assert reply["id"] == 1 and "150,000 prompts in one call" in reply["v"]
    assert "batches of at most 1,000" in reply["v"]
    b.sendall(W.encode_json({"t": "call", "id": 2, "m": "llm_query_batched",
                             "a": [["q"] * 600, None]}))
    b.sendall(W.encode_json({"t": "call", "id": 3, "m": "llm_query_batched",
                             "a": [["q"] * 600, None]}))
    reply = frames.read()[1]  # the second batch would pass 1,000 prompts in flight
    assert reply["id"] == 3 and "already carry 600 prompts" in reply["v"]
    host.release.set()
    reply = frames.read()[1]
    assert reply["id"] == 2 and reply["v"] == ["ok"] * 600
    assert host.prompts == 600
    assert channel._pending_items == 0 and channel._pending_calls == 0
    a.close()
    b.close()


def test_call_frames_in_flight_are_bounded_in_bytes():
    host = _BlockingHost()
    channel = Channel(None, None, host, new_secret(), max_call_bytes=3 * 2**20)
    a, b, frames = _served(channel)
    prompt = "x" * (2 * 2**20)
    for i in range(3):  # the first is admitted whatever its size; the next two would pass 3 MB
        b.sendall(W.encode_json({"t": "call", "id": i, "m": "llm_query", "a": [prompt, None]}))
    refused = [frames.read()[1] for _ in range(2)]
    assert all("already carry 2 MB (the limit is 3 MB)" in r["v"] for r in refused)
    host.release.set()
    assert frames.read()[1] == {"t": "reply", "id": 0, "v": "ok"}
    assert channel._pending_bytes == 0
    a.close()
    b.close()


def test_a_served_call_does_not_keep_its_prompt():
    """The channel drops a call's prompt as soon as the host has it: the host alone decides how
    long it lives (not the thread pool's work item, not the decoded frame)."""
    import gc

    seen: list = []

    class Host:
        def llm_query(self, prompt, model=None):
            seen.append(id(prompt))
            gc.collect()
            holders = [r for r in gc.get_referrers(prompt) if isinstance(r, (dict, list, tuple))]
            seen.append(len(holders))
            return "ok"

    channel = Channel(None, None, Host(), new_secret())
    a, b, frames = _served(channel)
    b.sendall(W.encode_json({"t": "call", "id": 1, "m": "llm_query", "a": ["y" * 1000, None]}))
    assert frames.read()[1]["v"] == "ok"
    assert seen[1] == 0, "the call frame (or the pool's work item) still holds the prompt"
    a.close()
    b.close()
