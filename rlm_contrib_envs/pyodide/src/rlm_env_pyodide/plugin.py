"""Registers the ``pyodide`` environment. Cheap to import: nothing runs until a run uses it."""

from rlm.plugin import hookimpl


@hookimpl
def rlm_register_environments(registrar):
    registrar.add(
        "pyodide", "rlm_env_pyodide.env:PyodideREPL",
        description="Long-lived Pyodide (CPython in WebAssembly) under Deno with deny-by-default "
                    "permissions: no files, network, subprocesses or environment; memory caps. "
                    "Needs `rlm-env-pyodide install` once.")
