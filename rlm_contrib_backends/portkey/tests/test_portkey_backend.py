"""The portkey backend against rlm_testkit.servers.OpenAICompatibleServer (real HTTP on 127.0.0.1).

The fault matrix every backend passes is in tests/test_backend_faults.py; this file covers what
is Portkey's own: the x-portkey-* headers, Model Catalog names, keys kept out of sight.
"""

from __future__ import annotations

import json

import pytest

from rlm.exceptions import AuthenticationError, BackendError
from rlm_testkit.helpers import clean_env_fixture, echo_server_fixture
from rlm_testkit.servers import Fault, OpenAICompatibleServer, Reply
from rlm_backend_portkey.client import PORTKEY_BASE_URL, PortkeyBackend

MSGS = [{"role": "user", "content": "hello"}]
PK = "pk-SECRET-portkey-0123456789"
VK = "vk-SECRET-virtual-0123456789"
PROV = "sk-SECRET-provider-0123456789"

_clean_env = clean_env_fixture("PORTKEY_API_KEY", "PORTKEY_BASE_URL", "PORTKEY_GATEWAY_URL",
                               "PORTKEY_VIRTUAL_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL")
server = echo_server_fixture(OpenAICompatibleServer)


def test_entry_point_loads_the_backend():
    # that the plugin module imports neither openai nor the client is the kit's
    # test_plugin_module_is_cheap (test_portkey_kit.py)
    import rlm

    assert rlm.PluginManager().entry("backend", "portkey").load() is PortkeyBackend


def test_missing_key_names_both_fixes():
    with pytest.raises(AuthenticationError) as info:
        PortkeyBackend("@openai/gpt-5-nano")
    assert 'backend_kwargs={"api_key": ...}' in str(info.value) and "PORTKEY_API_KEY" in str(info.value)


def test_hosted_gateway_by_default(monkeypatch):
    monkeypatch.setenv("PORTKEY_API_KEY", PK)
    assert PortkeyBackend("@openai/gpt-5-nano").base_url == PORTKEY_BASE_URL
    monkeypatch.setenv("PORTKEY_GATEWAY_URL", "http://127.0.0.1:8787/v1")
    assert PortkeyBackend("@openai/gpt-5-nano").base_url == "http://127.0.0.1:8787/v1"


def test_model_catalog_name_headers_and_price(server):
    server.add_replies(Reply("x", prompt_tokens=1_000_000, completion_tokens=1_000_000))
    with PortkeyBackend("@openai/gpt-5-nano", api_key=PK, base_url=server.base_url,
                        trace_id="t-1", metadata={"_user": "u1"}) as backend:
        out = backend.completion(MSGS, temperature=1)
    assert out.usage.cost == pytest.approx(0.05 + 0.40)  # priced as gpt-5-nano
    assert server.requests[0]["model"] == "@openai/gpt-5-nano"
    h = server.headers[0]
    assert h["x-portkey-api-key"] == PK and h["authorization"] == f"Bearer {PK}"
    assert h["x-portkey-trace-id"] == "t-1"
    assert json.loads(h["x-portkey-metadata"]) == {"_user": "u1"}


def test_virtual_key_config_and_provider_routing(server):
    config = {"retry": {"attempts": 2}, "cache": {"mode": "simple"}}
    with PortkeyBackend("gpt-4o-mini", api_key=PK, base_url=server.base_url, virtual_key=VK,
                        config=config, provider="openai", provider_api_key=PROV) as backend:
        backend.completion(MSGS)
        for secret in (PK, VK, PROV):
            assert secret not in repr(backend) and secret not in repr(vars(backend))
    h = server.headers[0]
    assert h["x-portkey-virtual-key"] == VK and h["x-portkey-provider"] == "openai"
    assert json.loads(h["x-portkey-config"]) == config
    assert h["authorization"] == f"Bearer {PROV}"  # the provider's key when routing by provider


def test_secrets_redacted_from_errors(server):
    server.inject(Fault("status", status=401, body=f"bad keys {PK} {VK}"))
    with PortkeyBackend("@openai/gpt-5-nano", api_key=PK, virtual_key=VK, base_url=server.base_url) as backend:
        with pytest.raises(AuthenticationError) as info:
            backend.completion(MSGS)
    assert PK not in str(info.value) and VK not in str(info.value)


def test_400_without_routing_explains_model_names(server):
    server.inject(Fault("status", status=400, body="Either x-portkey-config or x-portkey-provider header is required"))
    with PortkeyBackend("gpt-4o", api_key=PK, base_url=server.base_url) as backend:
        with pytest.raises(BackendError, match="@openai/gpt-5-nano"):
            backend.completion(MSGS)
