"""The litellm backend against rlm_testkit.servers's OpenAI and Anthropic servers (real HTTP on 127.0.0.1).

The fault matrix every backend passes (both routes) is in tests/test_backend_faults.py; this file
covers what is LiteLLM's own: lazy import with the local cost map, key checks, cost order.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from rlm.exceptions import AuthenticationError, ConfigurationError
from rlm_testkit.helpers import clean_env_fixture, echo_server_fixture
from rlm_testkit.servers import AnthropicCompatibleServer, AnthropicReply, OpenAICompatibleServer, Reply

MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}]

_clean_env = clean_env_fixture("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY",
                               "ANTHROPIC_BASE_URL")
oai = echo_server_fixture(OpenAICompatibleServer)


def test_plugin_and_client_modules_do_not_import_litellm():
    code = ("import sys, rlm_backend_litellm.plugin, rlm_backend_litellm.client; "
            "sys.exit(1 if 'litellm' in sys.modules else 0)")
    env = {k: v for k, v in os.environ.items() if k != "LITELLM_LOCAL_MODEL_COST_MAP"}
    assert subprocess.run([sys.executable, "-c", code], timeout=60, env=env).returncode == 0


def test_construction_imports_litellm_with_the_local_cost_map(oai):
    code = ("import os, sys\n"
            "from rlm_backend_litellm.client import LiteLLMBackend\n"
            f"LiteLLMBackend('openai/gpt-4o', api_base={oai.base_url!r})\n"
            "assert os.environ['LITELLM_LOCAL_MODEL_COST_MAP'] == 'True'\n"
            "import litellm\n"
            "assert litellm.model_cost['gpt-4o']['input_cost_per_token'] > 0\n")
    env = {k: v for k, v in os.environ.items() if k != "LITELLM_LOCAL_MODEL_COST_MAP"}
    proc = subprocess.run([sys.executable, "-c", code], timeout=120, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_registered():
    import rlm

    entry = rlm.PluginManager().entry("backend", "litellm")
    assert entry.distribution == "rlm-backend-litellm"


def test_missing_provider_key_names_both_fixes():
    from rlm_backend_litellm.client import LiteLLMBackend

    with pytest.raises(AuthenticationError) as info:
        LiteLLMBackend("anthropic/claude-3-5-haiku-20241022")
    assert 'backend_kwargs={"api_key": ...}' in str(info.value) and "ANTHROPIC_API_KEY" in str(info.value)


def test_openai_route_cost_from_litellm_cost_map_and_prices_override(oai):
    from rlm_backend_litellm.client import LiteLLMBackend

    oai.add_replies(Reply("a", prompt_tokens=1_000_000, completion_tokens=0),
                    Reply("b", prompt_tokens=1_000_000, completion_tokens=0))
    backend = LiteLLMBackend("openai/gpt-4o", api_base=oai.base_url, api_key="sk-x")
    assert backend.completion(MSGS).usage.cost == pytest.approx(2.50)
    priced = LiteLLMBackend("openai/gpt-4o", api_base=oai.base_url, prices={"openai/gpt-4o": (1.0, 1.0)})
    assert priced.completion(MSGS).usage.cost == pytest.approx(1.0)


def test_sampling_args_and_model_override(oai):
    from rlm_backend_litellm.client import LiteLLMBackend

    backend = LiteLLMBackend("openai/gpt-4o", base_url=oai.base_url)
    out = asyncio.run(backend.acompletion(MSGS, temperature=0.1, max_tokens=9, seed=3,
                                          model="openai/gpt-4o-mini"))
    assert out.text == "echo: hello" and out.model == "openai/gpt-4o-mini"
    body = oai.requests[0]
    assert (body["temperature"], body["max_tokens"], body["seed"], body["model"]) == (0.1, 9, 3, "gpt-4o-mini")


def test_anthropic_route_with_thinking_blocks():
    from rlm_backend_litellm.client import LiteLLMBackend

    with AnthropicCompatibleServer(replies=[AnthropicReply("the answer", thinking="hidden",
                                                           prompt_tokens=100, completion_tokens=10)]) as srv:
        out = LiteLLMBackend("anthropic/claude-3-5-haiku-20241022", api_base=srv.base_url,
                             api_key="k").completion(MSGS, max_tokens=50)
        assert srv.requests[0]["system"] and srv.requests[0]["max_tokens"] == 50
    assert out.text == "the answer"
    assert out.usage.cost == pytest.approx((100 * 0.8 + 10 * 4.0) / 1e6)


def test_bad_arguments():
    from rlm_backend_litellm.client import LiteLLMBackend

    with pytest.raises(ConfigurationError, match="num_retries"):
        LiteLLMBackend("openai/gpt-4o", api_base="http://127.0.0.1:1/v1", num_retries=3)
    backend = LiteLLMBackend("openai/gpt-4o", api_base="http://127.0.0.1:1/v1")
    with pytest.raises(ConfigurationError, match="stream"):
        backend.completion(MSGS, stream=True)
    assert backend.context_window() == 128_000
    assert backend.context_window("no-such/model") is None
    assert backend.count_tokens(MSGS) > 0
