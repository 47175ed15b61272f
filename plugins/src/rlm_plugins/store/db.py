"""The trajectory database: one SQLite file, its schema and its migrations.

``logs.db`` in the user directory (:func:`rlm.keys.user_dir`; ``RLM_USER_DIR`` overrides it).
The file is opened in WAL mode and every write is one transaction, so a process killed mid-run
leaves every event written before the kill in the database.

Schema versions are numbered; ``schema_version`` holds the current one and :data:`MIGRATIONS`
maps each version to the function that brings a database from the previous version to it. A
database written by a newer rlm (a version we do not know) is refused rather than damaged.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rlm.exceptions import ConfigurationError
from rlm.keys import user_dir

DB_FILE = "logs.db"


def default_db_path() -> Path:
    """Where runs are logged: ``$RLM_USER_DIR/logs.db`` or the platform's user data dir."""
    return user_dir() / DB_FILE


# --- migrations ---------------------------------------------------------------------------


def _script(c: sqlite3.Connection, sql: str) -> None:
    # Not executescript(): it commits first, and a migration must stay one transaction.
    for statement in sql.split(";"):
        if statement.strip():
            c.execute(statement)


def _v1(c: sqlite3.Connection) -> None:
    """Runs (with parent links), iterations, cells, sub-calls, usage per model."""
    _script(c, """
        CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            root_id TEXT NOT NULL,
            parent_id TEXT,
            parent_subcall_id INTEGER,
            depth INTEGER NOT NULL DEFAULT 0,
            status TEXT NOT NULL DEFAULT 'running',
            started_at REAL NOT NULL,
            finished_at REAL,
            root_model TEXT,
            backend TEXT,
            environment TEXT,
            root_prompt TEXT,
            prompt TEXT,
            context_type TEXT,
            context_lengths TEXT,
            settings TEXT,
            response TEXT,
            error TEXT,
            execution_time REAL,
            iterations INTEGER NOT NULL DEFAULT 0,
            calls INTEGER NOT NULL DEFAULT 0,
            input_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            cost REAL,
            pid INTEGER
        );
        CREATE INDEX runs_started ON runs(started_at);
        CREATE INDEX runs_parent ON runs(parent_id);
        CREATE INDEX runs_root ON runs(root_id);
        CREATE TABLE iterations (
            run_id TEXT NOT NULL,
            iteration INTEGER NOT NULL,
            started_at REAL,
            finished_at REAL,
            response TEXT,
            final_answer TEXT,
            iteration_time REAL,
            input_tokens INTEGER,
            output_tokens INTEGER,
            cost REAL,
            PRIMARY KEY (run_id, iteration)
        );
        CREATE TABLE cells (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL,
            iteration INTEGER NOT NULL,
            idx INTEGER NOT NULL,
            code TEXT,
            stdout TEXT,
            stderr TEXT,
            error TEXT,
            variables TEXT,
            execution_time REAL,
            final_answer TEXT,
            timed_out INTEGER NOT NULL DEFAULT 0,
            finished_at REAL
        );
        CREATE INDEX cells_run ON cells(run_id, iteration, idx);
        CREATE TABLE subcalls (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL,
            call_id TEXT,
            iteration INTEGER,
            cell_idx INTEGER,
            seq INTEGER,
            kind TEXT,
            model TEXT,
            prompt TEXT,
            response TEXT,
            started_at REAL,
            finished_at REAL,
            duration REAL,
            error TEXT,
            input_tokens INTEGER,
            output_tokens INTEGER,
            cost REAL,
            child_run_id TEXT
        );
        CREATE INDEX subcalls_run ON subcalls(run_id, seq);
        CREATE TABLE usage (
            run_id TEXT NOT NULL,
            model TEXT NOT NULL,
            calls INTEGER NOT NULL DEFAULT 0,
            input_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            cost REAL,
            PRIMARY KEY (run_id, model)
        );
    """)


def _v2(c: sqlite3.Connection) -> None:
    """Where a run came from (live, imported), a heartbeat for viewers, and notes (compaction,
    limits, events this version does not know)."""
    c.execute("ALTER TABLE runs ADD COLUMN source TEXT NOT NULL DEFAULT 'live'")
    c.execute("ALTER TABLE runs ADD COLUMN updated_at REAL")
    c.execute("UPDATE runs SET updated_at = COALESCE(finished_at, started_at)")
    _script(c, """
        CREATE TABLE notes (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL,
            timestamp REAL,
            type TEXT NOT NULL,
            data TEXT
        );
        CREATE INDEX notes_run ON notes(run_id);
        CREATE INDEX runs_status ON runs(status);
        CREATE INDEX runs_model ON runs(root_model);
        CREATE INDEX runs_roots ON runs(parent_id, started_at);
    """)


MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _v1, 2: _v2}
SCHEMA_VERSION = max(MIGRATIONS)


def schema_version(c: sqlite3.Connection) -> int:
    row = c.execute("SELECT name FROM sqlite_master WHERE type='table' AND name='schema_version'"
                    ).fetchone()
    if row is None:
        return 0
    row = c.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def migrate(c: sqlite3.Connection, target: int = SCHEMA_VERSION, *, path: str = "") -> int:
    """Bring the database to ``target``, one version per transaction. Returns the version."""
    current = schema_version(c)
    if current > SCHEMA_VERSION:
        raise ConfigurationError(
            f"the logs database {path or '(memory)'} has schema version {current}, newer than this "
            f"rlm-plugins understands ({SCHEMA_VERSION}); upgrade: pip install --upgrade rlm-plugins "
            "(or point RLM_USER_DIR at another directory).")
    while current < target:
        nxt = current + 1
        c.execute("BEGIN IMMEDIATE")
        try:
            if schema_version(c) != current:  # another process migrated meanwhile
                c.execute("ROLLBACK")
                current = schema_version(c)
                continue
            if current == 0:
                c.execute("CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at REAL)")
            MIGRATIONS[nxt](c)
            c.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                      (nxt, time.time()))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        current = nxt
    return current


# --- the connection ----------------------------------------------------------------------------


class Database:
    """One connection to the logs database, shared by threads under a lock.

    ``path=":memory:"`` gives a private in-memory database (used to view a JSONL file without
    touching your logs).
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, migrate_to: int = SCHEMA_VERSION):
        self.path = str(path) if path is not None else str(default_db_path())
        if self.path != ":memory:":
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigurationError(
                    f"cannot create the logs directory {Path(self.path).parent}: {exc.strerror}; "
                    "set RLM_USER_DIR to a writable directory (or run with --no-log).") from None
        try:
            self.conn = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                        check_same_thread=False)
            self.conn.row_factory = sqlite3.Row
            if self.path != ":memory:":
                self.conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a committed transaction survives the process being killed.
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute("PRAGMA busy_timeout=30000")
            migrate(self.conn, migrate_to, path=self.path)
        except sqlite3.DatabaseError as exc:
            raise ConfigurationError(
                f"cannot open the logs database {self.path}: {exc}. If the file is damaged, move it "
                "away (a new one is created), or set RLM_USER_DIR to another directory.") from None
        self.lock = threading.RLock()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error), under the lock."""
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def query(self, sql: str, params: tuple | list = ()) -> list[sqlite3.Row]:
        with self.lock:
            return self.conn.execute(sql, params).fetchall()

    def close(self) -> None:
        with self.lock:
            self.conn.close()


def pid_alive(pid: int | None) -> bool:
    """Whether the process that wrote a running row is still alive (True when it cannot tell)."""
    if not pid:
        return False
    if sys.platform == "win32":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True
