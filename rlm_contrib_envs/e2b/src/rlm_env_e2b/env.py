"""``E2BREPL``: the REPL worker in one E2B sandbox per run (``environment="e2b"``).

The sandbox is created when the REPL starts, with the settings below; the worker file and the
per-run secret are uploaded with ``files.write``; the worker runs as a background command with
stdin open and speaks the authenticated channel as text lines (:mod:`.transport`). Contexts are
streamed over that channel once and written into the sandbox by the worker. Helper calls from
inside (``llm_query``, ``rlm_query``, batched) reach the host over the same channel and are
served concurrently there: no port of the host is exposed, nothing public listens.

The sandbox is deleted at shutdown and on every error path (failed start, failed setup code, a
worker that cannot be restarted). If the sandbox itself dies (killed, its lifetime ran out) the
next cell raises :class:`~rlm.exceptions.RLMEnvironmentError`, which ends the run with its partial
answer; a worker that dies inside a live sandbox (a crash) is restarted there, as in every
isolated environment.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

from rlm.exceptions import ConfigurationError, RLMEnvironmentError
from rlm_isolation.repl import WORKER_FILE, IsolatedREPL, describe_exit, parse_size, worker_rlimits

from .errors import provider_error, resolve_api_key, sdk
from .transport import start_worker, worker_command

_CONN_OPTIONS = ("domain", "api_url", "sandbox_url", "request_timeout")
KEEPALIVE_CHECK = 1.0  # seconds between checks, while a cell runs, that the lifetime is due


class E2BREPL(IsolatedREPL):
    """A persistent Python REPL in an E2B sandbox.

    Args (besides those of :class:`~rlm_isolation.repl.IsolatedREPL`: ``cell_timeout``,
    ``setup_code``, ``max_output_chars``, ``memory_limit``, ``startup_timeout``,
    ``timeout_grace``):
        template: the sandbox template (default: the code interpreter's, ``code-interpreter-v1``;
            its CPU and RAM are the template's).
        timeout: seconds the sandbox lives without the host touching it (default 600); it is
            extended at each cell and while a cell runs, so a long run or a long cell keeps its
            sandbox and a crashed host leaves it behind for at most this long.
        allow_internet_access: give the sandbox internet access (default False).
        envs: environment variables of the sandbox (none of the host's are passed).
        metadata: E2B metadata of the sandbox (``{"rlm_run": ...}`` helps find it in the
            dashboard).
        api_key: the E2B API key (default: ``E2B_API_KEY``).
        domain, api_url, sandbox_url, request_timeout: the SDK's connection options (self-hosted
            E2B, a local emulator, slow networks); ``None`` leaves the SDK's defaults and its
            ``E2B_DOMAIN`` / ``E2B_API_URL`` / ``E2B_SANDBOX_URL`` variables.
        python: the interpreter in the sandbox (default ``python3``; any CPython 3.8+).
        workdir: the cells' working directory in the sandbox (default ``/home/user``).
        disk_limit: the largest file a cell may write (RLIMIT_FSIZE, default ``"1g"``; the
            sandbox's disk is the template's).
    """

    environment_name = "e2b"
    capabilities = dataclasses.replace(IsolatedREPL.capabilities, isolated=True,
                                       memory_limit=True)
    _shared_ctx_dir = None  # contexts cross the channel; the worker writes them in the sandbox
    _RLM_DIR = "/home/user/.rlm"

    def __init__(self, *, template: str | None = None, timeout: int = 600,
                 allow_internet_access: bool = False, envs: dict[str, str] | None = None,
                 metadata: dict[str, str] | None = None, api_key: str | None = None,
                 domain: str | None = None, api_url: str | None = None,
                 sandbox_url: str | None = None, request_timeout: float | None = None,
                 python: str = "python3", workdir: str = "/home/user",
                 disk_limit: str | int | None = "1g", **base: Any):
        super().__init__(**base)
        if template is not None and (not isinstance(template, str) or not template.strip()):
            raise ConfigurationError(f"template must be a template name or id, not {template!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 30:
            raise ConfigurationError(f"timeout (the sandbox's lifetime without activity) must be "
                                     f"a whole number of seconds >= 30, not {timeout!r}")
        for name, value in (("envs", envs), ("metadata", metadata)):
            if value is not None and not (isinstance(value, dict) and all(
                    isinstance(k, str) and isinstance(v, str) for k, v in value.items())):
                raise ConfigurationError(f"{name} must be a dict of strings, not {value!r}")
        if not isinstance(python, str) or not python.strip():
            raise ConfigurationError(f"python must name an interpreter, not {python!r}")
        if not isinstance(workdir, str) or not workdir.startswith("/"):
            raise ConfigurationError(f"workdir must be an absolute path, not {workdir!r}")
        self.template = template
        self.timeout = timeout
        self.allow_internet_access = bool(allow_internet_access)
        self.envs = dict(envs or {})
        self.metadata = dict(metadata or {})
        self.python = python
        self.workdir = workdir
        self.disk_limit = parse_size(disk_limit, "disk_limit")
        self._api_key = resolve_api_key(api_key)
        self._conn: dict[str, Any] = {k: v for k, v in (("domain", domain), ("api_url", api_url),
                                        ("sandbox_url", sandbox_url),
                                        ("request_timeout", request_timeout)) if v is not None}
        self._worker_ctx_dir = f"{self._RLM_DIR}/ctx"
        self._sandbox: Any = None
        self._sandbox_lock = threading.Lock()
        self._worker_uploaded = False
        self._touched = 0.0
        self.sandbox_id: str | None = None
        #: why the sandbox could not be deleted at shutdown, if it could not
        self.cleanup_error: str | None = None
        #: seconds from "create the sandbox" to "worker authenticated" (the first start)
        self.timings: dict[str, float] = {}

    # --- the sandbox ---------------------------------------------------------------------

    @property
    def _where(self) -> str:
        return self._conn.get("api_url") or f"api.{self._conn.get('domain') or 'e2b.app'}"

    def _call(self, action: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ConfigurationError, RLMEnvironmentError):
            raise
        except Exception as exc:
            raise provider_error(action, exc, self._where) from exc

    def _create_sandbox(self) -> Any:
        _, ci = sdk()
        started = time.perf_counter()
        sandbox = self._call(
            "create a sandbox", ci.Sandbox.create, template=self.template, timeout=self.timeout,
            envs=self.envs or None, metadata={"rlm_environment": "e2b", **self.metadata},
            allow_internet_access=self.allow_internet_access, api_key=self._api_key,
            **self._conn)
        self._sandbox = sandbox
        self.sandbox_id = sandbox.sandbox_id
        self._touched = time.monotonic()
        self.timings["create"] = time.perf_counter() - started
        return sandbox

    def _kill_sandbox(self) -> None:
        """Delete the sandbox (idempotent; failures are remembered, never raised)."""
        with self._sandbox_lock:
            sandbox, self._sandbox = self._sandbox, None
        if sandbox is None:
            return
        try:
            sandbox.kill()
        except Exception as exc:  # noqa: BLE001 - shutdown must not fail; say what is left
            self.cleanup_error = (f"the E2B sandbox {self.sandbox_id} could not be deleted "
                                  f"({exc}); it stops by itself within {self.timeout} s")

    def _sandbox_running(self) -> bool:
        sandbox = self._sandbox
        if sandbox is None:
            return False
        try:
            return bool(sandbox.is_running(request_timeout=10))
        except Exception:  # noqa: BLE001 - cannot tell: try to use it and let that fail
            return True

    # --- IsolatedREPL hooks ------------------------------------------------------------------

    def _launch(self, run_dir: str, secret: bytes) -> Any:
        sandbox = self._sandbox
        if sandbox is None:
            sandbox = self._create_sandbox()
        elif not self._sandbox_running():
            raise RLMEnvironmentError(
                f"the E2B sandbox {self.sandbox_id} is no longer running (it was killed, or its "
                f"lifetime of {self.timeout} s without activity ran out), so a new REPL worker "
                "cannot be started in it; the run's REPL state is gone")
        started = time.perf_counter()
        files = [{"path": f"{self._RLM_DIR}/secret", "data": secret}]
        if not self._worker_uploaded:
            with open(WORKER_FILE, "rb") as f:
                files.insert(0, {"path": f"{self._RLM_DIR}/worker.py", "data": f.read()})
        self._call("upload the REPL worker", sandbox.files.write_files, files)
        self._worker_uploaded = True
        command = worker_command(self.python, f"{self._RLM_DIR}/worker.py",
                                 f"{self._RLM_DIR}/secret")
        stream = self._call("start the REPL worker", start_worker, sandbox, command,
                            what=f"e2b sandbox {self.sandbox_id}")
        self.timings.setdefault("upload_and_start", time.perf_counter() - started)
        return stream

    def _worker_config(self) -> dict[str, Any]:
        return {"limits": worker_rlimits(self.memory_limit, self.disk_limit),
                "workdir": self.workdir}

    def _exec(self, code: str, limit: float | None, filename: str | None) -> Any:
        self._keep_alive()
        # A cell may run longer than what is left of the lifetime (at most timeout / 2 after
        # the check above): keep extending it while the cell runs.
        done = threading.Event()
        keeper = threading.Thread(target=self._keep_alive_until, args=(done,), daemon=True,
                                  name=f"rlm-e2b-keepalive-{self._id}")
        keeper.start()
        try:
            return super()._exec(code, limit, filename)
        finally:
            done.set()

    def _keep_alive_until(self, done: threading.Event) -> None:
        while not done.wait(KEEPALIVE_CHECK):
            self._keep_alive()

    def _keep_alive(self) -> None:
        """Extend the sandbox's lifetime when half of it has passed since the last extension."""
        sandbox = self._sandbox
        if sandbox is None or time.monotonic() - self._touched < self.timeout / 2:
            return
        self._touched = time.monotonic()
        try:
            sandbox.set_timeout(self.timeout)
        except Exception:  # noqa: BLE001 - a dead sandbox shows up on the cell itself
            pass

    def _restart(self, why: str) -> None:
        try:
            super()._restart(why)
        except BaseException:
            self._kill_sandbox()  # the REPL is closed now: nothing else would delete it
            raise

    def _cleanup(self) -> None:
        self._kill_sandbox()

    def _describe_death(self, code: int | None) -> str:
        if self._sandbox is not None and not self._sandbox_running():
            return (f"the E2B sandbox {self.sandbox_id} is no longer running (killed, or its "
                    f"lifetime of {self.timeout} s without activity ran out)")
        if code == -1:
            return f"the e2b REPL worker was killed by a signal (in sandbox {self.sandbox_id})"
        text = super()._describe_death(code)
        if code is not None and code not in (-9, 137):
            text = f"the e2b REPL worker {describe_exit(code)} (in sandbox {self.sandbox_id})"
        return text

    def usage_instructions(self) -> str:
        text = super().usage_instructions()
        text = text.replace(
            "no network, a read-only filesystem except your working directory, limited memory",
            ("a cloud sandbox (a small VM) " + ("with internet access"
                                                  if self.allow_internet_access
                                                  else "without internet access")
             + ", limited memory"))
        return text + f"\nYour working directory is {self.workdir} inside the sandbox."
