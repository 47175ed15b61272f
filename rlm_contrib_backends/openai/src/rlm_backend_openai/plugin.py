"""Registers the ``openai`` and ``azure_openai`` backends, and the ``rlm demo`` command, with rlm.

Importing this module is cheap on purpose: it names its factories as ``"module:attribute"``
strings, so ``openai`` and ``httpx`` are imported only when a run picks one of these backends.
"""

from __future__ import annotations

from rlm.plugin import hookimpl


@hookimpl
def rlm_register_backends(registrar):
    registrar.add(
        "openai", "rlm_backend_openai.client:OpenAIBackend",
        description="OpenAI chat completions, or any OpenAI-compatible server via base_url "
                    "(key: api_key or OPENAI_API_KEY)")
    registrar.add(
        "azure_openai", "rlm_backend_openai.client:AzureOpenAIBackend",
        description="Azure OpenAI chat completions (azure_endpoint, api_version, azure_deployment; "
                    "key: api_key or AZURE_OPENAI_API_KEY)")


@hookimpl
def rlm_register_commands(registrar):
    registrar.add("demo", "rlm_backend_openai.demo:add_demo_parser",
                  description="An RLM run end to end against a local scripted OpenAI-compatible "
                              "server (no API key, no network).")
