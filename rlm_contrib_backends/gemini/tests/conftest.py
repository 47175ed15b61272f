"""Fixtures: the Gemini API emulator on 127.0.0.1 and backends pointed at it."""

from __future__ import annotations

import pytest

from rlm_testkit.helpers import backend_factory, clean_env_fixture, echo_server_fixture
from rlm_testkit.servers import GeminiEmulator

# no real credentials, endpoints or Vertex switch from the environment leak into a test
_clean_env = clean_env_fixture("GOOGLE_API_KEY", "GEMINI_API_KEY", "GOOGLE_GEMINI_BASE_URL",
                               "GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_CLOUD_PROJECT",
                               "GOOGLE_CLOUD_LOCATION")
emu = echo_server_fixture(GeminiEmulator)


@pytest.fixture
def make_backend(emu):
    from rlm_backend_gemini.client import GeminiBackend

    with backend_factory(GeminiBackend, base_url=emu.base_url, retry_base_delay=0.001,
                         timeout=10.0) as make:
        yield make
