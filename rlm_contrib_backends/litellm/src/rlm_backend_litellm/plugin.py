"""Registers the ``litellm`` backend with rlm.

Cheap to import on purpose: ``import litellm`` takes seconds, so it happens only in
:mod:`rlm_backend_litellm.client`, when a run picks this backend.
"""

from __future__ import annotations

from rlm.plugin import hookimpl


@hookimpl
def rlm_register_backends(registrar):
    registrar.add(
        "litellm", "rlm_backend_litellm.client:LiteLLMBackend",
        description="Any 'provider/model' LiteLLM routes (openai/..., anthropic/..., gemini/..., "
                    "ollama/...); keys from api_key or the provider's variable")
