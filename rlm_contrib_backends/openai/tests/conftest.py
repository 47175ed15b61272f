"""Fixtures: a scripted OpenAI-compatible server on 127.0.0.1 and backends pointed at it."""

from __future__ import annotations

import pytest

from rlm_testkit.helpers import backend_factory, clean_env_fixture, echo_server_fixture
from rlm_testkit.servers import OpenAICompatibleServer

# no real credentials or endpoints from the environment leak into a test
_clean_env = clean_env_fixture("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID",
                               "OPENAI_PROJECT_ID", "AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT",
                               "AZURE_OPENAI_AD_TOKEN", "OPENAI_API_VERSION")
server = echo_server_fixture(OpenAICompatibleServer)


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

    with backend_factory(OpenAIBackend, model_name="gpt-4o", retry_base_delay=0.001,
                         timeout=10.0) as build:
        def make(cls=OpenAIBackend, **kw):
            if cls is OpenAIBackend:  # the Azure subclass takes azure_endpoint instead
                kw.setdefault("base_url", server.base_url)
            return build(cls, **kw)

        yield make
