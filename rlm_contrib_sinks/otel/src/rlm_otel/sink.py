"""The ``otel`` sink: the events of an RLM run tree as OpenTelemetry spans.

``RLM(sinks=["otel"])`` (or ``sinks=[OTelSink(tracer_provider=...)]``) turns every run into a
trace, with the attributes of the OpenTelemetry GenAI semantic conventions:

==========================  ==============================  =====================================
span                        ``gen_ai.operation.name``       parent
==========================  ==============================  =====================================
``invoke_agent rlm``        ``invoke_agent`` (a run)        the sub-call that started it (child
                                                            runs), else the caller's current span
``chat {root model}``       ``chat`` (a turn)               its run
``execute_tool repl``       ``execute_tool`` (a cell)       its turn
``chat {model}``            ``chat`` (``llm_query``)        the turn whose cell made the call
``invoke_agent {model}``    ``invoke_agent``                the turn whose cell made the call
                            (``rlm_query``)
==========================  ==============================  =====================================

Every span carries ``gen_ai.request.model`` and, once known, ``gen_ai.response.model`` and
``gen_ai.usage.input_tokens`` / ``gen_ai.usage.output_tokens`` (a turn: its root-model call; a
sub-call: what it used, its child run's tree for ``rlm_query``; a run: the whole tree below it),
``gen_ai.provider.name`` (the backend), and ``rlm.*`` attributes (run id, depth, iteration,
call id, cost in USD, ...). A run's status comes from ``RunFinished.status``
(:class:`rlm.types.RunStatus`): ``completed`` is span status OK, any other status (a limit,
``cancelled``, ``error``) is ERROR with ``error.type`` set to the status. A cell that raised or
timed out, and a sub-call that failed, are ERROR too. Limits and compactions are span events on
the run. Prompts, code, outputs and answers are recorded only with ``capture_content=True`` (or
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``), cut at ``max_chars``.

Where spans go: ``tracer_provider`` when given; else the global one
(``opentelemetry.trace.set_tracer_provider``, or ``opentelemetry-instrument``); else, when an
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) is set, a provider of the sink's own
with a batching OTLP exporter configured by the standard ``OTEL_*`` variables. Without any of
these spans are dropped and one warning says how to enable them.

Lifecycle and threading: one sink serves every run of an ``RLM`` (child runs included, from any
thread); ``handle`` takes a lock around its bookkeeping, never raises and never blocks on export.
Span times are the events' timestamps. ``close()`` (``RLM.close()``) ends spans still open,
flushes, and shuts down a provider the sink made itself; it is idempotent.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from rlm import events as E
from rlm.types import RunStatus

from . import __version__

__all__ = ["ATTRIBUTES", "OTelSink"]

log = logging.getLogger("rlm_otel")

# GenAI semantic-convention attribute names (opentelemetry-semantic-conventions, gen_ai.*);
# tests/test_otel_sink.py checks them against the semconv package.
OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
AGENT_NAME = "gen_ai.agent.name"
AGENT_ID = "gen_ai.agent.id"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
TOOL_NAME = "gen_ai.tool.name"
ERROR_TYPE = "error.type"
ATTRIBUTES = {"GEN_AI_OPERATION_NAME": OPERATION, "GEN_AI_PROVIDER_NAME": PROVIDER,
              "GEN_AI_AGENT_NAME": AGENT_NAME, "GEN_AI_AGENT_ID": AGENT_ID,
              "GEN_AI_REQUEST_MODEL": REQUEST_MODEL, "GEN_AI_RESPONSE_MODEL": RESPONSE_MODEL,
              "GEN_AI_USAGE_INPUT_TOKENS": INPUT_TOKENS, "GEN_AI_USAGE_OUTPUT_TOKENS": OUTPUT_TOKENS,
              "GEN_AI_TOOL_NAME": TOOL_NAME}
"""The semconv constant name of each attribute the sink sets."""

# gen_ai.provider.name well-known values for rlm's backend names; others pass through.
_PROVIDERS = {"openai": "openai", "azure_openai": "azure.ai.openai", "anthropic": "anthropic",
              "gemini": "gcp.gemini", "openrouter": "openrouter", "vllm": "vllm",
              "litellm": "litellm", "portkey": "portkey"}
_CAPTURE_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
_ERROR_NAME = re.compile(r"\b([A-Z][A-Za-z0-9_]*(?:Error|Exception|Exit|Interrupt|Timeout))\b")


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


def _clip(text: Any, n: int) -> str:
    text = text if isinstance(text, str) else str(text)
    return text if len(text) <= n else text[:n] + f"... [{len(text) - n:,} more chars]"


@dataclass
class _Run:
    span: Span
    model: str
    provider: str
    turn: Span | None = None
    calls: dict[str, Span] = field(default_factory=dict)  # open sub-calls by call id
    anonymous: dict[tuple[str, str], deque[str]] = field(default_factory=dict)  # calls without ids
    seq: int = 0


class OTelSink:
    """Args:
        tracer_provider: where spans go (default: the global provider, else one made from the
            ``OTEL_EXPORTER_OTLP_*`` variables).
        capture_content: record prompts, code, outputs and answers (default: the
            ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` variable, else off).
        max_chars: longest text recorded in one attribute.
        service_name: ``service.name`` of a provider the sink makes itself (default
            ``$OTEL_SERVICE_NAME``, else ``rlm``).
    """

    def __init__(self, tracer_provider: Any = None, *, capture_content: bool | None = None,
                 max_chars: int = 4000, service_name: str | None = None):
        if capture_content is None:
            capture_content = os.environ.get(_CAPTURE_ENV, "").strip().lower() in ("1", "true", "yes")
        self.capture_content = bool(capture_content)
        self.max_chars = int(max_chars)
        self._owned: Any = None
        if tracer_provider is None:
            tracer_provider = self._default_provider(service_name)
        self.tracer_provider = tracer_provider
        self._tracer = tracer_provider.get_tracer("rlm_otel", __version__)
        self._lock = threading.Lock()
        self._runs: dict[str, _Run] = {}
        self._call_spans: dict[tuple[str, str], Span] = {}  # (run id, call id) -> sub-call span
        self._closed = False

    # -- where spans go ---------------------------------------------------------------------
    def _default_provider(self, service_name: str | None) -> Any:
        from opentelemetry.sdk.trace import TracerProvider

        current = trace.get_tracer_provider()
        if isinstance(current, TracerProvider):
            return current
        if os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            self._owned = _provider_from_env(service_name)
            return self._owned
        log.warning("rlm_otel: no OpenTelemetry tracer provider is configured, so the otel sink's "
                    "spans are dropped until one is. Set OTEL_EXPORTER_OTLP_ENDPOINT (e.g. "
                    "http://127.0.0.1:4318) to export over OTLP/HTTP, call "
                    "opentelemetry.trace.set_tracer_provider(...), or pass "
                    "sinks=[OTelSink(tracer_provider=...)].")
        return current  # the global proxy: spans flow once the application sets a provider

    # -- the LoggerSink protocol --------------------------------------------------------------
    def handle(self, event: E.Event) -> None:
        try:
            with self._lock:
                if not self._closed:
                    self._handle(event)
        except Exception as exc:  # a sink never breaks a run
            log.debug("rlm_otel: %s while handling %s", exc, type(event).__name__, exc_info=True)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for run in list(self._runs.values()):
                self._end_open(run, "the sink was closed before the run finished", None)
                run.span.set_status(Status(StatusCode.ERROR, "the sink was closed before the run finished"))
                run.span.end()
            self._runs.clear()
            self._call_spans.clear()
        flush = getattr(self.tracer_provider, "force_flush", None)
        if callable(flush):
            try:
                flush()
            except Exception:  # noqa: BLE001
                pass
        if self._owned is not None:
            try:
                self._owned.shutdown()
            except Exception:  # noqa: BLE001
                pass

    # -- events ----------------------------------------------------------------------------
    def _handle(self, event: E.Event) -> None:
        if isinstance(event, E.RunStarted):
            self._run_started(event)
            return
        run = self._runs.get(event.run_id) or self._adopt(event)
        ts = _ns(event.timestamp)
        if isinstance(event, E.IterationStarted):
            if run.turn is not None:
                run.turn.end(end_time=ts)
            run.turn = self._tracer.start_span(
                f"chat {run.model}", context=trace.set_span_in_context(run.span), kind=SpanKind.CLIENT,
                start_time=ts, attributes={OPERATION: "chat", REQUEST_MODEL: run.model,
                                           PROVIDER: run.provider, "rlm.run_id": event.run_id,
                                           "rlm.iteration": event.iteration})
        elif isinstance(event, E.IterationCompleted):
            turn = run.turn or self._tracer.start_span(
                f"chat {run.model}", context=trace.set_span_in_context(run.span), kind=SpanKind.CLIENT,
                start_time=ts - _ns(event.iteration_time),
                attributes={OPERATION: "chat", REQUEST_MODEL: run.model, PROVIDER: run.provider,
                            "rlm.run_id": event.run_id, "rlm.iteration": event.iteration})
            usage = event.usage or {}
            turn.set_attributes({RESPONSE_MODEL: str(usage.get("model") or run.model),
                                 "rlm.cells": len(event.code_blocks),
                                 "rlm.final_answer": event.final_answer is not None})
            self._usage(turn, usage.get("input_tokens"), usage.get("output_tokens"), usage.get("cost"))
            if self.capture_content:
                turn.set_attribute("rlm.response", _clip(event.response, self.max_chars))
            turn.end(end_time=ts)
            run.turn = None
        elif isinstance(event, E.CellExecuted):
            self._cell(run, event, ts)
        elif isinstance(event, E.SubcallStarted):
            self._subcall_started(run, event, ts)
        elif isinstance(event, E.SubcallCompleted):
            self._subcall_completed(run, event, ts)
        elif isinstance(event, E.Compacted):
            run.span.add_event("rlm.compacted", timestamp=ts, attributes={
                "rlm.strategy": event.strategy, "rlm.messages_before": event.messages_before,
                "rlm.messages_after": event.messages_after, "rlm.tokens_before": event.tokens_before,
                "rlm.tokens_after": event.tokens_after})
        elif isinstance(event, E.LimitExceeded):
            attrs = {"rlm.error_type": event.error_type, "rlm.message": _clip(event.message, self.max_chars)}
            if self.capture_content and event.partial_answer is not None:
                attrs["rlm.partial_answer"] = _clip(event.partial_answer, self.max_chars)
            run.span.add_event("rlm.limit_exceeded", timestamp=ts, attributes=attrs)
        elif isinstance(event, E.RunFinished):
            self._run_finished(run, event, ts)

    def _run_started(self, event: E.RunStarted) -> None:
        parent_ctx = None
        if event.parent_run_id is not None:
            call = self._call_spans.get((event.parent_run_id, event.parent_call_id or ""))
            parent_run = self._runs.get(event.parent_run_id)
            if call is not None:
                parent_ctx = trace.set_span_in_context(call)
            elif parent_run is not None:
                parent_ctx = trace.set_span_in_context(parent_run.turn or parent_run.span)
        if parent_ctx is None:
            parent_ctx = otel_context.get_current()  # the caller's span, if any, holds the root run
        provider = _PROVIDERS.get(event.backend, event.backend)
        attrs: dict[str, Any] = {
            OPERATION: "invoke_agent", AGENT_NAME: "rlm", AGENT_ID: event.run_id,
            REQUEST_MODEL: event.root_model, PROVIDER: provider, "rlm.run_id": event.run_id,
            "rlm.depth": event.depth, "rlm.backend": event.backend,
            "rlm.environment": event.environment, "rlm.context_type": event.context_type,
            "rlm.context_chars": sum(event.context_lengths)}
        if event.parent_run_id is not None:
            attrs["rlm.parent_run_id"] = event.parent_run_id
        if event.parent_call_id is not None:
            attrs["rlm.parent_call_id"] = event.parent_call_id
        for key in ("max_iterations", "max_depth", "max_budget", "max_timeout", "max_tokens"):
            value = (event.settings or {}).get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                attrs[f"rlm.{key}"] = value
        if self.capture_content and event.root_prompt is not None:
            attrs["rlm.root_prompt"] = _clip(event.root_prompt, self.max_chars)
        span = self._tracer.start_span("invoke_agent rlm", context=parent_ctx, kind=SpanKind.INTERNAL,
                                       start_time=_ns(event.timestamp), attributes=attrs)
        old = self._runs.pop(event.run_id, None)
        if old is not None:  # a run id seen twice: end the first one
            self._end_open(old, "superseded", _ns(event.timestamp))
            old.span.end(end_time=_ns(event.timestamp))
        self._runs[event.run_id] = _Run(span, event.root_model, provider)

    def _adopt(self, event: E.Event) -> _Run:
        """A run whose RunStarted this sink never saw (it was added mid-run)."""
        span = self._tracer.start_span("invoke_agent rlm", start_time=_ns(event.timestamp),
                                       attributes={OPERATION: "invoke_agent", AGENT_NAME: "rlm",
                                                   "rlm.run_id": event.run_id,
                                                   "rlm.depth": event.depth})
        run = self._runs[event.run_id] = _Run(span, "unknown", "unknown")
        return run

    def _cell(self, run: _Run, event: E.CellExecuted, ts: int) -> None:
        res = event.result or {}
        took = res.get("execution_time")
        took = float(took) if isinstance(took, (int, float)) and not isinstance(took, bool) else 0.0
        attrs: dict[str, Any] = {OPERATION: "execute_tool", TOOL_NAME: "repl",
                                 "rlm.run_id": event.run_id, "rlm.iteration": event.iteration,
                                 "rlm.cell.execution_time": took,
                                 "rlm.cell.subcalls": len(res.get("rlm_calls") or []),
                                 "rlm.cell.timed_out": bool(res.get("timed_out"))}
        if self.capture_content:
            attrs["rlm.cell.code"] = _clip(event.code, self.max_chars)
            attrs["rlm.cell.stdout"] = _clip(res.get("stdout") or "", self.max_chars)
        span = self._tracer.start_span("execute_tool repl",
                                       context=trace.set_span_in_context(run.turn or run.span),
                                       kind=SpanKind.INTERNAL, start_time=ts - _ns(took),
                                       attributes=attrs)
        error = res.get("error")
        if error or res.get("timed_out"):
            text = str(error or "the cell timed out")
            match = _ERROR_NAME.search(text)
            span.set_attribute(ERROR_TYPE, "timeout" if res.get("timed_out") and not error
                               else match.group(1) if match else "error")
            span.set_status(Status(StatusCode.ERROR, _clip(text.strip().splitlines()[-1] if text.strip()
                                                           else text, 300)))
        span.end(end_time=ts)

    def _call_key(self, run: _Run, kind: str, model: str, call_id: str | None, start: bool) -> str:
        if call_id:
            return call_id
        queue = run.anonymous.setdefault((kind, model), deque())
        if start:
            run.seq += 1
            queue.append(f"anon-{run.seq}")
            return queue[-1]
        return queue.popleft() if queue else ""

    def _subcall_started(self, run: _Run, event: E.SubcallStarted, ts: int) -> None:
        op = "invoke_agent" if event.kind == "rlm" else "chat"
        key = self._call_key(run, event.kind, event.model, event.call_id, True)
        attrs: dict[str, Any] = {OPERATION: op, REQUEST_MODEL: event.model, PROVIDER: run.provider,
                                 "rlm.run_id": event.run_id, "rlm.subcall.kind": event.kind}
        if event.call_id:
            attrs["rlm.call_id"] = event.call_id
        if self.capture_content:
            attrs["rlm.prompt_preview"] = _clip(event.prompt_preview, self.max_chars)
        span = self._tracer.start_span(f"{op} {event.model}",
                                       context=trace.set_span_in_context(run.turn or run.span),
                                       kind=SpanKind.CLIENT if op == "chat" else SpanKind.INTERNAL,
                                       start_time=ts, attributes=attrs)
        run.calls[key] = span
        self._call_spans[(event.run_id, key)] = span

    def _subcall_completed(self, run: _Run, event: E.SubcallCompleted, ts: int) -> None:
        key = self._call_key(run, event.kind, event.model, event.call_id, False)
        span = run.calls.pop(key, None)
        if span is None:  # no SubcallStarted seen: a span of the call's duration
            op = "invoke_agent" if event.kind == "rlm" else "chat"
            span = self._tracer.start_span(
                f"{op} {event.model}", context=trace.set_span_in_context(run.turn or run.span),
                start_time=ts - _ns(event.duration),
                attributes={OPERATION: op, REQUEST_MODEL: event.model, PROVIDER: run.provider,
                            "rlm.run_id": event.run_id, "rlm.subcall.kind": event.kind})
        span.set_attribute(RESPONSE_MODEL, event.model)
        span.set_attribute("rlm.duration", float(event.duration))
        self._usage(span, event.input_tokens, event.output_tokens, event.cost)
        if event.error:
            match = _ERROR_NAME.search(event.error)
            span.set_attribute(ERROR_TYPE, match.group(1) if match else "error")
            span.set_status(Status(StatusCode.ERROR, _clip(event.error, 300)))
        span.end(end_time=ts)

    def _run_finished(self, run: _Run, event: E.RunFinished, ts: int) -> None:
        status = RunStatus.parse(event.status)
        summary = event.usage_summary or {}
        span = run.span
        self._usage(span, summary.get("total_input_tokens"), summary.get("total_output_tokens"),
                    summary.get("total_cost"))
        models = summary.get("model_usage_summaries")
        span.set_attribute(RESPONSE_MODEL, run.model if not isinstance(models, dict) or not models
                           or run.model in models else next(iter(models)))
        span.set_attributes({"rlm.status": status.value, "rlm.execution_time": float(event.execution_time),
                             "rlm.total_calls": int(summary.get("total_calls") or 0)})
        source = getattr(event, "answer_source", None)
        if source:
            span.set_attribute("rlm.answer_source", str(source))
        if self.capture_content and event.response is not None:
            span.set_attribute("rlm.response", _clip(event.response, self.max_chars))
        if status.is_success:
            span.set_status(Status(StatusCode.OK))
            self._end_open(run, None, ts)
        else:
            span.set_attribute(ERROR_TYPE, status.value)
            description = status.value + (f": {event.error}" if event.error else "")
            span.set_status(Status(StatusCode.ERROR, _clip(description, 500)))
            self._end_open(run, f"the run ended ({status.value})", ts)
        span.end(end_time=ts)
        self._runs.pop(event.run_id, None)
        for key in [k for k in self._call_spans if k[0] == event.run_id]:
            del self._call_spans[key]

    # -- helpers ---------------------------------------------------------------------------
    def _end_open(self, run: _Run, reason: str | None, ts: int | None) -> None:
        """End a run's turn and sub-calls still open (a limit or an error ended the run)."""
        for span in [run.turn, *run.calls.values()]:
            if span is None:
                continue
            if reason:
                span.set_status(Status(StatusCode.ERROR, reason))
            span.end(end_time=ts)
        run.turn = None
        run.calls.clear()

    @staticmethod
    def _usage(span: Span, input_tokens: Any, output_tokens: Any, cost: Any) -> None:
        for name, value in ((INPUT_TOKENS, input_tokens), (OUTPUT_TOKENS, output_tokens)):
            if isinstance(value, int) and not isinstance(value, bool):
                span.set_attribute(name, value)
        if isinstance(cost, (int, float)) and not isinstance(cost, bool):
            span.set_attribute("rlm.usage.cost", float(cost))


def _provider_from_env(service_name: str | None) -> Any:
    """A TracerProvider with a batching OTLP exporter, configured by the ``OTEL_*`` variables."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    protocol = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf").strip().lower()
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        except ImportError:
            from rlm.exceptions import ConfigurationError

            raise ConfigurationError(
                "rlm_otel: OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs the gRPC exporter: pip install "
                "opentelemetry-exporter-otlp-proto-grpc (or use http/protobuf, the default).") from None
    elif protocol in ("http/protobuf", "http"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    else:
        from rlm.exceptions import ConfigurationError

        raise ConfigurationError(f"rlm_otel: OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported; "
                                 "use http/protobuf (the default) or grpc.")
    attrs = {"service.name": service_name or os.environ.get("OTEL_SERVICE_NAME") or "rlm"}
    provider = TracerProvider(resource=Resource.create(attrs))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider
