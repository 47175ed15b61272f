"""Registers the ``serve`` command. Imports nothing heavy."""

from rlm.plugin import hookimpl


@hookimpl
def rlm_register_commands(registrar):
    registrar.add("serve", "rlm_serve.cli:add_serve_parser",
                  description="Serve RLM profiles as an OpenAI-compatible HTTP API.")
