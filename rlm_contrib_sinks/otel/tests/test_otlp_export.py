"""RLM(sinks=["otel"]) enabled by the standard OTEL_* variables: the real OTLP/HTTP exporter sends
the run tree to a real OTLP receiver on 127.0.0.1, which decodes the protobuf requests."""

from __future__ import annotations

import pytest

from rlm import RLM
from rlm_testkit.servers import OpenAICompatibleServer, Reply

from _otlp_receiver import OTLPReceiver

ROOT_TURN_1 = "```repl\na = llm_query('say hi')\nb = rlm_query('child question')\nprint(a, b)\n```"
FINAL = "```repl\nanswer['content'] = {!r}\nanswer['ready'] = True\n```"


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_the_run_tree_reaches_an_otlp_receiver(monkeypatch, compression):
    replies = [Reply(ROOT_TURN_1, prompt_tokens=100, completion_tokens=10),
               Reply("hi there", prompt_tokens=20, completion_tokens=2),
               Reply(FINAL.format("child answer"), prompt_tokens=50, completion_tokens=5),
               Reply(FINAL.format("done"), prompt_tokens=110, completion_tokens=11)]
    with OTLPReceiver() as receiver, OpenAICompatibleServer(replies=replies) as srv:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", compression)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "rlm-otlp-test")
        rlm = RLM(backend="openai", backend_kwargs={"base_url": srv.base_url, "api_key": "k",
                                                    "model_name": "gpt-4o-mini"},
                  environment="local", max_depth=2, max_iterations=4, sinks=["otel"])
        result = rlm.completion("ROOT context")
        rlm.close()  # flushes the batch and shuts the sink's own provider down
        spans = receiver.spans()
    assert result.response == "done"
    assert receiver.encodings and set(receiver.encodings) == {"gzip" if compression == "gzip" else "identity"}
    assert len(spans) == 10  # 2 runs, 3 turns, 3 cells, 2 sub-calls
    assert {s["resource"]["service.name"] for s in spans} == {"rlm-otlp-test"}
    assert {s["scope"] for s in spans} == {"rlm_otel"}
    assert len({s["trace_id"] for s in spans}) == 1
    by_id = {s["span_id"]: s for s in spans}
    runs = [s for s in spans if s["name"] == "invoke_agent rlm"]
    root = next(s for s in runs if s["attributes"]["rlm.depth"] == 0)
    child = next(s for s in runs if s["attributes"]["rlm.depth"] == 1)
    assert root["parent_id"] is None
    spawner = by_id[child["parent_id"]]
    assert spawner["attributes"]["rlm.subcall.kind"] == "rlm"
    assert spawner["attributes"]["rlm.call_id"] == child["attributes"]["rlm.parent_call_id"]
    assert by_id[spawner["parent_id"]]["attributes"]["rlm.iteration"] == 1
    assert by_id[spawner["parent_id"]]["parent_id"] == root["span_id"]
    assert root["attributes"]["gen_ai.operation.name"] == "invoke_agent"
    assert root["attributes"]["gen_ai.request.model"] == "gpt-4o-mini"
    assert (root["attributes"]["gen_ai.usage.input_tokens"],
            root["attributes"]["gen_ai.usage.output_tokens"]) == (280, 28)
    assert root["status"] == 1  # STATUS_CODE_OK
    llm = next(s for s in spans if s["attributes"].get("rlm.subcall.kind") == "llm")
    assert (llm["attributes"]["gen_ai.usage.input_tokens"],
            llm["attributes"]["gen_ai.response.model"]) == (20, "gpt-4o-mini")
    cells = [s for s in spans if s["name"] == "execute_tool repl"]
    assert len(cells) == 3 and all(by_id[c["parent_id"]]["attributes"]["gen_ai.operation.name"] == "chat"
                                   for c in cells)
