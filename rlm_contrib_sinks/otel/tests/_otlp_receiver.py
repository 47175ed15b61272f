"""A small real OTLP/HTTP trace receiver on 127.0.0.1 for the tests.

``POST /v1/traces`` with ``Content-Type: application/x-protobuf`` (optionally gzip-encoded) is
decoded as an ``ExportTraceServiceRequest`` with opentelemetry-proto and answered with an
``ExportTraceServiceResponse``, as a collector does. Every decoded request is kept in
``requests``; ``spans()`` flattens them with their resource attributes.
"""

from __future__ import annotations

import gzip
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (ExportTraceServiceRequest,
                                                                      ExportTraceServiceResponse)


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def attributes(items: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in items}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        owner: OTLPReceiver = self.server.owner  # type: ignore[attr-defined]
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path != "/v1/traces":
            self._answer(404, b"not found", "text/plain")
            return
        if self.headers.get("Content-Type") != "application/x-protobuf":
            self._answer(415, b"only application/x-protobuf", "text/plain")
            return
        encoding = (self.headers.get("Content-Encoding") or "").lower()
        if encoding == "gzip":
            raw = gzip.decompress(raw)
        elif encoding == "deflate":
            raw = zlib.decompress(raw)
        request = ExportTraceServiceRequest()
        request.ParseFromString(raw)
        with owner.lock:
            owner.requests.append(request)
            owner.encodings.append(encoding or "identity")
        self._answer(200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf")

    def _answer(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class OTLPReceiver:
    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.encodings: list[str] = []
        self.lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.owner = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> OTLPReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    def spans(self) -> list[dict[str, Any]]:
        out = []
        with self.lock:
            requests = list(self.requests)
        for request in requests:
            for rs in request.resource_spans:
                resource = attributes(rs.resource.attributes)
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        out.append({"name": span.name, "trace_id": span.trace_id.hex(),
                                    "span_id": span.span_id.hex(),
                                    "parent_id": span.parent_span_id.hex() or None,
                                    "attributes": attributes(span.attributes),
                                    "status": span.status.code, "status_message": span.status.message,
                                    "start": span.start_time_unix_nano, "end": span.end_time_unix_nano,
                                    "events": [e.name for e in span.events],
                                    "scope": ss.scope.name, "resource": resource})
        return out
