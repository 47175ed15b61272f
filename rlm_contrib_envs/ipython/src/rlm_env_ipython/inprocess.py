"""``environment="ipython"``: the local REPL, with a real IPython shell running the cells.

:class:`IPythonREPL` is :class:`rlm_plugins.local.repl.LocalREPL` (the REPL core every rlm REPL
shares: helpers, contexts, histories, tools including callables, reserved names restored after
every cell, cell timeouts that work from any thread; and the local REPL's per-REPL output capture
and per-thread working directory) with one change: a cell is not ``exec``'d but handed to a fresh
:class:`~rlm_env_ipython._shell.Shell` (one per REPL) on the local REPL's executor thread. So
magics (``%time``, ``%timeit``, ``%who``, ...), ``!cmd``, top-level ``await``, ``display()`` and
the echo of a last expression (``Out[3]: ...``) work, and a failing cell reports IPython's
traceback.

Not a security boundary, exactly like the local environment: cells run in the host process.
"""

from __future__ import annotations

import functools
import os
import shutil
import weakref
from typing import Any

from rlm_isolation.leftovers import make_run_dir, reap_run_dirs
from rlm_isolation.worker import EXIT_NOTE, REPLCore
from rlm.plugin import CellResult, Host
from rlm_plugins.local.repl import LocalREPL

from ._names import user_variables
from ._options import check_shell_options
from ._prompt import usage_text
from ._shell import Shell

_LOCAL_KWARGS = ("cell_timeout", "setup_code", "workdir", "max_output_chars")
_RUN = "__rlm_ipython_run__"


def _release(shell: Shell, ipython_dir: str, lock: int) -> None:
    shell.close()
    shutil.rmtree(ipython_dir, ignore_errors=True)
    os.close(lock)


def _make_private(top: str) -> None:
    """IPython makes its profile with the process's umask: the run's files are made private."""
    for root, dirs, files in os.walk(top):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o700)
        for name in files:
            os.chmod(os.path.join(root, name), 0o600)


def _run(shell_ref: weakref.ref[Shell], code: str, errors: list[str]) -> None:
    shell = shell_ref()
    if shell is not None:
        shell.run_cell_here(code, errors)


class _ShellCore(REPLCore):
    """The local REPL's core, seen through the IPython shell: ``%who`` lists only the model's own
    names, and a cell IPython ran to a traceback reports that traceback as its error."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.shell: Shell | None = None
        self.errors: list[str] = []  # the tracebacks IPython recorded for the cell running now

    def restore(self) -> None:
        super().restore()
        shell = self.shell
        if shell is not None:  # %who lists only the model's own names
            shell.user_ns_hidden.update(self.fixed)
            shell.user_ns_hidden["answer"] = self.ns.get("answer")

    def user_variables(self) -> list[str]:
        shell = self.shell
        return user_variables(super().user_variables(), self.ns,
                              shell.user_ns_hidden if shell else {})

    def result(self, error: str | None, timed_out: bool, started: float, answer: Any = None,
               plain_only: bool = False) -> dict[str, Any]:
        if error is None and self.errors:
            error = self.errors[-1]
            if "SystemExit" in error.rsplit("\n", 1)[-1]:
                error += EXIT_NOTE
        self.errors = []
        return super().result(error, timed_out, started, answer, plain_only)


class IPythonREPL(LocalREPL):
    """An IPython shell in the host process, persistent across cells and ``completion()`` calls.

    Args:
        cell_timeout, setup_code, workdir, max_output_chars: as for the local environment.
        xmode: IPython's traceback mode for failed cells: ``"Plain"`` (default, the usual Python
            traceback), ``"Context"``, ``"Verbose"`` or ``"Minimal"``.
        ast_node_interactivity: which bare expressions are echoed as ``Out[n]: ...``:
            ``"last_expr"`` (default, as in IPython), ``"none"``, ``"all"``, ``"last"`` or
            ``"last_expr_or_assign"``.
    """

    _core_class = _ShellCore
    _core: _ShellCore

    def __init__(self, *, xmode: str = "Plain", ast_node_interactivity: str = "last_expr",
                 **kwargs: Any):
        unknown = sorted(set(kwargs) - set(_LOCAL_KWARGS))
        if unknown:
            raise TypeError(
                f"IPythonREPL got an unexpected keyword argument {unknown[0]!r}; the ipython "
                f"environment accepts {', '.join(_LOCAL_KWARGS)}, xmode and "
                "ast_node_interactivity")
        check_shell_options(xmode, ast_node_interactivity, "ipython")
        super().__init__(**kwargs)
        self.xmode = xmode
        self.ast_node_interactivity = ast_node_interactivity
        self._shell: Shell | None = None

    @property
    def shell(self) -> Shell | None:
        """The REPL's IPython shell (``None`` before ``start`` and after ``shutdown``)."""
        return self._shell

    def start(self, host: Host, tools: Any) -> None:
        if self._shell is None and not self._closed and not self._started:
            reap_run_dirs()  # those of hosts killed outright
            ipython_dir, lock = make_run_dir(f"rlm-ipython-{self._id}-")
            try:
                shell = Shell(user_ns=self._ns, ipython_dir=ipython_dir, xmode=self.xmode)
                _make_private(ipython_dir)
            except BaseException:
                shutil.rmtree(ipython_dir, ignore_errors=True)
                os.close(lock)
                raise
            shell.ast_node_interactivity = self.ast_node_interactivity
            self._shell = self._core.shell = shell
            self._shell_finalizer = weakref.finalize(self, _release, shell, ipython_dir, lock)
        super().start(host, tools)

    def shutdown(self) -> None:
        super().shutdown()
        self._shell = self._core.shell = None
        finalizer = getattr(self, "_shell_finalizer", None)
        if finalizer is not None:
            finalizer()

    # --- what differs from the local REPL ------------------------------------------------

    def _execute(self, code: str, limit: float | None, filename: str | None = None
                 ) -> CellResult:
        # The local REPL runs "__rlm_ipython_run__()" on its executor thread (with its timeout,
        # stop and capture machinery); that call hands the real cell to IPython.
        shell = self._shell
        if shell is None:  # shut down meanwhile: the local REPL reports it
            return super()._execute(code, limit, filename)
        errors: list[str] = []  # the tracebacks IPython records for this cell
        self._core.errors = errors
        self._ns[_RUN] = functools.partial(_run, weakref.ref(shell), code, errors)
        return super()._execute(f"{_RUN}()", limit, filename)

    # --- prompt text -----------------------------------------------------------------------

    def usage_instructions(self) -> str:
        return usage_text(
            "shell (Python {version}) running inside the host process", on_timeout="is stopped",
            max_output_chars=self.max_output_chars, cell_timeout=self.cell_timeout,
            ast_node_interactivity=self.ast_node_interactivity)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running" if self._started else "new"
        return f"<IPythonREPL #{self._id} {state}>"


__all__ = ["IPythonREPL"]
