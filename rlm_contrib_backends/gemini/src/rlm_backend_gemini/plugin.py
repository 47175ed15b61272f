"""Registers the ``gemini`` backend with rlm. Cheap to import: the SDK loads on first use."""

from __future__ import annotations

from rlm.plugin import hookimpl


@hookimpl
def rlm_register_backends(registrar):
    registrar.add(
        "gemini", "rlm_backend_gemini.client:GeminiBackend",
        description="Gemini API through google-genai (key: api_key, GOOGLE_API_KEY or GEMINI_API_KEY)")
