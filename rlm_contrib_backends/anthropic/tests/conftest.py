"""Fixtures: a scripted Anthropic Messages API server on 127.0.0.1 and backends pointed at it."""

from __future__ import annotations

import pytest

from rlm_testkit.helpers import backend_factory, clean_env_fixture, echo_server_fixture
from rlm_testkit.servers import AnthropicCompatibleServer

# no real credentials or endpoints from the environment leak into a test
_clean_env = clean_env_fixture("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL")
server = echo_server_fixture(AnthropicCompatibleServer)


@pytest.fixture
def make_backend(server):
    from rlm_backend_anthropic.client import AnthropicBackend

    with backend_factory(AnthropicBackend, base_url=server.base_url, retry_base_delay=0.001,
                         timeout=10.0) as make:
        yield make
