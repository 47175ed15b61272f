"""``PyodideREPL``: the REPL in Pyodide (CPython compiled to WebAssembly) under Deno.

One Deno process per run, started once, holds one Pyodide. Layers, outermost first:

* Deno's permissions, deny by default: the process may **read** three things (the Pyodide
  package folder, this distribution's ``runtime`` folder and the kernel's ``worker.py``) and
  nothing else: no writes, no network, no subprocesses, no environment variables, no FFI, no
  prompts. Python code that reaches JavaScript (``import js``) meets the same refusals.
* WebAssembly: the interpreter sees only Pyodide's in-memory file system (``/home/pyodide`` is
  the working directory), has no sockets, no ``fork``, no threads, no signals; ``ctypes`` cannot
  reach the host's libraries.
* Memory: the WebAssembly memory is capped at ``memory_limit`` (a V8 flag: a cell that asks for
  more gets ``MemoryError``), and the whole process's writable memory (``RLIMIT_DATA``) at
  ``memory_limit + js_memory`` (the JavaScript heap, compiled code and the in-memory files):
  past it the process dies and the host starts a fresh one.
* The host process keeps the per-run secret, talks over the Deno process's stdin/stdout only
  (nothing listens anywhere) and enforces depth, budget and time, as for every isolated
  environment.

Time limits: Pyodide runs Python in a single thread, so Deno's main thread watches each cell's
deadline and raises ``KeyboardInterrupt`` in it through Pyodide's interrupt buffer (again every
100 ms if the cell catches it); ``time.sleep`` sleeps in short slices so that it stops too. A
cell stuck where Python never checks for interrupts (one long C call) is ended by the host
``timeout_grace + 5`` s after its limit: the process is replaced and the model is told that its
variables are gone (contexts, history and tools are loaded again).
"""

from __future__ import annotations

import dataclasses
import os
import resource
import signal
from typing import Any

from rlm.exceptions import ConfigurationError
from rlm_isolation.repl import WORKER_FILE, IsolatedREPL, WorkerProcess, parse_size

from .install import cache_root, find_deno, find_pyodide

RUNTIME_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "runtime")
WASM_PAGE = 65536
WASM32_MAX = 4 * 2**30  # WebAssembly memories of 32-bit Pyodide stop at 4 GiB


class PyodideREPL(IsolatedREPL):
    """A persistent Python REPL in Pyodide under Deno (``environment="pyodide"``).

    Args (besides those of :class:`~rlm_isolation.repl.IsolatedREPL`: ``cell_timeout``,
    ``setup_code``, ``max_output_chars``, ``startup_timeout`` (default 120: Pyodide takes a few
    seconds to load), ``timeout_grace``):
        memory_limit: the WebAssembly memory cap of the interpreter (``"2g"`` by default, at
            most ``"4g"``, the limit of 32-bit WebAssembly).
        js_memory: what the Deno process may use besides (its JavaScript heap, compiled code,
            files written by cells); default and minimum ``"1g"``. ``None`` with ``memory_limit=None``
            lifts the process cap.
        pyodide_dir: the ``pyodide`` folder of an npm installation (default:
            ``RLM_PYODIDE_DIR``, else where ``rlm-env-pyodide install`` puts it).
        deno: the Deno binary (default: ``RLM_DENO``, the ``deno`` PyPI package, ``PATH``).
        deno_dir: Deno's own cache (compiled code, reused between runs; default under
            ``~/.cache/rlm/pyodide``).
    """

    environment_name = "pyodide"
    capabilities = dataclasses.replace(
        IsolatedREPL.capabilities, isolated=True, threads=False, callables_as_tools=False,
        memory_limit=True)
    _shared_ctx_dir = None  # contexts are streamed over the channel into the interpreter
    _worker_ctx_dir = "/rlm/ctx"

    def __init__(self, *, memory_limit: str | int | None = "2g",
                 js_memory: str | int | None = "1g", pyodide_dir: str | None = None,
                 deno: str | None = None, deno_dir: str | None = None,
                 startup_timeout: float = 120.0, **base: Any):
        super().__init__(memory_limit=memory_limit, startup_timeout=startup_timeout, **base)
        if self.memory_limit is not None:
            if self.memory_limit > WASM32_MAX:
                raise ConfigurationError(
                    f"memory_limit={memory_limit!r} is over 4 GiB, the most a 32-bit WebAssembly "
                    "interpreter can address: use at most '4g' (or environment='sandbox' / "
                    "'docker' for more)")
            if self.memory_limit < 64 * 2**20:
                raise ConfigurationError(f"memory_limit={memory_limit!r} is too small for "
                                         "Pyodide to start: use at least '64m'")
        self.js_memory = parse_size(js_memory, "js_memory")
        if self.js_memory is not None and self.js_memory < 2**30:
            raise ConfigurationError(
                f"js_memory={js_memory!r} is too small: Deno's JavaScript engine reserves its "
                "heap and code space inside this cap and cannot start with less than '1g'")
        self.pyodide_dir, self.pyodide_version = find_pyodide(pyodide_dir)
        self.deno = find_deno(deno)
        self.deno_dir = os.path.abspath(deno_dir) if deno_dir else os.path.join(cache_root(),
                                                                                 "deno-dir")
        self.isolation_report: dict[str, Any] = {}

    # --- launching ---------------------------------------------------------------------------

    def deno_argv(self) -> list[str]:
        """The Deno command line (no secret and no context in it: those go over stdin)."""
        allow_read = ",".join([self.pyodide_dir, RUNTIME_DIR, WORKER_FILE])
        v8 = []
        if self.memory_limit is not None:
            v8.append(f"--wasm-max-mem-pages={self.memory_limit // WASM_PAGE}")
        argv = [self.deno, "run", "--quiet", "--no-prompt", "--no-config", "--no-lock",
                "--no-npm", "--no-remote", f"--allow-read={allow_read}"]
        if v8:
            argv.append("--v8-flags=" + ",".join(v8))
        return argv + [os.path.join(RUNTIME_DIR, "runner.mjs"), self.pyodide_dir, WORKER_FILE,
                       os.path.join(RUNTIME_DIR, "bridge.py")]

    def _process_cap(self) -> int | None:
        if self.memory_limit is None and self.js_memory is None:
            return None
        return (self.memory_limit or WASM32_MAX) + (self.js_memory or 2**30)

    def interrupt(self) -> bool:
        """Stop the cell running now (a cancelled run's cell): SIGUSR1 to Deno's main thread,
        which writes SIGINT into Pyodide's interrupt buffer until the cell ends (``Cancelled:
        the cell was interrupted``, variables kept). False when no cell was running."""
        proc = self._proc
        if proc is None or self._cell_id is None or proc.returncode() is not None:
            return False
        try:
            os.kill(proc.proc.pid, signal.SIGUSR1)
        except OSError:
            return False
        return True

    def _launch(self, run_dir: str, secret: bytes) -> WorkerProcess:
        os.makedirs(self.deno_dir, exist_ok=True)
        env = {"PATH": "/usr/bin:/bin", "HOME": run_dir, "DENO_DIR": self.deno_dir,
               "NO_COLOR": "1", "DENO_NO_UPDATE_CHECK": "1", "DENO_NO_PROMPT": "1",
               "LANG": "C.UTF-8"}
        argv = self.deno_argv()
        proc = WorkerProcess(argv, env=env, cwd=run_dir, what="pyodide worker (deno)")
        cap = self._process_cap()
        try:
            resource.prlimit(proc.proc.pid, resource.RLIMIT_CORE, (0, 0))
            if cap is not None:
                # Before any model code runs: Pyodide takes seconds to load, the cell comes later.
                resource.prlimit(proc.proc.pid, resource.RLIMIT_DATA, (cap, cap))
        except (OSError, ValueError) as exc:
            proc.kill()
            raise ConfigurationError(f"could not cap the Deno process's memory ({exc}); pass "
                                     "memory_limit=None and js_memory=None to run without "
                                     "a cap") from exc
        self.isolation_report = {
            "runtime": f"pyodide {self.pyodide_version} under {os.path.basename(self.deno)}",
            "deno_permissions": {"read": [self.pyodide_dir, RUNTIME_DIR, WORKER_FILE],
                                 "write": [], "net": False, "run": False, "env": False,
                                 "ffi": False},
            "wasm_memory_bytes": self.memory_limit, "process_data_bytes": cap,
        }
        try:
            proc.write(secret + b"\n")  # the first line of stdin; never argv or environment
        except OSError:
            pass  # it died at once: the handshake reports it with its output
        return proc

    def _worker_config(self) -> dict[str, Any]:
        return {"workdir": "/home/pyodide"}

    def _describe_death(self, code: int | None) -> str:
        text = super()._describe_death(code)
        if code == 1 and self.memory_limit:
            text += (" (if a cell wrote large files or built large JavaScript objects, the "
                     "process's memory cap of memory_limit + js_memory may have been reached)")
        return text

    def usage_instructions(self) -> str:
        lines = [
            "The REPL is Python (Pyodide: CPython compiled to WebAssembly) in an isolated "
            "sandbox: no network, no access to the host's files, no subprocesses, no threads "
            "(threading.Thread cannot start; use llm_query_batched / rlm_query_batched to run "
            "sub-calls concurrently). Use the helpers (llm_query, ...) to reach models.",
            "Only the standard library is available (no pip, no third-party packages).",
            "Variables, functions, classes and imports persist from one code block to the next.",
            "Only what you print is shown back to you (stdout and stderr, each cut to "
            f"{self.max_output_chars:,} characters per block).",
        ]
        if self.memory_limit:
            lines.append(f"Memory is limited to {self.memory_limit // 2**20} MiB.")
        if self.cell_timeout is not None:
            lines.append(f"A code block may run for at most {self.cell_timeout:g} seconds.")
        lines.append("input() is unavailable; exit() or sys.exit() only ends the current block. "
                     "Your working directory /home/pyodide is private and in memory.")
        return "\n".join(lines)
