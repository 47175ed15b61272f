"""The module the `rlm` entry point names. It registers names and imports nothing heavy:
each target is a "module:Class" string, imported only when a run uses it."""

from rlm.plugin import hookimpl


@hookimpl
def rlm_register_backends(registrar):
    registrar.add(
        "minichat", "rlm_example.backend:MiniChatBackend",
        description="Any OpenAI-compatible chat server over plain HTTP (standard library only).")


@hookimpl
def rlm_register_environments(registrar):
    registrar.add(
        "subrepl", "rlm_example.environment:SubprocessREPL",
        description="A Python REPL in a child process per run: crash-proof, per-cell timeouts. "
                    "Not a security boundary.")
