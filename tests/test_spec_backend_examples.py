"""The spec's five "Choosing a Backend" examples, run unchanged against local servers.

Each snippet below is the spec's text, character for character, as docs/backends.md shows it
("Choosing a backend", checked here). Only where the requests go is
changed, through the variables each backend honours, never by editing the code:

=============  ===========================================  ===================================
backend        redirected by                                key read by the snippet
=============  ===========================================  ===================================
openai         ``OPENAI_BASE_URL``                          ``OPENAI_API_KEY``
anthropic      ``ANTHROPIC_BASE_URL`` (the Anthropic SDK's)  ``ANTHROPIC_API_KEY``
portkey        ``PORTKEY_BASE_URL``                         ``PORTKEY_API_KEY``
openrouter     ``OPENROUTER_BASE_URL``                      ``OPENROUTER_API_KEY``
vllm           a server on 127.0.0.1:8000 (the snippet's    none
               ``http://localhost:8000/v1``); if that port
               is taken, the one URL in the text is
               replaced by the test server's
=============  ===========================================  ===================================

The servers are rlm_testkit.servers's scripted servers (OpenAI chat completions, or the Anthropic
Messages API) answering with :func:`rlm_testkit.servers.demo_responder`, which drives a real RLM run: a
``repl`` block that looks at ``context``, then one that sets the answer.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from rlm_testkit.servers import AnthropicCompatibleServer, OpenAICompatibleServer, demo_responder

DOC = Path(__file__).resolve().parents[1] / "docs" / "backends.md"

EXAMPLES = {
    "openai": '''rlm = RLM(
    backend="openai",
    backend_kwargs={
        "api_key": os.getenv("OPENAI_API_KEY"),
        "model_name": "gpt-4o",
        # Optional: custom base URL
        # "base_url": "https://api.openai.com/v1",
    },
)''',
    "anthropic": '''rlm = RLM(
    backend="anthropic",
    backend_kwargs={
        "api_key": os.getenv("ANTHROPIC_API_KEY"),
        "model_name": "claude-sonnet-4-20250514",
    },
)''',
    "portkey": '''rlm = RLM(
    backend="portkey",
    backend_kwargs={
        "api_key": os.getenv("PORTKEY_API_KEY"),
        "model_name": "@openai/gpt-5-nano",  # Portkey model format
    },
)''',
    "openrouter": '''rlm = RLM(
    backend="openrouter",
    backend_kwargs={
        "api_key": os.getenv("OPENROUTER_API_KEY"),
        "model_name": "openai/gpt-4o",
    },
)''',
    "vllm": '''rlm = RLM(
    backend="vllm",
    backend_kwargs={
        "base_url": "http://localhost:8000/v1",  # Required
        "model_name": "meta-llama/Llama-3-70b",
    },
)''',
}

KEYS = {"openai": ("OPENAI_API_KEY", "sk-spec-openai-0123456789"),
        "anthropic": ("ANTHROPIC_API_KEY", "sk-ant-spec-0123456789"),
        "portkey": ("PORTKEY_API_KEY", "pk-spec-0123456789"),
        "openrouter": ("OPENROUTER_API_KEY", "sk-or-spec-0123456789")}
BASE_URL_VARS = {"openai": "OPENAI_BASE_URL", "anthropic": "ANTHROPIC_BASE_URL",
                 "portkey": "PORTKEY_BASE_URL", "openrouter": "OPENROUTER_BASE_URL"}
MODELS = {"openai": "gpt-4o", "anthropic": "claude-sonnet-4-20250514",
          "portkey": "@openai/gpt-5-nano", "openrouter": "openai/gpt-4o",
          "vllm": "meta-llama/Llama-3-70b"}


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_the_docs_show_the_spec_snippets():
    doc = DOC.read_text(encoding="utf-8")
    for name, code in EXAMPLES.items():
        assert f"```python\n{code}\n```" in doc, f"docs/backends.md no longer shows the {name} example"


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_spec_example_runs_unchanged(name, monkeypatch):
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL",
                "ANTHROPIC_AUTH_TOKEN", "PORTKEY_API_KEY", "PORTKEY_BASE_URL", "PORTKEY_GATEWAY_URL",
                "OPENROUTER_API_KEY", "OPENROUTER_BASE_URL", "VLLM_API_KEY", "VLLM_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    code = EXAMPLES[name]
    if name == "anthropic":
        server = AnthropicCompatibleServer(responder=demo_responder)
    elif name == "vllm" and _port_free(8000):
        server = OpenAICompatibleServer(responder=demo_responder, port=8000)
    else:
        server = OpenAICompatibleServer(responder=demo_responder)
    with server:
        if name == "vllm" and server.port != 8000:
            code = code.replace("http://localhost:8000/v1", server.base_url)
        if name in KEYS:
            var, key = KEYS[name]
            monkeypatch.setenv(var, key)
            monkeypatch.setenv(BASE_URL_VARS[name], server.base_url)
        from rlm import RLM

        namespace = {"os": os, "RLM": RLM}
        exec(compile(code, f"<spec example: {name}>", "exec"), namespace)
        rlm = namespace["rlm"]
        try:
            result = rlm.completion("The quick brown fox.", root_prompt="How long is the context?")
        finally:
            rlm.close()

    assert result.response == "demo answer: the context is a str of length 20"
    assert result.root_model == MODELS[name]
    usage = result.usage_summary
    assert usage.total_calls == 2 and usage.total_input_tokens > 0
    assert [body["model"] for body in server.requests] == [MODELS[name]] * 2
    headers = server.headers[0]
    if name in KEYS:
        key = KEYS[name][1]
        sent = " ".join(str(v) for v in headers.values())
        assert key in sent  # the key the snippet read from the environment reached the server
    if name == "anthropic":
        assert "system" in server.requests[0]
        assert all(m["role"] in ("user", "assistant") for m in server.requests[0]["messages"])
    if name == "portkey":
        assert headers["x-portkey-api-key"] == KEYS["portkey"][1]
    if name == "openrouter":
        assert server.requests[0]["usage"] == {"include": True}
    if name in ("openai", "anthropic", "portkey", "openrouter"):
        assert usage.total_cost is not None and usage.total_cost > 0  # priced, so max_budget works
