"""The otel sink passes the logger-sink conformance kit (rlm-testkit), with its spans read back
from the SDK's in-memory exporter."""

from __future__ import annotations

import json

from rlm_testkit import LoggerSinkTests


class TestOTelSinkKit(LoggerSinkTests):
    plugin = "rlm_otel.plugin"
    sink_name = "otel"
    capabilities = {"output": True}

    def make_sink(self, sink_pm, tmp_path):
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        from rlm_otel.sink import OTelSink

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        sink = OTelSink(tracer_provider=provider, capture_content=True)
        sink.exporter = exporter
        return sink

    def sink_output(self, sink):
        return "\n".join(json.dumps({"name": s.name, **dict(s.attributes)}, default=str)
                         for s in sink.exporter.get_finished_spans())
