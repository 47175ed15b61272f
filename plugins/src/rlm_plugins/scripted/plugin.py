"""Registers the ``scripted`` backend. Importing this module imports nothing else."""

from rlm.plugin import hookimpl


@hookimpl
def rlm_register_backends(registrar):
    registrar.add(
        "scripted", "rlm_plugins.scripted.backend:ScriptedBackend",
        description="Replays given replies (or a function of the messages) through the real loop. "
                    "For tests and documentation, not a model.")
