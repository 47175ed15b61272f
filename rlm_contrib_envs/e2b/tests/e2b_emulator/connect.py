"""The parts of the Connect RPC protocol (connectrpc.com/docs/protocol) the E2B SDK speaks to envd.

The SDK uses the JSON codec without compression: unary calls are a plain JSON body
(``application/json``) answered with a JSON body or a JSON error and an HTTP status; server
streams (``application/connect+json``) are *enveloped* messages (1 flag byte, 4-byte big-endian
length, JSON), ended by an envelope with flag ``0x02`` carrying ``{}`` or ``{"error": ...}``.
"""

from __future__ import annotations

import json
import struct
from typing import Any

END_STREAM = 0x02

#: Connect error codes and the HTTP status a unary error goes out with.
HTTP_STATUS = {"canceled": 499, "unknown": 500, "invalid_argument": 400,
               "deadline_exceeded": 504, "not_found": 404, "already_exists": 409,
               "permission_denied": 403, "resource_exhausted": 429, "failed_precondition": 400,
               "aborted": 409, "out_of_range": 400, "unimplemented": 501, "internal": 500,
               "unavailable": 503, "data_loss": 500, "unauthenticated": 401}


class RPCError(Exception):
    """An error answered in the Connect format (``code`` is one of :data:`HTTP_STATUS`)."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        assert code in HTTP_STATUS, code
        self.code = code
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}


def envelope(payload: bytes, flags: int = 0) -> bytes:
    return struct.pack(">BI", flags, len(payload)) + payload


def end_stream(error: RPCError | None = None) -> bytes:
    body = {"error": error.body()} if error is not None else {}
    return envelope(json.dumps(body).encode(), END_STREAM)


def read_envelopes(data: bytes) -> list[tuple[int, bytes]]:
    """Split a request body into ``(flags, payload)`` envelopes; a cut envelope is an error."""
    out = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < 5:
            raise RPCError("invalid_argument", "truncated envelope header")
        flags, size = struct.unpack(">BI", data[pos:pos + 5])
        pos += 5
        if len(data) - pos < size:
            raise RPCError("invalid_argument", "truncated envelope")
        out.append((flags, data[pos:pos + size]))
        pos += size
    return out
