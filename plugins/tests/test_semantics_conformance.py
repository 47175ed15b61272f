"""The plugins added for full RLM semantics pass the conformance kit (rlm-testkit): the ``recent``
compaction strategy and the ``jsonl`` and ``structlog`` logger sinks."""

from __future__ import annotations

import io
import json
from typing import Any

import structlog

from rlm_testkit import CompactionStrategyTests, LoggerSinkTests


class TestRecentTurnsCompaction(CompactionStrategyTests):
    plugin = "rlm_plugins.compaction.plugin"
    strategy_name = "recent"
    strategy_kwargs = {"keep_turns": 2}


class TestJSONLSink(LoggerSinkTests):
    plugin = "rlm_plugins.sinks.plugin"
    sink_name = "jsonl"
    capabilities = {"output": True}

    def make_sink(self, sink_pm: Any, tmp_path: Any) -> Any:
        from rlm_plugins.sinks.jsonl import JSONLSink

        return JSONLSink(path=tmp_path / "events.jsonl")

    def sink_output(self, sink: Any) -> str:
        with open(sink.path, encoding="utf-8") as fh:
            return "\n".join(json.dumps(json.loads(line)) for line in fh)


class TestStructlogSink(LoggerSinkTests):
    plugin = "rlm_plugins.sinks.plugin"
    sink_name = "structlog"
    capabilities = {"output": True}

    def make_sink(self, sink_pm: Any, tmp_path: Any) -> Any:
        from rlm_plugins.sinks.structlog_sink import StructlogSink

        self._buf = io.StringIO()
        logger = structlog.wrap_logger(structlog.PrintLogger(self._buf),
                                       processors=[structlog.processors.JSONRenderer()])
        return StructlogSink(logger=logger)

    def sink_output(self, sink: Any) -> str:
        return self._buf.getvalue()
