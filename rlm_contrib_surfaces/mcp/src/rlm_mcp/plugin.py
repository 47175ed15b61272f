"""Registers the ``mcp`` command. Imports nothing heavy."""

from rlm.plugin import hookimpl


@hookimpl
def rlm_register_commands(registrar):
    registrar.add("mcp", "rlm_mcp.cli:add_mcp_parser",
                  description="Serve RLM profiles as a Model Context Protocol tool (stdio or HTTP).")
