"""Test helpers shipped with the kernel (standard library only).

:class:`OpenAICompatibleServer` is a scripted OpenAI-compatible HTTP server: tests, benchmarks and
the demo point any OpenAI-compatible client at ``srv.base_url`` and script its replies and faults.
"""

from __future__ import annotations

from .openai_server import Fault, OpenAICompatibleServer, Reply, demo_responder, estimate_tokens

__all__ = ["Fault", "OpenAICompatibleServer", "Reply", "demo_responder", "estimate_tokens"]
