"""`subrepl`: the model's code runs in a child Python process, one per run.

A cell that crashes the interpreter or loops forever costs that process, not the host: a cell
past its time limit is interrupted (SIGINT) and its variables survive; a process that dies is
restarted. It is not a security boundary (the child sees the host's files and network).
"""

from __future__ import annotations

import json
import keyword
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rlm.contract import context_too_deep
from rlm_isolation.leftovers import make_run_dir, reap_run_dirs, track_open, untrack_open
from rlm.plugin import (CellResult, ConfigurationError, EnvironmentCapabilities,
                        RLMEnvironmentError, Tool)

from . import _worker

RESERVED = frozenset({"context", "history", "answer", "FINAL", "FINAL_VAR", "SHOW_VARS",
                      *_worker.HELPERS})


class SubprocessREPL:
    """``RLM(environment="subrepl", environment_kwargs={...})``.

    :param setup_code: Python run in the REPL before the first cell.
    :param max_output_chars: stdout and stderr of a cell are each cut to this many characters.
    :param python: the interpreter to run (default: the host's own).
    :param interrupt_grace: seconds a timed-out cell gets to stop after SIGINT before the
        process is restarted (losing its variables).
    """

    capabilities = EnvironmentCapabilities(isolated=False, persistent=True, cell_timeout=True,
                                           threads=True, callables_as_tools=False)

    def __init__(self, setup_code: str | None = None, max_output_chars: int = 20_000,
                 python: str | None = None, interrupt_grace: float = 5.0):
        if max_output_chars < 100:
            raise ConfigurationError(f"subrepl: max_output_chars must be at least 100, got "
                                     f"{max_output_chars!r}")
        self.setup_code = setup_code
        self.max_output_chars = max_output_chars
        self.python = python or sys.executable
        self.interrupt_grace = interrupt_grace
        self._host: Any = None
        self._tools: dict[str, dict[str, Any]] = {}
        self._replay: list[dict[str, Any]] = []  # contexts and histories, for a restart
        self._proc: subprocess.Popen[bytes] | None = None
        self._results: queue.Queue[dict[str, Any]] = queue.Queue()
        self._send_lock = threading.Lock()
        self._exec_lock = threading.Lock()
        self._in_cell = False  # a cell is running: interrupt() may stop it
        self._cancelled = False  # interrupt() was called for the running cell
        self._calls = ThreadPoolExecutor(16, thread_name_prefix="subrepl-helper")
        # A private run directory whose lock lives as long as this process: the directories of
        # hosts killed outright (SIGKILL, out of memory) are removed when the next one starts.
        reap_run_dirs()
        self._workdir, self._workdir_lock = make_run_dir("rlm-subrepl-")
        track_open(self)  # shut down at exit and on SIGTERM
        self._closed = False

    # -- the Environment protocol ------------------------------------------------------------
    def start(self, host: Any, tools: Mapping[str, Tool]) -> None:
        self._host = host
        self._tools = {tool.name: _tool_spec(tool) for tool in tools.values()}
        self._spawn()

    def add_context(self, value: Any, index: int) -> None:
        self._replay.append({"op": "context", "index": index, "value": value})
        self._send(self._replay[-1])

    def add_history(self, messages: list[dict[str, Any]], index: int) -> None:
        self._replay.append({"op": "history", "index": index, "value": messages})
        self._send(self._replay[-1])

    def execute(self, code: str, *, timeout: float | None = None) -> CellResult:
        with self._exec_lock:  # one cell at a time
            self._cancelled = False
            self._in_cell = True
            try:
                self._send({"op": "exec", "code": code})
                try:
                    message = self._results.get(timeout=timeout)
                except queue.Empty:
                    return self._stop_cell(timeout)
            finally:
                self._in_cell = False
            if message["op"] == "died":
                return self._died(message)
            result = _cell(message)
            if self._cancelled and result.error == "KeyboardInterrupt":
                result.error = "Cancelled: the cell was interrupted; variables are kept."
            return result

    def interrupt(self) -> bool:
        """Stop the running cell from any thread (the kernel calls this when a run is
        cancelled): SIGINT to the process. False when no cell is running."""
        proc = self._proc
        if not self._in_cell or proc is None or proc.poll() is not None:
            return False
        self._cancelled = True
        proc.send_signal(signal.SIGINT)
        return True

    def usage_instructions(self) -> str:
        return ("The REPL is a Python interpreter in its own process (not a sandbox). Variables, "
                "functions and imports persist between code blocks. Only what you print is shown "
                f"(stdout and stderr, each cut to {self.max_output_chars:,} characters).")

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._kill()
        self._calls.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(self._workdir, ignore_errors=True)
        os.close(self._workdir_lock)
        untrack_open(self)

    # -- the child process -------------------------------------------------------------------
    def _spawn(self) -> None:
        self._results = queue.Queue()
        self._proc = subprocess.Popen(
            [self.python, "-I", _worker.__file__], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, cwd=self._workdir)
        threading.Thread(target=self._read, args=(self._proc, self._results), daemon=True,
                         name="subrepl-reader").start()
        self._send({"op": "init", "tools": self._tools, "setup_code": self.setup_code,
                    "max_output_chars": self.max_output_chars})
        ready = self._results.get(timeout=60)
        if ready["op"] == "died":
            raise RLMEnvironmentError(f"subrepl: the REPL process did not start "
                                      f"(exit code {ready['code']}); python={self.python!r}")
        if ready["error"]:
            self.shutdown()
            raise RLMEnvironmentError(f"subrepl: setup_code failed:\n{ready['error']}")
        for message in self._replay:
            self._send(message)

    def _read(self, proc: subprocess.Popen[bytes], results: queue.Queue[dict[str, Any]]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            message = json.loads(line)
            if message["op"] == "call":  # a helper call: answer it without blocking the reader
                self._calls.submit(self._answer, proc, message)
            else:
                results.put(message)
        results.put({"op": "died", "code": proc.wait()})

    def _answer(self, proc: subprocess.Popen[bytes], message: dict[str, Any]) -> None:
        helper = getattr(self._host, message["method"])
        try:
            value = helper(message["argument"], model=message["model"])
        except Exception as exc:  # noqa: BLE001 - the cell gets a string, as from the host
            value = f"Error: {type(exc).__name__}: {exc}"
        self._send({"op": "reply", "id": message["id"], "value": value}, proc)

    def _send(self, message: dict[str, Any], proc: subprocess.Popen[bytes] | None = None) -> None:
        if self._closed:
            raise RLMEnvironmentError("subrepl: the environment was shut down; start a new one")
        proc = proc or self._proc
        if proc is None:
            raise RLMEnvironmentError("subrepl: call start(host, tools) before using the REPL")
        try:
            data = (json.dumps(message) + "\n").encode()
        except RecursionError:  # a context nested deeper than JSON can encode
            raise ConfigurationError(f"subrepl: {context_too_deep()}") from None
        with self._send_lock:
            try:
                assert proc.stdin is not None
                proc.stdin.write(data)
                proc.stdin.flush()
            except (BrokenPipeError, ValueError):
                pass  # the process died: the reader reports it

    def _stop_cell(self, timeout: float | None) -> CellResult:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGINT)
        try:
            message = self._results.get(timeout=self.interrupt_grace)
        except queue.Empty:
            message = None
        if message is not None and message["op"] == "result":
            result = _cell(message)
            result.timed_out = True
            result.error = (f"TimeoutError: the cell ran past its time limit of {timeout} s and "
                            "was stopped; variables set before that are kept. Split the work "
                            "into smaller cells.")
            return result
        self._kill()
        self._spawn()
        return CellResult(timed_out=True, error=(
            f"TimeoutError: the cell ran past its time limit of {timeout} s and did not stop when "
            "interrupted, so the REPL was restarted: variables are lost (contexts are kept)."))

    def _died(self, message: dict[str, Any]) -> CellResult:
        self._spawn()
        return CellResult(error=f"the REPL process exited (code {message['code']}) during the "
                                "cell; it was restarted: variables are lost (contexts are kept).")

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            try:
                stream.close()  # type: ignore[union-attr]
            except OSError:
                pass


def _tool_spec(tool: Tool) -> dict[str, Any]:
    """A tool as it crosses into the child: source code that defines it, or a JSON value."""
    name, value = tool.name, tool.value
    if not name.isidentifier() or keyword.iskeyword(name):
        raise ConfigurationError(f"subrepl: tool name {name!r} is not a Python identifier")
    if name in RESERVED or _worker._indexed(name):
        raise ConfigurationError(f"subrepl: tool name {name!r} is reserved by the REPL "
                                 f"({', '.join(sorted(RESERVED))}, context_N, history_N)")
    if isinstance(value, str) and f"def {name}(" in value:
        return {"code": value}
    if callable(value):
        raise ConfigurationError(
            f"subrepl: tool {name!r} is a Python callable, which cannot cross into the REPL's "
            f"process. Pass its source code as a string instead, e.g. "
            f"{{{name!r}: 'def {name}(x):\\n    return x * 2'}}, or use environment='local'.")
    try:
        return {"value": json.loads(json.dumps(value))}
    except (TypeError, ValueError):
        raise ConfigurationError(f"subrepl: tool {name!r} ({type(value).__name__}) is not a JSON "
                                 "value; pass str, number, bool, None, list or dict") from None


def _cell(message: dict[str, Any]) -> CellResult:
    fields = {k: v for k, v in message.items() if k != "op"}
    return CellResult(**fields)
