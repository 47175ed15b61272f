"""Registers the ``context`` tool provider (opt-in: ``RLM(tool_providers=["context"])``)."""

from rlm.plugin import hookimpl


@hookimpl
def rlm_register_tool_providers(registrar):
    registrar.add("context", "rlm_plugins.context_tools.provider:ContextTools",
                  description="chunk_text and grep_text helpers for long contexts.", default=False)
