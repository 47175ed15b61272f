"""The REPL worker: a long-lived Python interpreter inside an isolated environment.

This file is the whole worker. It uses the standard library only and runs in any CPython 3.8+
(and in Pyodide, without threads), so an environment copies it into its sandbox, container or
WebAssembly runtime as it is and starts it once per run::

    python -I -S worker.py --stdio --secret-file /rlm/ctl/secret

It talks to the host over **one channel** (the worker's stdin/stdout, or a Unix socket; with
``--text``, base64 lines for transports that carry only text, see :func:`text_lines`): a stream
of frames, each ``u32 length`` (big-endian, counting what follows) + ``u8 kind`` + payload, where
kind 0 is a UTF-8 JSON object and kind 1 a binary chunk (``u32 blob id`` + bytes) used to stream
files. The channel is multiplexed: helper calls from any number of cell threads carry an ``id``
and their replies come back in any order, while the host may send an interrupt at any time.

Session, in order:

1. worker -> host ``hello`` (protocol version, nonce); host -> worker ``auth`` (its HMAC of that
   nonce with the per-run secret, and a nonce of its own); worker -> host ``auth`` (its HMAC).
   Both sides check; nothing else is read before that.
2. host -> worker ``config`` (limits, tools, output size); worker -> host ``ready``.
3. Then, in any order: ``exec`` (one cell; answered by ``result``), ``context`` / ``history``
   (bind ``context_N`` / ``history_N``), ``file_open`` + blobs + ``file_close`` (stream a file into
   the worker's context directory), ``interrupt``, ``reply`` (the answer to a worker ``call``),
   ``shutdown``. The worker sends ``call`` for ``llm_query`` and friends. An ``interrupt`` names
   the exec it is for (``cell``: that exec's id); one that overtakes its cell stops it at start.

The worker is no security boundary by itself: everything it runs can read its own memory and
write to its own channel. The sandbox around it is the boundary, and the host treats every frame
from the worker as untrusted input.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import struct
import sys
import time
import traceback

try:  # Pyodide has no threads; the worker then runs cells inline (see REPLCore).
    import threading
except ImportError:  # pragma: no cover - only in runtimes without threads
    threading = None  # type: ignore[assignment]

PROTOCOL = 1
MAX_FRAME = 64 * 1024 * 1024
KIND_JSON = 0
KIND_BLOB = 1
_HEADER = struct.Struct(">IB")
_BLOB_ID = struct.Struct(">I")

HELPER_NAMES = ("llm_query", "llm_query_batched", "rlm_query", "rlm_query_batched", "SHOW_VARS",
                "FINAL", "FINAL_VAR")
RESERVED_NAMES = frozenset(HELPER_NAMES + ("answer", "context", "history"))
CALL_METHODS = ("llm_query", "llm_query_batched", "rlm_query", "rlm_query_batched")


class ProtocolError(Exception):
    """A frame that breaks the protocol (too large, not JSON, wrong kind, bad handshake)."""


# --- framing (shared with the host, which imports these) -----------------------------------


def encode_json(message):
    """One JSON frame. Any Python ``str`` crosses: text no UTF-8 codec takes (a lone surrogate,
    ``print('\\udcff')``) is sent as JSON escapes, and arrives as the same ``str``."""
    text = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
    try:
        body = text.encode("utf-8")
    except UnicodeEncodeError:
        body = json.dumps(message, separators=(",", ":")).encode("ascii")
    del text
    if len(body) + 1 > MAX_FRAME:
        raise ProtocolError("message of %d bytes is over the %d-byte frame limit"
                            % (len(body), MAX_FRAME))
    return _HEADER.pack(len(body) + 1, KIND_JSON) + body


def encode_blob(blob_id, data):
    return _HEADER.pack(len(data) + 1 + _BLOB_ID.size, KIND_BLOB) + _BLOB_ID.pack(blob_id) + data


class FrameReader:
    """Reads frames from ``read(n) -> bytes`` (b"" at end of stream)."""

    def __init__(self, read, max_frame=MAX_FRAME):
        self._read = read
        self._max = max_frame
        self.last_size = 0  # bytes of the last frame read (the host accounts calls by it)

    def _exact(self, n):
        parts = []
        while n:
            chunk = self._read(min(n, 1 << 20))
            if not chunk:
                if parts:
                    raise ProtocolError("the channel closed in the middle of a frame")
                raise EOFError("the channel is closed")
            parts.append(chunk)
            n -= len(chunk)
        return b"".join(parts) if len(parts) != 1 else parts[0]

    def read(self):
        """``(KIND_JSON, dict)`` or ``(KIND_BLOB, (blob_id, bytes))``; EOFError at the end."""
        length, kind = _HEADER.unpack(self._exact(_HEADER.size))
        if length < 1 or length > self._max:
            raise ProtocolError("frame of %d bytes is over the %d-byte limit" % (length, self._max))
        payload = self._exact(length - 1) if length > 1 else b""
        self.last_size = length
        if kind == KIND_JSON:
            try:
                message = json.loads(payload.decode("utf-8"))
            except ValueError as exc:
                raise ProtocolError("frame is not UTF-8 JSON: %s" % exc) from exc
            if not isinstance(message, dict) or not isinstance(message.get("t"), str):
                raise ProtocolError("frame is not a message object with a 't' field")
            return KIND_JSON, message
        if kind == KIND_BLOB:
            if len(payload) < _BLOB_ID.size:
                raise ProtocolError("blob frame without a blob id")
            return KIND_BLOB, (_BLOB_ID.unpack(payload[:_BLOB_ID.size])[0], payload[_BLOB_ID.size:])
        raise ProtocolError("unknown frame kind %d" % kind)


def mac(secret, role, nonce):
    """The handshake proof: HMAC-SHA256 of ``role:nonce`` with the per-run secret."""
    return hmac.new(secret, (role + ":" + nonce).encode("ascii"), hashlib.sha256).hexdigest()


# --- bounded output ----------------------------------------------------------------------


class BoundedText:
    """Keeps the first and last ``limit // 2`` characters; says how much was cut."""

    def __init__(self, limit):
        self.limit = limit
        self.head = []
        self.head_len = 0
        self.tail = []
        self.tail_len = 0
        self.total = 0

    def write(self, text):
        if not text:
            return
        self.total += len(text)
        room = self.limit // 2 - self.head_len
        if room > 0:
            part = text[:room]
            self.head.append(part)
            self.head_len += len(part)
            text = text[room:]
            if not text:
                return
        keep = self.limit - self.limit // 2
        self.tail.append(text)
        self.tail_len += len(text)
        if self.tail_len > 2 * keep + 4096:  # compact now and then, not on every write
            joined = "".join(self.tail)[-keep:]
            self.tail = [joined]
            self.tail_len = len(joined)

    def value(self):
        keep = self.limit - self.limit // 2
        tail = "".join(self.tail)
        if len(tail) > keep:
            tail = tail[-keep:]
        head = "".join(self.head)
        cut = self.total - len(head) - len(tail)
        if cut <= 0:
            return head + tail
        return ("%s\n... [output truncated: %s of %s characters cut; the limit is %s] ...\n%s"
                % (head, format(cut, ","), format(self.total, ","), format(self.limit, ","), tail))


class _Stream:
    """``sys.stdout`` / ``sys.stderr`` inside the worker: writes go to the current cell."""

    def __init__(self, core, name):
        self._core = core
        self._name = name

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError("write() argument must be str, not %s" % type(text).__name__)
        self._core.write(self._name, text)
        return len(text)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        pass

    def isatty(self):
        return False

    def writable(self):
        return True

    def readable(self):
        return False

    def fileno(self):
        raise OSError("the REPL's output is captured; it has no file descriptor")

    encoding = "utf-8"
    errors = "strict"

    @property
    def buffer(self):
        return _BinaryStream(self)


class _BinaryStream:
    def __init__(self, stream):
        self._stream = stream

    def write(self, data):
        raw = bytes(data)
        self._stream.write(raw.decode("utf-8", "replace"))
        return len(raw)

    def flush(self):
        pass


# --- cells ---------------------------------------------------------------------------------


class CellInterrupt(BaseException):
    """Raised in a cell to stop it; a BaseException so ``except Exception`` cannot swallow it."""


class CellTimeout(CellInterrupt):
    pass


class CellCancelled(CellInterrupt):
    pass


def _exit(code=None):
    raise SystemExit() if code is None else SystemExit(code)


def _no_input(prompt=""):
    raise RuntimeError("input() is not available in the REPL: nobody is there to type an answer. "
                       "Use the variables you have (context, ...) instead.")


def _no_breakpoint(*args, **kwargs):
    raise RuntimeError("breakpoint() is not available in the REPL: there is no debugger terminal.")


def _text(value):
    try:
        return str(value)
    except Exception:  # noqa: BLE001
        return "<unprintable %s>" % type(value).__name__


def answer_fields(answer):
    """``(final_answer, answer_content)`` from the REPL's ``answer`` variable: its content as
    text (``None`` when empty) and, once ``answer["ready"]`` is set, the final answer."""
    if not isinstance(answer, dict):
        return None, None
    content = answer.get("content")
    text = "" if content is None else _text(content)
    return (text if answer.get("ready") else None), (text or None)


_MISSING = object()


def restore_reserved(ns, builtins, fixed, answer):
    """Put back what a cell rebound or deleted: ``__builtins__`` (when ``builtins`` is given),
    every name in ``fixed`` (helpers, tools, contexts), and an ``answer`` dict. A cell's own
    answer dict is kept (with its keys filled in); anything else is replaced by ``answer``.
    Returns the answer dict now in the namespace. Shared by every REPL rlm ships."""
    if builtins is not None and not isinstance(ns.get("__builtins__"), dict):
        ns["__builtins__"] = builtins
    for name, value in fixed.items():
        if ns.get(name, _MISSING) is not value:
            ns[name] = value
    current = ns.get("answer")
    if isinstance(current, dict):
        current.setdefault("content", "")
        current.setdefault("ready", False)
        return current
    ns["answer"] = answer
    return answer


class REPLCore:
    """The namespace, the helpers and the execution of one cell, independent of threads.

    ``call_host(method, args)`` sends a helper call to the host and returns its reply.
    """

    def __init__(self, call_host, max_output_chars=20000, ctx_dir="."):
        import builtins

        self.call_host = call_host
        self.max_output_chars = max_output_chars
        self.ctx_dir = ctx_dir
        self.lock = threading.Lock() if threading else None
        self.out = BoundedText(max_output_chars)
        self.err = BoundedText(max_output_chars)
        self.sources = {}
        self.cell_index = 0
        bi = dict(vars(builtins))
        bi.update({"exit": _exit, "quit": _exit, "input": _no_input,
                   "breakpoint": _no_breakpoint})
        self.builtins = bi
        self.ns = {"__name__": "__main__", "__doc__": None, "__builtins__": bi}
        self.answer = {"content": "", "ready": False}
        self.fixed = {}
        self.tool_names = set()
        self.last_history = -1
        helpers = self._helpers()
        self.fixed.update(helpers)
        self.ns.update(helpers)
        self.ns["answer"] = self.answer

    # output
    def write(self, stream, text):
        if self.lock is not None:
            with self.lock:
                (self.out if stream == "stdout" else self.err).write(text)
        else:
            (self.out if stream == "stdout" else self.err).write(text)

    def take_output(self):
        if self.lock is not None:
            self.lock.acquire()
        try:
            out, err = self.out, self.err
            self.out = BoundedText(self.max_output_chars)
            self.err = BoundedText(self.max_output_chars)
        finally:
            if self.lock is not None:
                self.lock.release()
        return out, err

    # the namespace
    def _helpers(self):
        ns = self.ns
        core = self

        def llm_query(prompt, model=None):
            """Ask a language model: one plain completion of ``prompt`` (a string or a list of
            chat messages). Returns the reply text, or a string starting with "Error: "."""
            return core.call_host("llm_query", [prompt, model])

        def llm_query_batched(prompts, model=None):
            """``llm_query`` for many prompts at once, run concurrently; replies in order."""
            return core.call_host("llm_query_batched", [list(prompts), model])

        def rlm_query(prompt, model=None):
            """Hand ``prompt`` to a child RLM with its own REPL (a plain model call at the maximum
            depth). Returns its answer, or a string starting with "Error: "."""
            return core.call_host("rlm_query", [prompt, model])

        def rlm_query_batched(prompts, model=None):
            """``rlm_query`` for many prompts at once; answers in order."""
            return core.call_host("rlm_query_batched", [list(prompts), model])

        def current_answer():
            answer = ns.get("answer")
            if not isinstance(answer, dict):
                answer = {"content": "", "ready": False}
                ns["answer"] = answer
            return answer

        def FINAL(value):
            """Finish: ``str(value)`` becomes the final answer."""
            answer = current_answer()
            answer["content"] = _text(value)
            answer["ready"] = True
            return answer["content"]

        def FINAL_VAR(name_or_value):
            """Finish with the value of the variable named ``name_or_value`` (a string)."""
            if not isinstance(name_or_value, str):
                return FINAL(name_or_value)
            name = name_or_value.strip().strip("'\"`")
            value = ns.get(name, _MISSING) if name else _MISSING
            if value is not _MISSING:
                return FINAL(value)
            if name.isidentifier():
                message = ("Error: Variable '%s' not found. Create it first (for example `%s = ...` "
                           "in a code block), then call FINAL_VAR('%s'). No final answer was set."
                           % (name, name, name))
            else:
                message = ("Error: FINAL_VAR expects the name of an existing variable, got %r. To "
                           "answer with text, use FINAL(text). No final answer was set."
                           % (name_or_value[:80],))
            print(message)
            return message

        def SHOW_VARS():
            """Print and return the variables you created, with their types."""
            names = core.user_variables()
            if names:
                text = "Available variables: " + repr(
                    {n: type(ns[n]).__name__ for n in names if n in ns})
            else:
                text = "No variables created yet. Variables you assign persist across code blocks."
            loaded = [n for n in core.fixed if n not in HELPER_NAMES and n not in core.tool_names]
            if loaded:
                text += "\nLoaded data: " + repr({n: type(ns[n]).__name__ for n in loaded if n in ns})
            print(text)
            return text

        return {"llm_query": llm_query, "llm_query_batched": llm_query_batched,
                "rlm_query": rlm_query, "rlm_query_batched": rlm_query_batched,
                "SHOW_VARS": SHOW_VARS, "FINAL": FINAL, "FINAL_VAR": FINAL_VAR}

    def restore(self):
        self.answer = restore_reserved(self.ns, self.builtins, self.fixed, self.answer)

    def user_variables(self):
        hidden = set(self.fixed) | {"answer"}
        out = []
        for name, value in list(self.ns.items()):
            if name.startswith("__") and name.endswith("__"):
                continue
            if name in hidden or type(value).__name__ == "module":
                continue
            out.append(name)
        return out

    def bind(self, names, value):
        for name in names:
            self.fixed[name] = value
            self.ns[name] = value

    def set_tools(self, tools):
        """``{name: {"code": source} | {"value": json}}``: code runs once in the namespace."""
        for name, spec in tools.items():
            if "code" in spec:
                code = compile(spec["code"], "<tool %s>" % name, "exec", dont_inherit=True)
                exec(code, self.ns)  # the user's own tool source
                if name not in self.ns:
                    raise ValueError("the code of tool %r does not define %r" % (name, name))
                value = self.ns[name]
            else:
                value = spec.get("value")
            self.fixed[name] = value
            self.ns[name] = value
            self.tool_names.add(name)

    def load_context(self, index, path, fmt):
        path = os.path.join(self.ctx_dir, path) if not os.path.isabs(path) else path
        value = load_file(path, fmt)
        self.bind(["context_%d" % index] + (["context"] if index == 0 else []), value)
        self.answer = {"content": "", "ready": False}
        self.ns["answer"] = self.answer

    def load_history(self, index, messages):
        names = ["history_%d" % index]
        if index >= self.last_history:
            self.last_history = index
            names.append("history")
        self.bind(names, messages)

    def compile_cell(self, code, filename=None):
        if filename is None:
            self.cell_index += 1
            filename = "<cell %d>" % self.cell_index
        self.sources[filename] = code.splitlines()
        return compile(code, filename, "exec", dont_inherit=True)

    def format_exception(self, exc):
        return format_exception(exc, self.sources)

    def result(self, error, timed_out, started):
        self.restore()
        out, err = self.take_output()
        if error is not None:
            text = err.value()
            if text and not text.endswith("\n"):
                err.write("\n")
            err.write(error + "\n")
        final_answer, answer_content = answer_fields(self.ns.get("answer"))
        return {"t": "result", "stdout": out.value(), "stderr": err.value(), "error": error,
                "variables": self.user_variables(), "final_answer": final_answer,
                "answer_content": answer_content, "timed_out": bool(timed_out),
                "execution_time": time.perf_counter() - started}

    def run_inline(self, code, filename=None):
        """Run one cell in the calling thread (runtimes without threads)."""
        started = time.perf_counter()
        self.restore()
        try:
            compiled = self.compile_cell(code, filename)
        except Exception as exc:  # noqa: BLE001
            return self.result(self.format_exception(exc), False, started)
        error = None
        try:
            exec(compiled, self.ns)  # running model code is the point
        except BaseException as exc:  # noqa: BLE001
            error = self.format_exception(exc)
        return self.result(error, False, started)


def load_file(path, fmt):
    """A context file: ``text`` (UTF-8, decoded from a memory map: no second copy in memory) or
    ``json``."""
    if fmt == "json":  # written with surrogatepass, like text: lone surrogates arrive intact
        with open(path, "rb") as f:
            return json.loads(f.read().decode("utf-8", "surrogatepass"))
    size = os.path.getsize(path)
    if size == 0:
        return ""
    try:
        import mmap

        with open(path, "rb") as f:
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                return str(m, "utf-8", "surrogatepass")
    except (ImportError, OSError, ValueError):  # no mmap (Pyodide): read, then decode
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "surrogatepass")


def format_exception(exc, sources):
    """The usual traceback text, keeping only the frames from the cell onwards."""
    try:
        te = traceback.TracebackException.from_exception(exc, lookup_lines=False)
        _trim(te, sources, set())
        text = "".join(te.format()).rstrip("\n")
    except Exception:  # noqa: BLE001
        text = "%s: <exception could not be formatted>" % type(exc).__name__
    if isinstance(exc, SystemExit):
        text += ("\n(sys.exit(), exit() and quit() end only the current code block; the REPL and "
                 "its variables are still there.)")
    return text


def _trim(te, sources, seen):
    if id(te) in seen:
        return
    seen.add(id(te))
    frames = list(te.stack)
    first = next((i for i, f in enumerate(frames) if f.filename in sources), None)
    if first is not None:
        frames = [f for f in frames[first:] if f.filename != __file__]
    rebuilt = []
    for frame in frames:
        lines = sources.get(frame.filename)
        if lines is not None:
            n = frame.lineno or 0
            frame = traceback.FrameSummary(frame.filename, frame.lineno, frame.name,
                                           lookup_line=False,
                                           line=lines[n - 1] if 0 < n <= len(lines) else "")
        rebuilt.append(frame)
    te.stack = traceback.StackSummary.from_list(rebuilt)
    for linked in (te.__cause__, te.__context__):
        if linked is not None:
            _trim(linked, sources, seen)


# --- the threaded runtime (CPython) ----------------------------------------------------------


def _raise_in(ident, exc_type):
    import ctypes

    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(ident), ctypes.py_object(exc_type) if exc_type else ctypes.py_object())


class _Job:
    def __init__(self, code):
        self.code = code
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.ident = None
        self.finished = False
        self.stop_reason = None
        self.exc = None

    def interrupt(self, reason):
        """Stop the cell with ``reason``; one not started yet stops as soon as it starts."""
        with self.lock:
            if self.finished:
                return False
            if self.stop_reason is None:
                self.stop_reason = reason
            if self.ident is not None:
                _raise_in(self.ident, reason)
            return True


class _Executor:
    """One daemon thread running cells one after another; replaced when a cell is abandoned."""

    def __init__(self, core):
        self.core = core
        self.jobs = []
        self.cond = threading.Condition()
        self.abandoned = False
        self.thread = threading.Thread(target=self._main, name="rlm-cell", daemon=True)
        self.thread.start()

    def submit(self, job):
        with self.cond:
            self.jobs.append(job)
            self.cond.notify()

    def _main(self):
        while True:
            with self.cond:
                while not self.jobs:
                    self.cond.wait()
                job = self.jobs.pop(0)
            if job is None:
                return
            self._run(job)
            job = None
            if self.abandoned:
                return

    def _run(self, job):
        exc = None
        try:
            try:
                with job.lock:
                    job.ident = threading.get_ident()
                    stopped_early = job.stop_reason
                if stopped_early is not None:  # interrupted before it started
                    raise stopped_early()
                exec(job.code, self.core.ns)  # running model code is the point
            except BaseException as e:  # noqa: BLE001
                exc = e
        except BaseException as e:  # noqa: BLE001 - a stop landing in the handler above
            exc = e
        while True:
            try:
                with job.lock:
                    job.finished = True
                    _raise_in(job.ident, None)
                break
            except CellInterrupt as e:
                exc = exc or e
        job.exc = exc
        job.done.set()


class Worker:
    """The CPython runtime: a reader thread, a cell executor thread, concurrent helper calls."""

    def __init__(self, read, write, secret, grace=1.0):
        self.reader = FrameReader(read)
        self._write = write
        self.secret = secret
        self.grace = grace
        self.send_lock = threading.Lock()
        self.pending = {}
        self.pending_lock = threading.Lock()
        self.next_id = 0
        self.core = None
        self.executor = None
        self.job = None
        self.files = {}
        self.closed = False
        self.interrupt_lock = threading.Lock()
        self.job_cell = None  # the id of the exec whose cell runs
        self.pending_interrupt = None  # an interrupt for an exec not started yet
        self.exec_lock = threading.Lock()

    def send(self, message):
        data = encode_json(message)
        with self.send_lock:
            self._write(data)

    # helper calls
    def call_host(self, method, args):
        if self.closed:
            return "Error: the connection to the host is closed"
        with self.pending_lock:
            self.next_id += 1
            call_id = self.next_id
            slot = [threading.Event(), None]
            self.pending[call_id] = slot
        try:
            self.send({"t": "call", "id": call_id, "m": method, "a": args})
        except (TypeError, ValueError) as exc:
            with self.pending_lock:
                self.pending.pop(call_id, None)
            return ("Error: %s arguments must be JSON values (strings, numbers, lists, dicts): %s"
                    % (method, exc))
        except OSError as exc:
            return "Error: the connection to the host failed: %s" % exc
        slot[0].wait()
        return slot[1]

    # handshake
    def handshake(self):
        nonce = os.urandom(16).hex()
        self.send({"t": "hello", "protocol": PROTOCOL, "nonce": nonce, "pid": os.getpid(),
                   "python": sys.version.split()[0]})
        kind, msg = self.reader.read()
        if kind != KIND_JSON or msg.get("t") != "auth" or not hmac.compare_digest(
                str(msg.get("mac", "")), mac(self.secret, "host", nonce)):
            raise ProtocolError("the host failed to authenticate")
        self.send({"t": "auth", "mac": mac(self.secret, "worker", str(msg.get("nonce", "")))})
        kind, config = self.reader.read()
        if kind != KIND_JSON or config.get("t") != "config":
            raise ProtocolError("expected the config message")
        return config

    def configure(self, config):
        apply_limits(config.get("limits") or {})
        workdir = config.get("workdir")
        if workdir:
            os.makedirs(workdir, exist_ok=True)
            os.chdir(workdir)
        self.core = REPLCore(self.call_host, int(config.get("max_output_chars", 20000)),
                             config.get("ctx_dir") or ".")
        self.grace = float(config.get("grace", self.grace))
        sys.stdout = _Stream(self.core, "stdout")
        sys.stderr = _Stream(self.core, "stderr")
        error = None
        try:
            self.core.set_tools(config.get("tools") or {})
        except BaseException as exc:  # noqa: BLE001
            error = format_exception(exc, {})
        self.executor = _Executor(self.core)
        self.send({"t": "ready", "error": error, "pid": os.getpid(), "cwd": os.getcwd()})

    # the loop
    def serve(self):
        while True:
            try:
                kind, msg = self.reader.read()
            except EOFError:
                break
            if kind == KIND_BLOB:
                blob_id, data = msg
                f = self.files.get(blob_id)
                if f is not None:
                    f.write(data)
                continue
            t = msg["t"]
            if t == "reply":
                with self.pending_lock:
                    slot = self.pending.pop(msg.get("id"), None)
                if slot is not None:
                    slot[1] = msg.get("v")
                    slot[0].set()
            elif t == "exec":
                threading.Thread(target=self._exec, args=(msg,), name="rlm-supervisor",
                                 daemon=True).start()
            elif t == "interrupt":
                # ``cell`` names the exec it is meant for: one whose cell has not reached the
                # executor yet is remembered and stopped as soon as it does.
                cell = msg.get("cell")
                with self.interrupt_lock:
                    job = self.job
                    if job is not None and (cell is None or cell == self.job_cell):
                        job.interrupt(CellCancelled)
                    elif cell is not None:
                        self.pending_interrupt = cell
            elif t == "context":
                self._control(msg, lambda m: self.core.load_context(
                    int(m["index"]), m["path"], m.get("format", "text")))
            elif t == "history":
                self._control(msg, lambda m: self.core.load_history(int(m["index"]),
                                                                    m.get("messages") or []))
            elif t == "file_open":
                self._control(msg, self._open_file)
            elif t == "file_close":
                self._control(msg, lambda m: self.files.pop(int(m["id"])).close())
            elif t == "shutdown":
                break
        self.closed = True
        with self.pending_lock:
            for slot in self.pending.values():
                slot[1] = "Error: the connection to the host is closed"
                slot[0].set()

    def _open_file(self, msg):
        name = os.path.basename(str(msg["path"]))
        if not os.path.isdir(self.core.ctx_dir):
            os.makedirs(self.core.ctx_dir, exist_ok=True)
        self.files[int(msg["id"])] = open(os.path.join(self.core.ctx_dir, name), "wb")

    def _control(self, msg, action):
        """Runs ``action(msg)`` between cells and acknowledges ``msg`` with its error, if any."""
        with self.exec_lock:  # never while a cell runs: the namespace is the cell's
            try:
                action(msg)
                self.send({"t": "ack", "id": msg.get("id"), "error": None})
            except BaseException as exc:  # noqa: BLE001
                self.send({"t": "ack", "id": msg.get("id"),
                           "error": "%s: %s" % (type(exc).__name__, _text(exc))[:4000]})

    def _exec(self, msg):
        with self.exec_lock:
            result = self._run_cell(str(msg.get("code", "")), msg.get("timeout"),
                                    msg.get("filename"), msg.get("id"))
        result["id"] = msg.get("id")
        try:
            self.send(result)
        except OSError:
            raise
        except Exception as exc:  # noqa: BLE001 - say so, or the host waits for nothing
            self.send({"t": "result", "id": msg.get("id"), "stdout": "", "stderr": "",
                       "error": "RuntimeError: the worker could not send this cell's result to "
                       "the host (%s: %s); the REPL's state is kept" % (type(exc).__name__,
                                                                        _text(exc)[:500]),
                       "variables": result.get("variables") if isinstance(
                           result.get("variables"), list) else [],
                       "final_answer": None, "answer_content": None,
                       "timed_out": bool(result.get("timed_out"))})

    def _run_cell(self, code, timeout, filename, cell_id=None):
        core = self.core
        started = time.perf_counter()
        core.restore()
        try:
            compiled = core.compile_cell(code, filename)
        except Exception as exc:  # noqa: BLE001
            return core.result(core.format_exception(exc), False, started)
        job = _Job(compiled)
        if self.executor is None or self.executor.abandoned:
            self.executor = _Executor(core)
        with self.interrupt_lock:
            self.job, self.job_cell = job, cell_id
            if cell_id is not None and self.pending_interrupt == cell_id:
                job.interrupt(CellCancelled)  # it came before the cell did
            self.pending_interrupt = None
        self.executor.submit(job)
        limit = None if timeout is None else max(float(timeout), 0.0)
        abandoned = False
        if not job.done.wait(limit):
            job.interrupt(CellTimeout)
            deadline = time.monotonic() + self.grace
            while not job.done.wait(0.05):
                if time.monotonic() >= deadline:
                    abandoned = True
                    self.executor.abandoned = True
                    self.executor = None
                    break
                job.interrupt(CellTimeout)
        with self.interrupt_lock:
            self.job = self.job_cell = None
        exc = job.exc
        job.exc = None
        if abandoned:
            error = ("TimeoutError: the cell exceeded its time limit of %g seconds and did not stop "
                     "within %g s more: it is blocked in a call Python cannot interrupt "
                     "(time.sleep, a lock, I/O). Its thread was abandoned; the next cell runs in a "
                     "fresh thread with the same variables." % (limit, self.grace))
            return core.result(error, True, started)
        if job.stop_reason is CellTimeout:
            error = ("TimeoutError: the cell exceeded its time limit of %g seconds and was stopped; "
                     "variables set before that point are kept." % limit)
            if exc is not None and not isinstance(exc, CellInterrupt):
                error += "\nWhile stopping, the cell raised:\n" + core.format_exception(exc)
            return core.result(error, True, started)
        if job.stop_reason is not None and isinstance(exc, CellInterrupt):
            return core.result("Cancelled: the cell was interrupted", False, started)
        return core.result(core.format_exception(exc) if exc is not None else None, False, started)


def apply_limits(limits):
    """rlimits the worker puts on itself before any model code runs (hard limits included, so
    model code cannot raise them again)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Pyodide
        return
    names = {"address_space": "RLIMIT_AS", "data": "RLIMIT_DATA", "file_size": "RLIMIT_FSIZE",
             "open_files": "RLIMIT_NOFILE", "processes": "RLIMIT_NPROC", "cpu": "RLIMIT_CPU",
             "core": "RLIMIT_CORE"}
    for key, value in limits.items():
        which = getattr(resource, names.get(key, ""), None)
        if which is None or value is None:
            continue
        value = int(value)
        soft, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY and hard < value:
            value = hard
        resource.setrlimit(which, (value, value))


TEXT_MARK = b"@"


def text_lines(read, write):
    """Wraps a byte channel for transports that only carry text lines (a cloud sandbox's
    exec stdin/stdout, decoded as UTF-8 on the way): every write becomes one line
    ``@<base64>\n``; lines read are decoded the same way, and lines without the ``@`` mark
    (a banner, a shell's echo) are skipped."""
    import base64
    import binascii

    state = {"buf": b"", "out": b""}

    def text_read(n):
        while not state["out"]:
            while b"\n" not in state["buf"]:
                chunk = read(1 << 16)
                if not chunk:
                    return b""
                state["buf"] += chunk
            line, state["buf"] = state["buf"].split(b"\n", 1)
            line = line.strip()
            if line.startswith(TEXT_MARK):
                try:
                    state["out"] = base64.b64decode(line[1:], validate=True)
                except (binascii.Error, ValueError) as exc:
                    raise ProtocolError("a line of the text channel is not base64") from exc
        data, state["out"] = state["out"][:n], state["out"][n:]
        return data

    def text_write(data):
        write(TEXT_MARK + base64.b64encode(bytes(data)) + b"\n")

    return text_read, text_write


def _open_channel(args):
    """``(read, write)`` for ``--stdio`` or ``--unix PATH`` (``--text``: base64 lines, see
    :func:`text_lines`); fds 0/1 then stop being the channel."""
    if "--unix" in args:
        import socket

        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(args[args.index("--unix") + 1])
        in_fd = out_fd = os.dup(sock.fileno())
        sock.close()
    else:
        in_fd, out_fd = os.dup(0), os.dup(1)
    # Stray writes to fd 1 (a C extension, os.write(1, ...)) must not corrupt the channel: fd 1
    # becomes the worker's stderr (a log the host keeps) and fd 0 reads nothing.
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)

    def read(n):
        return os.read(in_fd, n)

    def write(data):
        view = memoryview(data)
        while view:
            view = view[os.write(out_fd, view):]

    if "--text" in args:
        return text_lines(read, write)
    return read, write


def main(argv=None):
    args = list(sys.argv[1:] if argv is None else argv)
    if "--secret-file" in args:
        with open(args[args.index("--secret-file") + 1], "rb") as f:
            secret = f.read().strip()
    else:
        secret = os.environ.pop("RLM_WORKER_SECRET", "").encode()
    if not secret:
        sys.stderr.write("rlm worker: no secret (--secret-file PATH or RLM_WORKER_SECRET)\n")
        return 2
    read, write = _open_channel(args)
    worker = Worker(read, write, secret)
    try:
        config = worker.handshake()
        worker.configure(config)
        worker.serve()
    except (ProtocolError, EOFError) as exc:
        os.write(2, ("rlm worker: %s\n" % exc).encode())
        return 3
    finally:
        sys.stdout.flush() if hasattr(sys.stdout, "flush") else None
    os._exit(0)  # abandoned cell threads must not keep the process alive


if __name__ == "__main__":
    sys.exit(main())
