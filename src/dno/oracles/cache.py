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
                conn.execute("PRAGMA synchronous=NORMAL")
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def get(self, key: str) -> dict | None:
        row = self._conn().execute("SELECT value FROM answers WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, value: dict) -> None:
        self._conn().execute("INSERT OR IGNORE INTO answers (key, value, created) VALUES (?, ?, ?)",
                             (key, json.dumps(value), time.time()))

    def __len__(self) -> int:
        return self._conn().execute("SELECT COUNT(*) FROM answers").fetchone()[0]
