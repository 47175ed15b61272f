"""The small profile's per-request part (grammar, rendering, repetition guard), on the messages
the kernel's loop really sends. No model is loaded here: the RLM runs on the real loop with a
recording backend built on the profile, so the kernel's message texts and the profile are
checked together."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from rlm import RLM, prompts as kernel_prompts
from rlm.types import AnswerSource, ModelResponse, RunStatus, Usage
from rlm_backend_llamacpp import prompts
from rlm_backend_llamacpp.prompts import SmallProfile, choose_examples


class Recorder:
    """A backend with the llamacpp small profile's prompt that replays scripted replies and
    records what the profile would send for each request."""

    model_name = "recorder"

    def __init__(self, replies: list[str]):
        self.replies = list(replies)
        self.system_prompt = prompts.SMALL
        self.context_preview_chars = prompts.PREVIEW_CHARS
        self.sent: list[Any] = []

    def completion(self, messages, **sampling) -> ModelResponse:
        adapted = SmallProfile().adapt(messages)
        self.sent.append(adapted)
        text = self.replies.pop(0) if self.replies else "```repl\nprint(1)\n```"
        return ModelResponse(text=text, usage=Usage(10, 5, 0.0), model=self.model_name)

    async def acompletion(self, messages, **sampling) -> ModelResponse:
        return self.completion(messages, **sampling)

    def close(self) -> None:
        pass


def run(replies: list[str], context: Any, question: str | None, **kw) -> tuple[Recorder, Any]:
    rec = Recorder(replies)
    from rlm._manager import get_plugin_manager

    pm = get_plugin_manager()
    with RLM(backend="scripted", **kw) as r:
        # The scripted backend's slot is replaced by the recorder: the loop talks to it directly.
        r._resources._backends[("scripted", 0)] = (rec, "scripted")
        result = r.completion(context, root_prompt=question)
    assert pm is get_plugin_manager()
    return rec, result


CODE = "```repl\nn = len(context)\nprint(n)\n```"
ANSWER = '```repl\nanswer["content"] = str(n)\nanswer["ready"] = True\n```'


def test_the_loop_is_rendered_like_the_examples_with_the_question_and_context_start():
    rec, result = run([CODE, ANSWER], [12, 7, 30], "How many numbers?")
    assert result.response == "3" and result.status is RunStatus.COMPLETED
    first, second = rec.sent
    assert first.reason == "code" and first.sampling["grammar"] == prompts.CODE_GRAMMAR
    assert first.messages[-1]["content"] == (
        "Question: How many numbers? (context is a list; it begins: [12, 7, 30])\nYour reply:")
    assert prompts.EXAMPLES_MARK not in first.messages[0]["content"]
    assert "(context is a list)" in first.messages[0]["content"]  # examples for a list
    assert second.messages[-1]["content"] == "You are shown: 3\nYour next reply:"
    # The second request extends the first: llama.cpp reuses the KV cache of the prefix.
    assert second.messages[:2] == first.messages[:2]


def test_no_separate_context_shows_the_prompt_as_the_question():
    rec, result = run(["```repl\nresult = 2**10\nprint(result)\n```",
                       '```repl\nanswer["content"] = str(result)\nanswer["ready"] = True\n```'],
                      "What is 2**10?", None)
    assert result.response == "1024"
    assert rec.sent[0].messages[-1]["content"].startswith("Question: What is 2**10? (context is a str")
    assert "What is 3**5?" in rec.sent[0].messages[0]["content"]  # the computation example


def test_the_same_code_twice_must_answer_next():
    rec, result = run([CODE, CODE, '```repl\nanswer["content"] = str(n)\nanswer["ready"] = True\n```'],
                      [1, 2], "How many?")
    assert [a.reason for a in rec.sent] == ["code", "code", "answer"]
    assert rec.sent[2].sampling["grammar"] == prompts.ANSWER_GRAMMAR
    assert result.response == "2"


def test_a_failed_attempt_is_not_shown_and_another_sample_is_drawn():
    bad = "```repl\nn = int(context)\nprint(n)\n```"
    rec, result = run([bad, bad, CODE, ANSWER], "a=1\nb=2", "How long is it?")
    reasons = [a.reason for a in rec.sent]
    assert reasons[:3] == ["code", "fix", "fix"]
    fix1, fix2 = rec.sent[1], rec.sent[2]
    assert fix1.sampling["grammar"] == prompts.FIX_GRAMMAR and fix1.sampling["temperature"] > 0
    assert fix1.sampling["seed"] != fix2.sampling["seed"]  # another sample each time
    for adapted in (fix1, fix2):
        assert all("Error" not in str(m["content"]) for m in adapted.messages[1:])
        assert adapted.messages[-1]["content"].startswith("Question: How long is it?")
    assert result.response == "7"


def test_code_that_prints_nothing_is_told_so():
    rec, _ = run(["```repl\nx = 1\n```", ANSWER], "abc", "q?", max_iterations=2)
    assert rec.sent[1].reason == "fix" and prompts.NO_OUTPUT in rec.sent[1].messages[-1]["content"]


def test_after_the_last_turn_the_reply_must_be_plain_text():
    rec, result = run([CODE, "The answer is 3"], [1, 2, 3], "How many?", max_iterations=1)
    final = rec.sent[-1]
    assert final.reason == "text" and final.sampling["grammar"] == prompts.TEXT_GRAMMAR
    assert "no code" in final.messages[-1]["content"] and "You are shown: 3" in final.messages[-1]["content"]
    assert result.response == "The answer is 3"
    assert result.status is RunStatus.MAX_ITERATIONS and result.answer_source is AnswerSource.AFTER_LIMIT


def test_sub_calls_and_custom_prompts_are_sent_as_they_are():
    plain = [{"role": "user", "content": "Which language is this? Bonjour"}]
    adapted = SmallProfile().adapt(plain)
    assert adapted.reason == "plain" and adapted.sampling == {} and adapted.messages == plain
    custom = [{"role": "system", "content": "My own prompt"},
              kernel_prompts.context_message("x"), {"role": "user", "content": "Turn 1/3."}]
    assert SmallProfile().adapt(custom).reason == "plain"


@pytest.mark.parametrize("question, ctype, last", [
    ("How many lines are there?", "str", "How many lines are there?"),
    ("What is the secret code?", "str", "What is the password?"),
    ("What is the value of port?", "dict", "What is the value of timeout?"),
    ("What is the smallest number?", "list", "What is the largest number?"),
])
def test_the_closest_example_comes_last(question, ctype, last):
    chosen = choose_examples(question, ctype)
    assert chosen[-1].question == last and len(chosen) <= prompts.EXAMPLES_SHOWN
    assert all(e.ctype == ctype for e in chosen)


_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=200).filter(str.strip)


@settings(max_examples=200, deadline=None)
@given(question=_text, root=st.booleans())
def test_any_question_survives_the_kernels_wording(question, root):
    """Whatever the question says (quotes, newlines, unicode), the profile shows it verbatim."""
    q = question.strip() if not root else question
    turn = kernel_prompts.turn_message(0, 6, root_prompt=question if root else None,
                                       question=None if root else q)
    msgs = [{"role": "system", "content": prompts.SMALL},
            kernel_prompts.context_message("data", preview_chars=prompts.PREVIEW_CHARS), turn]
    adapted = SmallProfile().adapt(msgs)
    assert adapted.messages[-1]["content"].startswith(f"Question: {q} (context is a str")
    final = SmallProfile().adapt(msgs[:2] + [kernel_prompts.final_request_message(q)])
    assert final.reason == "text" and f"Question: {q} (context is" in final.messages[-1]["content"]
