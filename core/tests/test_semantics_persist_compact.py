"""Persistent conversations and compaction, over HTTP against the scripted server, plus the two
compaction strategies and the token counting they rely on."""

from __future__ import annotations

import os

import pytest

import rlm
from rlm import RLM
from rlm._loop import context_window, count_tokens
from rlm.events import Compacted
from rlm.exceptions import ContextWindowExceededError
from rlm_testkit.servers import OpenAICompatibleServer

from _semantics_support import Ledger, make_rlm, openai_kwargs, repl, turn_no
from rlm_plugins.compaction.recent import (CONTINUE_TEXT, SUMMARY_PREFIX, UPDATE_REQUEST,
                                           RecentTurnsCompaction)
from rlm_plugins.compaction.summarize import SUMMARY_REQUEST, SummarizeCompaction


@pytest.fixture
def server():
    with OpenAICompatibleServer(model="root-model") as srv:
        yield srv


class Sink:
    def __init__(self):
        self.events = []

    def handle(self, e):
        self.events.append(e)

    def close(self):
        pass


# -- persistence ------------------------------------------------------------------------


def test_persistent_three_turn_conversation(server):
    """Three completion() calls share one REPL: variables survive, contexts and histories are
    numbered, the turn prompt counts them, and close() releases the environment."""
    replies = {
        0: repl("notes = [context]\nanswer.update(content=f'noted {len(notes)}', ready=True)"),
        1: repl("notes.append(context_1)\n"
                "answer.update(content=f'noted {len(notes)}: ' + ' + '.join(notes), ready=True)"),
        2: repl("notes.append(context_2)\n"
                "names = sorted(k for k in globals() if k.startswith(('context_', 'history_')))\n"
                "prev = history[-1]['content']\n"
                "answer.update(content=f'{len(notes)}|{names}|{context_0}|{context}|' + prev[:40],"
                " ready=True)"),
    }
    calls = []

    def answer(messages, body):
        k = int(next(m["content"] for m in messages if "Your context" in m["content"])
                .split("`")[1].partition("_")[2] or 0)
        calls.append((k, messages[-1]["content"]))
        return replies[k]

    r = make_rlm(server, Ledger(answer), persistent=True)
    with r:
        assert r.completion("alpha").response == "noted 1"
        assert r.completion("beta").response == "noted 2: alpha + beta"
        third = r.completion("gamma").response
        env = r._env
        workdir = env.workdir
        assert os.path.isdir(workdir)
    count, names, ctx0, ctx, prev = third.split("|")
    assert count == "3"
    assert names == "['context_0', 'context_1', 'context_2', 'history_0', 'history_1']"
    assert (ctx0, ctx) == ("alpha", "alpha")  # `context` names context_0, as in the spec
    assert prev.startswith(("```repl", "Next step"))
    # the third turn's prompt told the model what it has
    last_turn_prompt = calls[-1][1]
    assert "You have 3 contexts: context_0 to context_2" in last_turn_prompt
    assert "Earlier conversations are in history_0 to history_1" in last_turn_prompt
    # close() (through the context manager) released the REPL and its directory
    assert r._env is None and not os.path.exists(workdir)
    with pytest.raises(rlm.RLMError, match="closed"):
        r.completion("delta")


def test_persistent_history_holds_each_conversation(server):
    def answer(messages, body):
        if messages[-1]["content"].startswith("Turn 1/"):
            return repl("print('looking')")
        return repl("answer.update(content=str([len(h) for h in [globals().get('history_0', [])]]),"
                    " ready=True)")

    with make_rlm(server, answer, persistent=True) as r:
        r.completion("one")
        out = r.completion("two").response
    # system, context, 2 assistant replies and the REPL output of the first turn
    assert out == "[5]"


# -- compaction over HTTP --------------------------------------------------------------


def compaction_answer(summary_marker: str):
    state = {"summaries": 0}

    def answer(messages, body):
        last = messages[-1]["content"]
        if last in (SUMMARY_REQUEST, UPDATE_REQUEST):
            state["summaries"] += 1
            return f"SUMMARY-{state['summaries']}: x holds 5"
        if any(summary_marker in m["content"] for m in messages):
            return repl("answer.update(content=f'done after compaction; history has {len(history)} "
                        "messages', ready=True)")
        return repl("x = 5\nprint('y' * 1500)")

    return answer, state


@pytest.mark.parametrize("strategy,kwargs,marker", [
    ("summarize", {}, "Summary of my work so far"),
    ("recent", {"keep_turns": 1}, SUMMARY_PREFIX.strip()),
])
def test_compaction_triggers_and_the_run_finishes(server, strategy, kwargs, marker):
    answer, state = compaction_answer(marker)
    server.responder = Ledger(answer)
    sink = Sink()
    with RLM(backend="openai",
             backend_kwargs=openai_kwargs(server, "root-model",
                                          context_windows={"root-model": 2000}),
             compaction=True, compaction_threshold_pct=0.5, compaction_strategy=strategy,
             compaction_kwargs=kwargs, max_iterations=8, sinks=[sink]) as r:
        result = r.completion("the context")
    assert result.response.startswith("done after compaction")
    assert state["summaries"] >= 1
    compactions = [e for e in sink.events if isinstance(e, Compacted)]
    assert compactions and all(e.strategy == strategy for e in compactions)
    assert all(e.tokens_after < e.tokens_before for e in compactions)
    # the summary calls are billed to the run like any other call
    assert result.usage_summary.total_calls == len(server.requests)
    # `history` kept the whole trajectory, more than what the model still sees
    n_history = int(result.response.split("history has ")[1].split()[0])
    assert n_history >= 4


def test_a_summary_call_that_overflows_degrades(server):
    """The context window is so small that even the summary request does not fit: the kernel
    refuses the doomed call, the strategy drops old turns instead, and the run goes on."""
    def answer(messages, body):
        assert messages[-1]["content"] != SUMMARY_REQUEST, "an overflowing summary was sent"
        if turn_no(messages) >= 3 or any("dropped" in m["content"] for m in messages):
            return "FINAL(still going)"
        return repl("print('z' * 3000)")

    server.responder = answer
    with RLM(backend="openai",
             backend_kwargs=openai_kwargs(server, "root-model", context_windows={"root-model": 900}),
             compaction=True, compaction_threshold_pct=0.5, max_iterations=6) as r:
        assert r.completion("c").response == "still going"


def test_a_failing_summary_call_degrades(server):
    def answer(messages, body):
        if messages[-1]["content"] == UPDATE_REQUEST:
            raise RuntimeError("provider down")  # the server answers 500
        if any("could not be summarised" in m["content"] for m in messages):
            return "FINAL(went on without a summary)"
        return repl("print('w' * 1500)")

    server.responder = answer
    with RLM(backend="openai",
             backend_kwargs=openai_kwargs(server, "root-model", context_windows={"root-model": 2000}),
             compaction=True, compaction_threshold_pct=0.5, compaction_strategy="recent",
             compaction_kwargs={"keep_turns": 1}, max_iterations=8) as r:
        assert r.completion("c").response == "went on without a summary"


def test_a_broken_strategy_never_ends_the_run():
    class Broken:
        def __init__(self, **kw):
            pass

        def should_compact(self, messages, *, tokens, context_window):
            return len(messages) > 3

        def compact(self, messages, *, summarize):
            raise KeyError("bug in the strategy")

    from rlm import PluginManager
    from rlm.plugin import hookimpl
    import types
    import rlm_plugins.local.plugin as local
    import rlm_plugins.scripted.plugin as scripted

    pm = PluginManager(load_entrypoints=False)
    pm.register(local, name="local")
    pm.register(scripted, name="scripted")
    pm.register(types.SimpleNamespace(rlm_register_compaction_strategies=hookimpl(
        lambda registrar: registrar.add("broken", Broken))), name="broken-plugin")
    replies = [repl("print(1)"), repl("print(2)"), "FINAL(fine)"]
    r = RLM(backend="scripted", backend_kwargs={"replies": replies}, plugin_manager=pm,
            compaction=True, compaction_strategy="broken")
    with pytest.warns(RuntimeWarning, match="compaction strategy 'broken' raised"):
        assert r.completion("q").response == "fine"


# -- the strategies on their own -------------------------------------------------------------


def conversation(turns: int, size: int = 100) -> list[dict]:
    msgs = [{"role": "system", "content": "sys"}, {"role": "user", "content": "ctx"}]
    for i in range(turns):
        msgs += [{"role": "assistant", "content": f"reply {i} " + "r" * size},
                 {"role": "user", "content": f"output {i} " + "o" * size}]
    return msgs


def test_recent_keeps_the_last_turns_verbatim_with_a_running_summary():
    s = RecentTurnsCompaction(threshold_pct=0.5, keep_turns=2)
    msgs = conversation(5)
    assert s.should_compact(msgs, tokens=600, context_window=1000)
    seen = []

    def summarize(request):
        seen.append(request)
        return f"summary #{len(seen)}"

    out = s.compact(msgs, summarize=summarize)
    assert out[:2] == msgs[:2]
    assert out[2] == {"role": "assistant", "content": SUMMARY_PREFIX + "summary #1"}
    assert out[3] == {"role": "user", "content": CONTINUE_TEXT}
    assert out[4:] == msgs[-4:]  # the last two turns, verbatim
    # the request held the three aged-out turns and asked for an update
    assert seen[0][-1]["content"] == UPDATE_REQUEST and len(seen[0]) == 2 + 6 + 1
    # the next compaction builds on the previous summary and only reads the newly aged turns
    more = out + conversation(3)[2:]
    out2 = s.compact(more, summarize=summarize)
    assert seen[1][2]["content"] == SUMMARY_PREFIX + "summary #1"
    assert len(seen[1]) == 2 + 1 + 4 + 2 + 1  # head, old summary, 2 older turns... , request
    assert out2[2]["content"] == SUMMARY_PREFIX + "summary #2" and out2[4:] == more[-4:]


def test_recent_does_not_compact_when_there_is_nothing_old():
    s = RecentTurnsCompaction(keep_turns=3)
    assert not s.should_compact(conversation(3), tokens=10**6, context_window=1000)
    assert s.should_compact(conversation(4), tokens=900, context_window=1000)
    assert not s.should_compact(conversation(4), tokens=100, context_window=1000)


def test_recent_degrades_to_shorter_requests_then_to_dropping():
    s = RecentTurnsCompaction(keep_turns=1, max_summary_input_chars=50_000)
    msgs = conversation(4, size=20_000)
    sizes = []

    def overflowing(request):
        size = sum(len(m["content"]) for m in request)
        sizes.append(size)
        if size > 10_000:
            raise ContextWindowExceededError("too long")
        return "short summary"

    out = s.compact(msgs, summarize=overflowing)
    assert out[2]["content"] == SUMMARY_PREFIX + "short summary"
    assert sizes == sorted(sizes, reverse=True) and len(sizes) >= 2

    def failing(request):
        raise ContextWindowExceededError("never fits")

    out = s.compact(msgs, summarize=failing)
    assert "could not be summarised" in out[2]["content"]
    assert out[-2:] == msgs[-2:]
    assert len(out) < len(msgs)


def test_recent_shortens_huge_recent_turns():
    s = RecentTurnsCompaction(threshold_pct=0.5, keep_turns=1)
    msgs = conversation(3, size=50_000)
    assert s.should_compact(msgs, tokens=40_000, context_window=10_000)
    out = s.compact(msgs, summarize=lambda r: "sum")
    assert sum(len(m["content"]) for m in out[4:]) < 12_000
    assert "characters cut" in out[-1]["content"]


@pytest.mark.parametrize("kwargs,match", [
    ({"keep_turns": 0}, "keep_turns"), ({"threshold_pct": 0}, "threshold_pct"),
    ({"keep_head": 0}, "keep_head"), ({"recent_share": 2}, "recent_share"),
])
def test_recent_validates_its_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RecentTurnsCompaction(**kwargs)


def test_summarize_degrades_when_the_summary_call_fails():
    s = SummarizeCompaction(threshold_pct=0.5)
    msgs = conversation(4)
    out = s.compact(msgs, summarize=lambda r: (_ for _ in ()).throw(ContextWindowExceededError("x")))
    assert out[:2] == msgs[:2] and out[-2:] == msgs[-2:] and len(out) == 5


# -- token counting ----------------------------------------------------------------------


def test_token_counting_uses_the_backends_counter_else_characters():
    msgs = [{"role": "user", "content": "x" * 400}]

    class WithCounter:
        def count_tokens(self, messages):
            return 7

        def context_window(self, model=None):
            return 4096

    class Broken:
        def count_tokens(self, messages):
            raise RuntimeError("no tokenizer")

        def context_window(self, model=None):
            return None

    assert count_tokens(WithCounter(), msgs) == 7
    assert count_tokens(Broken(), msgs) == count_tokens(object(), msgs) == 104  # 400/4 + framing
    assert context_window(WithCounter()) == 4096
    assert context_window(Broken()) == context_window(object()) == 128_000


def test_openai_backend_counts_with_tiktoken_when_installed():
    from rlm_backend_openai.client import OpenAIBackend

    b = OpenAIBackend(model_name="gpt-4o", api_key="k", base_url="http://127.0.0.1:9/v1")
    msgs = [{"role": "user", "content": "hello world " * 50}]
    n = count_tokens(b, msgs)
    try:
        import tiktoken  # noqa: F401
    except ImportError:
        assert n == b.count_tokens(msgs) > 0  # the backend's character estimate
    else:
        assert 90 < n < 160  # a real tokenizer: about one token per word here
    assert context_window(b, "gpt-4o") == 128_000
    b.close()


def test_concurrent_acompletions_of_a_persistent_rlm_take_turns(server):
    import asyncio

    def answer(messages, body):
        return repl("import time\nseen = globals().setdefault('seen', [])\nseen.append(context)\n"
                    "time.sleep(0.05)\nanswer.update(content=str(len(seen)), ready=True)")

    async def main(r):
        return await asyncio.gather(*(r.acompletion(f"c{i}") for i in range(3)))

    with make_rlm(server, answer, persistent=True) as r:
        results = asyncio.run(main(r))
    assert sorted(x.response for x in results) == ["1", "2", "3"]
