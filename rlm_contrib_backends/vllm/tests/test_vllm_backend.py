"""The vllm backend against rlm_testkit.servers.OpenAICompatibleServer (real HTTP on 127.0.0.1).

The fault matrix every backend passes is in tests/test_backend_faults.py; this file covers what
is vLLM's own: base_url required, no key needed, free unless priced, context window from /models.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from rlm.exceptions import BackendError, ConfigurationError
from rlm_testkit.helpers import clean_env_fixture, echo_server_fixture
from rlm_testkit.servers import Fault, OpenAICompatibleServer, Reply
from rlm_backend_vllm.client import VLLMBackend

MSGS = [{"role": "user", "content": "hello"}]
MODEL = "meta-llama/Llama-3-70b"

_clean_env = clean_env_fixture("VLLM_API_KEY", "VLLM_BASE_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL")
server = echo_server_fixture(OpenAICompatibleServer, model=MODEL)


def test_entry_point_loads_the_backend():
    # that the plugin module imports neither openai nor the client is the kit's
    # test_plugin_module_is_cheap (test_vllm_kit.py)
    import rlm

    assert rlm.PluginManager().entry("backend", "vllm").load() is VLLMBackend


def test_base_url_is_required_with_the_fix():
    with pytest.raises(ConfigurationError) as info:
        VLLMBackend(MODEL)
    assert 'backend_kwargs={"base_url": "http://localhost:8000/v1"}' in str(info.value)
    assert "VLLM_BASE_URL" in str(info.value)
    with pytest.raises(ConfigurationError, match="http"):
        VLLMBackend(MODEL, base_url="localhost:8000")
    with pytest.raises(ConfigurationError, match="model_name is required"):
        VLLMBackend(base_url="http://127.0.0.1:1/v1")


def test_env_base_url_and_no_key(server, monkeypatch):
    monkeypatch.setenv("VLLM_BASE_URL", server.base_url)
    with VLLMBackend(MODEL) as backend:
        out = backend.completion(MSGS, temperature=0, max_tokens=5, repetition_penalty=1.1)
        assert out.text == "echo: hello"
        assert out.usage.cost is None  # self-hosted: no price unless given
    body = server.requests[0]
    assert body["model"] == MODEL and body["repetition_penalty"] == 1.1 and body["max_tokens"] == 5
    assert "Bearer" in server.headers[0]["authorization"]  # a placeholder, never a real key


def test_key_from_vllm_api_key(server, monkeypatch):
    monkeypatch.setenv("VLLM_API_KEY", "vllm-secret-key")
    with VLLMBackend(MODEL, base_url=server.base_url) as backend:
        backend.completion(MSGS)
        assert "vllm-secret-key" not in repr(backend)
    assert server.headers[0]["authorization"] == "Bearer vllm-secret-key"


def test_prices_make_budgets_work(server):
    server.add_replies(Reply("x", prompt_tokens=1_000_000, completion_tokens=1_000_000))
    with VLLMBackend(MODEL, base_url=server.base_url, prices={MODEL: (0.2, 0.4)}) as backend:
        assert backend.completion(MSGS).usage.cost == pytest.approx(0.6)


def test_async(server):
    with VLLMBackend(MODEL, base_url=server.base_url) as backend:
        assert asyncio.run(backend.acompletion(MSGS)).text == "echo: hello"


def test_404_hints_at_v1(server):
    server.inject(Fault("status", status=404, body="Not Found"))
    with VLLMBackend(MODEL, base_url=server.url, max_retries=0) as backend:
        with pytest.raises(BackendError, match="does not end in /v1"):
            backend.completion(MSGS)


def test_context_window_from_models_endpoint():
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    import threading

    class Models(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"object": "list", "data": [
                {"id": MODEL, "object": "model", "max_model_len": 32768}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Models)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
        with VLLMBackend(MODEL, base_url=url) as backend:
            assert backend.context_window() == 32768
            assert backend.context_window("other") is None
        with VLLMBackend(MODEL, base_url=url, context_windows={MODEL: 4096}) as backend:
            assert backend.context_window() == 4096
    finally:
        httpd.shutdown()
        httpd.server_close()
