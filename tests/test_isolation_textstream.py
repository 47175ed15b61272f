"""The text-line transport (worker ``--text`` + :class:`rlm.isolation.textstream.TextLineStream`)
that cloud sandboxes use: frames survive any cutting of the text, foreign lines are kept as the
worker's log, and the whole environment contract holds over it.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import types

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlm.isolation import worker as W
from rlm.isolation.repl import WORKER_FILE, IsolatedREPL
from rlm.isolation.textstream import TextLineStream
from rlm.plugin import hookimpl
from rlm.types import EnvironmentCapabilities
from rlm_testkit.environments import EnvironmentTests


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
