"""The REPL worker's loop inside Pyodide (CPython in WebAssembly, single-threaded).

Runs in the Deno Web Worker started by ``pyodide_worker.mjs``, next to ``rlm_worker.py`` (the
kernel's ``rlm_isolation/worker.py``, copied in as it is). It speaks the same channel protocol as
the threaded CPython worker, over the Deno process's stdin/stdout, with the pieces of
``worker.py`` that need no threads: the framing, the handshake proof, ``REPLCore`` (namespace,
helpers, output capture, results).

Without threads, everything happens in this one thread: a cell runs inline, and a helper call
(``llm_query`` ...) sends a ``call`` frame and reads frames until its ``reply`` arrives. A cell's
time limit is enforced by the Deno main thread, which raises ``KeyboardInterrupt`` in the cell
through Pyodide's interrupt buffer (again every 100 ms if the cell swallows it). Frames are read
and written whole by JavaScript, so an interrupt never leaves half a frame behind.

Contexts arrive streamed over the channel (``file_open`` + blobs + ``file_close``) into memory
and are decoded once when the host binds them; nothing touches the host's files.
"""

import json
import os
import sys
import time

import _rlm_io  # provided by pyodide_worker.mjs
import rlm_worker as W
from pyodide.ffi import to_js

_SLICE = 0.02


def _interruptible_sleep(real_sleep):
    def sleep(seconds):
        """time.sleep that a cell's time limit can stop (slept in short slices)."""
        seconds = float(seconds)
        if seconds < 0:
            raise ValueError("sleep length must be non-negative")
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return None
            real_sleep(min(left, _SLICE))

    sleep.__doc__ = real_sleep.__doc__
    return sleep


def _checkpoint():
    """A Python call: the interpreter checks for a pending interrupt on entering it."""
    return None


class InlineWorker:
    def __init__(self, secret):
        self.secret = secret
        self.next_id = 0
        self.core = None
        self.streams = {}  # blob id -> (file name, bytearray)
        self.received = {}  # file name -> bytes of a streamed context, until it is bound
        self.closed = False
        self.grace = 1.0

    # --- frames ------------------------------------------------------------------------------

    def send(self, message):
        _rlm_io.write(to_js(W.encode_json(message)))

    def read(self):
        frame = _rlm_io.read_frame()
        if frame is None:
            raise EOFError("the channel is closed")
        kind = int(frame[0])
        payload = frame[1].to_bytes()
        if kind == W.KIND_JSON:
            try:
                message = json.loads(payload.decode("utf-8"))
            except ValueError as exc:
                raise W.ProtocolError("frame is not UTF-8 JSON: %s" % exc) from exc
            if not isinstance(message, dict) or not isinstance(message.get("t"), str):
                raise W.ProtocolError("frame is not a message object with a 't' field")
            return kind, message
        if kind == W.KIND_BLOB:
            if len(payload) < 4:
                raise W.ProtocolError("blob frame without a blob id")
            return kind, (int.from_bytes(payload[:4], "big"), memoryview(payload)[4:])
        raise W.ProtocolError("unknown frame kind %d" % kind)

    # --- handshake ---------------------------------------------------------------------------

    def handshake(self):
        nonce = os.urandom(16).hex()
        self.send({"t": "hello", "protocol": W.PROTOCOL, "nonce": nonce, "pid": os.getpid(),
                   "python": sys.version.split()[0] + " (pyodide)"})
        kind, msg = self.read()
        import hmac

        if kind != W.KIND_JSON or msg.get("t") != "auth" or not hmac.compare_digest(
                str(msg.get("mac", "")), W.mac(self.secret, "host", nonce)):
            raise W.ProtocolError("the host failed to authenticate")
        self.send({"t": "auth", "mac": W.mac(self.secret, "worker", str(msg.get("nonce", "")))})
        kind, config = self.read()
        if kind != W.KIND_JSON or config.get("t") != "config":
            raise W.ProtocolError("expected the config message")
        return config

    def configure(self, config):
        workdir = config.get("workdir") or "/home/pyodide"
        os.makedirs(workdir, exist_ok=True)
        os.chdir(workdir)
        ctx_dir = config.get("ctx_dir") or "/rlm/ctx"
        os.makedirs(ctx_dir, exist_ok=True)
        self.grace = float(config.get("grace", self.grace))
        self.core = W.REPLCore(self.call_host, int(config.get("max_output_chars", 20000)), ctx_dir)
        sys.stdout = W._Stream(self.core, "stdout")
        sys.stderr = W._Stream(self.core, "stderr")
        time.sleep = _interruptible_sleep(time.sleep)
        error = None
        try:
            self.core.set_tools(config.get("tools") or {})
        except BaseException as exc:  # noqa: BLE001
            error = W.format_exception(exc, {})
        self.send({"t": "ready", "error": error, "pid": os.getpid(), "cwd": os.getcwd()})

    # --- helper calls: send, then read until the reply ----------------------------------------

    def call_host(self, method, args):
        if self.closed:
            return "Error: the connection to the host is closed"
        args = W.call_args(method, args)
        self.next_id += 1
        call_id = self.next_id
        try:
            self.send({"t": "call", "id": call_id, "m": method, "a": args})
        except (TypeError, ValueError) as exc:
            return ("Error: %s arguments must be JSON values (strings, numbers, lists, dicts): %s"
                    % (method, exc))
        while True:
            try:
                kind, msg = self.read()
            except EOFError:
                self.closed = True
                return "Error: the connection to the host is closed"
            if kind == W.KIND_BLOB:
                self._blob(msg)
                continue
            t = msg["t"]
            if t == "reply" and msg.get("id") == call_id:
                return msg.get("v")
            if t == "interrupt":
                raise W.CellCancelled()
            if t == "shutdown":
                self.closed = True
                raise W.CellCancelled()
            # Anything else cannot come while a cell runs: the host serialises control messages
            # with cells. A stray reply (to a call a stopped cell made) is dropped.

    # --- the loop ----------------------------------------------------------------------------

    def serve(self):
        while not self.closed:
            try:
                kind, msg = self.read()
            except EOFError:
                break
            if kind == W.KIND_BLOB:
                self._blob(msg)
                continue
            t = msg["t"]
            if t == "exec":
                self._exec(msg)
            elif t == "context":
                self._control(msg, lambda m=msg: self._load_context(m))
            elif t == "history":
                self._control(msg, lambda m=msg: self._core().load_history(
                    int(m["index"]), m.get("messages") or []))
            elif t == "file_open":
                self._control(msg, lambda m=msg: self.streams.__setitem__(
                    int(m["id"]), (os.path.basename(str(m["path"])), bytearray())))
            elif t == "file_close":
                self._control(msg, lambda m=msg: self._close_stream(int(m["id"])))
            elif t == "shutdown":
                break
            # "interrupt" with no cell running and stray "reply" frames: nothing to do.

    def _core(self):
        """The REPL core (made by configure(), which the protocol puts first)."""
        if self.core is None:
            raise W.ProtocolError("a message came before the config message")
        return self.core

    def _blob(self, msg):
        blob_id, data = msg
        stream = self.streams.get(blob_id)
        if stream is not None:
            stream[1].extend(data)

    def _close_stream(self, blob_id):
        name, data = self.streams.pop(blob_id)
        self.received[name] = data

    def _load_context(self, msg):
        index = int(msg["index"])
        path = str(msg["path"])
        fmt = msg.get("format", "text")
        data = self.received.pop(os.path.basename(path), None)
        if data is None:
            value = W.load_file(path, fmt)
        elif fmt == "json":  # written with surrogatepass (rlm_isolation.repl.context_chunks)
            value = json.loads(data.decode("utf-8", "surrogatepass"))
        else:
            value = data.decode("utf-8", "surrogatepass")
        del data  # one copy in memory: the decoded value
        self._core().bind_context(index, value)

    def _control(self, msg, action):
        try:
            action()
            error = None
        except BaseException as exc:  # noqa: BLE001
            error = "%s: %s" % (type(exc).__name__, exc)
        self.send({"t": "ack", "id": msg.get("id"), "error": error})

    def _exec(self, msg):
        result = self._run_cell(str(msg.get("code", "")), msg.get("timeout"),
                                msg.get("filename"))
        result["id"] = msg.get("id")
        self.send(result)

    def _run_cell(self, code, timeout, filename):
        core = self._core()
        started = time.perf_counter()
        core.restore()
        try:
            compiled = core.compile_cell(code, filename)
        except Exception as invalid:  # noqa: BLE001 - SyntaxError, null bytes, too deeply nested
            return core.result(core.format_exception(invalid), False, started)
        limit = None if timeout is None else max(float(timeout), 0.0)
        raised = None
        try:
            try:
                _rlm_io.deadline_set(limit)
                exec(compiled, core.ns)  # running model code is the point
            except BaseException as e:  # noqa: BLE001
                raised = e
        except BaseException as e:  # noqa: BLE001 - an interrupt landing in the handler above
            raised = raised or e
        fired = False
        while True:  # stop the clock; an interrupt already on its way lands here, not later
            try:
                fired = _rlm_io.deadline_clear() or fired
                _checkpoint()
                break
            except KeyboardInterrupt as e:
                raised = raised or e
        if fired and limit is not None:  # only a cell with a time limit has a deadline to fire
            error = ("TimeoutError: the cell exceeded its time limit of %g seconds and was "
                     "stopped; variables set before that point are kept." % limit)
            if raised is not None and not isinstance(raised, (KeyboardInterrupt,
                                                              W.CellInterrupt)):
                error += "\nWhile stopping, the cell raised:\n" + core.format_exception(raised)
            return core.result(error, True, started)
        if isinstance(raised, W.CellCancelled) or _rlm_io.cancelled():
            return core.result("Cancelled: the cell was interrupted", False, started)
        return core.result(core.format_exception(raised) if raised is not None else None, False,
                           started)


def main():
    secret = _rlm_io.read_line(512).to_bytes().strip()
    if not secret:
        print("rlm pyodide worker: no secret on the first line of stdin", file=sys.stderr)
        return 2
    worker = InlineWorker(secret)
    try:
        worker.configure(worker.handshake())
        worker.serve()
    except (W.ProtocolError, EOFError) as exc:
        print("rlm pyodide worker: %s" % exc, file=sys.__stderr__ or sys.stderr)
        return 3
    return 0
