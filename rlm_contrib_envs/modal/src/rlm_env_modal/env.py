"""``ModalREPL``: the REPL worker in a Modal sandbox, one sandbox per run (or persistent session).

Start-up: ``modal.App.lookup(app_name, create_if_missing=True)``, ``modal.Sandbox.create(app=...,
image=..., timeout=..., cpu=..., memory=..., block_network=True)``, then one
``sandbox.exec("python", "-I", "-S", "-c", BOOT)`` whose stdin and stdout become the worker's
authenticated channel (:mod:`rlm_env_modal.transport`). The interpreter lives as long as the
sandbox: variables persist from cell to cell and nothing is re-pickled. Contexts are streamed
over the channel once per run and written by the worker into the sandbox. Helper calls from
inside (``llm_query``, ``rlm_query``, batched) come back over the same channel and are served
concurrently on the host: the sandbox needs no network and no endpoint is exposed.

The sandbox is terminated at shutdown and on every error path of start-up. If the sandbox ends
under a run (its ``timeout``, a crash, someone terminating it), the cell raises
:class:`RLMEnvironmentError` with the provider's reason, which ends the run with its partial
answer; a worker that dies while its sandbox lives (its memory cap) gets a fresh sandbox, with
contexts, history and tools loaded again, like every other isolated environment.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from rlm.exceptions import ConfigurationError, RLMEnvironmentError
from rlm_isolation.repl import (WORKER_FILE, IsolatedREPL, check_timeout, parse_size,
                               worker_rlimits)
from rlm.types import EnvironmentCapabilities

from .errors import check_credentials, describe, provider_errors
from .transport import BOOT, ModalProcess, boot_payload

log = logging.getLogger("rlm.env.modal")
END_REPORT_GRACE = 1.5  # seconds Modal gets to report a sandbox's end after its exec ends
BASE_DIR = "/tmp/rlm"  # where the worker, the contexts and the working directory live inside


def _modal() -> Any:
    try:
        import modal
    except ImportError as exc:  # pragma: no cover - the distribution depends on it
        raise ConfigurationError("the 'modal' environment needs the Modal SDK: "
                                 "uv pip install -e \".[modal]\" (or pip install modal)") from exc
    return modal


def _provider_result(sandbox: Any) -> str | None:
    """Modal's own words for how a sandbox ended (its ``GenericResult``: status and message).

    The SDK's public API gives only the exit code, so this reads the result the SDK already
    fetched, through its private async object; ``None`` when that is not possible (another SDK
    version), and the error message then goes without it.
    """
    try:
        from modal._utils.async_utils import synchronizer

        result = synchronizer._translate_in(sandbox)._impl.result
        if result is None:
            return None
        status = type(result).GenericStatus.Name(result.status).removeprefix("GENERIC_STATUS_")
        message = str(result.exception or "").strip()
        return f"{status.lower()}" + (f", {message!r}" if message else "")
    except Exception:  # noqa: BLE001 - best effort, see above
        return None


class ModalREPL(IsolatedREPL):
    """The REPL in a Modal sandbox.

    Args:
        app_name: the Modal app the sandboxes belong to (created if missing).
        timeout: the sandbox's lifetime in seconds (Modal ends it after that; default 600).
        image: a ``modal.Image`` or ``None`` for Modal's default (Debian slim with Python). The
            worker is standard-library only, so any image with ``python`` on its ``PATH`` works.
        python: the interpreter inside the image (default ``"python"``).
        cpu: CPU cores to request (``None``: Modal's default).
        memory: memory to request, in MiB (``None``: Modal's default).
        block_network: cut the sandbox off the network (default ``True``; the worker needs no
            network: model calls travel over its stdin/stdout).
        region, cloud: where to run (passed to Modal as is).
        environment_name: the Modal environment (``None``: the profile's default).
        verbose: let Modal stream the sandbox's logs.
        Plus the arguments of :class:`~rlm_isolation.repl.IsolatedREPL` (``cell_timeout``,
        ``setup_code``, ``max_output_chars``, ``memory_limit``, ``startup_timeout``,
        ``timeout_grace``). ``memory_limit`` caps the worker itself (an rlimit inside the
        sandbox, so a runaway cell fails with ``MemoryError`` instead of the sandbox being
        killed by Modal); ``disk_limit`` caps the size of any one file it writes.
    """

    environment_name = "modal"
    capabilities = EnvironmentCapabilities(isolated=True, persistent=True, cell_timeout=True,
                                           threads=True, callables_as_tools=False,
                                           memory_limit=True)

    _shared_ctx_dir = None
    _worker_ctx_dir = BASE_DIR + "/ctx"

    def __init__(self, *, app_name: str = "rlm", timeout: float = 600, image: Any = None,
                 python: str = "python", cpu: float | None = None, memory: int | None = None,
                 block_network: bool = True, region: str | list[str] | None = None,
                 cloud: str | None = None, environment_name: str | None = None,
                 verbose: bool = False, disk_limit: str | int | None = "1g",
                 startup_timeout: float = 180.0, **base: Any):
        if not isinstance(app_name, str) or not app_name.strip():
            raise ConfigurationError(f"app_name must be a non-empty string, not {app_name!r}")
        lifetime = check_timeout(timeout, "timeout")
        if lifetime is None or lifetime < 1:
            raise ConfigurationError(f"timeout must be at least 1 second (the sandbox's "
                                     f"lifetime), not {timeout!r}")
        if cpu is not None and (isinstance(cpu, bool) or not isinstance(cpu, (int, float))
                                or cpu <= 0):
            raise ConfigurationError(f"cpu must be a positive number of cores, not {cpu!r}")
        if memory is not None and (isinstance(memory, bool) or not isinstance(memory, int)
                                   or memory <= 0):
            raise ConfigurationError(f"memory must be a positive number of MiB, not {memory!r}")
        if not isinstance(python, str) or not python:
            raise ConfigurationError(f"python must be the interpreter's name or path, "
                                     f"not {python!r}")
        super().__init__(startup_timeout=startup_timeout, **base)
        self.app_name = app_name
        self.timeout = int(lifetime)
        self.image = image
        self.python = python
        self.cpu = cpu
        self.memory = memory
        self.block_network = bool(block_network)
        self.region = region
        self.cloud = cloud
        self.modal_environment = environment_name
        self.verbose = bool(verbose)
        self.disk_limit = parse_size(disk_limit, "disk_limit")
        self.sandbox_id: str | None = None
        self.sandbox_seconds: float | None = None  # create call -> sandbox handle
        self._sandbox: Any = None
        self._app: Any = None
        self._client: Any = None  # a client of this environment's own, closed at shutdown
        self.terminated: list[str] = []  # ids of the sandboxes this environment terminated
        self._modal = _modal()
        check_credentials(self._modal)

    # --- the sandbox ---------------------------------------------------------------------------

    def _create_sandbox(self) -> Any:
        modal = self._modal
        if self._client is None:
            config = modal.config.config
            with provider_errors(modal, "connecting to Modal"):
                self._client = modal.Client.from_credentials(config.get("token_id"),
                                                             config.get("token_secret"))
        with provider_errors(modal, f"looking up the Modal app {self.app_name!r}"):
            if self._app is None:
                self._app = modal.App.lookup(self.app_name, create_if_missing=True,
                                             client=self._client,
                                             environment_name=self.modal_environment)
        options: dict[str, Any] = {"app": self._app, "client": self._client,
                                   "timeout": self.timeout,
                                   "block_network": self.block_network, "verbose": self.verbose}
        for key, value in (("image", self.image), ("cpu", self.cpu), ("memory", self.memory),
                           ("region", self.region), ("cloud", self.cloud),
                           ("environment_name", self.modal_environment)):
            if value is not None:
                options[key] = value
        started = time.perf_counter()
        with provider_errors(modal, "creating the sandbox"):
            sandbox = modal.Sandbox.create(**options)
        self.sandbox_seconds = time.perf_counter() - started
        return sandbox

    def _launch(self, run_dir: str, secret: bytes) -> ModalProcess:
        sandbox = self._create_sandbox()
        self._sandbox, self.sandbox_id = sandbox, sandbox.object_id
        try:
            with open(WORKER_FILE, "rb") as f:
                worker_source = f.read()
            with provider_errors(self._modal, f"starting the worker in sandbox {sandbox.object_id}"):
                process = sandbox.exec(self.python, "-I", "-S", "-c", BOOT, text=False)
                proc = ModalProcess(sandbox, process, what=f"modal sandbox {sandbox.object_id}")
            try:
                proc.write(boot_payload(worker_source, secret, BASE_DIR))
            except BrokenPipeError as exc:
                raise RLMEnvironmentError(f"Modal did not take the REPL worker's start-up input: "
                                          f"{exc}") from exc
        except BaseException:
            self._terminate(sandbox)
            raise
        return proc

    def _terminate(self, sandbox: Any) -> None:
        if sandbox is None or sandbox.object_id in self.terminated:
            return
        self.terminated.append(sandbox.object_id)
        try:
            sandbox.terminate()
        except Exception as exc:  # noqa: BLE001 - reported; the sandbox's timeout ends it anyway
            self._terminate_failed(sandbox.object_id, exc)

    def _terminate_failed(self, sandbox_id: str, exc: BaseException) -> None:
        log.warning("could not terminate Modal sandbox %s (%s); it ends by itself after its "
                    "timeout of %s s, or stop it with `modal sandbox terminate %s`",
                    sandbox_id, describe(exc), self.timeout, sandbox_id)

    def _cleanup(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception as exc:  # noqa: BLE001 - nothing left to release on our side
                log.debug("closing the Modal client failed: %s", describe(exc))

    def _worker_config(self) -> dict[str, Any]:
        return {"limits": worker_rlimits(self.memory_limit, self.disk_limit),
                "workdir": BASE_DIR + "/work"}

    def _stop_worker(self) -> None:
        proc, sandbox = self._proc, self._sandbox
        super()._stop_worker()  # kill() terminates the sandbox
        if sandbox is not None:
            if isinstance(proc, ModalProcess) and proc.killed:
                self.terminated.append(sandbox.object_id)
                if proc.terminate_error is not None:
                    self._terminate_failed(sandbox.object_id, proc.terminate_error)
            else:
                self._terminate(sandbox)
        self._sandbox = None

    def _sandbox_end(self) -> str | None:
        """Why the current sandbox ended (the provider's words), or ``None`` if it still runs."""
        sandbox = self._sandbox
        if sandbox is None:
            return None
        try:
            code = sandbox.poll()
        except Exception as exc:  # noqa: BLE001 - the provider no longer knows it: it is gone
            return f"Modal no longer reaches it ({describe(exc)})"
        if code is None:
            return None
        try:
            sandbox.wait(raise_on_termination=True)
        except self._modal.exception.SandboxTimeoutError as exc:
            return f"it reached its timeout of {self.timeout} s: {describe(exc)}"
        except self._modal.exception.SandboxTerminatedError as exc:
            return f"it was terminated from outside this run: {describe(exc)}"
        except Exception as exc:  # noqa: BLE001
            return describe(exc)
        reason = _provider_result(sandbox)
        return f"Modal reports it ended with status {code}" + (f": {reason}" if reason else "")

    def _restart(self, why: str) -> None:
        # The exec's stream can end a moment before Modal reports the sandbox's end: look
        # again for a short while before taking it for a worker that died in a live sandbox.
        deadline = time.monotonic() + END_REPORT_GRACE
        while (ended := self._sandbox_end()) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if ended is None:
            super()._restart(why)
            return
        sandbox_id, proc = self.sandbox_id, self._proc
        tail = proc.stderr_tail(8) if proc is not None else ""
        self.shutdown()  # the run is over: the sandbox, the client and the run directory go
        raise RLMEnvironmentError(
            f"the Modal sandbox {sandbox_id} ended under the run ({ended})"
            + (f"; the worker's last output: {tail[-1500:]}" if tail else "")
            + f". The run stops here with its partial answer; if the sandbox's lifetime ran "
            f"out, raise environment_kwargs['timeout'] (now {self.timeout} s).")

    def usage_instructions(self) -> str:
        text = super().usage_instructions()
        return text + (f"\nYour working directory is {BASE_DIR}/work inside a Modal sandbox"
                       + ("; there is no network." if self.block_network else "."))
