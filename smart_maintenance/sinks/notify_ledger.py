"""Where notifications and their delivery attempts are recorded: in memory or in PostgreSQL.

A `NotificationLedger` keeps each notification's final status (`sent`,
`failed`, `suppressed`, `dropped`) and every attempt with its outcome, in the
PostgreSQL tables `notifications` and `notification_attempts` or in memory.
Before delivering, the ledger is asked whether the notification's id was
already sent: a replay after a crash, which plans the same ids again, does not
notify twice.
"""

from __future__ import annotations

import threading
from collections import deque
from datetime import datetime
from typing import Any, Protocol

import orjson
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from smart_maintenance.operators.notify import Notification
from smart_maintenance.sinks.notify_channels import NotifyError
from smart_maintenance.sinks.pg_schema import ensure_schema
from smart_maintenance.sinks.pg_server import redact


class NotificationLedger(Protocol):
    """Where notifications and their delivery attempts are recorded. Used from several threads."""

    def status(self, notification_id: str) -> str | None:
        """The recorded status, or None when the id is unknown."""

    def record(self, n: Notification, status: str, attempts: int, last_error: str) -> None:
        """Insert or update the notification's row; a `sent` row stays `sent`."""

    def attempt(self, notification_id: str, ok: bool, detail: str, at: datetime) -> int:
        """Record one delivery attempt; returns its number (1, 2, ... per notification)."""

    def close(self) -> None: ...


class MemoryLedger:
    """A ledger in memory, for tests and for jobs that keep no database: the newest `max_rows` are kept."""

    def __init__(self, max_rows: int = 100_000) -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, got {max_rows}")
        self.max_rows = max_rows
        self.rows: dict[str, dict[str, Any]] = {}
        self.attempts: deque[dict[str, Any]] = deque(maxlen=max_rows)
        self._numbers: dict[str, int] = {}  # notification_id -> attempts so far
        self._lock = threading.Lock()

    def status(self, notification_id: str) -> str | None:
        with self._lock:
            row = self.rows.get(notification_id)
            return row["status"] if row else None

    def record(self, n: Notification, status: str, attempts: int, last_error: str) -> None:
        with self._lock:
            old = self.rows.get(n.notification_id)
            if old is not None and old["status"] == "sent":
                return
            self.rows[n.notification_id] = {**n.to_dict(), "status": status, "attempts": attempts, "last_error": last_error}
            if len(self.rows) > self.max_rows:  # dicts keep insertion order: forget the oldest
                oldest = next(iter(self.rows))
                del self.rows[oldest]
                self._numbers.pop(oldest, None)

    def attempt(self, notification_id: str, ok: bool, detail: str, at: datetime) -> int:
        with self._lock:
            number = self._numbers[notification_id] = self._numbers.get(notification_id, 0) + 1
            self.attempts.append({"notification_id": notification_id, "attempt": number, "attempted_at": at,
                                  "ok": ok, "detail": detail})
            return number

    def close(self) -> None:
        pass


_UPSERT = """
INSERT INTO {s}.notifications AS n (notification_id, channel, kind, asset_id, subject_id, severity,
                                     created_at, status, attempts, last_error, payload, updated_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now())
ON CONFLICT (notification_id) DO UPDATE SET
    status = CASE WHEN n.status = 'sent' THEN n.status ELSE EXCLUDED.status END,
    attempts = GREATEST(n.attempts, EXCLUDED.attempts),
    last_error = CASE WHEN n.status = 'sent' THEN n.last_error ELSE EXCLUDED.last_error END,
    payload = EXCLUDED.payload,
    updated_at = now()
"""
_ATTEMPT = """
INSERT INTO {s}.notification_attempts (notification_id, attempt, attempted_at, ok, detail)
SELECT %s, coalesce(max(attempt), 0) + 1, %s, %s, %s FROM {s}.notification_attempts WHERE notification_id = %s
RETURNING attempt
"""
_STATUS = "SELECT status FROM {s}.notifications WHERE notification_id = %s"


def _json(obj: Any) -> str:
    return orjson.dumps(obj).decode()  # NaN becomes null: jsonb rejects NaN


def _text(s: str) -> str:
    return s.replace("\x00", "\ufffd")  # text columns cannot hold NUL


def _clean(x: Any) -> Any:
    if isinstance(x, str):
        return _text(x)
    if isinstance(x, dict):
        return {_text(str(k)): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


class PostgresLedger:
    """Records into `notifications` and `notification_attempts` of one schema (migrated on `open`).

    Lost connections are retried briefly on a new connection; then the error
    is raised as NotifyError (the delivery thread logs it and carries on).
    """

    def __init__(self, dsn: str, schema: str, *, attempts: int = 3) -> None:
        self._dsn, self.schema = dsn, schema
        self._conn: psycopg.Connection | None = None
        self._lock = threading.Lock()
        self._q = {k: sql.SQL(v).format(s=sql.Identifier(schema)) for k, v in
                   (("upsert", _UPSERT), ("attempt", _ATTEMPT), ("status", _STATUS))}
        self._retrying = Retrying(
            retry=retry_if_exception(lambda e: isinstance(e, (psycopg.OperationalError, psycopg.InterfaceError))),
            stop=stop_after_attempt(attempts), wait=wait_exponential(multiplier=0.2, max=2.0),
            before_sleep=lambda _: self._drop(), reraise=True,
        )

    def __repr__(self) -> str:
        return f"PostgresLedger({redact(self._dsn)!r}, {self.schema!r})"

    def open(self) -> PostgresLedger:
        ensure_schema(self._dsn, self.schema)
        return self

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _run(self, what: str, query: str, params: list[Any]) -> tuple[Any, ...] | None:
        def once() -> tuple[Any, ...] | None:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=5)
            cur = self._conn.execute(self._q[query], params)
            return cur.fetchone() if cur.description is not None else None

        with self._lock:
            try:
                return self._retrying(once)
            except psycopg.Error as e:
                raise NotifyError(f"{what} in schema {self.schema!r} at {redact(self._dsn)}: {type(e).__name__}: {e}") from e

    def status(self, notification_id: str) -> str | None:
        row = self._run("read notification status", "status", [notification_id])
        return row[0] if row else None

    def record(self, n: Notification, status: str, attempts: int, last_error: str) -> None:
        self._run("record notification", "upsert", [
            n.notification_id, n.channel, n.kind, _text(n.asset_id), _text(n.subject_id), n.severity,
            n.created_at, status, attempts, _text(last_error[:2000]), Jsonb(_clean(n.message()), dumps=_json),
        ])

    def attempt(self, notification_id: str, ok: bool, detail: str, at: datetime) -> int:
        row = self._run("record notification attempt", "attempt",
                        [notification_id, at, ok, _text(detail[:2000]), notification_id])
        assert row is not None  # INSERT ... RETURNING
        return int(row[0])

    def close(self) -> None:
        with self._lock:
            self._drop()
