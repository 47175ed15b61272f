"""Fixtures: a scripted OpenAI-compatible server on 127.0.0.1 and backends pointed at it."""

from __future__ import annotations

import pytest

from rlm_testkit.servers import OpenAICompatibleServer


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    """No real credentials or endpoints from the environment leak into a test."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID",
                 "AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_AD_TOKEN",
                 "OPENAI_API_VERSION"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server():
    with OpenAICompatibleServer(responder=lambda messages, body: f"echo: {messages[-1]['content']}") as srv:
        yield srv


@pytest.fixture(params=["plain-http", "sdk"])
def transport(request, monkeypatch):
    """Async calls to an ``http://`` server go through the lean plain-HTTP client by default;
    every backend test runs both through it and through the SDK (``RLM_OPENAI_PLAIN_HTTP=0``)."""
    if request.param == "sdk":
        monkeypatch.setenv("RLM_OPENAI_PLAIN_HTTP", "0")
    else:
        monkeypatch.delenv("RLM_OPENAI_PLAIN_HTTP", raising=False)
    return request.param


@pytest.fixture
def make_backend(server, transport):
    """Build an OpenAIBackend on the test server with tiny backoff; closed after the test."""
    from rlm_backend_openai.client import OpenAIBackend

    built = []

    def make(cls=OpenAIBackend, **kw):
        if cls is OpenAIBackend:
            kw.setdefault("base_url", server.base_url)
        kw.setdefault("model_name", "gpt-4o")
        kw.setdefault("retry_base_delay", 0.001)
        kw.setdefault("timeout", 10.0)
        backend = cls(**kw)
        built.append(backend)
        return backend

    yield make
    for backend in built:
        backend.close()
