"""``rlm_isolation.streams``: the bounded stderr tail and the chunk stream the SDK-driven
environments (text-line transport, Modal) build their worker processes on."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rlm_isolation.streams import LINE_CHARS, ChunkStream, StderrTail
from rlm_isolation.worker import ProtocolError

TEXT = st.text(alphabet=st.sampled_from("ab\n\u00e9"), max_size=300)


@given(text=TEXT, cuts=st.lists(st.integers(0, 300), max_size=8))
def test_the_tail_does_not_depend_on_how_output_is_cut(text, cuts):
    whole, pieces = StderrTail(maxlen=1000), StderrTail(maxlen=1000)
    whole.feed(text)
    start = 0
    for cut in sorted(c for c in cuts if c <= len(text)):
        pieces.feed(text[start:cut].encode("utf-8"))  # bytes are decoded the same way
        start = cut
    pieces.feed(text[start:])
    expected = text.split("\n")
    if expected[-1] == "":  # no unfinished last line
        expected.pop()
    assert pieces.text(10_000) == whole.text(10_000) == "\n".join(expected)


def test_tail_is_bounded_and_keeps_the_last_lines():
    tail = StderrTail(maxlen=3)
    tail.feed("".join(f"line {i}\n" for i in range(10)) + "x" * (LINE_CHARS + 50))
    assert tail.text(2).splitlines()[0] == "line 9"
    assert tail.text(10).splitlines()[:2] == ["line 7", "line 8"]
    tail.close()  # the unfinished line becomes a line, cut to LINE_CHARS
    assert tail.text(1) == "x" * LINE_CHARS
    tail.add("(a note)")
    assert tail.text(1) == "(a note)"


def test_read_follows_chunks_then_end_of_stream():
    stream = ChunkStream(what="test")
    got: list[bytes] = []

    def reader() -> None:
        while data := stream.read(3):
            got.append(data)

    thread = threading.Thread(target=reader)
    thread.start()
    stream._deliver([b"hello", b"", b"world"])
    assert stream.returncode() is None
    stream.finish(7)
    thread.join(5)
    assert b"".join(got) == b"helloworld" and max(map(len, got)) <= 3
    assert stream.returncode() == 7


def test_an_undecodable_chunk_is_a_protocol_error():
    stream = ChunkStream(what="e2b sandbox x")
    stream._deliver([None])
    with pytest.raises(ProtocolError, match="e2b sandbox x worker"):
        stream.read(10)


def test_kill_stops_once_and_keeps_a_known_code():
    stops: list[int] = []

    class Remote(ChunkStream):
        def _stop(self) -> None:
            stops.append(1)

    stream = Remote()
    stream.kill()
    stream.kill()
    assert stops == [1] and stream.killed and stream.returncode() == -9
    assert stream.read(1) == b""
    finished = Remote()
    finished.finish(0)
    finished.kill()
    assert finished.returncode() == 0  # the real exit code is not overwritten
    unknown = Remote()
    unknown.finish()
    assert unknown.returncode() == -1


def test_kill_ends_readers_at_once_even_while_the_providers_stop_call_hangs():
    """The channel's reader (and a handshake bounded by ``startup_timeout``) must not wait for
    the provider's terminate/kill request, which can hang as long as its HTTP timeout when the
    provider is unreachable."""
    release = threading.Event()

    class Hanging(ChunkStream):
        def _stop(self) -> None:
            release.wait(10)

    stream = Hanging()
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(stream.read(5)))
    reader.start()
    killer = threading.Thread(target=stream.kill)
    try:
        killer.start()
        reader.join(2)
        assert got == [b""], "the reader waited for the provider's stop call to return"
        assert stream.killed and stream.returncode() == -9
    finally:
        release.set()
        killer.join(5)
        reader.join(5)
