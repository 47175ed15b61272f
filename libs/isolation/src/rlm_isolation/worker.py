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

import contextlib
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

TYPE_CHECKING = False  # typing is not imported at run time (every worker start would pay for it)
if TYPE_CHECKING:
    from typing import Any

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
        parts: list[bytes] = []
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


def call_args(method, args):
    """The arguments of a helper call as they cross the channel: the prompts of a batched call
    (any iterable) as a JSON list. The local REPL hands the host the cell's own objects."""
    if method.endswith("_batched"):
        return [list(args[0])] + list(args[1:])
    return args


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

    Shared by every REPL rlm ships: the worker of each isolated environment, Pyodide, both
    IPython environments and, in the host process, the default ``local`` environment.

    ``call_host(method, args)`` serves a helper call (``llm_query`` and friends, ``args`` as the
    cell gave them) and returns its reply: the worker sends it to the host over the channel, the
    local REPL calls the host directly. ``ns``: the namespace to work on (default: a new one).
    ``extra_builtins``: builtins of the REPL's own on top of rlm's (the local REPL's ``help``).
    ``machinery``: files (or directories, ending with ``os.sep``) whose frames tracebacks leave
    out, besides this file.

    Output written through :meth:`write` (from any thread) is kept, bounded, until
    :meth:`result` takes it for the cell that ended.
    """

    machinery = ()
    closed = False

    def __init__(self, call_host, max_output_chars=20000, ctx_dir=".", ns=None,
                 extra_builtins=None, machinery=()):
        import builtins

        self.call_host = call_host
        self.max_output_chars = max_output_chars
        self.ctx_dir = ctx_dir
        self.machinery = (__file__,) + tuple(machinery)
        self.lock = threading.Lock() if threading else None
        self.out = BoundedText(max_output_chars)
        self.err = BoundedText(max_output_chars)
        self.sources = {}
        self.cell_index = 0
        bi = dict(vars(builtins))
        bi.update({"exit": _exit, "quit": _exit, "input": _no_input,
                   "breakpoint": _no_breakpoint})
        bi.update(extra_builtins or {})
        self.builtins: dict[str, Any] | None = bi  # None once closed
        self.ns = {} if ns is None else ns
        self.answer = {"content": "", "ready": False}
        self.fixed = {}
        self.tool_names = set()
        self.last_history = -1
        self.fixed.update(self._helpers())
        self.install()

    def install(self):
        """Bind (again) what the REPL owns in its namespace: ``__name__``, the builtins, the
        helpers, tools, contexts, histories and ``answer``."""
        ns = self.ns
        ns["__name__"] = "__main__"
        ns["__doc__"] = None
        if self.builtins is not None:
            ns["__builtins__"] = self.builtins
        ns.update(self.fixed)
        ns["answer"] = self.answer

    def clear(self):
        """Drop every reference the REPL holds (it is closed: cells that end now restore nothing)."""
        self.closed = True
        self.ns.clear()
        self.fixed.clear()
        self.sources.clear()
        self.builtins = None
        self.answer = {"content": "", "ready": False}

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
            return core.call_host("llm_query_batched", [prompts, model])

        def rlm_query(prompt, model=None):
            """Hand ``prompt`` to a child RLM with its own REPL (a plain model call at the maximum
            depth). Returns its answer, or a string starting with "Error: "."""
            return core.call_host("rlm_query", [prompt, model])

        def rlm_query_batched(prompts, model=None):
            """``rlm_query`` for many prompts at once; answers in order."""
            return core.call_host("rlm_query_batched", [prompts, model])

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
            """Finish with the value of the variable named ``name_or_value`` (a string).

            Any other argument is used as the answer itself.
            """
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
        """``{name: {"code": source} | {"value": value}}``: code runs once in the namespace."""
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

    def bind_context(self, index, value):
        """``context_{index}`` (and ``context`` for index 0) is ``value`` itself; a new context
        means a new task, so ``answer`` starts over."""
        self.bind(["context_%d" % index] + (["context"] if index == 0 else []), value)
        self.answer = {"content": "", "ready": False}
        self.ns["answer"] = self.answer

    def load_context(self, index, path, fmt):
        path = os.path.join(self.ctx_dir, path) if not os.path.isabs(path) else path
        self.bind_context(index, load_file(path, fmt))

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
        return format_exception(exc, self.sources, self.machinery)

    def cell_error(self, exc, stop_reason=None, limit=None, abandoned=False, grace=1.0):
        """The error text of a cell that ended with ``exc`` (``None``: it raised nothing) after a
        stop for ``stop_reason`` (:class:`CellTimeout`, :class:`CellCancelled` or ``None``);
        ``abandoned``: its thread did not let go within ``grace`` seconds."""
        if stop_reason is CellTimeout:
            seconds = "?" if limit is None else "%g" % limit
            if abandoned:
                return ("TimeoutError: the cell exceeded its time limit of %s seconds and did not "
                        "stop within %g s more: it is blocked in a call Python cannot interrupt "
                        "(time.sleep, a lock, network or disk I/O). Its thread was abandoned and "
                        "may still finish in the background; the next cell runs in a fresh thread "
                        "with the same variables." % (seconds, grace))
            message = ("TimeoutError: the cell exceeded its time limit of %s seconds and was "
                       "stopped; variables set before that point are kept." % seconds)
            if exc is not None and not isinstance(exc, CellInterrupt):
                # The cell caught the stop and failed differently while stopping.
                return message + "\nWhile stopping, the cell raised:\n" + self.format_exception(exc)
            return format_stack(exc, self.sources, self.machinery) + message
        if stop_reason is not None:  # even where the cell's own runner caught it (IPython)
            if abandoned:
                return ("Cancelled: the cell was interrupted while blocked in a call Python cannot "
                        "interrupt; its thread was abandoned and may still finish in the "
                        "background")
            return "Cancelled: the cell was interrupted"
        return None if exc is None else self.format_exception(exc)

    def result(self, error, timed_out, started, answer=None, plain_only=False):
        """The cell's ``result`` message; takes its output. ``answer`` is ``answer_fields`` made
        on the cell's own thread; without it the answer is read here, and with ``plain_only``
        only one that is plain text already (a model object's ``__str__`` never runs outside
        the cell's time limit)."""
        if not self.closed:
            self.restore()
        out, err = self.take_output()
        if error is not None:
            text = err.value()
            if text and not text.endswith("\n"):
                err.write("\n")
            err.write(error + "\n")
        if answer is None:
            current = self.ns.get("answer")
            plain = isinstance(current, dict) and type(current.get("content")) in (str, type(None))
            answer = answer_fields(current) if plain or not plain_only else (None, None)
        final_answer, answer_content = answer
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


# --- tracebacks ----------------------------------------------------------------------------


#: Follows the traceback of a cell ended by ``SystemExit``.
EXIT_NOTE = ("\n(sys.exit(), exit() and quit() end only the current code block; the REPL and its "
             "variables are still there.)")


def format_exception(exc, sources, machinery=(__file__,)):
    """The usual ``Traceback ... ExceptionType: message`` text, limited to the cell's frames.

    Frames before the first cell frame (the REPL's ``exec``) and frames of ``machinery`` (files,
    or directories ending with ``os.sep``: the helpers, ``exit()``) are left out; cell lines come
    from ``sources`` (``linecache`` is never touched, so two REPLs that both have a ``<cell 3>``
    cannot show each other's code)."""
    try:
        text = "".join(_summary(exc, sources, machinery).format()).rstrip("\n")
    except Exception:  # noqa: BLE001 - an exception whose __str__ fails must still be reported
        text = "%s: <exception could not be formatted>" % type(exc).__name__
    if isinstance(exc, SystemExit):
        text += EXIT_NOTE
    return text


def format_stack(exc, sources, machinery=(__file__,)):
    """Only the ``Traceback`` part (where the cell was when it was stopped), or ``""``."""
    if exc is None or exc.__traceback__ is None:
        return ""
    try:
        te = _summary(exc, sources, machinery)
    except Exception:  # noqa: BLE001
        return ""
    if not any(f.filename in sources for f in te.stack):
        return ""
    return "Traceback (most recent call last):\n" + "".join(te.stack.format())


def _summary(exc, sources, machinery):
    te = traceback.TracebackException.from_exception(exc, lookup_lines=False)
    _trim(te, sources, tuple(machinery), set())
    return te


def _frame(frame, line):
    """``frame`` with the cell's own ``line``; its column positions are kept where the Python
    has them (3.11+: the ``^^^`` markers)."""
    try:
        return traceback.FrameSummary(
            frame.filename, frame.lineno, frame.name, lookup_line=False, line=line,
            end_lineno=frame.end_lineno, colno=frame.colno, end_colno=frame.end_colno)
    except (TypeError, AttributeError):  # Python < 3.11
        return traceback.FrameSummary(frame.filename, frame.lineno, frame.name,
                                      lookup_line=False, line=line)


def _trim(te, sources, machinery, seen):
    if id(te) in seen:
        return
    seen.add(id(te))
    frames = list(te.stack)
    first = next((i for i, f in enumerate(frames) if f.filename in sources), None)
    if first is not None:
        frames = [f for f in frames[first:] if not (
            f.filename in machinery or f.filename.startswith(
                tuple(m for m in machinery if m.endswith(os.sep))))]
    rebuilt = []
    for frame in frames:
        lines = sources.get(frame.filename)
        if lines is not None:
            n = frame.lineno or 0
            frame = _frame(frame, lines[n - 1] if 0 < n <= len(lines) else "")
        rebuilt.append(frame)
    te.stack = traceback.StackSummary.from_list(rebuilt)
    for linked in (te.__cause__, te.__context__):
        if linked is not None:
            _trim(linked, sources, machinery, seen)
    for member in getattr(te, "exceptions", None) or ():  # an ExceptionGroup's members
        _trim(member, sources, machinery, seen)


# --- the threaded runtime (CPython) ----------------------------------------------------------
#
# A cell runs on an executor thread while the thread that asked for it waits. To stop it (time
# limit, interrupt, shutdown) an exception is raised inside the executor thread with
# ``PyThreadState_SetAsyncExc``, again and again until the cell lets go. That works for Python
# code (``while True: pass``) but not for a thread blocked in C (``time.sleep(1000)``, a socket
# read): the exception only lands when the call returns. After a grace period such an executor is
# *abandoned*: the cell is reported, a fresh executor serves the next cell with the same
# namespace, and a reaper keeps raising in the abandoned thread until it finishes.
#
# Races are settled by ``Job.lock``: a stop is raised only while the job runs, and the executor
# marks the job finished and clears any exception still pending while holding that lock. Once a
# job is finished no stop can reach its thread any more, so a stop aimed at one cell never lands
# in the next.

def _no_thread_start(thread):
    raise RuntimeError("this Python runtime has no threads (the worker runs cells inline)")


#: ``threading.Thread.start`` as it was when the worker was imported (the local REPL wraps it to
#: carry a cell's output capture into the threads it starts; the reaper belongs to no cell).
_THREAD_START = threading.Thread.start if threading else _no_thread_start


def _raise_in(ident, exc_type):
    import ctypes

    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(ident), ctypes.py_object(exc_type) if exc_type else ctypes.py_object())


class Job:
    """One cell for an executor thread."""

    __slots__ = ("code", "ns", "executor", "lock", "done", "ident", "finished", "stop_reason",
                 "exc", "answer")

    def __init__(self, code, ns, executor=None):
        self.code = code
        self.ns = ns
        self.executor = executor
        self.lock = threading.Lock()
        self.done = threading.Event()  # the executor is finished with the cell
        self.ident = None
        self.finished = False
        self.stop_reason = None
        self.exc = None
        # ``answer_fields`` of the namespace's answer, made on the cell's thread inside its time
        # limit; None when the cell was stopped first (or rebound ``answer`` to a non-dict).
        self.answer = None

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


_STACK_LOCK = threading.Lock() if threading else contextlib.nullcontext()


class Executor:
    """One daemon thread running cells one after another; replaced when a cell is abandoned.

    ``setup()`` runs first on the new thread (its result is :attr:`setup_result`), ``after()`` on
    it after each cell; ``stack_size``: the thread's C stack in bytes (default: the process's).
    """

    def __init__(self, name="rlm-cell", setup=None, after=None, stack_size=None):
        import queue

        self.jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self.abandoned = False
        self.setup_result = None
        self._setup = setup
        self._after = after
        ready = threading.Event()
        self.thread = threading.Thread(target=self._main, args=(ready,), name=name, daemon=True)
        if stack_size:
            with _STACK_LOCK:  # threading.stack_size is process-wide: set it for this thread only
                previous = threading.stack_size(stack_size)
                try:
                    self.thread.start()
                finally:
                    threading.stack_size(previous)
        else:
            self.thread.start()
        ready.wait()

    def submit(self, job):
        self.jobs.put(job)

    def stop(self):
        """Ask the thread to exit once it is idle."""
        self.jobs.put(None)

    def _main(self, ready):
        try:
            if self._setup is not None:
                self.setup_result = self._setup()
        except Exception:  # noqa: BLE001 - a thread without its setup still runs cells
            pass
        finally:
            ready.set()
        while True:
            job = self.jobs.get()
            if job is None:
                return
            self._run(job)
            job = None  # do not keep the last cell's frames alive while idle
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
                exec(job.code, job.ns)  # running model code is the point
            except BaseException as e:  # noqa: BLE001 - every end of a cell is a cell result
                exc = e
            current = job.ns.get("answer")
            # A cell that rebound ``answer`` to something else gets its dict back afterwards
            # (restore_reserved): that dict is then read by REPLCore.result, as plain text only.
            job.answer = answer_fields(current) if isinstance(current, dict) else None
        except BaseException as e:  # noqa: BLE001 - a stop landing in the handlers above
            exc = exc or e
        while True:  # finish, and clear a stop still pending: it must not hit what comes next
            try:
                with job.lock:
                    job.finished = True
                    _raise_in(job.ident, None)
                break
            except CellInterrupt as e:
                exc = exc or e
        if self._after is not None and not self.abandoned:
            try:
                self._after()
            except Exception:  # noqa: BLE001
                pass
        job.exc = exc
        del exc
        job.done.set()


#: Seconds between two looks, while a cell runs, for a stop asked for from elsewhere.
POLL = 0.1
_reaper_lock = threading.Lock() if threading else contextlib.nullcontext()
_abandoned: list[Job] = []
_reaper: threading.Thread | None = None
REAPER_INTERVAL = 0.5


def abandon(job):
    """Keep raising in an abandoned cell's thread until it finishes."""
    global _reaper
    with _reaper_lock:
        _abandoned.append(job)
        if _reaper is None or not _reaper.is_alive():
            _reaper = threading.Thread(target=_reap, name="rlm-reaper", daemon=True)
            _THREAD_START(_reaper)


def _reap():
    global _reaper
    while True:
        time.sleep(REAPER_INTERVAL)
        with _reaper_lock:
            pending = [j for j in _abandoned if not j.finished]
            _abandoned[:] = pending
            if not pending:
                _reaper = None
                return
        for job in pending:
            job.interrupt(job.stop_reason or CellTimeout)


class CellRunner:
    """Runs a :class:`REPLCore`'s cells on an executor thread, with a time limit, and stops them.

    :meth:`run` is called by one thread at a time (the REPL serialises cells); :meth:`interrupt`
    and :meth:`close` from any thread. A stopped cell gets ``grace`` seconds to let go before its
    thread is abandoned. ``name``, ``setup``, ``after`` and ``stack_size`` are given to each
    :class:`Executor`.
    """

    def __init__(self, core, grace=1.0, name="rlm-cell", setup=None, after=None,
                 stack_size=None):
        self.core = core
        self.grace = grace
        self._executor_args = (name, setup, after, stack_size)
        self.executor = None
        self.lock = threading.Lock()
        self.job = None
        self.job_cell = None  # the id of the cell that runs (the worker's exec id)
        self.pending_interrupt = None  # an interrupt for a cell id not started yet

    def get_executor(self):
        executor = self.executor
        if executor is None or executor.abandoned or not executor.thread.is_alive():
            executor = self.executor = Executor(*self._executor_args)
        return executor

    def run(self, code, timeout=None, filename=None, cell=None):
        """Run one cell (``timeout`` in seconds, ``None``: no limit); its ``result`` message."""
        core = self.core
        started = time.perf_counter()
        core.restore()
        try:
            compiled = core.compile_cell(code, filename)
        except Exception as invalid:  # noqa: BLE001 - SyntaxError, null bytes, too deeply nested
            return core.result(core.format_exception(invalid), False, started)
        job = Job(compiled, core.ns, self.get_executor())
        with self.lock:
            self.job, self.job_cell = job, cell
            if cell is not None and self.pending_interrupt == cell:
                job.interrupt(CellCancelled)  # it came before the cell did
            self.pending_interrupt = None
        limit = None if timeout is None else max(float(timeout), 0.0)
        try:
            job.executor.submit(job)
            stopped = self._wait(job, limit)
        except KeyboardInterrupt:
            # A real Ctrl+C while we wait: stop the cell, then let the caller see the interrupt.
            try:
                if not job.done.is_set():
                    self.stop(job, CellCancelled)
            finally:
                self._forget(job)
                core.take_output()
            raise
        self._forget(job)
        exc, job.exc = job.exc, None
        if core.closed:
            error = "RLMEnvironmentError: the REPL was shut down while this cell was running"
        else:
            error = core.cell_error(exc, job.stop_reason, limit, not stopped, self.grace)
        del exc
        return core.result(error, job.stop_reason is CellTimeout, started, job.answer,
                           plain_only=True)

    def _forget(self, job):
        with self.lock:
            if self.job is job:
                self.job = self.job_cell = None

    def _wait(self, job, limit):
        """Until the cell ends; a stop asked for meanwhile is seen through. False when the
        cell's thread was abandoned."""
        deadline = None if limit is None else time.monotonic() + limit
        while True:
            step = POLL if deadline is None else min(POLL, deadline - time.monotonic())
            if step <= 0:
                return self.stop(job, CellTimeout)
            if job.done.wait(step):
                return True
            if job.stop_reason is not None:  # interrupt() without waiting (the worker's)
                return self.stop(job, job.stop_reason)

    def stop(self, job, reason):
        """Stop ``job``: True when it ended, False when its thread was abandoned."""
        deadline = time.monotonic() + self.grace
        job.interrupt(reason)
        while not job.done.wait(0.05):
            if time.monotonic() >= deadline:
                self._abandon(job)
                return job.done.is_set()
            job.interrupt(reason)
        return True

    def _abandon(self, job):
        executor = job.executor
        with self.lock:
            if executor.abandoned:
                return
            executor.abandoned = True
            executor.thread.name += " (abandoned)"
            executor.stop()  # if it finishes after all, the thread exits instead of idling
            if self.executor is executor:
                self.executor = None
        abandon(job)

    def interrupt(self, reason=None, cell=None, wait=False):
        """Stop the running cell (``cell``: only if it is that one; one not started yet is
        stopped when it starts). ``wait``: return once it ended or was abandoned. False when
        there was nothing to stop."""
        with self.lock:
            job = self.job
            if job is None or (cell is not None and cell != self.job_cell):
                if cell is not None:
                    self.pending_interrupt = cell
                return False
        if job.done.is_set():
            return False
        reason = reason or CellCancelled
        if wait:
            self.stop(job, reason)
            return True
        return job.interrupt(reason)

    def close(self):
        """Stop the executor thread once it is idle (a running cell is not stopped)."""
        executor, self.executor = self.executor, None
        if executor is not None:
            executor.stop()
            if executor.thread is not threading.current_thread():
                executor.thread.join(timeout=1.0)


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
        # Made by configure(); the IPython kernel's link sets a core of its own and no runner.
        self.core: REPLCore | None = None
        self.runner: CellRunner | None = None
        self.files = {}
        self.closed = False
        self.exec_lock = threading.Lock()

    def send(self, message):
        data = encode_json(message)
        with self.send_lock:
            self._write(data)

    # helper calls
    def call_host(self, method, args):
        if self.closed:
            return "Error: the connection to the host is closed"
        args = call_args(method, args)
        with self.pending_lock:
            self.next_id += 1
            call_id = self.next_id
            answered = threading.Event()
            slot = [answered, None]
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
        answered.wait()
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
        self.runner = CellRunner(self.core, self.grace)
        sys.stdout = _Stream(self.core, "stdout")
        sys.stderr = _Stream(self.core, "stderr")
        error = None
        try:
            self.core.set_tools(config.get("tools") or {})
        except BaseException as exc:  # noqa: BLE001
            error = format_exception(exc, {})
        self.runner.get_executor()
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
                if self.runner is not None:
                    self.runner.interrupt(CellCancelled, cell=msg.get("cell"))
            elif t == "context":
                self._control(msg, lambda m: self._core().load_context(
                    int(m["index"]), m["path"], m.get("format", "text")))
            elif t == "history":
                self._control(msg, lambda m: self._core().load_history(int(m["index"]),
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

    def _core(self) -> REPLCore:
        """The REPL core control messages act on."""
        if self.core is None:
            raise ProtocolError("a control message came before the config message")
        return self.core

    def _open_file(self, msg):
        name = os.path.basename(str(msg["path"]))
        ctx_dir = self._core().ctx_dir
        if not os.path.isdir(ctx_dir):
            os.makedirs(ctx_dir, exist_ok=True)
        self.files[int(msg["id"])] = open(os.path.join(ctx_dir, name), "wb")

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
        runner = self.runner
        if runner is None:
            raise ProtocolError("an exec message, but this worker runs no cells (not configured)")
        with self.exec_lock:
            result = runner.run(str(msg.get("code", "")), msg.get("timeout"),
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
