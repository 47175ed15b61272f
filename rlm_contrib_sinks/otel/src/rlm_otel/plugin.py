"""Registers the ``otel`` logger sink. Cheap to import: OpenTelemetry loads when a run uses it."""

from __future__ import annotations

from rlm.plugin import hookimpl


@hookimpl
def rlm_register_logger_sinks(registrar):
    registrar.add("otel", "rlm_otel.sink:OTelSink",
                  description="OpenTelemetry spans per run, turn, cell and sub-call (GenAI semantic "
                              "conventions); the global tracer provider or OTEL_EXPORTER_OTLP_*.")
