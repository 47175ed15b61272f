"""``DaytonaREPL``: the REPL worker in a Daytona cloud sandbox, one sandbox per run.

One sandbox per run (per ``RLM`` in persistent mode), created through the ``daytona`` SDK from a
snapshot (default: the account's default Python snapshot) or an image, with the network blocked
(``network_block_all``) unless asked otherwise, an auto-stop interval and ``ephemeral`` (deleted
by Daytona once stopped), so even a sandbox whose host died goes away by itself.

In it, one long-lived interpreter (:mod:`rlm_isolation.worker`, uploaded with the SDK's file
API) keeps the REPL's state: cells are never re-pickled, contexts are streamed in once per run
over the channel and written there as files. The channel is the worker's stdin and stdout as a
session command (see :mod:`.transport`), authenticated with a per-run secret uploaded as a file
readable only by the sandbox's user: nothing listens in the sandbox, no public endpoint exists.
Model calls from cells (``llm_query``, ``rlm_query``, batched) come back over it and are served
concurrently by the host.

The sandbox is deleted at shutdown and on every error path of start-up (failed start, a failing
``setup_code``, a worker that does not come up); a worker that dies is restarted in the same
sandbox, and a sandbox that died ends the run with an :class:`RLMEnvironmentError` (the run's
partial answer attached by the RLM loop).
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import shlex
import time
from collections.abc import Mapping
from typing import Any

from rlm.exceptions import ConfigurationError, RLMEnvironmentError
from rlm_isolation.leftovers import Leftovers
from rlm_isolation.repl import (WORKER_FILE, IsolatedREPL, check_timeout, parse_size,
                               worker_rlimits)

from . import _sdk
from .transport import SessionWorker, sandbox_problem

log = logging.getLogger(__name__)
LABEL = "org.rlm.environment"
_RESOURCE_KEYS = ("cpu", "memory", "disk", "gpu")

_sandboxes = Leftovers()  # sandboxes not deleted yet: deleted at exit (ephemeral + auto-stop remain)


class DaytonaREPL(IsolatedREPL):
    """A persistent Python REPL in a Daytona sandbox (``environment="daytona"``).

    Args (besides those of :class:`~rlm_isolation.repl.IsolatedREPL`: ``cell_timeout``,
    ``setup_code``, ``max_output_chars``, ``startup_timeout``, ``timeout_grace``):
        api_key, api_url, target: Daytona credentials and endpoint; default
            ``DAYTONA_API_KEY``, ``DAYTONA_API_URL`` (``https://app.daytona.io/api``) and
            ``DAYTONA_TARGET``.
        snapshot: the snapshot to start from (default: Daytona's default snapshot).
        image: an image to build the sandbox from instead (e.g. ``"python:3.12-slim"``).
        resources: ``{"cpu": n, "memory": GiB, "disk": GiB, "gpu": n}``; Daytona applies them
            only to sandboxes built from an ``image`` (a snapshot carries its own).
        timeout: seconds to wait for the sandbox to be created and started (default 120).
        auto_stop_interval: minutes of inactivity after which Daytona stops the sandbox
            (default 15; 0 disables it).
        ttl_minutes: the sandbox's longest life: Daytona destroys it this many minutes after
            creation whatever its state (default None: no such limit).
        ephemeral: delete the sandbox as soon as it stops (default True), so a leaked sandbox
            disappears after ``auto_stop_interval``.
        network_block_all: block all network access from the sandbox (default True; the
            channel does not need it).
        env_vars, labels: environment variables and labels of the sandbox.
        python: the interpreter inside (default ``python3``; CPython 3.8+).
        workdir: directory inside the sandbox for the worker's files (default ``/tmp/rlm``).
        memory_limit: address-space cap the worker puts on itself (default ``"1g"``, Daytona's
            default sandbox memory; ``None``: only the sandbox's own limit).
        disk_limit: the largest file a cell may write (default ``"1g"``).
        health_interval: seconds between checks that the sandbox is still running while the
            worker runs (default 10; ``None`` disables them).
        delete_timeout: seconds to wait for the deletion at shutdown (default 60).
    """

    environment_name = "daytona"

    def __init__(self, *, api_key: str | None = None, api_url: str | None = None,
                 target: str | None = None, snapshot: str | None = None,
                 image: str | None = None, resources: Mapping[str, int] | None = None,
                 timeout: float = 120.0, auto_stop_interval: int = 15,
                 ttl_minutes: int | None = None, ephemeral: bool = True,
                 network_block_all: bool = True, env_vars: Mapping[str, str] | None = None,
                 labels: Mapping[str, str] | None = None, python: str = "python3",
                 workdir: str = "/tmp/rlm", memory_limit: str | int | None = "1g",
                 disk_limit: str | int | None = "1g", health_interval: float | None = 10.0,
                 delete_timeout: float = 60.0, **base: Any):
        super().__init__(memory_limit=memory_limit, **base)
        if snapshot is not None and image is not None:
            raise ConfigurationError("pass either snapshot or image, not both")
        for name, value in (("snapshot", snapshot), ("image", image)):
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigurationError(f"{name} must be a non-empty string, not {value!r}")
        self.resources = self._check_resources(resources, image)
        self.timeout = check_timeout(timeout, "timeout") or 120.0
        if isinstance(auto_stop_interval, bool) or not isinstance(auto_stop_interval, int) or \
                auto_stop_interval < 0:
            raise ConfigurationError("auto_stop_interval must be a whole number of minutes >= 0, "
                                     f"not {auto_stop_interval!r}")
        if ttl_minutes is not None and (isinstance(ttl_minutes, bool) or not isinstance(
                ttl_minutes, int) or ttl_minutes < 1):
            raise ConfigurationError(f"ttl_minutes must be a whole number of minutes >= 1 or "
                                     f"None, not {ttl_minutes!r}")
        for name, mapping in (("env_vars", env_vars), ("labels", labels)):
            if mapping is not None and not all(isinstance(k, str) and isinstance(v, str)
                                               for k, v in dict(mapping).items()):
                raise ConfigurationError(f"{name} must map strings to strings")
        if not isinstance(workdir, str) or not workdir.startswith("/") or \
                any(c.isspace() or c in "'\"$`\\;&|<>" for c in workdir):
            raise ConfigurationError(f"workdir must be an absolute path without spaces or shell "
                                     f"characters, not {workdir!r}")
        if not isinstance(python, str) or not python.strip():
            raise ConfigurationError(f"python must be an interpreter name or path, not {python!r}")
        self.snapshot = snapshot
        self.image = image
        self.auto_stop_interval = auto_stop_interval
        self.ttl_minutes = ttl_minutes
        self.ephemeral = bool(ephemeral)
        self.network_block_all = bool(network_block_all)
        self.env_vars = dict(env_vars or {})
        self.labels = dict(labels or {})
        self.python = python.strip()
        self.workdir = workdir.rstrip("/") or "/tmp"
        self.disk_limit = parse_size(disk_limit, "disk_limit")
        self.health_interval = check_timeout(health_interval, "health_interval")
        self.delete_timeout = check_timeout(delete_timeout, "delete_timeout") or 60.0
        self.api_url = api_url
        self.client = _sdk.client(api_key, api_url, target)
        self.sandbox: Any = None
        self.sandbox_name: str | None = None
        self.timings: dict[str, float] = {}
        self._run_path = ""
        self._limits_config: dict[str, Any] = {}
        if self.memory_limit is None:
            self.capabilities = dataclasses.replace(self.capabilities, memory_limit=False)

    @staticmethod
    def _check_resources(resources: Mapping[str, int] | None, image: str | None
                         ) -> dict[str, int] | None:
        if resources is None:
            return None
        if not isinstance(resources, Mapping):
            raise ConfigurationError(f"resources must be a dict like {{'cpu': 2, 'memory': 4}}, "
                                     f"not {resources!r}")
        unknown = set(resources) - set(_RESOURCE_KEYS)
        if unknown:
            raise ConfigurationError(f"unknown resources {sorted(unknown)}; known: "
                                     f"{', '.join(_RESOURCE_KEYS)} (memory and disk in GiB)")
        for key, value in resources.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigurationError(f"resources[{key!r}] must be a whole number >= 0, not "
                                         f"{value!r}")
        if image is None:
            raise ConfigurationError(
                "resources apply only to a sandbox built from an image: pass "
                "environment_kwargs={'image': 'python:3.12-slim', 'resources': {...}} (a "
                "snapshot carries its own resources)")
        return dict(resources)

    # --- the sandbox -----------------------------------------------------------------------

    def _call(self, action: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return _sdk.call(action, fn, *args, api_url=self.api_url, **kwargs)

    def _params(self, name: str) -> Any:
        daytona = _sdk.sdk()
        common: dict[str, Any] = {
            "name": name, "language": "python", "env_vars": self.env_vars or None,
            "labels": {LABEL: "daytona", **self.labels}, "network_block_all":
            self.network_block_all, "auto_stop_interval": self.auto_stop_interval,
            "ttl_minutes": self.ttl_minutes, "ephemeral": self.ephemeral}
        if self.image is not None:
            resources = daytona.Resources(**self.resources) if self.resources else None
            return daytona.CreateSandboxFromImageParams(image=self.image, resources=resources,
                                                        **common)
        return daytona.CreateSandboxFromSnapshotParams(snapshot=self.snapshot, **common)

    def _create_sandbox(self) -> Any:
        name = f"rlm-{secrets.token_hex(8)}"
        self.sandbox_name = name
        started = time.perf_counter()
        try:
            sandbox = self._call("creating a sandbox", self.client.create, self._params(name),
                                 timeout=self.timeout)
        except BaseException:
            self._delete_by_name(name)  # it may exist even though its start failed
            raise
        _sandboxes.add(sandbox.id, lambda: sandbox.delete(timeout=30))
        self.timings["create"] = time.perf_counter() - started
        return sandbox

    def _delete_by_name(self, name: str) -> None:
        try:
            sandbox = self.client.get(name)
        except Exception:  # noqa: BLE001 - not created at all
            return
        self._delete(sandbox)

    def _delete(self, sandbox: Any) -> None:
        try:
            sandbox.delete(timeout=self.delete_timeout)
        except Exception as exc:  # noqa: BLE001 - shutdown must not raise; ephemeral remains
            log.warning("could not delete the Daytona sandbox %s (%s); it stops after %s idle "
                        "minutes%s", sandbox.id, exc, self.auto_stop_interval,
                        " and is then deleted" if self.ephemeral else "")
            return
        _sandboxes.discard(sandbox.id)

    # --- launching -------------------------------------------------------------------------

    def _launch(self, run_dir: str, secret: bytes) -> SessionWorker:
        daytona = _sdk.sdk()
        if self.sandbox is None:
            self.sandbox = self._create_sandbox()
        else:  # a restart: the same sandbox, if it still runs
            problem = sandbox_problem(self.sandbox)
            if problem:
                raise RLMEnvironmentError(problem)
        sandbox = self.sandbox
        started = time.perf_counter()
        token = secrets.token_hex(6)
        path = f"{self.workdir}/{token}"
        self._run_path = path
        with open(WORKER_FILE, "rb") as f:
            worker = f.read()
        self._call("uploading the REPL worker", sandbox.fs.upload_files,
                   [daytona.FileUpload(worker, f"{path}/worker.py"),
                    daytona.FileUpload(secret, f"{path}/secret")])
        # Owned by the sandbox's user (who runs session commands), readable by nobody else.
        self._call("protecting the channel's secret", sandbox.fs.set_file_permissions,
                   f"{path}/secret", owner=getattr(sandbox, "user", None) or None, mode="400")
        self._shared_ctx_dir = None  # contexts are streamed over the channel...
        self._worker_ctx_dir = f"{path}/ctx"  # ...and written there once by the worker
        self._limits_config = worker_rlimits(self.memory_limit, self.disk_limit)
        session = f"rlm-{token}"
        self._call("creating a session in the sandbox", sandbox.process.create_session, session)
        command = (f"{shlex.quote(self.python)} -I -S {path}/worker.py --stdio --text "
                   f"--secret-file {path}/secret")
        request = daytona.SessionExecuteRequest(command=command, run_async=True,
                                                suppress_input_echo=True)
        response = self._call("starting the REPL worker", sandbox.process.execute_session_command,
                              session, request)
        self.timings["launch"] = time.perf_counter() - started
        return SessionWorker(sandbox, session, response.cmd_id,
                             health_interval=self.health_interval)

    def _worker_config(self) -> dict[str, Any]:
        return {"limits": self._limits_config, "workdir": f"{self._run_path}/work"}

    def _cleanup(self) -> None:
        sandbox, self.sandbox = self.sandbox, None
        if sandbox is not None:
            self._delete(sandbox)

    def _describe_death(self, code: int | None) -> str:
        text = super()._describe_death(code)
        if code == 127:
            text += (f" ({self.python!r} was not found in the sandbox: pass "
                     "environment_kwargs={'python': '/path/to/python3'} or a snapshot / image "
                     "with Python)")
        return text

    def usage_instructions(self) -> str:
        lines = super().usage_instructions().split("\n")
        lines[0] = ("The REPL is a Python interpreter in a Daytona cloud sandbox of its own"
                    + (" with no network access" if self.network_block_all else "")
                    + ". Use the helpers (llm_query, ...) to reach models.")
        lines.append(f"Your working directory is {self._run_path or self.workdir}/work.")
        return "\n".join(lines)

    @property
    def sandbox_id(self) -> str | None:
        return self.sandbox.id if self.sandbox is not None else None


__all__ = ["DaytonaREPL"]
