"""The llamacpp backend passes the conformance kit (rlm-testkit).

The kit scripts faults (429 with Retry-After, 5xx, stalls, resets, malformed JSON, missing usage)
on its OpenAI-compatible server on 127.0.0.1; the backend is pointed at it with ``base_url=``, the
option for a llama.cpp server you run yourself. The embedded server itself is tested in
test_embedded_model.py.
"""

from __future__ import annotations

from rlm_testkit import OpenAICompatibleBackendTests


class TestLlamaCppBackend(OpenAICompatibleBackendTests):
    plugin = "rlm_backend_llamacpp.plugin"
    backend_name = "llamacpp"
    backend_kwargs = {"model_name": "kit-model"}
    no_retry_kwargs = {"max_retries": 0}
    # No "cost": a local model costs 0.0, whatever the server says.
    capabilities = {"cost": False, "retries": True, "key_hidden": True}
