"""Test helpers shipped with the kernel (standard library only).

:class:`OpenAICompatibleServer` is a scripted OpenAI-compatible HTTP server: tests, benchmarks and
the demo point any OpenAI-compatible client at ``srv.base_url`` and script its replies and faults.
:class:`AnthropicCompatibleServer` does the same in the Anthropic Messages API wire format, and
:class:`GeminiEmulator` emulates the Gemini API (generateContent, streamGenerateContent, countTokens).
:class:`FaultPlan` queues scripted faults by operation for emulators of other APIs, and
:class:`LoopThread` serves an asynchronous emulator from a thread of its own.
"""

from __future__ import annotations

from .anthropic import AnthropicCompatibleServer, AnthropicReply
from .faults import FaultPlan
from .gemini import GeminiEmulator, GeminiReply
from .loop import LoopThread
from rlm_backend_openai.emulator import Fault, OpenAICompatibleServer, Reply, demo_responder, estimate_tokens

__all__ = ["AnthropicCompatibleServer", "AnthropicReply", "Fault", "FaultPlan", "GeminiEmulator", "GeminiReply",
           "LoopThread", "OpenAICompatibleServer", "Reply", "demo_responder", "estimate_tokens"]
