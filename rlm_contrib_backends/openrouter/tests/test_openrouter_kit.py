"""The openrouter backend passes the conformance kit (rlm-testkit) against a server on 127.0.0.1."""

from __future__ import annotations

from rlm_testkit import OpenAICompatibleBackendTests


class TestOpenrouterKit(OpenAICompatibleBackendTests):
    plugin = "rlm_backend_openrouter.plugin"
    backend_name = "openrouter"
    backend_kwargs = {"model_name": "kit-model", "api_key": "kit-test-key"}
    no_retry_kwargs = {"max_retries": 0}
    capabilities = {"cost": True, "retries": True, "key_hidden": True}
