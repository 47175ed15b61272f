"""Registers the ``vllm`` backend with rlm. Cheap to import: the factory is a string."""

from __future__ import annotations

from rlm.plugin import hookimpl


@hookimpl
def rlm_register_backends(registrar):
    registrar.add(
        "vllm", "rlm_backend_vllm.client:VLLMBackend",
        description="A vLLM server, or any OpenAI-compatible server (base_url required; "
                    "key optional: api_key or VLLM_API_KEY)")
