"""The litellm backend passes the conformance kit (rlm-testkit), routed by LiteLLM as
``openai/<model>`` to the kit's OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

from typing import Any

import pytest

from rlm_testkit import OpenAICompatibleBackendTests


class TestLiteLLMKit(OpenAICompatibleBackendTests):
    plugin = "rlm_backend_litellm.plugin"
    backend_name = "litellm"
    backend_kwargs = {"model_name": "openai/kit-model", "api_key": "kit-test-key"}
    no_retry_kwargs = {"max_retries": 0}
    capabilities = {"retries": True, "key_hidden": True}
    provider_model_name = "kit-model"  # LiteLLM routes "openai/kit-model" to the server as "kit-model"

    def connect_kwargs(self, provider: Any) -> dict[str, Any]:
        return {"api_base": provider.connect_kwargs()["base_url"]}

    @pytest.mark.xfail(strict=True, reason=(
        "LiteLLM forwards keyword arguments it does not know to the provider (its completion() "
        "takes **kwargs), so the backend cannot tell a typo from a provider-specific setting"))
    def test_rejects_unknown_arguments(self, backend_pm: Any, provider: Any) -> None:
        super().test_rejects_unknown_arguments(backend_pm, provider)

    @pytest.mark.xfail(strict=True, reason=(
        "LiteLLM replaces a missing usage object with zeros, so a provider that really reports "
        "0 input / 0 output tokens cannot be told from one that reports none; the backend "
        "estimates (and marks Usage.estimated) in both cases"))
    def test_usage_is_reported(self, backend: Any, provider: Any) -> None:
        super().test_usage_is_reported(backend, provider)

    @pytest.mark.xfail(strict=True, reason=(
        "LiteLLM keeps its HTTP clients at module level and shares them between every caller in "
        "the process, so the backend's close() cannot close them without breaking other users"))
    def test_close_releases_connections(self, make_backend: Any, provider: Any) -> None:
        super().test_close_releases_connections(make_backend, provider)
