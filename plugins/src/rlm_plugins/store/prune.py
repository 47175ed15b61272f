"""Pruning the trajectory store: ``rlm logs prune`` and the size cap.

A run is removed with its whole tree (child runs, iterations, cells, sub-calls, usage, notes),
oldest first. A run still being written (its process alive) is never removed. After deleting,
the file is compacted (``VACUUM``) so it really shrinks.

The size cap: ``logs_max_mb`` in ``config.toml`` (or ``$RLM_LOGS_MAX_MB``; default
:data:`DEFAULT_MAX_MB`, ``0`` turns it off). The ``store`` sink enforces it when it closes after recording a run
(``rlm run``, ``rlm batch``, ``RLM(sinks=["store"])``), removing the oldest runs until the
database is under the cap, and says so on stderr.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from rlm.exceptions import ConfigurationError

from .db import Database, pid_alive

DEFAULT_MAX_MB = 1024.0
_TABLES = ("iterations", "cells", "subcalls", "usage", "notes")
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(b|kb|k|mb|m|gb|g)?", re.IGNORECASE)
_UNITS = {"b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9}


@dataclass
class PruneReport:
    runs: int  # root runs removed (with their children)
    bytes_before: int
    bytes_after: int


def parse_size(text: str) -> int:
    """``500MB``, ``2GB``, ``100k``, ``12345`` (bytes) -> bytes."""
    m = _SIZE.fullmatch(text.strip())
    if not m:
        raise ConfigurationError(f"cannot read the size {text!r}: use e.g. 500MB, 2GB or 100kB.")
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "b").lower()])


def used_bytes(db: Database) -> int:
    """Bytes of the database in use (pages not on the free list), the file size after VACUUM."""
    page_size = db.query("PRAGMA page_size")[0][0]
    pages = db.query("PRAGMA page_count")[0][0]
    free = db.query("PRAGMA freelist_count")[0][0]
    return (pages - free) * page_size


def file_bytes(db: Database) -> int:
    total = 0
    for suffix in ("", "-wal"):
        try:
            total += os.path.getsize(db.path + suffix)
        except OSError:
            pass
    return total


def _roots_oldest_first(db: Database) -> list[str]:
    rows = db.query("SELECT id, status, pid FROM runs WHERE parent_id IS NULL "
                    "ORDER BY started_at ASC")
    return [r["id"] for r in rows if not ((r["status"] or "running") == "running"
                                          and pid_alive(r["pid"]))]


def _delete_roots(db: Database, roots: list[str]) -> None:
    for start in range(0, len(roots), 200):
        chunk = roots[start:start + 200]
        marks = ",".join("?" * len(chunk))
        with db.transaction() as c:
            ids = [r[0] for r in c.execute(f"SELECT id FROM runs WHERE root_id IN ({marks})", chunk)]
            for s in range(0, len(ids), 500):
                part = ids[s:s + 500]
                m = ",".join("?" * len(part))
                for table in _TABLES:
                    c.execute(f"DELETE FROM {table} WHERE run_id IN ({m})", part)
                c.execute(f"DELETE FROM runs WHERE id IN ({m})", part)


def _compact(db: Database) -> None:
    with db.lock:
        db.conn.execute("VACUUM")
        db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def prune(db: Database, *, older_than: float | None = None, keep: int | None = None,
          max_bytes: int | None = None, dry_run: bool = False,
          protect: frozenset[str] | set[str] = frozenset()) -> PruneReport:
    """Remove root runs started before ``older_than`` (a timestamp), beyond the newest ``keep``,
    and then the oldest until the database uses at most ``max_bytes``; never those in
    ``protect`` (the runs the caller just recorded)."""
    before = file_bytes(db)
    roots = [r for r in _roots_oldest_first(db) if r not in protect]
    doomed: list[str] = []
    if older_than is not None:
        old = {r["id"] for r in db.query("SELECT id FROM runs WHERE parent_id IS NULL AND "
                                         "started_at < ?", (older_than,))}
        doomed += [r for r in roots if r in old]
    if keep is not None:
        extra = roots[:max(0, len(roots) - keep)]
        doomed += [r for r in extra if r not in doomed]
    doomed = [r for r in roots if r in set(doomed)]  # oldest first, once each
    if dry_run:
        return PruneReport(len(doomed), before, before)
    if doomed:
        _delete_roots(db, doomed)
    removed = len(doomed)
    if max_bytes is not None:
        left = [r for r in roots if r not in set(doomed)]
        while left and used_bytes(db) > max_bytes:
            # Remove about as many runs as the excess suggests, at least one, then measure again.
            share = max(1, int(len(left) * (1 - max_bytes / max(1, used_bytes(db)))))
            batch, left = left[:share], left[share:]
            _delete_roots(db, batch)
            removed += len(batch)
    if removed:
        _compact(db)
    return PruneReport(removed, before, file_bytes(db))


def configured_cap() -> int | None:
    """The size cap in bytes (None: off), from ``$RLM_LOGS_MAX_MB``, else ``logs_max_mb`` in
    config.toml, else :data:`DEFAULT_MAX_MB`."""
    raw = os.environ.get("RLM_LOGS_MAX_MB", "").strip()
    if raw:
        try:
            mb = float(raw)
        except ValueError:
            raise ConfigurationError(f"RLM_LOGS_MAX_MB={raw!r} is not a number of megabytes "
                                     "(0 turns the cap off).") from None
    else:
        from rlm.config import load_config

        mb = float(load_config().get("logs_max_mb", DEFAULT_MAX_MB))
    return int(mb * 1e6) if mb > 0 else None


def enforce_cap(db: Database, protect: frozenset[str] | set[str] = frozenset()) -> PruneReport | None:
    """Apply the size cap to ``db`` (None when under it or off). Cheap when under: a file size
    and two PRAGMAs. Called by the store sink when it closes, after a run it recorded."""
    cap = configured_cap()
    if cap is None or (file_bytes(db) <= cap and used_bytes(db) <= cap):
        return None
    return prune(db, max_bytes=cap, protect=protect)
