"""``RLM(environment="modal", environment_kwargs={"app_name": ..., "timeout": 600})`` end to end:
the real openai backend against the scripted OpenAI-compatible server on 127.0.0.1, the real
Modal SDK against the emulator, code the "model" writes running in the emulated sandbox."""

from __future__ import annotations

from typing import Any

import pytest
from rlm import RLM
from rlm.exceptions import RLMEnvironmentError
from rlm_testkit.servers import OpenAICompatibleServer

MODEL = "scripted-root"
SPEC_KWARGS = {"app_name": "my-rlm-app", "timeout": 600}


def repl(code: str) -> str:
    return f"Next step.\n```repl\n{code}\n```"


def is_root(messages: list[dict[str, Any]]) -> bool:
    return bool(messages) and messages[0].get("role") == "system" and \
        "REPL" in messages[0]["content"]


def make(server: OpenAICompatibleServer, turns, on_turn=None) -> RLM:
    def responder(messages, body):
        if not is_root(messages):
            return f"sub:{messages[-1]['content']}"
        turn = sum(1 for m in messages if m["role"] == "assistant")
        if on_turn is not None:
            on_turn(turn)
        return turns[min(turn, len(turns) - 1)]

    server._responder = responder
    return RLM(backend="openai",
               backend_kwargs={"base_url": server.base_url, "api_key": "test-key-123",
                               "model_name": MODEL, "max_retries": 0},
               environment="modal", environment_kwargs=SPEC_KWARGS, max_iterations=4)


@pytest.fixture
def server():
    with OpenAICompatibleServer(model=MODEL) as srv:
        yield srv


def test_a_completion_runs_in_a_modal_sandbox(server, modal_emulator):
    modal_emulator.clear()
    turns = [repl("import socket\nr = llm_query('word count of ' + context[:5])\n"
                  "answer['content'] = f'{len(context)}|{r}|{socket.gethostname()}'\n"
                  "answer['ready'] = True")]
    with make(server, turns) as r:
        result = r.completion("hello modal world")
    # the emulated sandbox's hostname is "modal": the code ran there, not on the host
    assert result.response == "17|sub:word count of hello|modal"
    methods = modal_emulator.methods()
    assert methods.count("SandboxCreateV2") == 1
    assert methods.count("TaskExecStart") == 1
    created = next(c.request for c in modal_emulator.calls if c.method == "SandboxCreateV2")
    assert created.definition.timeout_secs == 600
    assert all(s.terminated for s in modal_emulator.sandboxes.values())


def test_a_sandbox_dying_mid_run_ends_it_with_the_partial_answer(server, modal_emulator):
    def kill_on_second_turn(turn: int) -> None:
        if turn == 1:
            for sandbox in list(modal_emulator.sandboxes.values()):
                if not sandbox.terminated:
                    modal_emulator.kill_sandbox(sandbox.sandbox_id, "evicted")

    turns = [repl("answer['content'] = 'half of it'\nprint('working')"), repl("print('more')")]
    with make(server, turns, kill_on_second_turn) as r, \
            pytest.raises(RLMEnvironmentError) as info:
        r.completion("a task")
    assert "ended under the run" in str(info.value)
    assert info.value.partial_answer == "half of it"
    assert all(s.terminated for s in modal_emulator.sandboxes.values())
