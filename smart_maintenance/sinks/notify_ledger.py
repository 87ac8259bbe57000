"""Where notifications and their delivery attempts are recorded: in memory or in PostgreSQL.

A `NotificationLedger` keeps each notification's final status (`sent`,
`failed`, `suppressed`, `dropped`) and every attempt with its outcome, in the
PostgreSQL tables `notifications` and `notification_attempts` or in memory.
Before delivering, the ledger is asked whether the notification's id was
already sent: a replay after a crash, which plans the same ids again, does not
notify twice.

The sink records each batch as `pending` (`record_pending`) before it queues
it, so the PostgreSQL ledger also knows what was still queued when a job was
killed: a restarted partition takes those rows back (`pending`), rebuilt from
the `payload` column (`Notification.message()`).
"""

from __future__ import annotations

import logging
import threading
import zlib
from collections import deque
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

import orjson
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from smart_maintenance.connectors.postgres.schema import ensure_schema
from smart_maintenance.connectors.postgres.server import redact
from smart_maintenance.operators.notify import Notification
from smart_maintenance.sinks.notify_channels import NotifyError

log = logging.getLogger(__name__)


class NotificationLedger(Protocol):
    """Where notifications and their delivery attempts are recorded. Used from several threads."""

    def status(self, notification_id: str) -> str | None:
        """The recorded status, or None when the id is unknown."""

    def record(self, n: Notification, status: str, attempts: int, last_error: str) -> None:
        """Insert or update the notification's row; a `sent` row stays `sent`."""

    def attempt(self, notification_id: str, ok: bool, detail: str, at: datetime) -> int:
        """Record one delivery attempt; returns its number (1, 2, ... per notification)."""

    def record_pending(self, items: Sequence[Notification]) -> None:
        """Insert rows for ids not yet recorded (status `pending`, or `suppressed`); never touches a known id."""

    def pending(self, channels: Sequence[str], worker_index: int = 0, worker_count: int = 1) -> list[Notification]:
        """Notifications still `pending` on `channels` that belong to this worker (left by a crash)."""

    def close(self) -> None: ...


def owner(notification_id: str, worker_count: int) -> int:
    """The worker that takes a left-over pending notification back: stable across processes.

    >>> owner("n-1", 1), owner("n-1", 4) == owner("n-1", 4)
    (0, True)
    """
    return zlib.crc32(notification_id.encode()) % max(worker_count, 1)


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
            self.rows[n.notification_id] = {**n.to_dict(), "status": status, "attempts": attempts,
                                            "last_error": last_error}
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

    def record_pending(self, items: Sequence[Notification]) -> None:
        for n in items:
            if self.status(n.notification_id) is None:
                self.record(n, n.status, 0, n.reason)

    def pending(self, channels: Sequence[str], worker_index: int = 0, worker_count: int = 1) -> list[Notification]:
        return []  # a new process starts with an empty memory: nothing was left over

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
# a batch about to be queued: only ids never seen (a replay never downgrades `sent` or `failed`)
_INSERT_PENDING = """
INSERT INTO {s}.notifications (notification_id, channel, kind, asset_id, subject_id, severity,
                               created_at, status, attempts, last_error, payload, updated_at)
SELECT r.notification_id, r.channel, r.kind, r.asset_id, r.subject_id, r.severity,
       r.created_at, r.status, 0, r.last_error, r.payload, now()
FROM jsonb_to_recordset(%s::jsonb) AS r(notification_id text, channel text, kind text, asset_id text,
                                        subject_id text, severity smallint, created_at timestamptz,
                                        status text, last_error text, payload jsonb)
ON CONFLICT (notification_id) DO NOTHING
"""
_PENDING = """
SELECT notification_id, channel, payload FROM {s}.notifications
WHERE status = 'pending' AND channel = ANY(%s::text[])
ORDER BY created_at, notification_id
"""


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
                   (("upsert", _UPSERT), ("attempt", _ATTEMPT), ("status", _STATUS),
                    ("insert_pending", _INSERT_PENDING), ("pending", _PENDING))}
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

    def __enter__(self) -> PostgresLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _run(self, what: str, query: str, params: list[Any], *, all_rows: bool = False) -> Any:
        def once() -> Any:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=5)
            cur = self._conn.execute(self._q[query], params)
            if cur.description is None:
                return None
            return cur.fetchall() if all_rows else cur.fetchone()

        with self._lock:
            try:
                return self._retrying(once)
            except psycopg.Error as e:
                raise NotifyError(
                    f"{what} in schema {self.schema!r} at {redact(self._dsn)}: {type(e).__name__}: {e}") from e

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
        assert row is not None  # noqa: S101 INSERT ... RETURNING always returns a row
        return int(row[0])

    def record_pending(self, items: Sequence[Notification]) -> None:
        if not items:
            return
        rows = [{"notification_id": n.notification_id, "channel": n.channel, "kind": n.kind, "asset_id": n.asset_id,
                 "subject_id": n.subject_id, "severity": n.severity, "created_at": n.created_at.isoformat(),
                 "status": n.status, "last_error": n.reason[:2000], "payload": n.message()} for n in items]
        self._run("record notifications as pending", "insert_pending", [_json(_clean(rows))])

    def pending(self, channels: Sequence[str], worker_index: int = 0, worker_count: int = 1) -> list[Notification]:
        rows = self._run("read pending notifications", "pending", [list(channels)], all_rows=True) or []
        out: list[Notification] = []
        for notification_id, channel, payload in rows:
            if owner(notification_id, worker_count) != worker_index:
                continue
            try:
                out.append(_from_message(channel, payload))
            except (KeyError, TypeError, ValueError) as e:  # a row this version cannot rebuild: leave it
                log.error("pending notification %s cannot be rebuilt from its payload: %s", notification_id, e)
        return out

    def close(self) -> None:
        with self._lock:
            self._drop()


def _from_message(channel: str, m: dict[str, Any]) -> Notification:
    """A `Notification` back from its `message()` (the ledger's `payload`) and its channel."""
    created_at = datetime.fromisoformat(m["created_at"])
    if created_at.tzinfo is None:
        raise ValueError(f"created_at without a time zone: {m['created_at']!r}")
    return Notification(
        notification_id=m["notification_id"], channel=channel, kind=m["kind"], asset_id=m["asset_id"],
        subject_id=m["subject_id"], severity=int(m["severity"]), site=m["site"], created_at=created_at,
        title=m["title"], body=m["body"], payload=dict(m["subject"]),
    )
