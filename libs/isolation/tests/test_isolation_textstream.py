"""The text-line transport (worker ``--text`` + :class:`rlm_isolation.textstream.TextLineStream`)
that cloud sandboxes use: frames survive any cutting of the text, foreign lines are kept as the
worker's log, and the whole environment contract holds over it.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
import tracemalloc
import types

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlm.exceptions import RLMEnvironmentError
from rlm_isolation import worker as W
from rlm_isolation.repl import WORKER_FILE, IsolatedREPL
from rlm_isolation.textstream import TextLineStream
from rlm.plugin import hookimpl
from rlm.types import EnvironmentCapabilities
from rlm_testkit.environments import EnvironmentTests, RecordingHost


@settings(max_examples=80, deadline=None)
@given(payloads=st.lists(st.binary(max_size=400), min_size=1, max_size=6),
       cuts=st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=30),
       noise=st.lists(st.text(alphabet="abc xyz!", min_size=1, max_size=20), max_size=3))
def test_bytes_cross_as_lines_cut_anywhere(payloads, cuts, noise):
    sent: list[str] = []
    out = TextLineStream(sent.append)
    for p in payloads:
        out.write(p)
    text = "".join(sent) + "".join(n.strip("@") + "\n" for n in noise if n.strip("@").strip())
    inbound = TextLineStream(lambda _: None)
    pos, i = 0, 0
    while pos < len(text):  # the provider hands output over in arbitrary pieces
        step = cuts[i % len(cuts)]
        inbound.feed(text[pos:pos + step])
        pos, i = pos + step, i + 1
    inbound.finish(0)
    got = b""
    while chunk := inbound.read(7):
        got += chunk
    assert got == b"".join(payloads)
    for n in noise:
        if n.strip("@").strip():
            assert n.strip("@").strip() in inbound.stderr_tail(50)
    assert inbound.returncode() == 0


def test_worker_text_mode_round_trips_with_the_host_encoding():
    sent: list[str] = []
    host_side = TextLineStream(sent.append)
    host_side.write(b"\x00\xffhello")
    raw = "".join(sent).encode()
    pos = [0]

    def read(n):
        chunk = raw[pos[0]:pos[0] + min(n, 3)]
        pos[0] += len(chunk)
        return chunk

    written: list[bytes] = []
    read_t, write_t = W.text_lines(read, written.append)
    assert read_t(100) == b"\x00\xffhello"
    assert read_t(100) == b""
    write_t(b"\x01back")
    host_side.feed(written[0].decode())
    assert host_side.read(100) == b"\x01back"


def test_a_line_that_is_not_base64_is_a_protocol_error():
    stream = TextLineStream(lambda _: None, what="test")
    stream.feed("@not*base64\n")
    with pytest.raises(W.ProtocolError, match="not base64"):
        stream.read(10)


def test_kill_ends_readers_and_writes_fail_after():
    killed = []
    stream = TextLineStream(lambda _: None, lambda: killed.append(1))
    reader = threading.Thread(target=lambda: killed.append(stream.read(5)))
    reader.start()
    stream.kill()
    stream.kill()
    reader.join(5)
    assert killed == [1, b""]
    assert stream.returncode() == -9
    with pytest.raises(BrokenPipeError):
        stream.write(b"x")


def test_a_line_longer_than_any_frame_is_a_protocol_error_not_a_growing_buffer():
    """Cell code can write to the channel's descriptor directly: a line that never ends must
    not be buffered without bound (frames have a size limit; their lines have one too)."""
    limit = 1000
    ok = TextLineStream(lambda _: None, what="test", max_frame=limit)
    frame = b"x" * (limit + W._HEADER.size)  # the largest frame the worker may send
    sender: list[str] = []
    TextLineStream(sender.append).write(frame)
    ok.feed(sender[0])
    assert ok.read(len(frame) + 1) == frame
    over = TextLineStream(lambda _: None, what="test", max_frame=limit)
    for _ in range(50):  # 200 kB and counting, no newline
        over.feed("@" + "A" * 4000)
    with pytest.raises(W.ProtocolError, match="longer than"):
        over.read(10)


def test_foreign_output_without_newlines_is_kept_bounded():
    stream = TextLineStream(lambda _: None, what="test")
    piece = "x" * 65536
    tracemalloc.start()
    try:
        for _ in range(320):  # 20 MB of noise that never ends its line
            stream.feed(piece)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20, f"feeding 20 MB without a newline held {peak / 2**20:.0f} MiB"
    stream.feed("\n@" + "aGk=" + "\n")  # the channel still works after it
    assert stream.read(10) == b"hi"


def test_a_large_frame_fed_in_small_pieces_takes_linear_time():
    """A large worker message (a long llm_query prompt, a final answer) arrives from the
    provider in small pieces; joining them must not copy the whole line at every piece."""
    sent: list[str] = []
    TextLineStream(sent.append).write(b"\x01" * (6 * 2**20))
    line = sent[0]
    stream = TextLineStream(lambda _: None, what="test")
    started = time.perf_counter()
    for pos in range(0, len(line), 1024):
        stream.feed(line[pos:pos + 1024])
    elapsed = time.perf_counter() - started
    assert stream.read(8 * 2**20) == b"\x01" * (6 * 2**20)
    assert elapsed < 2.0, f"feeding an 8 MB line in 1 kB pieces took {elapsed:.1f} s"


class _SilentREPL(IsolatedREPL):
    """A worker that never says hello, behind a provider whose kill request hangs."""

    environment_name = "silent"

    def __init__(self, release: threading.Event, **kwargs):
        super().__init__(**kwargs)
        self.release = release

    def _launch(self, run_dir, secret):
        return TextLineStream(lambda _: None, lambda: self.release.wait(10), what="silent")


def test_startup_timeout_holds_when_the_providers_kill_call_hangs():
    release = threading.Event()
    env = _SilentREPL(release, startup_timeout=0.5, memory_limit=None)
    started = time.monotonic()
    try:
        with pytest.raises(RLMEnvironmentError, match=r"within startup_timeout=0\.5 s"):
            env.start(None, {})
        assert time.monotonic() - started < 3.0
    finally:
        release.set()


class TextPipeREPL(IsolatedREPL):
    """A local worker driven only through TextLineStream, its stdout handed over in random
    pieces, as a cloud SDK's output callbacks would."""

    environment_name = "textpipe"
    capabilities = EnvironmentCapabilities(isolated=False, persistent=True, cell_timeout=True,
                                           threads=True, callables_as_tools=False,
                                           memory_limit=False)

    def _launch(self, run_dir, secret):
        self._worker_ctx_dir = os.path.join(run_dir, "ctx")  # streamed there over the channel
        proc = subprocess.Popen([sys.executable, "-I", "-S", WORKER_FILE, "--stdio", "--text"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env={"RLM_WORKER_SECRET": secret.decode(),
                                                             "PATH": os.environ["PATH"]},
                                start_new_session=True, bufsize=0)

        def send(line: str) -> None:
            proc.stdin.write(line.encode())

        def kill() -> None:
            proc.kill()
            proc.wait(5)

        stream = TextLineStream(send, kill, what="textpipe")
        rng = random.Random(0)

        def pump(src, feed, done):
            while data := os.read(src.fileno(), rng.randint(1, 4096)):
                feed(data.decode("utf-8", "replace"))
            if done:
                stream.finish(proc.wait())

        threading.Thread(target=pump, args=(proc.stdout, stream.feed, True), daemon=True).start()
        threading.Thread(target=pump, args=(proc.stderr, stream.feed_stderr, False),
                         daemon=True).start()
        return stream


def test_shutdown_from_another_thread_does_not_wait_for_a_cell_that_never_ends():
    """``RLM.close()``, the exit-time cleanup or a cancelling thread shut a REPL down while a
    cell with no time limit runs: the worker is stopped so the cell lets go, instead of
    shutdown() blocking (and the program's exit with it) for as long as the cell runs."""
    env = TextPipeREPL(memory_limit=None)
    env.start(RecordingHost(), {})
    results: list = []
    cell = threading.Thread(target=lambda: results.append(
        env.execute("import time\nwhile True:\n    time.sleep(0.02)")), daemon=True)
    cell.start()
    deadline = time.monotonic() + 10
    while env._cell_id is None and time.monotonic() < deadline:
        time.sleep(0.01)
    closer = threading.Thread(target=env.shutdown)
    try:
        closer.start()
        closer.join(5)
        assert not closer.is_alive(), "shutdown() waited for the running cell"
        cell.join(5)
        assert results and results[0].error is not None and "shut down" in results[0].error
        assert "fresh REPL" not in results[0].error  # no worker is started again
        with pytest.raises(RLMEnvironmentError, match="shut down"):
            env.execute("1")
    finally:
        while closer.is_alive() or cell.is_alive():  # the old behaviour: let the cell go
            env.interrupt()
            closer.join(0.5)
            cell.join(0.5)
        env.shutdown()


_plugin = types.ModuleType("rlm_test_textpipe")


@hookimpl
def rlm_register_environments(registrar):
    registrar.add("textpipe", TextPipeREPL, description="worker over the text-line transport")


_plugin.rlm_register_environments = rlm_register_environments  # type: ignore[attr-defined]


class TestTextLineTransportConformance(EnvironmentTests):
    plugin = _plugin
    environment_name = "textpipe"
    environment_kwargs = {"memory_limit": None}
    capabilities = {"isolated": False, "callables_as_tools": False}


def test_an_interrupt_that_overtakes_its_cell_stops_it_at_start():
    """interrupt() right after the exec is sent (before the worker's executor has the cell):
    the worker remembers it for that exec, so one call is enough — no retry loop."""
    env = TestTextLineTransportConformance().started()
    try:
        env.execute("kept = 1")
        out = {}
        cell = threading.Thread(target=lambda: out.update(r=env.execute(
            "import time\nfor _ in range(600):\n    time.sleep(0.05)\nnever = 1")))
        cell.start()
        while env._cell_id is None:  # the exec is being sent: interrupt once, at once
            time.sleep(0.0005)
        assert env.interrupt() is True
        cell.join(15)
        assert not cell.is_alive(), "a single interrupt() was lost"
        assert out["r"].error.startswith("Cancelled")
        assert env.execute("print(kept, 'never' in globals())").stdout.strip() == "1 False"
    finally:
        env.shutdown()
