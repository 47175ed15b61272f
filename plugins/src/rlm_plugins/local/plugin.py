"""Registers the ``local`` environment.

Cheap to import: the REPL module loads only when a run uses it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlm.plugin import hookimpl

if TYPE_CHECKING:
    from rlm.plugin import Registrar


@hookimpl
def rlm_register_environments(registrar: Registrar) -> None:
    registrar.add(
        "local", "rlm_plugins.local.repl:LocalREPL",
        description="Persistent Python REPL in the host process, with per-cell timeouts and "
                    "per-REPL output capture. Not a security boundary.")
