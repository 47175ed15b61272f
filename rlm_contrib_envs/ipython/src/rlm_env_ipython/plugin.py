"""Registers the ``ipython`` and ``ipython-kernel`` environments.

Cheap to import: IPython, ipykernel and jupyter_client load only when a run uses them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlm.plugin import hookimpl

if TYPE_CHECKING:
    from rlm.plugin import Registrar


@hookimpl
def rlm_register_environments(registrar: Registrar) -> None:
    registrar.add(
        "ipython", "rlm_env_ipython.inprocess:IPythonREPL",
        description="A real IPython shell in the host process (magics, display of the last "
                    "expression, IPython tracebacks) with the local REPL's helpers, capture and "
                    "timeouts. Not a security boundary.")
    registrar.add(
        "ipython-kernel", "rlm_env_ipython.kernel:IPythonKernelREPL",
        description="An ipykernel subprocess per run, driven with jupyter_client over IPC; "
                    "helpers reach the host over an authenticated Unix socket; timeouts "
                    "interrupt the kernel (restart as a backstop). Not a security boundary. "
                    "Needs rlm-env-ipython[kernel].")
