"""``IsolatedREPL``: the host side of every environment that runs the REPL worker elsewhere.

An isolated environment (bubblewrap sandbox, Docker container, Pyodide under Deno, cloud
sandboxes) only has to say how to start :mod:`rlm_isolation.worker` and give back its channel:
subclass :class:`IsolatedREPL` and implement :meth:`IsolatedREPL.launch`. Everything else is
here, once: the per-run secret and handshake, tools as code strings or JSON values, contexts
written once per run as files (or streamed over the channel when the worker cannot see the
host's files), per-cell timeouts with a host-side backstop, and a fresh worker when the old one
dies (memory cap, crash), with its contexts, history and tools loaded again.
"""

from __future__ import annotations

import codecs
import contextlib
import itertools
import json
import keyword
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

from rlm.contract import code_tool_defines as _defines
from rlm.exceptions import ConfigurationError, RLMEnvironmentError
from rlm.types import CellResult, EnvironmentCapabilities, Message, Tool, context_depth_text
from .channel import Channel, ChannelClosed, new_secret
from .leftovers import make_run_dir, reap_run_dirs, track_open, untrack_open
from .streams import StderrTail
from .worker import RESERVED_NAMES, ProtocolError

WORKER_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")
_ids = itertools.count(1)
_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2,
          "mib": 1024**2, "g": 1024**3, "gb": 1024**3, "gib": 1024**3, "t": 1024**4}
STR_CHUNK = 8 * 1024 * 1024


def parse_size(value: Any, name: str) -> int | None:
    """``"512m"``, ``"2g"``, ``1_000_000`` -> bytes; ``None`` stays ``None``."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigurationError(f"{name} must be a size like '512m' or '2g', not {value!r}")
    if isinstance(value, int):
        if value <= 0:
            raise ConfigurationError(f"{name} must be positive, not {value!r}")
        return value
    if isinstance(value, str):
        text = value.strip().lower().replace("_", "")
        number = text.rstrip("abcdefghijklmnopqrstuvwxyz")
        unit = text[len(number):]
        try:
            result = int(float(number) * _UNITS[unit])
        except (KeyError, ValueError):
            result = 0
        if result > 0:
            return result
    raise ConfigurationError(f"{name} must be a size like '512m', '2g' or a number of bytes, "
                             f"not {value!r}")


def check_timeout(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigurationError(f"{name} must be a positive number of seconds or None, "
                                 f"not {value!r}")
    return float(value)


def cell_limit(value: Any) -> float:
    """A cell's ``execute(timeout=...)``: a number of seconds, at least 0. The kernel may pass
    what is left of a run's time budget, which can reach zero: a cell with no time left is
    stopped at once rather than refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, not {value!r}")
    return max(float(value), 0.0)


def check_index(index: Any) -> None:
    """A context or history index: a non-negative integer."""
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ValueError(f"index must be a non-negative integer, not {index!r}")


def check_cell_options(setup_code: Any, max_output_chars: Any) -> None:
    """Refuse the settings every REPL takes when they are malformed: ``setup_code`` must be a
    string (or ``None``), ``max_output_chars`` a positive integer."""
    if setup_code is not None and not isinstance(setup_code, str):
        raise ConfigurationError(
            f"setup_code must be a string of Python code, not {type(setup_code).__name__}")
    if (isinstance(max_output_chars, bool) or not isinstance(max_output_chars, int)
            or max_output_chars < 1):
        raise ConfigurationError(
            f"max_output_chars must be a positive integer, not {max_output_chars!r}")


#: Added to ``memory_limit`` for the address-space rlimit: reservations count there, not only
#: resident memory, so the interpreter needs room beyond what a cell may really use.
ADDRESS_SPACE_MARGIN = 512 * 2**20


def worker_rlimits(memory_limit: int | None, disk_limit: int | None) -> dict[str, Any]:
    """The rlimits a worker sets on itself (its config's ``limits``) where nothing else caps it:
    no core dumps, the address space when ``memory_limit`` is given (plus
    :data:`ADDRESS_SPACE_MARGIN`), the largest file it may write when ``disk_limit`` is."""
    limits: dict[str, Any] = {"core": 0}
    if memory_limit:
        limits["address_space"] = memory_limit + ADDRESS_SPACE_MARGIN
    if disk_limit:
        limits["file_size"] = disk_limit
    return limits


def tool_specs(tools: Mapping[str, Any] | None, environment: str) -> dict[str, dict[str, Any]]:
    """Tools as the worker takes them: ``{"code": source}`` or ``{"value": json_value}``.

    A string that is Python code defining the tool's own name (``"def helper(x): ..."``) is run
    in the REPL; any other string, number, list or dict is a value. Python callables cannot
    cross a process boundary, so they are refused with the fix.
    """
    specs: dict[str, dict[str, Any]] = {}
    for key, tool in (tools or {}).items():
        name, value = (tool.name, tool.value) if isinstance(tool, Tool) else (key, tool)
        if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
            raise ConfigurationError(f"tool name {name!r} is not a valid Python identifier")
        if name in RESERVED_NAMES or (name.split("_")[0] in ("context", "history")
                                      and name.partition("_")[2].isdigit()):
            raise ConfigurationError(
                f"tool name {name!r} is reserved by the REPL; reserved names are "
                f"{', '.join(sorted(RESERVED_NAMES))}, context_N and history_N")
        if isinstance(value, str) and _defines(value, name):
            specs[name] = {"code": value}
            continue
        if callable(value):
            raise ConfigurationError(
                f"custom tool {name!r} is a Python {type(value).__name__}, which cannot be passed "
                f"into the isolated {environment!r} environment (its REPL runs in another "
                f"process). Pass its source code as a string instead, e.g. "
                f"{{{name!r}: 'def {name}(x):\\n    return x * 2'}}, or a JSON value (str, "
                "number, list, dict), or use environment='local'.")
        try:
            specs[name] = {"value": json.loads(json.dumps(value))}
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"custom tool {name!r} of type {type(value).__name__} cannot be sent into the "
                f"isolated {environment!r} environment: only code strings and JSON values "
                f"(str, int, float, bool, None, list, dict) cross the boundary ({exc}).") from exc
    return specs


def context_chunks(value: Any) -> tuple[str, Iterator[bytes]]:
    """``(format, chunks)`` for a context: UTF-8 text for ``str``, JSON for everything else.

    A ``str`` is encoded piece by piece, so a 1 GB context never needs a second 1 GB buffer.
    """
    if isinstance(value, str):
        return "text", (value[i:i + STR_CHUNK].encode("utf-8", "surrogatepass")
                        for i in range(0, len(value), STR_CHUNK))
    encoder = json.JSONEncoder(ensure_ascii=False)

    def chunks() -> Iterator[bytes]:
        buf: list[str] = []
        size = 0
        try:
            for piece in encoder.iterencode(value):
                buf.append(piece)
                size += len(piece)
                if size >= STR_CHUNK:
                    yield "".join(buf).encode("utf-8", "surrogatepass")
                    buf, size = [], 0
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"a context of type {type(value).__name__} cannot be sent into an isolated "
                "environment: pass a str, or a dict / list of JSON values (or use "
                f"environment='local'). ({exc})") from exc
        except RecursionError:
            raise ConfigurationError(context_depth_text()) from None
        if buf:
            yield "".join(buf).encode("utf-8", "surrogatepass")

    return "json", chunks()


class WorkerProcess:
    """A worker started with ``subprocess.Popen`` that speaks over its stdin/stdout.

    Its stderr (tracebacks of the worker itself, stray writes to fd 1 and 2) is kept in a bounded
    buffer and quoted when the worker dies.
    """

    def __init__(self, argv: list[str], *, env: dict[str, str] | None = None,
                 pass_fds: tuple[int, ...] = (), cwd: str | None = None, what: str = "worker"):
        self.what = what
        self.argv = argv
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, env=env, pass_fds=pass_fds,
                                         cwd=cwd, start_new_session=True, bufsize=0)
        except OSError as exc:
            raise RLMEnvironmentError(f"cannot start the {what} ({argv[0]}): {exc}") from exc
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._stdin: Any = self.proc.stdin
        self._stdout: Any = self.proc.stdout
        self._stdin_fd = self._stdin.fileno()
        self._stdout_fd = self._stdout.fileno()
        self._close_lock = threading.Lock()
        self._killed = False
        self._err = StderrTail()
        threading.Thread(target=self._drain, name="rlm-worker-stderr", daemon=True).start()

    def _drain(self) -> None:
        """Read the worker's stderr in blocks into a bounded tail (an unterminated line of any
        length costs the host :data:`~rlm_isolation.streams.PARTIAL_CHARS`, not its size)."""
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        while True:
            try:
                block = os.read(fd, 65536)
            except OSError:
                break
            if not block:
                break
            self._err.feed(decoder.decode(block))
        self._err.feed(decoder.decode(b"", final=True))
        self._err.close()

    # The pipes stay open until the worker's output ends (``read`` sees EOF) or this object is
    # gone, never closed by ``kill``: a reader thread may be between ``fileno()`` and
    # ``os.read``, and a descriptor number closed under it can already belong to the next
    # worker's pipe, whose first bytes it would then steal (the next channel sees garbage).
    def read(self, n: int) -> bytes:
        if self._stdout is None:
            return b""
        data = os.read(self._stdout_fd, n)
        if not data:
            with self._close_lock:
                if self._stdout is not None:
                    self._stdout.close()
                    self._stdout = None
        return data

    def write(self, data: bytes) -> None:
        if self._killed:
            raise BrokenPipeError(f"the {self.what} was stopped")
        view = memoryview(data)
        while view:
            view = view[os.write(self._stdin_fd, view):]

    def stderr_tail(self, lines: int = 20) -> str:
        return self._err.text(lines)

    def returncode(self) -> int | None:
        return self.proc.poll()

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                try:
                    self.proc.kill()
                except OSError:
                    pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass
        self._killed = True  # the pipes close when the output ends or this object goes (read)


def describe_exit(code: int | None) -> str:
    if code is None:
        return "is still running"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with status {code}"


class IsolatedREPL:
    """Base class of the environments that run :mod:`rlm_isolation.worker` elsewhere.

    Subclasses set :attr:`environment_name`, implement :meth:`launch` and, when the worker sees
    a host directory, set :attr:`_shared_ctx_dir` (contexts are then written there by the host
    and loaded from :attr:`_worker_ctx_dir`; otherwise they are streamed over the channel).

    Args (every subclass takes them):
        cell_timeout: default time limit of one cell (seconds, ``None``: none unless
            ``execute(timeout=...)`` gives one).
        setup_code: Python run once when the worker starts (and again after a restart).
        max_output_chars: stdout and stderr of one cell are each cut to this many characters.
        memory_limit: the worker's memory cap (``"2g"``, ``"512m"`` or bytes; ``None``: none).
        startup_timeout: seconds the worker gets to start and authenticate.
        timeout_grace: seconds a stopped cell gets to let go before its thread is abandoned;
            the host kills and restarts a worker that has not answered ``grace + 5`` s after
            that.
    """

    environment_name = "isolated"
    capabilities = EnvironmentCapabilities(isolated=True, persistent=True, cell_timeout=True,
                                           threads=True, callables_as_tools=False,
                                           memory_limit=True)

    _shared_ctx_dir: str | None = None  # host path the worker reads contexts from, if any
    _worker_ctx_dir: str = "/rlm/ctx"  # where the worker finds (or writes) context files
    _file_owner: tuple[int, int] | None = None  # (uid, gid) given the context files (mode 0600)

    def __init__(self, *, cell_timeout: float | None = None, setup_code: str | None = None,
                 max_output_chars: int = 20000, memory_limit: str | int | None = "2g",
                 startup_timeout: float = 30.0, timeout_grace: float = 1.0):
        self.cell_timeout = check_timeout(cell_timeout, "cell_timeout")
        check_cell_options(setup_code, max_output_chars)
        self.setup_code = setup_code
        self.max_output_chars = max_output_chars
        self.memory_limit = parse_size(memory_limit, "memory_limit")
        self.startup_timeout = check_timeout(startup_timeout, "startup_timeout") or 30.0
        self.timeout_grace = check_timeout(timeout_grace, "timeout_grace") or 1.0
        self._id = next(_ids)
        self._lock = threading.RLock()
        self._host: Any = None
        self._tools: dict[str, dict[str, Any]] = {}
        self._contexts: dict[int, tuple[str, str, Any]] = {}  # index -> (format, file, value)
        self._histories: dict[int, list[Message]] = {}
        self._written: set[str] = set()
        self._proc: Any = None
        self._channel: Channel | None = None
        self._run_dir: str | None = None  # private (0700), see leftovers.make_run_dir
        self._run_lock: int | None = None  # holds the run directory's owner lock
        self._started = False
        self._closed = False
        self._closing = False  # shutdown() was called while another thread held the REPL
        self._cell_id: int | None = None  # the id of the exec in flight (interrupt() names it)
        self.restarts = 0
        self.startup_seconds: float | None = None

    # --- what subclasses provide -----------------------------------------------------------

    def launch(self, run_dir: str, secret: bytes) -> Any:
        """Start the worker (:data:`WORKER_FILE`, run with ``--stdio`` and the secret in the
        environment variable ``RLM_WORKER_SECRET``); return its transport: an object with
        ``read(n)``, ``write(data)``, ``kill()``, ``returncode()`` and ``stderr_tail()``, such as
        :class:`WorkerProcess`. Called by ``start()`` and again after the worker died, on the
        thread that starts or restarts it; ``run_dir`` is private to this REPL (mode 0700) and
        removed at shutdown. The public method to implement (docs/plugins.md); subclasses
        written against the older private name ``_launch`` keep working."""
        return self._launch(run_dir, secret)

    def _launch(self, run_dir: str, secret: bytes) -> Any:
        """The older name of :meth:`launch`, kept for existing subclasses."""
        raise NotImplementedError(f"{type(self).__name__} must implement launch(run_dir, secret): "
                                  "start the REPL worker and return its transport")

    def _worker_config(self) -> dict[str, Any]:
        """Extra settings for the worker (``limits``, ``workdir``...)."""
        return {}

    def _cleanup(self) -> None:
        """Release what :meth:`launch` set up besides the process (called at shutdown)."""

    def _describe_death(self, code: int | None) -> str:
        text = f"the {self.environment_name} REPL worker {describe_exit(code)}"
        if code is not None and code in (-9, 137) and self.memory_limit:
            text += (f" (most likely its memory limit of {self.memory_limit // 2**20} MiB; raise "
                     "environment_kwargs['memory_limit'] if the task needs more)")
        return text

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self, host: Any, tools: Mapping[str, Tool]) -> None:
        with self._lock:
            if self._closed:
                raise RLMEnvironmentError(f"this {type(self).__name__} was shut down; create a "
                                          "new one")
            if self._started:
                raise RLMEnvironmentError(f"{type(self).__name__}.start() was already called")
            self._tools = tool_specs(tools, self.environment_name)
            self._host = host
            track_open(self)  # shut down at exit if the program never does it
            reap_run_dirs()  # what hosts killed outright (SIGKILL, out of memory) left behind
            self._run_dir, self._run_lock = make_run_dir(
                f"rlm-{self.environment_name}-{self._id}-")
            started = time.perf_counter()
            try:
                self._boot()
            except BaseException:
                self.shutdown()
                raise
            self.startup_seconds = time.perf_counter() - started
            self._started = True

    def _boot(self) -> None:
        """Start a worker, authenticate it, load tools, contexts, history and setup code."""
        assert self._run_dir is not None
        secret = new_secret()
        proc = self.launch(self._run_dir, secret)
        self._proc = proc
        channel = Channel(proc.read, proc.write, self._host, secret,
                          name=f"rlm-{self.environment_name}-{self._id}")
        config = {"limits": {}, "max_output_chars": self.max_output_chars, "tools": self._tools,
                  "ctx_dir": self._worker_ctx_dir, "grace": self.timeout_grace,
                  **self._worker_config()}
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            proc.kill()  # may still be in the provider's stop request when the handshake ends

        timer = threading.Timer(self.startup_timeout, expire)
        timer.daemon = True
        timer.start()
        try:
            ready = channel.handshake(config)
        except (ProtocolError, EOFError, OSError) as exc:
            proc.kill()
            tail = proc.stderr_tail()
            timed_out = expired.is_set()
            raise RLMEnvironmentError(
                f"the {self.environment_name} REPL worker did not start"
                + (f" within startup_timeout={self.startup_timeout:g} s" if timed_out else "")
                + f": {exc}; it {describe_exit(proc.returncode())}."
                + (f"\nIts output:\n{tail}" if tail else "")) from exc
        finally:
            timer.cancel()
        self._channel = channel
        if ready.get("error"):
            raise ConfigurationError(f"a custom tool failed in the {self.environment_name} REPL:\n"
                                     f"{ready['error']}")
        for index in sorted(self._contexts):
            self._send_context(index)
        for index in sorted(self._histories):
            self._control({"t": "history", "index": index, "messages": self._histories[index]})
        if self.setup_code:
            result = self._exec(self.setup_code, self.cell_timeout, "<setup_code>")
            if result.error is not None:
                raise RLMEnvironmentError(
                    f"the {self.environment_name} REPL's setup_code failed:\n{result.error}")

    def add_context(self, value: Any, index: int) -> None:
        check_index(index)
        fmt = "text" if isinstance(value, str) else "json"
        with self._lock:
            self._require_open()
            name = f"context_{index}.{'txt' if fmt == 'text' else 'json'}"
            self._contexts[index] = (fmt, name, value)  # a reference: the run holds it anyway
            self._written.discard(name)
            if self._started:
                self._send_context(index)

    def _send_context(self, index: int) -> None:
        fmt, name, value = self._contexts[index]
        assert self._channel is not None
        if self._shared_ctx_dir is not None:
            if name not in self._written:  # written once, reused by a restarted worker
                path = os.path.join(self._shared_ctx_dir, name)
                with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
                    for chunk in context_chunks(value)[1]:
                        f.write(chunk)
                if self._file_owner is not None:  # the worker's user, when the host is root
                    os.chown(path, *self._file_owner)
                self._written.add(name)
        else:
            self._channel.send_file(name, context_chunks(value)[1])
        self._control({"t": "context", "index": index,
                       "path": f"{self._worker_ctx_dir.rstrip('/')}/{name}", "format": fmt})

    def add_history(self, messages: list[Message], index: int) -> None:
        check_index(index)
        copied = [dict(m) if isinstance(m, dict) else m for m in messages]
        try:
            copied = json.loads(json.dumps(copied, default=str))
        except (TypeError, ValueError) as exc:  # pragma: no cover - default=str covers it
            raise ConfigurationError(f"history messages must be JSON values: {exc}") from exc
        with self._lock:
            self._require_open()
            self._histories[index] = copied
            if self._started:
                self._control({"t": "history", "index": index, "messages": copied})

    def _control(self, message: dict[str, Any]) -> None:
        assert self._channel is not None
        try:
            ack = self._channel.request(message, timeout=max(60.0, self.startup_timeout))
        except (ChannelClosed, TimeoutError) as exc:
            raise RLMEnvironmentError(f"{self._death_text()} ({exc})") from exc
        if ack is not None and ack.get("error"):
            raise RLMEnvironmentError(f"the {self.environment_name} REPL could not load "
                                      f"{message['t']} {message.get('index')}: {ack['error']}")

    def shutdown(self) -> None:
        if not self._lock.acquire(blocking=False):
            # Another thread holds the REPL (a cell, a start-up, a context being loaded): stop
            # its worker so it lets go, instead of waiting for a cell that may never end (no
            # time limit) - ``RLM.close()`` and the exit-time cleanup call this from elsewhere.
            self._closing = True
            proc = self._proc
            if proc is not None:
                with contextlib.suppress(Exception):  # the holder sees the worker gone anyway
                    proc.kill()
            self._lock.acquire()
        try:
            self._shutdown_locked()
        finally:
            self._lock.release()

    def _shutdown_locked(self) -> None:
        if self._closed:
            return
        self._closed = True
        untrack_open(self)
        self._stop_worker()
        try:
            self._cleanup()
        finally:
            if self._run_dir is not None:
                shutil.rmtree(self._run_dir, ignore_errors=True)
                self._run_dir = None
            if self._run_lock is not None:
                os.close(self._run_lock)
                self._run_lock = None
            self._host = None
            self._contexts.clear()
            self._histories.clear()

    def _stop_worker(self) -> None:
        channel, proc = self._channel, self._proc
        self._channel = self._proc = None
        if channel is not None:
            try:
                channel.send({"t": "shutdown"})
            except Exception:  # noqa: BLE001 - it may be dead already
                pass
            channel.close("the REPL was shut down")
        if proc is not None:
            proc.kill()

    def __del__(self) -> None:
        try:
            if not self._closed:
                self.shutdown()
        except Exception:  # noqa: BLE001
            pass

    # --- cells ---------------------------------------------------------------------------------

    def execute(self, code: str, *, timeout: float | None = None) -> CellResult:
        if not isinstance(code, str):
            raise TypeError(f"code must be a string, not {type(code).__name__}")
        limit = self.cell_timeout if timeout is None else cell_limit(timeout)
        with self._lock:
            self._require_open()
            if not self._started:
                raise RLMEnvironmentError("call start(host, tools) before execute()")
            return self._exec(code, limit, None)

    def interrupt(self) -> bool:
        """Stop the cell running now, from any thread (a cancelled run's cell in a persistent
        REPL): the worker raises in it, the cell ends with ``Cancelled: ...``, state kept. False
        when no cell was running."""
        channel, cell = self._channel, self._cell_id
        if channel is None or cell is None:
            return False
        try:
            channel.send({"t": "interrupt", "cell": cell})
        except Exception:  # noqa: BLE001 - the worker is gone: the cell ends anyway
            return False
        return True

    def _exec(self, code: str, limit: float | None, filename: str | None) -> CellResult:
        channel = self._channel
        started = time.perf_counter()
        backstop = None if limit is None else limit + self.timeout_grace + 5.0
        try:
            if channel is None:
                raise ChannelClosed("the worker is gone")
            cell = self._cell_id = channel._new_id()  # what interrupt() names
            try:
                msg = channel.request({"t": "exec", "id": cell, "code": code, "timeout": limit,
                                       "filename": filename}, timeout=backstop)
            finally:
                self._cell_id = None
        except KeyboardInterrupt:
            if channel is not None:
                try:
                    channel.send({"t": "interrupt"})
                except Exception:  # noqa: BLE001
                    pass
            raise
        except TimeoutError:
            assert limit is not None and backstop is not None  # only a time limit times out
            self._restart("it did not answer within %g s of the cell's %g s time limit and was "
                          "killed" % (backstop - limit, limit))
            return CellResult(stderr="", error=self._lost_state_text(
                f"TimeoutError: the cell exceeded its time limit of {limit:g} seconds and the "
                "REPL worker did not respond (a C call that holds the interpreter)"),
                timed_out=True, execution_time=time.perf_counter() - started)
        except ChannelClosed:
            if self._closing:
                return CellResult(error=f"RLMEnvironmentError: the {self.environment_name} REPL "
                                  "was shut down while the cell ran",
                                  execution_time=time.perf_counter() - started)
            text = self._death_text()
            self._restart(text)
            return CellResult(error=self._lost_state_text("RLMEnvironmentError: " + text),
                              execution_time=time.perf_counter() - started)
        assert msg is not None
        return _cell_result(msg, time.perf_counter() - started, self.max_output_chars)

    def _lost_state_text(self, first: str) -> str:
        return (first + ". A fresh REPL was started: the contexts, history and tools are loaded "
                "again, but variables you created are gone; recreate what you still need.")

    def _death_text(self) -> str:
        proc, channel = self._proc, self._channel
        code = None
        if proc is not None:
            for _ in range(20):  # the exit status may lag the channel's end by a moment
                code = proc.returncode()
                if code is not None:
                    break
                time.sleep(0.02)
        text = self._describe_death(code)
        if channel is not None and channel.close_reason and "closed the channel" not in \
                channel.close_reason:
            text += f"; {channel.close_reason}"
        tail = proc.stderr_tail(8) if proc is not None else ""
        if tail:
            text += f"; its last output: {tail[-1500:]}"
        return text

    def _restart(self, why: str) -> None:
        self._stop_worker()
        if self._closed or self._closing:
            return
        self.restarts += 1
        try:
            self._boot()
        except Exception as exc:
            self.shutdown()  # the run is over: release the sandbox and the run directory now
            raise RLMEnvironmentError(f"the {self.environment_name} REPL worker died ({why}) and "
                                      f"could not be restarted: {exc}") from exc

    def _require_open(self) -> None:
        if self._closed:
            raise RLMEnvironmentError(f"this {type(self).__name__} was shut down; create a new one")

    # --- prompt text ---------------------------------------------------------------------------

    def usage_instructions(self) -> str:
        lines = [
            f"The REPL is a Python interpreter in an isolated {self.environment_name} environment: "
            "no network, a read-only filesystem except your working directory, limited memory. "
            "Use the helpers (llm_query, ...) to reach models.",
            "Variables, functions, classes and imports persist from one code block to the next.",
            "Only what you print is shown back to you (stdout and stderr, each cut to "
            f"{self.max_output_chars:,} characters per block).",
        ]
        if self.cell_timeout is not None:
            lines.append(f"A code block may run for at most {self.cell_timeout:g} seconds.")
        lines.append("input() is unavailable; exit() or sys.exit() only ends the current block.")
        return "\n".join(lines)

    @property
    def worker_pid(self) -> int | None:
        """The worker's process id as the worker sees it (inside its own namespace)."""
        return self._channel.worker_info.get("pid") if self._channel else None

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running" if self._started else "new"
        return f"<{type(self).__name__} #{self._id} {state}>"


#: Names of variables a cell's result may list, and characters of each (the host's own bound).
MAX_VARIABLES = 1000
MAX_NAME_CHARS = 200


def _cut(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters as the worker cuts its output (the first and last
    halves, saying how much was cut): the host's own bound on what a worker sends."""
    if len(text) <= limit:
        return text
    head, tail = text[:limit // 2], text[len(text) - (limit - limit // 2):]
    return (f"{head}\n... [output truncated: {len(text) - limit:,} of {len(text):,} characters cut; "
            f"the limit is {limit:,}] ...\n{tail}")


def _cell_result(msg: dict[str, Any], elapsed: float, limit: int) -> CellResult:
    """The worker's ``result`` frame as a :class:`CellResult`, every field checked and stdout,
    stderr and the error cut to ``max_output_chars`` on the host: a worker that forges a larger
    frame gets no more into the run's messages, log or store than an honest one."""

    def text(key: str) -> str:
        value = msg.get(key)
        return _cut(value, limit) if isinstance(value, str) else ""

    def opt(key: str) -> str | None:
        value = msg.get(key)
        return value if isinstance(value, str) else None

    error = opt("error")
    variables = msg.get("variables")
    return CellResult(stdout=text("stdout"), stderr=text("stderr"),
                      error=None if error is None else _cut(error, limit),
                      variables=[v[:MAX_NAME_CHARS] for v in variables[:MAX_VARIABLES]
                                 if isinstance(v, str)] if isinstance(variables, list) else [],
                      execution_time=elapsed, final_answer=opt("final_answer"),
                      answer_content=opt("answer_content"), timed_out=msg.get("timed_out") is True)
