"""Registers the ``e2b`` environment.

Cheap to import: neither the E2B SDK nor the environment module is loaded until a REPL is made.
"""

from rlm.plugin import hookimpl


@hookimpl
def rlm_register_environments(registrar):
    registrar.add(
        "e2b", "rlm_env_e2b.env:E2BREPL",
        description="Long-lived REPL worker in one E2B cloud sandbox per run (a Firecracker "
                    "microVM; internet off by default), over the SDK's command API. Needs "
                    "E2B_API_KEY.")
