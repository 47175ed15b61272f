"""The statuses a run has in the store (one list, used by the queries, the CLI and the viewer).

A finished run's status is a :class:`rlm.types.RunStatus` value. ``running`` while it goes,
``interrupted`` when its process died mid-run, ``imported`` for a JSONL log with no result record.
Logs written before RunStatus existed said ``ok``, which reads as ``completed``.
"""

from __future__ import annotations

from rlm.types import RunStatus

STATUSES = ("running", *(s.value for s in RunStatus), "interrupted", "imported")
