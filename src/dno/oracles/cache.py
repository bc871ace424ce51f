"""A persistent answer cache, so that no question is paid for twice.

SQLite in WAL mode: many readers and one writer at a time across threads and processes (a sweep's
runs share one file), with a busy timeout instead of "database is locked". The key is a SHA-256 of
everything that determines the answer (judge model, prompt template version, the messages, i.e.
the prompt and the candidates in the order shown, and the sampling parameters); never the API key
or the server address. The first answer stored for a key wins, so concurrent writers agree.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path


def cache_key(**parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class JudgeCache:
    def __init__(self, path: str | Path, timeout_s: float = 60.0) -> None:
        self.path = Path(path).expanduser()
        self.timeout_s = timeout_s
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None)
            self._setup(conn)
            self._local.conn = conn
        return conn

    def _setup(self, conn: sqlite3.Connection) -> None:
        """WAL mode and the table, once per file. Switching to WAL takes an exclusive lock that the
        busy timeout does not wait for, so a writer racing a new file's creation retries here."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, value TEXT NOT NULL, "
                             "created REAL NOT NULL)")
                conn.execute("CREATE TABLE IF NOT EXISTS facts (key TEXT PRIMARY KEY, value TEXT NOT NULL, "
                             "created REAL NOT NULL)")
                conn.execute("PRAGMA synchronous=NORMAL")
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def check(self) -> None:
        """Fail before any compute on a cache that cannot serve the run, naming the file; the file is only
        read here, never repaired, deleted or overwritten: it holds answers that were paid for."""
        where = self.path if self.path.exists() else self.path.parent
        if self.path.is_dir():
            raise ValueError(f"oracle.cache_path={self.path} is a directory, not a SQLite file")
        probe = where if where.exists() else next((p for p in where.parents if p.exists()), where)
        if not os.access(probe, os.W_OK):
            raise ValueError(f"oracle.cache_path={self.path}: {probe} is not writable; answers could not be "
                             "cached (choose a writable oracle.cache_path)")
        if not self.path.exists():
            return
        try:
            conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=self.timeout_s)
            try:
                result = conn.execute("PRAGMA quick_check").fetchone()[0]
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            finally:
                conn.close()
        except sqlite3.DatabaseError as e:
            raise ValueError(f"oracle.cache_path={self.path}: not a usable SQLite judge cache ({e}): a truncated "
                             "or foreign file? It is left as it is: move it away or point oracle.cache_path "
                             "elsewhere") from None
        if result != "ok" or (tables and "answers" not in tables):
            raise ValueError(f"oracle.cache_path={self.path}: damaged or not a judge cache (quick_check: "
                             f"{result}; tables: {sorted(tables)}); it is left as it is: move it away or point "
                             "oracle.cache_path elsewhere")
        if not os.access(self.path, os.W_OK):
            raise ValueError(f"oracle.cache_path={self.path} is read-only; answers could not be cached")
        self._check_writable_lock()

    def _check_writable_lock(self) -> None:
        """A writer holding the database longer than the busy timeout would stall the judge stage: find it now."""
        conn = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
        except sqlite3.OperationalError as e:
            raise ValueError(f"oracle.cache_path={self.path}: locked by another writer for more than "
                             f"{self.timeout_s:.0f} s ({e})") from None
        finally:
            conn.close()

    def get(self, key: str) -> dict | None:
        row = self._conn().execute("SELECT value FROM answers WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, value: dict) -> None:
        self._conn().execute("INSERT OR IGNORE INTO answers (key, value, created) VALUES (?, ?, ?)",
                             (key, json.dumps(value), time.time()))

    def fact(self, key: str) -> str | None:
        """A fact about a judge on a server (e.g. the structured-output form it takes), not an answer."""
        row = self._conn().execute("SELECT value FROM facts WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def remember(self, key: str, value: str) -> None:
        self._conn().execute("INSERT OR REPLACE INTO facts (key, value, created) VALUES (?, ?, ?)",
                             (key, value, time.time()))

    def __len__(self) -> int:
        return self._conn().execute("SELECT COUNT(*) FROM answers").fetchone()[0]
