"""Registers the ``modal`` environment.

Cheap to import: neither the Modal SDK nor the environment is loaded until one is created.
"""

from rlm.plugin import hookimpl


@hookimpl
def rlm_register_environments(registrar):
    registrar.add(
        "modal", "rlm_env_modal.env:ModalREPL",
        description="Long-lived REPL worker in a Modal sandbox per run (no network by default, "
                    "CPU/memory requests, a sandbox timeout); needs Modal credentials "
                    "(modal setup, or MODAL_TOKEN_ID / MODAL_TOKEN_SECRET).")
