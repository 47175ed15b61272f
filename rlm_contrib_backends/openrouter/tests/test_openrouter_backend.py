"""The openrouter backend against rlm_testkit.servers.OpenAICompatibleServer (real HTTP on 127.0.0.1).

The fault matrix every backend passes is in tests/test_backend_faults.py; this file covers what
is OpenRouter's own: the cost it reports, usage accounting, attribution headers, 402.
"""

from __future__ import annotations


import pytest

from rlm.exceptions import AuthenticationError, BackendError
from rlm_testkit.helpers import clean_env_fixture, echo_server_fixture
from rlm_testkit.servers import Fault, OpenAICompatibleServer, Reply
from rlm_backend_openrouter.client import OPENROUTER_BASE_URL, OpenRouterBackend

MSGS = [{"role": "user", "content": "hello"}]

_clean_env = clean_env_fixture("OPENROUTER_API_KEY", "OPENROUTER_BASE_URL", "OPENAI_API_KEY",
                               "OPENAI_BASE_URL")
server = echo_server_fixture(OpenAICompatibleServer)


def test_entry_point_loads_the_backend():
    # that the plugin module imports neither openai nor the client is the kit's
    # test_plugin_module_is_cheap (test_openrouter_kit.py)
    import rlm

    assert rlm.PluginManager().entry("backend", "openrouter").load() is OpenRouterBackend


def test_missing_key_names_both_fixes():
    with pytest.raises(AuthenticationError) as info:
        OpenRouterBackend("openai/gpt-4o")
    assert 'backend_kwargs={"api_key": ...}' in str(info.value) and "OPENROUTER_API_KEY" in str(info.value)


def test_defaults_to_openrouter(monkeypatch):
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-x")
    backend = OpenRouterBackend()
    assert backend.base_url == OPENROUTER_BASE_URL and backend.model_name == "openai/gpt-4o"


def test_reported_cost_is_the_cost(server):
    server.add_replies(Reply("x", prompt_tokens=10, completion_tokens=10, cost=0.0123),
                       Reply("y", prompt_tokens=1_000_000, completion_tokens=0))
    with OpenRouterBackend("openai/gpt-4o", api_key="sk-or-key", base_url=server.base_url,
                           app_url="https://example.org", app_name="rlm tests") as backend:
        assert backend.completion(MSGS, temperature=0).usage.cost == 0.0123
        assert backend.completion(MSGS).usage.cost == pytest.approx(2.50)  # no cost: price table
    body = server.requests[0]
    assert body["usage"] == {"include": True} and body["temperature"] == 0
    assert server.headers[0]["http-referer"] == "https://example.org"
    assert server.headers[0]["x-title"] == "rlm tests"
    assert server.headers[0]["authorization"] == "Bearer sk-or-key"


def test_include_usage_off_and_provider_routing_passthrough(server):
    with OpenRouterBackend("anthropic/claude-3-haiku", api_key="k", base_url=server.base_url,
                           include_usage=False) as backend:
        backend.completion(MSGS, provider={"order": ["anthropic"]}, transforms=["middle-out"])
    body = server.requests[0]
    assert "usage" not in body
    assert body["provider"] == {"order": ["anthropic"]} and body["transforms"] == ["middle-out"]


def test_402_says_where_to_add_credits(server):
    server.inject(Fault("status", status=402, body="Insufficient credits"))
    with OpenRouterBackend(api_key="k", base_url=server.base_url) as backend:
        with pytest.raises(BackendError, match="settings/credits") as info:
            backend.completion(MSGS)
    assert info.value.status_code == 402 and len(server.requests) == 1
