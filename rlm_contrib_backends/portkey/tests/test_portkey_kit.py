"""The portkey backend passes the conformance kit (rlm-testkit) against a server on 127.0.0.1."""

from __future__ import annotations

from rlm_testkit import OpenAICompatibleBackendTests


class TestPortkeyKit(OpenAICompatibleBackendTests):
    plugin = "rlm_backend_portkey.plugin"
    backend_name = "portkey"
    backend_kwargs = {"model_name": "kit-model", "api_key": "kit-test-key"}
    no_retry_kwargs = {"max_retries": 0}
    capabilities = {"cost": True, "retries": True, "key_hidden": True}
