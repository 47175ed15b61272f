"""The openai backend passes the conformance kit (rlm-testkit) against a server on 127.0.0.1."""

from __future__ import annotations



from rlm_testkit import OpenAICompatibleBackendTests


class TestOpenAIBackend(OpenAICompatibleBackendTests):
    plugin = "rlm_backend_openai.plugin"
    backend_name = "openai"
    backend_kwargs = {"model_name": "kit-model", "api_key": "sk-kit-test"}
    no_retry_kwargs = {"max_retries": 0}
    capabilities = {"cost": True,  # usage.cost from the server (OpenRouter style) is kept
                    "retries": True, "key_hidden": True}

