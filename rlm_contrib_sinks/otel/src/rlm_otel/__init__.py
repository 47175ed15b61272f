"""rlm-otel: the ``otel`` logger sink (OpenTelemetry traces of RLM runs)."""

__version__ = "0.1.0"
