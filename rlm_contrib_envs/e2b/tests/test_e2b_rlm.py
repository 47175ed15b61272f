"""A whole ``RLM(environment="e2b")`` completion: a model served by the OpenAI-compatible test
server, the REPL in an (emulated) E2B sandbox, a sub-call from inside reaching the host."""

from __future__ import annotations

from _e2b_support import EMULATOR, emulator_kwargs, needs_bwrap
from rlm import RLM
from rlm_testkit.servers import OpenAICompatibleServer
from rlm_testkit.helpers import is_root_turn

pytestmark = needs_bwrap

ROOT_TURNS = [
    ("Let me look.\n```repl\nwords = context.split()\nsub = llm_query('count: ' + "
     "str(len(words)))\nprint(len(words), sub)\n```"),
    ("```repl\nanswer['content'] = f'{len(words)} words, model says {sub}'\n"
     "answer['ready'] = True\n```"),
]


def test_rlm_completion_in_an_e2b_sandbox():
    turns = iter(ROOT_TURNS)
    seen_sub: list[str] = []

    def respond(messages, body):
        if is_root_turn(messages):
            return next(turns)
        seen_sub.append(messages[-1]["content"])
        return "three"

    before = set(EMULATOR.sandboxes)
    with OpenAICompatibleServer(responder=respond) as server, RLM(backend="openai",
             backend_kwargs={"base_url": server.base_url, "api_key": "test-key",
                             "model_name": "scripted-model", "max_retries": 0},
             environment="e2b", environment_kwargs=emulator_kwargs()) as rlm:
        result = rlm.completion("alpha beta gamma")
    assert result.response == "3 words, model says three"
    assert seen_sub == ["count: 3"]
    created = [sid for sid in EMULATOR.sandboxes if sid not in before]
    assert len(created) == 1
    assert EMULATOR.ops(created[0])[:3] == ["create", "upload", "start"]
    assert not EMULATOR.sandboxes[created[0]].alive  # deleted by the end of the run
