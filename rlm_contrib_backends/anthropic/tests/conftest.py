"""Fixtures: a scripted Anthropic Messages API server on 127.0.0.1 and backends pointed at it."""

from __future__ import annotations

import pytest

from rlm_testkit.servers import AnthropicCompatibleServer


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    """No real credentials or endpoints from the environment leak into a test."""
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server():
    with AnthropicCompatibleServer(responder=lambda messages, body: f"echo: {messages[-1]['content']}") as srv:
        yield srv


@pytest.fixture
def make_backend(server):
    from rlm_backend_anthropic.client import AnthropicBackend

    built = []

    def make(**kw):
        kw.setdefault("base_url", server.base_url)
        kw.setdefault("retry_base_delay", 0.001)
        kw.setdefault("timeout", 10.0)
        backend = AnthropicBackend(**kw)
        built.append(backend)
        return backend

    yield make
    for backend in built:
        backend.close()
