"""Constructor checks of the llamacpp backend (no model is loaded here)."""

from __future__ import annotations

import pytest

from rlm.exceptions import ConfigurationError
from rlm_backend_llamacpp import prompts
from rlm_backend_llamacpp.backend import LlamaCppBackend
from rlm_backend_llamacpp.weights import BUNDLED


def test_defaults_describe_the_bundled_model() -> None:
    b = LlamaCppBackend()
    assert b.model_name == BUNDLED.name and b.uses_bundled_model
    assert b.server is None  # nothing is loaded before the first call
    assert b.system_prompt == prompts.SMALL and b.prompt_profile == "small"
    assert b.sampling_defaults["temperature"] == 0.0 and b.sampling_defaults["stop"]
    assert b.cost(b.model_name, 10_000, 10_000) == 0.0
    assert b.context_window() == 8192
    assert "not started" in repr(b)


def test_profiles_and_own_prompt() -> None:
    assert LlamaCppBackend(prompt_profile="default").system_prompt is None
    own = LlamaCppBackend(system_prompt="Be brief. {custom_tools_section}")
    assert own.system_prompt.startswith("Be brief.") and own.prompt_profile == "custom"
    assert "stop" not in own.sampling_defaults  # the stops belong to the small profile's examples
    with pytest.raises(ConfigurationError, match="prompt_profile='tiny' is unknown"):
        LlamaCppBackend(prompt_profile="tiny")


@pytest.mark.parametrize("kwargs, match", [
    ({"n_ctx": 100}, "n_ctx=100 is too small"),
    ({"n_threads": 0}, "n_threads must be an integer >= 1"),
    ({"n_parallel": "2"}, "n_parallel must be an integer >= 1"),
    ({"api_key": "k"}, "api_key= is only for a server you run yourself"),
    ({"base_url": "http://127.0.0.1:8080/v1", "model_path": "m.gguf"}, "drop model_path"),
    ({"model_path": "a.gguf", "model_package": "b"}, "not both"),
])
def test_bad_settings_are_refused_with_the_fix(kwargs, match) -> None:
    with pytest.raises(ConfigurationError, match=match):
        LlamaCppBackend(**kwargs)


def test_own_server_mode_starts_nothing() -> None:
    b = LlamaCppBackend(base_url="http://127.0.0.1:9/v1", api_key="sk-local-secret")
    assert b.base_url == "http://127.0.0.1:9/v1" and b.model_name == "llamacpp-server"
    assert "sk-local-secret" not in repr(b)
    with pytest.raises(ConfigurationError, match="no embedded server to start"):
        b.start()
