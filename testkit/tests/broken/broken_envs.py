"""Environments with one bug each, for the kit's environment tests
(``testkit/tests/test_kit_catches_bugs.py``): copies of the first-party local REPL, and a child
process REPL built on ``rlm_isolation.repl.IsolatedREPL`` as plugins.md shows."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from typing import Any

from rlm.types import CellResult, EnvironmentCapabilities
from rlm_isolation.repl import WORKER_FILE, IsolatedREPL, WorkerProcess
from rlm_plugins.local.repl import LocalREPL


class ZeroTimeREPL(LocalREPL):
    """Bug: every cell reports ``execution_time=0``."""

    def execute(self, code: str, *, timeout: float | None = None) -> CellResult:
        return dataclasses.replace(super().execute(code, timeout=timeout), execution_time=0.0)


class ShowsEverythingREPL(LocalREPL):
    """Bug: ``SHOW_VARS()`` lists the whole namespace (``globals()``), helpers, ``answer`` and
    ``context`` included."""

    _LISTING = ("print('Available variables:', {n: type(v).__name__ for n, v in globals().items() "
                "if not n.startswith('__')})")

    def execute(self, code: str, *, timeout: float | None = None) -> CellResult:
        return super().execute(code.replace("SHOW_VARS()", self._LISTING), timeout=timeout)


class ClaimsIsolationREPL(LocalREPL):
    """Bug: declares ``isolated=True`` (and its test class runs no escape suite)."""

    capabilities = dataclasses.replace(LocalREPL.capabilities, isolated=True)


class LeavesSidecarREPL(IsolatedREPL):
    """The REPL in a child Python process (plugins.md's ``ChildREPL``), with a sidecar process
    (as a runtime server would be) that it talks to over a pipe. Bug: ``shutdown()`` never stops
    the sidecar; it ends only when its pipe closes, i.e. when the host exits."""

    environment_name = "sidecar"
    capabilities = EnvironmentCapabilities(isolated=False, persistent=True, cell_timeout=True,
                                           threads=True, callables_as_tools=False,
                                           memory_limit=False)

    def launch(self, run_dir: str, secret: bytes) -> Any:
        ctx = os.path.join(run_dir, "ctx")
        os.makedirs(ctx, mode=0o700, exist_ok=True)
        self._shared_ctx_dir = self._worker_ctx_dir = ctx
        if getattr(self, "sidecar", None) is None:
            self.sidecar = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                                            stdin=subprocess.PIPE)
        return WorkerProcess([sys.executable, "-I", "-S", WORKER_FILE, "--stdio"],
                             env={"RLM_WORKER_SECRET": secret.decode(), "PATH": os.environ["PATH"]},
                             what="child worker")
