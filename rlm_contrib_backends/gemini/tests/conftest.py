"""Fixtures: the Gemini API emulator on 127.0.0.1 and backends pointed at it."""

from __future__ import annotations

import pytest

from rlm_testkit.servers import GeminiEmulator


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    """No real credentials, endpoints or Vertex switch from the environment leak into a test."""
    for name in ("GOOGLE_API_KEY", "GEMINI_API_KEY", "GOOGLE_GEMINI_BASE_URL",
                 "GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_CLOUD_PROJECT", "GOOGLE_CLOUD_LOCATION"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def emu():
    with GeminiEmulator(responder=lambda messages, body: f"echo: {messages[-1]['content']}") as server:
        yield server


@pytest.fixture
def make_backend(emu):
    from rlm_backend_gemini.client import GeminiBackend

    built = []

    def make(**kw):
        kw.setdefault("base_url", emu.base_url)
        kw.setdefault("retry_base_delay", 0.001)
        kw.setdefault("timeout", 10.0)
        backend = GeminiBackend(**kw)
        built.append(backend)
        return backend

    yield make
    for backend in built:
        backend.close()
