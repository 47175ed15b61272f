"""The otel sink against real RLM runs (the OpenAI-compatible test server on 127.0.0.1, or the
scripted backend), read back from the OpenTelemetry SDK's in-memory exporter."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.trace import StatusCode

from rlm import RLM
from rlm import events as E
from rlm.exceptions import AuthenticationError
from rlm_testkit.servers import Fault, OpenAICompatibleServer, Reply
from rlm.types import RunStatus
from rlm_otel.sink import ATTRIBUTES, OTelSink

ROOT_TURN_1 = ("```repl\na = llm_query('say hi')\nb = rlm_query('child question')\nprint(a, b)\n```")
FINAL = "```repl\nanswer['content'] = {!r}\nanswer['ready'] = True\n```"


def by_kind(spans):
    out = {"run": [], "turn": [], "cell": [], "llm": [], "rlm": []}
    for s in spans:
        a = s.attributes
        if s.name == "invoke_agent rlm":
            out["run"].append(s)
        elif s.name == "execute_tool repl":
            out["cell"].append(s)
        elif "rlm.subcall.kind" in a:
            out[a["rlm.subcall.kind"]].append(s)
        else:
            out["turn"].append(s)
    return out


def parent_id(span):
    return span.parent.span_id if span.parent is not None else None


@pytest.fixture
def tree_run(memory):
    """A root run with one llm_query and one rlm_query (a child run), exact token counts."""
    provider, exporter = memory
    replies = [Reply(ROOT_TURN_1, prompt_tokens=100, completion_tokens=10),
               Reply("hi there", prompt_tokens=20, completion_tokens=2),
               Reply(FINAL.format("child answer"), prompt_tokens=50, completion_tokens=5),
               Reply(FINAL.format("done"), prompt_tokens=110, completion_tokens=11)]
    with OpenAICompatibleServer(replies=replies) as srv:
        rlm = RLM(backend="openai", backend_kwargs={"base_url": srv.base_url, "api_key": "k",
                                                    "model_name": "gpt-4o-mini"},
                  environment="local", max_depth=2, max_iterations=4,
                  sinks=[OTelSink(tracer_provider=provider)])
        try:
            result = rlm.completion("ROOT context", root_prompt="what?")
        finally:
            rlm.close()
    return result, exporter.get_finished_spans()


def test_one_span_per_run_turn_cell_and_subcall(tree_run):
    result, spans = tree_run
    assert result.response == "done"
    k = by_kind(spans)
    assert {name: len(v) for name, v in k.items()} == {"run": 2, "turn": 3, "cell": 3, "llm": 1, "rlm": 1}
    assert len({s.context.trace_id for s in spans}) == 1, "one trace for the whole tree"
    assert all(s.end_time >= s.start_time for s in spans)


def test_parent_links_follow_the_tree(tree_run):
    _, spans = tree_run
    k = by_kind(spans)
    root = next(s for s in k["run"] if s.attributes["rlm.depth"] == 0)
    child = next(s for s in k["run"] if s.attributes["rlm.depth"] == 1)
    assert root.parent is None
    root_turns = sorted((s for s in k["turn"] if parent_id(s) == root.context.span_id),
                        key=lambda s: s.attributes["rlm.iteration"])
    assert [t.attributes["rlm.iteration"] for t in root_turns] == [1, 2]
    (child_turn,) = [s for s in k["turn"] if parent_id(s) == child.context.span_id]
    # the sub-calls hang under the turn whose cell made them; the child run under its sub-call
    assert parent_id(k["llm"][0]) == root_turns[0].context.span_id
    assert parent_id(k["rlm"][0]) == root_turns[0].context.span_id
    assert parent_id(child) == k["rlm"][0].context.span_id
    assert child.attributes["rlm.parent_call_id"] == k["rlm"][0].attributes["rlm.call_id"]
    assert child.attributes["rlm.parent_run_id"] == root.attributes["rlm.run_id"]
    assert k["rlm"][0].start_time <= child.start_time and child.end_time <= k["rlm"][0].end_time
    cell_parents = sorted(parent_id(c) for c in k["cell"])
    assert cell_parents == sorted([root_turns[0].context.span_id, root_turns[1].context.span_id,
                                   child_turn.context.span_id])


def test_genai_attributes_and_token_usage(tree_run):
    result, spans = tree_run
    k = by_kind(spans)
    root = next(s for s in k["run"] if s.attributes["rlm.depth"] == 0)
    child = next(s for s in k["run"] if s.attributes["rlm.depth"] == 1)
    turn1 = next(s for s in k["turn"] if s.parent.span_id == root.context.span_id
                 and s.attributes["rlm.iteration"] == 1)
    assert root.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert root.attributes["gen_ai.agent.name"] == "rlm"
    assert root.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert root.attributes["gen_ai.response.model"] == "gpt-4o-mini"
    assert root.attributes["gen_ai.provider.name"] == "openai"
    assert turn1.attributes["gen_ai.operation.name"] == "chat"
    assert (turn1.attributes["gen_ai.usage.input_tokens"], turn1.attributes["gen_ai.usage.output_tokens"]) == (100, 10)
    llm = k["llm"][0]
    assert llm.attributes["gen_ai.operation.name"] == "chat"
    assert (llm.attributes["gen_ai.usage.input_tokens"], llm.attributes["gen_ai.usage.output_tokens"]) == (20, 2)
    assert (child.attributes["gen_ai.usage.input_tokens"], child.attributes["gen_ai.usage.output_tokens"]) == (50, 5)
    assert k["rlm"][0].attributes["gen_ai.operation.name"] == "invoke_agent"
    assert k["rlm"][0].attributes["gen_ai.usage.input_tokens"] == 50
    summary = result.usage_summary
    assert (summary.total_input_tokens, summary.total_output_tokens) == (280, 28)
    assert (root.attributes["gen_ai.usage.input_tokens"], root.attributes["gen_ai.usage.output_tokens"]) == (280, 28)
    assert root.attributes["rlm.usage.cost"] == pytest.approx(summary.total_cost)
    for cell in k["cell"]:
        assert cell.attributes["gen_ai.operation.name"] == "execute_tool"
        assert cell.attributes["gen_ai.tool.name"] == "repl"
    assert root.status.status_code is StatusCode.OK and child.status.status_code is StatusCode.OK
    assert root.attributes["rlm.status"] == "completed"


def test_content_is_not_recorded_unless_asked(tree_run):
    _, spans = tree_run
    assert not any(key in s.attributes for s in spans
                   for key in ("rlm.cell.code", "rlm.cell.stdout", "rlm.response", "rlm.root_prompt",
                               "rlm.prompt_preview"))


def test_capture_content_from_the_environment(memory, monkeypatch):
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    provider, exporter = memory
    reply = "```repl\nprint('cell output 1234')\nanswer['content'] = 'final 5678'\nanswer['ready'] = True\n```"
    rlm = RLM(backend="scripted", backend_kwargs={"replies": [reply]}, environment="local",
              sinks=[OTelSink(tracer_provider=provider, max_chars=5)])
    rlm.completion("ctx", root_prompt="the question")
    rlm.close()
    spans = exporter.get_finished_spans()
    cell = next(s for s in spans if s.name == "execute_tool repl")
    assert cell.attributes["rlm.cell.stdout"].startswith("cell ") and "more chars" in cell.attributes["rlm.cell.stdout"]
    run = next(s for s in spans if s.name == "invoke_agent rlm")
    assert run.attributes["rlm.root_prompt"].startswith("the q")
    assert run.attributes["rlm.response"].startswith("final")


def test_a_limit_is_an_error_status_and_failed_cells_are_errors(memory):
    provider, exporter = memory
    replies = ["```repl\n1/0\n```", "```repl\nx = 1\n```", "still no answer"]
    rlm = RLM(backend="scripted", backend_kwargs={"replies": replies}, environment="local",
              max_iterations=2, sinks=[OTelSink(tracer_provider=provider)])
    result = rlm.completion("ctx")
    rlm.close()
    assert result.status is RunStatus.MAX_ITERATIONS
    k = by_kind(exporter.get_finished_spans())
    (run,) = k["run"]
    assert run.status.status_code is StatusCode.ERROR
    assert run.attributes["error.type"] == "max_iterations" == run.attributes["rlm.status"]
    failed = [c for c in k["cell"] if c.status.status_code is StatusCode.ERROR]
    assert len(failed) == 1 and failed[0].attributes["error.type"] == "ZeroDivisionError"
    assert "division by zero" in failed[0].status.description
    assert any(c.status.status_code is StatusCode.UNSET for c in k["cell"])


def test_a_backend_failure_ends_every_open_span_with_an_error(memory):
    provider, exporter = memory
    with OpenAICompatibleServer(replies=["unused"]) as srv:
        srv.inject(Fault("status", status=401))
        rlm = RLM(backend="openai", backend_kwargs={"base_url": srv.base_url, "api_key": "k",
                                                    "model_name": "m", "max_retries": 0},
                  environment="local", sinks=[OTelSink(tracer_provider=provider)])
        with pytest.raises(AuthenticationError):
            rlm.completion("ctx")
        rlm.close()
    k = by_kind(exporter.get_finished_spans())
    (run,) = k["run"]
    assert run.status.status_code is StatusCode.ERROR and run.attributes["error.type"] == "error"
    assert "AuthenticationError" in run.status.description
    assert k["turn"] and all(t.status.status_code is StatusCode.ERROR for t in k["turn"])


def test_concurrent_children_link_to_their_own_subcall(memory):
    provider, exporter = memory

    def responder(messages):
        text = " ".join(str(m.get("content")) for m in messages)
        if not any(m.get("role") == "system" for m in messages):
            return "sub"
        if "ROOT" not in text:
            return FINAL.format("child")
        if any(m.get("role") == "assistant" for m in messages):
            return FINAL.format("root")
        return "```repl\nr = rlm_query_batched(['same prompt'] * 4)\nprint(r)\n```"

    rlm = RLM(backend="scripted", backend_kwargs={"responder": responder}, environment="local",
              max_depth=2, max_iterations=3, sinks=[OTelSink(tracer_provider=provider)])
    assert rlm.completion("ROOT ctx").response == "root"
    rlm.close()
    k = by_kind(exporter.get_finished_spans())
    children = [s for s in k["run"] if s.attributes["rlm.depth"] == 1]
    assert len(children) == 4 and len(k["rlm"]) == 4
    calls = {s.context.span_id: s.attributes["rlm.call_id"] for s in k["rlm"]}
    assert len(set(calls.values())) == 4
    for child in children:
        assert calls[parent_id(child)] == child.attributes["rlm.parent_call_id"]
    assert len({parent_id(c) for c in children}) == 4


def test_the_root_run_nests_under_the_callers_span(memory):
    provider, exporter = memory
    rlm = RLM(backend="scripted", backend_kwargs={"replies": [FINAL.format("x")]}, environment="local",
              sinks=[OTelSink(tracer_provider=provider)])
    with provider.get_tracer("app").start_as_current_span("handle request") as outer:
        rlm.completion("ctx")
    rlm.close()
    run = next(s for s in exporter.get_finished_spans() if s.name == "invoke_agent rlm")
    assert run.parent.span_id == outer.get_span_context().span_id


@settings(max_examples=40, deadline=None)
@given(status=st.sampled_from([s.value for s in RunStatus] + ["ok", "limit", "weird"]),
       error=st.none() | st.text(max_size=40))
def test_run_status_maps_to_span_status(status, error):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    sink = OTelSink(tracer_provider=provider)
    sink.handle(E.RunStarted(run_id="r1", root_model="m", backend="gemini", environment="local",
                             settings={}, context_type="str", context_lengths=[3]))
    sink.handle(E.IterationStarted(run_id="r1", iteration=1))
    sink.handle(E.RunFinished(run_id="r1", response=None, execution_time=0.1, usage_summary={},
                              status=status, error=error))
    sink.close()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    run, turn = spans["invoke_agent rlm"], spans["chat m"]
    parsed = RunStatus.parse(status)
    assert run.attributes["rlm.status"] == parsed.value
    assert run.attributes["gen_ai.provider.name"] == "gcp.gemini"
    if parsed is RunStatus.COMPLETED:
        assert run.status.status_code is StatusCode.OK and "error.type" not in run.attributes
        assert turn.status.status_code is StatusCode.UNSET
    else:
        assert run.status.status_code is StatusCode.ERROR
        assert run.attributes["error.type"] == parsed.value
        assert turn.status.status_code is StatusCode.ERROR  # left open by the failed run
    provider.shutdown()


def test_attribute_names_are_the_semantic_conventions():
    from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as g

    for name, value in ATTRIBUTES.items():
        assert getattr(g, name) == value


def test_without_a_provider_it_warns_once_and_never_raises(caplog):
    with caplog.at_level(logging.WARNING, logger="rlm_otel"):
        sink = OTelSink()
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in caplog.text and "set_tracer_provider" in caplog.text
    sink.handle(E.RunStarted(run_id="r", root_model="m", backend="b", environment="local",
                             settings={}, context_type="str", context_lengths=[]))
    sink.handle(E.RunFinished(run_id="r", response="x", execution_time=0.0, usage_summary={},
                              status="completed"))
    sink.close()
    sink.close()


def test_unknown_protocol_is_refused_with_the_fix(monkeypatch):
    from rlm.exceptions import ConfigurationError

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon")
    with pytest.raises(ConfigurationError, match="http/protobuf"):
        OTelSink()
