"""Registers the ``anthropic`` backend with rlm. Cheap to import: the SDK loads on first use."""

from __future__ import annotations

from rlm.plugin import hookimpl


@hookimpl
def rlm_register_backends(registrar):
    registrar.add(
        "anthropic", "rlm_backend_anthropic.client:AnthropicBackend",
        description="Anthropic Messages API (Claude models; key: api_key or ANTHROPIC_API_KEY)")
