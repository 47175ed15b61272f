"""Registers the ``openrouter`` backend with rlm. Cheap to import: the factory is a string."""

from __future__ import annotations

from rlm.plugin import hookimpl


@hookimpl
def rlm_register_backends(registrar):
    registrar.add(
        "openrouter", "rlm_backend_openrouter.client:OpenRouterBackend",
        description="OpenRouter (any 'provider/model' it serves), cost as OpenRouter reports it "
                    "(key: api_key or OPENROUTER_API_KEY)")
