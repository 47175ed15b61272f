"""The RLM loop end to end: the real openai backend over HTTP to a scripted OpenAI-compatible
server on 127.0.0.1, and the real local environment running the code the "model" writes."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

import rlm
from rlm import RLM
from rlm.logger import RLMLogger
from rlm.types import AnswerSource, RunStatus
from rlm_testkit.servers import OpenAICompatibleServer, Reply

MODEL = "scripted-root"


def repl(code: str, prose: str = "Next step.") -> str:
    return f"{prose}\n```repl\n{code}\n```"


def is_root(messages: list[dict[str, Any]]) -> bool:
    return bool(messages) and messages[0].get("role") == "system" and "REPL" in messages[0]["content"]


def root_turn(messages: list[dict[str, Any]]) -> int:
    return sum(1 for m in messages if m["role"] == "assistant")


class Script:
    """A responder: root turns from a list (by turn number), sub-calls from a function."""

    def __init__(self, turns: list[str | Reply], sub=lambda prompt: f"sub:{prompt}"):
        self.turns = turns
        self.sub = sub
        self.root_requests: list[list[dict[str, Any]]] = []
        self.sub_prompts: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, messages, body):
        if is_root(messages):
            with self._lock:
                self.root_requests.append(messages)
            return self.turns[min(root_turn(messages), len(self.turns) - 1)]
        prompt = messages[-1]["content"]
        with self._lock:
            self.sub_prompts.append(prompt)
        return self.sub(prompt)


@pytest.fixture
def server():
    with OpenAICompatibleServer(model=MODEL) as srv:
        yield srv


def make(server, script, **kw) -> RLM:
    server._responder = script  # the server reads it per request
    kw.setdefault("max_iterations", 6)
    return RLM(backend="openai",
               backend_kwargs={"base_url": server.base_url, "api_key": "test-key-123",
                               "model_name": MODEL, "max_retries": 0},
               **kw)


def test_answer_dict_ends_the_run(server):
    script = Script([repl('x = len(context)\nanswer["content"] = f"len={x}"\nanswer["ready"] = True')])
    with make(server, script) as r:
        result = r.completion("hello world")
    assert isinstance(result, rlm.RLMChatCompletion)
    assert result.response == "len=11"
    assert result.root_model == MODEL
    assert result.prompt == "hello world"
    assert result.usage_summary.total_calls == 1
    assert result.execution_time > 0
    assert result.metadata is None


def test_prompt_is_a_variable_not_a_message(server):
    secret = "NEEDLE-" + "x" * 5000
    script = Script([repl("print(context[:7])"), "FINAL(found)"])
    with make(server, script) as r:
        assert r.completion(secret).response == "found"
    bodies = json.dumps(server.requests)
    assert secret not in bodies
    first = server.requests[0]["messages"]
    assert first[0]["role"] == "system"
    assert "5007 total characters" in first[1]["content"]
    # turn 2 saw what turn 1 printed
    assert "NEEDLE-" in server.requests[1]["messages"][-2]["content"]


def test_final_in_prose(server):
    with make(server, Script(["I know it.\nFINAL(Paris)"])) as r:
        assert r.completion("q").response == "Paris"


def test_final_var_reads_a_repl_variable(server):
    script = Script([repl('result = "from the repl"'), "FINAL_VAR(result)"])
    with make(server, script) as r:
        assert r.completion("q").response == "from the repl"


def test_final_var_of_missing_variable_tells_the_model(server):
    script = Script(["FINAL_VAR(nope)", "FINAL(recovered)"])
    with make(server, script) as r:
        assert r.completion("q").response == "recovered"
    assert "no variable named 'nope'" in server.requests[1]["messages"][-2]["content"]


def test_final_helper_inside_code(server):
    with make(server, Script([repl("FINAL(6 * 7)")])) as r:
        assert r.completion("q").response == "42"


def test_python_fences_run_too(server):
    with make(server, Script(["```python\nanswer.update(content='py', ready=True)\n```"])) as r:
        assert r.completion("q").response == "py"


def test_out_of_iterations_asks_for_a_final_answer(server):
    script = Script([repl("print(1)"), repl("print(2)"), "My best answer is 3."])
    with make(server, script, max_iterations=2) as r:
        result = r.completion("q")
    assert result.response == "My best answer is 3."
    assert result.usage_summary.total_calls == 3
    assert "used every turn" in server.requests[-1]["messages"][-1]["content"]


def test_out_of_iterations_prefers_answer_content(server):
    script = Script([repl('answer["content"] = "draft"'), "whatever"])
    with make(server, script, max_iterations=1) as r:
        result = r.completion("q")
    assert result.response == "draft"
    assert result.status is RunStatus.MAX_ITERATIONS and result.answer_source is AnswerSource.PARTIAL
    assert not result.ok


def test_no_code_gets_a_nudge(server):
    script = Script(["I am thinking.", "FINAL(ok)"])
    with make(server, script) as r:
        assert r.completion("q").response == "ok"
    assert "no ```repl``` block" in server.requests[1]["messages"][-2]["content"]


def test_sub_calls_over_http_and_usage(server):
    script = Script([repl('a = llm_query("one")\nb = llm_query_batched(["p1", "p2", "p3"])\n'
                          'answer.update(content=a + "|" + ",".join(b), ready=True)')])
    with make(server, script) as r:
        result = r.completion("q")
    assert result.response == "sub:one|sub:p1,sub:p2,sub:p3"
    summary = result.usage_summary
    assert summary.total_calls == 5
    per = summary.model_usage_summaries[MODEL]
    # the server counts ceil(chars/4) per request; the totals must equal the sum over requests
    assert per.total_calls == 5
    assert per.total_input_tokens == sum(_prompt_tokens(b) for b in server.requests)


def _prompt_tokens(body: dict[str, Any]) -> int:
    import math

    chars = sum(len(m["content"]) for m in body["messages"])
    return max(1, math.ceil(chars / 4))


def test_batched_keeps_order_under_skewed_latency(server):
    def sub(prompt):
        n = int(prompt)
        time.sleep(0.002 * (20 - n))  # later prompts answer first
        return f"r{n}"

    script = Script([repl("res = llm_query_batched([str(i) for i in range(20)])\n"
                          "answer.update(content=' '.join(res), ready=True)")], sub=sub)
    with make(server, script) as r:
        assert r.completion("q").response == " ".join(f"r{i}" for i in range(20))


def test_custom_tools_with_descriptions(server):
    def fetch_weather(city: str) -> str:
        """Fetch weather data for a city."""
        return f"Weather in {city}: Sunny"

    script = Script([repl('answer.update(content=fetch_weather("Tokyo") + " " + str(API_KEY), ready=True)')])
    tools = {"fetch_weather": {"tool": fetch_weather, "description": "Fetch current weather for a city"},
             "API_KEY": {"tool": "k-1", "description": "API key for the weather service"},
             "plain": 3}
    with make(server, script, custom_tools=tools) as r:
        assert r.completion("q").response == "Weather in Tokyo: Sunny k-1"
    system = server.requests[0]["messages"][0]["content"]
    assert "- `fetch_weather`: Fetch current weather for a city" in system
    assert "- `API_KEY`: API key for the weather service" in system
    assert "- `plain`: a value of type int" in system


@pytest.mark.parametrize("name", ["llm_query", "answer", "context", "history", "FINAL", "context_3"])
def test_reserved_tool_names_are_refused(server, name):
    with pytest.raises(rlm.ConfigurationError, match="reserved"):
        make(server, Script(["x"]), custom_tools={name: 1})


def test_reserved_names_restored_after_each_cell(server):
    script = Script([repl("llm_query = None\ncontext = 'clobbered'\ndel SHOW_VARS"),
                     repl('answer.update(content=llm_query("again") + "/" + context + "/" + '
                          'str(callable(SHOW_VARS)), ready=True)')])
    with make(server, script) as r:
        assert r.completion("original").response == "sub:again/original/True"


def test_custom_system_prompt_with_literal_braces(server):
    prompt = "You are an RLM with a REPL. JSON looks like {\"a\": 1}. {custom_tools_section}"
    with make(server, Script(["FINAL(ok)"]), custom_system_prompt=prompt,
              custom_tools={"t": {"tool": 1, "description": "the t"}}) as r:
        assert r.completion("q").response == "ok"
    system = server.requests[0]["messages"][0]["content"]
    assert '{"a": 1}' in system and "- `t`: the t" in system


def test_budget_exceeded_carries_partial_answer(server):
    script = Script([Reply(repl('answer["content"] = "half done"'), cost=1.0),
                     Reply(repl("print(2)"), cost=1.0), Reply("FINAL(never)", cost=1.0)])
    with make(server, script, max_budget=1.5) as r:
        with pytest.raises(rlm.BudgetExceededError) as info:
            r.completion("q")
    assert info.value.partial_answer == "half done"
    assert info.value.spent == pytest.approx(2.0)
    assert info.value.budget == 1.5


def test_token_limit(server):
    script = Script([repl("print(1)")])
    with make(server, script, max_tokens=50) as r:
        with pytest.raises(rlm.TokenLimitExceededError) as info:
            r.completion("q")
    assert info.value.tokens_used > 50 and info.value.token_limit == 50
    assert info.value.partial_answer is not None  # the last response


def test_timeout_stops_a_running_cell(server):
    script = Script([repl('answer["content"] = "partial"\nwhile True:\n    pass')])
    t0 = time.perf_counter()
    with make(server, script, max_timeout=1.0) as r:
        with pytest.raises(rlm.TimeoutExceededError) as info:
            r.completion("q")
    assert time.perf_counter() - t0 < 10
    assert info.value.partial_answer == "partial"
    assert info.value.timeout == 1.0


def test_error_threshold(server):
    script = Script([repl("1/0"), repl("undefined_name"), repl("print('never')")])
    with make(server, script, max_errors=2) as r:
        with pytest.raises(rlm.ErrorThresholdExceededError) as info:
            r.completion("q")
    assert info.value.error_count == 2 and info.value.threshold == 2
    assert "NameError" in info.value.last_error
    assert len(server.requests) == 2


def test_errors_reset_after_a_good_turn(server):
    script = Script([repl("1/0"), repl("print('fine')"), repl("1/0"), "FINAL(done)"])
    with make(server, script, max_errors=2) as r:
        assert r.completion("q").response == "done"


def test_cancellation_from_keyboard_interrupt(server):
    def on_iteration_start(depth, iteration):
        if iteration == 2:
            raise KeyboardInterrupt

    script = Script([repl('answer["content"] = "so far"'), "FINAL(x)"])
    with make(server, script, on_iteration_start=on_iteration_start) as r:
        with pytest.raises(rlm.CancellationError) as info:
            r.completion("q")
    assert info.value.partial_answer == "so far"


def test_final_answer_wins_over_limits(server):
    # The turn that answers also blows the token limit: the run still returns.
    script = Script([repl("answer.update(content='ok', ready=True)")])
    with make(server, script, max_tokens=1) as r:
        assert r.completion("q").response == "ok"


def test_sys_exit_in_a_cell_is_a_cell_error(server):
    script = Script([repl("import sys\nsys.exit(3)"), "FINAL(still alive)"])
    with make(server, script) as r:
        assert r.completion("q").response == "still alive"
    repl_output = server.requests[1]["messages"][-2]["content"]
    assert repl_output.startswith("REPL output:") and "SystemExit" in repl_output


def test_callbacks_fire(server):
    seen: list[tuple] = []
    script = Script([repl("print(1)"), "FINAL(done)"])
    with make(server, script, on_iteration_start=lambda d, i: seen.append(("start", d, i)),
              on_iteration_complete=lambda d, i, t: seen.append(("done", d, i))) as r:
        r.completion("q")
    assert seen == [("start", 0, 1), ("done", 0, 1), ("start", 0, 2), ("done", 0, 2)]


def test_logger_writes_jsonl_and_metadata(server, tmp_path):
    logger = RLMLogger(log_dir=tmp_path)
    script = Script([repl('print("hi")'), "FINAL(done)"])
    with make(server, script, logger=logger) as r:
        result = r.completion("the context")
    lines = [json.loads(x) for x in open(logger.log_file_path)]
    assert [x["type"] for x in lines] == ["metadata", "iteration", "iteration", "result"]
    assert lines[0]["root_model"] == MODEL and lines[0]["prompt"] == "the context"
    assert "test-key-123" not in open(logger.log_file_path).read()
    assert lines[1]["code_blocks"][0]["result"]["stdout"] == "hi\n"
    assert lines[2]["final_answer"] == "done"
    assert result.metadata["iterations"][0]["code_blocks"][0]["code"] == 'print("hi")'


def test_concurrent_completions_never_swap_output(server):
    n_runs = 6

    def responder(messages, body):
        if not is_root(messages):
            return "sub"
        if root_turn(messages) == 0:
            return repl("import threading\nme = context\nfor i in range(200):\n    print(me)")
        return "FINAL(done)"

    server._responder = responder
    loggers = [RLMLogger() for _ in range(n_runs)]
    errors: list[BaseException] = []

    def run(k):
        try:
            with RLM(backend="openai", backend_kwargs={"base_url": server.base_url, "api_key": "k",
                                                      "model_name": MODEL},
                     logger=loggers[k]) as r:
                r.completion(f"MARK{k}")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(n_runs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    for k, logger in enumerate(loggers):
        out = logger.get_trajectory()["iterations"][0]["code_blocks"][0]["result"]["stdout"]
        assert out.splitlines() == [f"MARK{k}"] * 200


def test_unknown_backend_lists_installed_and_pip_line():
    # A backend the project publishes, not installed here (a manager that sees only first-party
    # plugins): the error lists what is installed and gives the pip line.
    from rlm_testkit.helpers import isolated_plugin_manager

    with pytest.raises(rlm.UnknownPluginError) as info:
        RLM(backend="anthropic", plugin_manager=isolated_plugin_manager(
            first_party=("local", "scripted")))
    msg = str(info.value)
    assert "scripted" in msg and "pip install rlm-backend-anthropic" in msg


def test_a_disabled_backend_says_how_to_enable_it_not_to_install_it(monkeypatch):
    monkeypatch.setenv("RLM_DISABLE_PLUGINS", "rlm-backend-anthropic")
    with pytest.raises(rlm.UnknownPluginError) as info:
        RLM(backend="anthropic", plugin_manager=rlm.PluginManager())
    msg = str(info.value)
    assert "openai" in msg and "scripted" in msg and "pip install" not in msg
    assert "remove rlm-backend-anthropic from it to enable" in msg


def test_unknown_environment_names_the_fix():
    from rlm_testkit.helpers import isolated_plugin_manager

    with pytest.raises(rlm.UnknownPluginError, match="pip install rlm-env-docker"):
        RLM(backend="scripted", backend_kwargs={"replies": []}, environment="docker",
            plugin_manager=isolated_plugin_manager(first_party=("local", "scripted")))


def test_depth_two_spawns_a_child_with_its_own_repl(server):
    def responder(messages, body):
        if not is_root(messages):
            return "plain"
        if "10 total characters" in messages[1]["content"]:
            # the child: its context is the prompt given to rlm_query
            return repl("answer.update(content='child saw ' + context, ready=True)")
        return repl("r = rlm_query('child task')\nanswer.update(content=r, ready=True)")

    server._responder = responder
    with RLM(backend="openai", backend_kwargs={"base_url": server.base_url, "api_key": "k",
                                              "model_name": MODEL},
             max_depth=2, logger=RLMLogger()) as r:
        result = r.completion("root context")
    assert result.response == "child saw child task"
    assert result.usage_summary.total_calls == 2
    child = result.metadata["iterations"][0]["code_blocks"][0]["result"]["rlm_calls"][0]
    assert child["kind"] == "rlm" and child["depth"] == 1
    assert child["metadata"]["iterations"][0]["final_answer"] == "child saw child task"


def test_rlm_query_at_max_depth_is_a_plain_call(server):
    script = Script([repl("answer.update(content=rlm_query('leaf'), ready=True)")])
    with make(server, script) as r:  # max_depth=1
        assert r.completion("q").response == "sub:leaf"


def test_persistent_keeps_state_and_numbers_contexts(server):
    script = Script([repl("counter = globals().get('counter', 0) + 1\n"
                          "answer.update(content=f'{counter}:{context}:' + "
                          "str(sorted(k for k in globals() if k.startswith(('context_', 'history_')))),"
                          " ready=True)")])
    with make(server, script, persistent=True) as r:
        first = r.completion("a").response
        second = r.completion("b").response
    assert first == "1:a:['context_0']"
    assert second == "2:a:['context_0', 'context_1', 'history_0']"
    assert "You have 2 contexts" in server.requests[-1]["messages"][-1]["content"]


def test_api_key_never_in_repr_or_logs(server):
    r = make(server, Script(["FINAL(x)"]))
    assert "test-key-123" not in repr(r)
    r.close()


def test_out_of_iterations_reply_with_code_runs_it(server):
    # Small models answer the last request with a block that sets `answer`: it runs, and its
    # answer (not the code) is the response.
    script = Script([repl("n = 6 * 7"), repl("answer['content'] = str(n)\nanswer['ready'] = True")])
    with make(server, script, max_iterations=1) as r:
        assert r.completion("q").response == "42"


def test_nested_secrets_never_reach_the_log(server, tmp_path):
    logger = RLMLogger(log_dir=tmp_path)
    with RLM(backend="openai",
             backend_kwargs={"base_url": server.base_url, "api_key": "test-key-123",
                             "model_name": MODEL,
                             "default_headers": {"Authorization": "Bearer nested-secret-456",
                                                 "X-Trace": "visible"}},
             logger=logger) as r:
        server._responder = Script(["FINAL(ok)"])
        assert r.completion("q").response == "ok"
    text = open(logger.log_file_path).read()
    assert "nested-secret-456" not in text and "test-key-123" not in text
    assert "visible" in text


# --- how a run ended (RunStatus / AnswerSource) ---------------------------------------------


def test_a_run_the_model_finishes_is_completed(server, tmp_path):
    script = Script([repl("print(6 * 7)"), repl('answer["content"] = "42"\nanswer["ready"] = True')])
    with make(server, script, logger=RLMLogger(str(tmp_path))) as r:
        result = r.completion("q")
    assert (result.response, result.status, result.answer_source, result.ok) == (
        "42", RunStatus.COMPLETED, AnswerSource.MODEL, True)
    records = [json.loads(line) for f in tmp_path.glob("*.jsonl") for line in f.read_text().splitlines()]
    [final] = [rec for rec in records if rec.get("type") == "result"]
    assert final["status"] == "completed" and final["answer_source"] == "model"
    assert result.to_dict()["status"] == "completed"
    assert rlm.RLMChatCompletion.from_dict(result.to_dict()).status is RunStatus.COMPLETED


def test_a_code_fence_is_never_an_answer(server, tmp_path):
    """Out of turns, a reply to the final request that is still code (setting no answer) is not
    returned as the answer: the run reports that it has none."""
    code_only = repl("n = 3\nprint(n)")
    with make(server, Script([code_only]), max_iterations=2, logger=RLMLogger(str(tmp_path))) as r:
        result = r.completion("q")
    assert "```" not in result.response and result.response == ""
    assert result.status is RunStatus.MAX_ITERATIONS and result.answer_source is AnswerSource.NONE
    assert not result.ok
    records = [json.loads(line) for f in tmp_path.glob("*.jsonl") for line in f.read_text().splitlines()]
    [final] = [rec for rec in records if rec.get("type") == "result"]
    assert final["status"] == "max_iterations" and final["answer_source"] == "none"


def test_an_answer_asked_for_after_the_last_turn_says_so(server):
    script = Script([repl("print(1)"), "FINAL(3)"])
    with make(server, script, max_iterations=1) as r:
        result = r.completion("q")
    assert result.response == "3"
    assert result.status is RunStatus.MAX_ITERATIONS and result.answer_source is AnswerSource.AFTER_LIMIT


def test_code_answering_the_final_request_is_run(server):
    script = Script([repl("x = 5"), repl('answer["content"] = str(x * 2)\nanswer["ready"] = True')])
    with make(server, script, max_iterations=1) as r:
        result = r.completion("q")
    assert result.response == "10" and result.answer_source is AnswerSource.AFTER_LIMIT
    assert result.status is RunStatus.MAX_ITERATIONS


@pytest.mark.parametrize("kwargs, error, status", [
    ({"max_errors": 1}, rlm.ErrorThresholdExceededError, RunStatus.ERRORS),
    ({"max_tokens": 1}, rlm.TokenLimitExceededError, RunStatus.TOKENS),
])
def test_a_limit_raises_with_its_status_and_logs_it(server, tmp_path, kwargs, error, status):
    with make(server, Script([repl("1/0")]), logger=RLMLogger(str(tmp_path)), **kwargs) as r:
        with pytest.raises(error) as info:
            r.completion("q")
    assert info.value.status is status
    records = [json.loads(line) for f in tmp_path.glob("*.jsonl") for line in f.read_text().splitlines()]
    [final] = [rec for rec in records if rec.get("type") == "result"]
    assert final["status"] == status.value


def test_a_short_prompt_with_no_root_prompt_is_shown_as_the_question(server):
    script = Script([repl('answer["content"] = "x"\nanswer["ready"] = True')])
    with make(server, script) as r:
        r.completion("What is 2**100?")
    turn = script.root_requests[0][-1]["content"]
    assert '"What is 2**100?"' in turn
