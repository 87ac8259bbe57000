"""What the HTTP API reads and writes in PostgreSQL: keys, reads for people, ingest, the change feed.

`ApiStore` holds a small pool of autocommit connections (the API serves
requests from a thread pool). Case decisions and completed work go through
`LoopStore` (`store.py`), so they reach the running flow exactly as the CLI's
do (`controls_since`).

Guarantees:
- Only the sha256 of an API key's token is stored; a token is checked by its
  public `key_id` prefix and `hmac.compare_digest` of the hashes.
- `ingest` commits the accepted readings, the batch row and the dead letters of
  the rejected ones in one transaction before it returns.

Errors: `PostgresSinkError` (from `server.py`) when the database cannot be reached.
"""

from __future__ import annotations

import hashlib
import hmac
import queue
import secrets
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import numpy as np
import orjson
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from smart_maintenance.connectors.postgres.loop import LOCK_CONTROLS
from smart_maintenance.connectors.postgres.schema import INSERT_DEAD_LETTERS, ensure_schema, lock_key, render
from smart_maintenance.connectors.postgres.server import PostgresSinkError, redact
from smart_maintenance.operators.ingest.codes import factorize
from smart_maintenance.operators.records import QUALITY_UNKNOWN, Invalid, Readings

__all__ = ["SCOPES", "ApiStore", "KeyError_", "Principal", "WorkOrderClosedError", "copy_text", "hash_token",
           "new_token"]

SCOPES = ("read", "review", "maintain", "ingest", "admin")
_PREFIX = "smk_"


class KeyError_(PostgresSinkError, ValueError):  # noqa: N801 - KeyError is a builtin
    """A key cannot be created or revoked as asked (a duplicate name, an unknown scope)."""


class WorkOrderClosedError(PostgresSinkError):
    """A work order that is done or cancelled, or has a completion logged, takes no more updates."""

    def __init__(self, work_order_id: str, status: str, logged: bool):
        self.work_order_id, self.status, self.logged = work_order_id, status, logged
        why = "a completion or cancellation was logged for it" if logged else f"it is {status}"
        super().__init__(f"work order {work_order_id!r} takes no more updates: {why}")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key's name, its scopes and the sites it may see (empty: all)."""

    name: str
    scopes: frozenset[str]
    sites: frozenset[str] = frozenset()

    def may(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


def new_token() -> tuple[str, str]:
    """A fresh token and its public id: `smk_<id>_<secret>` with 32 random bytes of secret."""
    key_id = secrets.token_hex(6)
    return f"{_PREFIX}{key_id}_{secrets.token_urlsafe(32)}", key_id


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _key_id(token: str) -> str | None:
    if not token.startswith(_PREFIX):
        return None
    key_id, sep, secret = token[len(_PREFIX):].partition("_")
    return key_id if sep and secret and len(key_id) == 12 else None


def _copy_escape(text: str) -> str:
    """A value for COPY's text format (backslash, tab, newline, carriage return escaped)."""
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def copy_text(batch_id: str, readings: Readings) -> bytes:
    r"""The rows `batch_id, asset_id, sensor, ts, value, quality, unit` of COPY's text format, built
    column by column: each distinct name is escaped once, times and values are formatted by numpy (values
    round-trip); a quality or unit the sender did not give is `\N` (NULL).

    >>> from smart_maintenance.operators.records import Readings
    >>> text = copy_text("b", Readings.of([("p\\1", "t", 1767571200123, 0.1), ("p\\1", "v", 0, -2.5)]))
    >>> for line in text.decode().splitlines(): print(line.split("\t"))
    ['b', 'p\\\\1', 't', '2026-01-05T00:00:00.123+00', '0.1', '\\N', '\\N']
    ['b', 'p\\\\1', 'v', '1970-01-01T00:00:00.000+00', '-2.5', '\\N', '\\N']
    >>> rd = Readings.of([("p", "t", 0, 1.0), ("p", "t", 1, 2.0)], quality=[64, -1])
    >>> rd = Readings(rd.asset_id, rd.sensor, rd.ts, rd.value, rd.quality, np.array(["degF", None], dtype=object))
    >>> [line.split("\t")[-2:] for line in copy_text("b", rd).decode().splitlines()]
    [['64', 'degF'], ['\\N', '\\N']]
    """
    a_codes, a_names = factorize(readings.asset_id)
    s_codes, s_names = factorize(readings.sensor)
    head = f"{_copy_escape(batch_id)}\t"
    first = np.array([f"{head}{_copy_escape(str(a))}\t" for a in a_names], dtype=object)[a_codes]
    second = np.array([f"{_copy_escape(str(x))}\t" for x in s_names], dtype=object)[s_codes]
    times = np.char.add(np.datetime_as_string(readings.ts.astype("datetime64[ms]"), unit="ms"), "+00\t")
    values = np.char.add(readings.value.astype(str), "\t")
    quality = readings.quality_or_unknown()
    quality_text = np.where(quality == QUALITY_UNKNOWN, "\\N\t", np.char.add(quality.astype(str), "\t"))
    u_codes, u_names = factorize(readings.unit_or_none())
    units = np.array([f"{_copy_escape(str(u))}\n" for u in u_names] + ["\\N\n"], dtype=object)[u_codes]
    return "".join([x for row in zip(first.tolist(), second.tolist(), times.tolist(), values.tolist(),
                                     quality_text.tolist(), units.tolist(), strict=True)
                    for x in row]).encode()


class ApiStore:
    """A pool of connections to one schema, migrated when opened."""

    def __init__(self, dsn: str, schema: str, *, pool_size: int = 4):
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, got {pool_size}")
        self.dsn, self.schema, self.pool_size = dsn, schema, pool_size
        self._pool: queue.LifoQueue[psycopg.Connection] = queue.LifoQueue()
        self._made = 0
        self._lock = threading.Lock()

    def open(self) -> ApiStore:
        ensure_schema(self.dsn, self.schema)
        return self

    def close(self) -> None:
        while not self._pool.empty():
            self._pool.get_nowait().close()

    def __enter__(self) -> ApiStore:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def conn(self) -> Iterator[psycopg.Connection]:
        try:
            c = self._pool.get_nowait()
        except queue.Empty:
            with self._lock:
                make = self._made < self.pool_size
                if make:
                    self._made += 1
            if make:
                try:
                    c = psycopg.connect(self.dsn, autocommit=True, connect_timeout=5)
                except psycopg.Error as e:
                    with self._lock:
                        self._made -= 1
                    raise PostgresSinkError(f"cannot connect to {redact(self.dsn)}: {e}") from e
            else:
                c = self._pool.get(timeout=30)
        broken = False
        try:
            yield c
        except psycopg.OperationalError as e:
            broken = True
            raise PostgresSinkError(f"database error: {e}") from e
        finally:
            if broken or c.closed:
                c.close()
                with self._lock:
                    self._made -= 1
            else:
                self._pool.put(c)

    def q(self, statement: str) -> Any:
        return render(statement, self.schema)

    def rows(self, statement: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self.conn() as c:
            return c.cursor(row_factory=dict_row).execute(self.q(statement), list(params)).fetchall()

    # -- keys ---------------------------------------------------------------------------
    def create_key(self, name: str, scopes: Sequence[str], sites: Sequence[str] = ()) -> str:
        """Store a new key; returns its token (shown once: only its hash is kept)."""
        name = name.strip()
        bad = sorted(set(scopes) - set(SCOPES))
        if not name or bad or not scopes:
            raise KeyError_(f"a key needs a name and scopes among {', '.join(SCOPES)}"
                            + (f" (unknown: {', '.join(bad)})" if bad else ""))
        token, key_id = new_token()
        try:
            with self.conn() as c:
                c.execute(self.q("INSERT INTO {s}.api_keys (key_id, name, token_sha256, scopes, sites) "
                                 "VALUES (%s, %s, %s, %s, %s)"),
                          [key_id, name, hash_token(token), Jsonb(sorted(set(scopes))), Jsonb(sorted(set(sites)))])
        except psycopg.errors.UniqueViolation as e:
            raise KeyError_(f"a key named {name!r} exists (revoke it or choose another name)") from e
        return token

    def list_keys(self) -> list[dict[str, Any]]:
        return self.rows("SELECT key_id, name, scopes, sites, created_at, revoked_at, last_used_at "
                         "FROM {s}.api_keys ORDER BY created_at, name")

    def revoke_key(self, name: str) -> bool:
        """Revoke a key by name (or key id); False when no live key has it."""
        with self.conn() as c:
            cur = c.execute(self.q("UPDATE {s}.api_keys SET revoked_at = now() "
                                   "WHERE (name = %s OR key_id = %s) AND revoked_at IS NULL"), [name, name])
            return cur.rowcount > 0

    def principal(self, token: str) -> Principal | None:
        """The live key a token belongs to, or None."""
        key_id = _key_id(token)
        if key_id is None:
            return None
        with self.conn() as c:
            row = c.execute(self.q("UPDATE {s}.api_keys SET last_used_at = now() WHERE key_id = %s "
                                   "AND revoked_at IS NULL RETURNING name, token_sha256, scopes, sites"),
                            [key_id]).fetchone()
        if row is None or not hmac.compare_digest(row[1], hash_token(token)):
            return None
        return Principal(row[0], frozenset(row[2]), frozenset(row[3]))

    def audit(self, key_name: str, action: str, subject_id: str = "", detail: dict[str, Any] | None = None) -> None:
        with self.conn() as c:
            c.execute(self.q("INSERT INTO {s}.api_audit (key_name, action, subject_id, detail) "
                             "VALUES (%s, %s, %s, %s)"), [key_name, action, subject_id, Jsonb(detail or {})])

    # -- alarms -------------------------------------------------------------------------
    def note_alarm(self, alarm_id: str, kind: str, note: str, by: str) -> bool:
        """Acknowledge (kind `ack`) or comment an alarm; False when there is no such alarm.

        An acknowledgement turns an open alarm `acknowledged`; the flow's next state of
        the episode (escalated, cleared) still wins, as the alarm's own history goes on.
        """
        with self.conn() as c, c.transaction():
            found = c.execute(self.q("SELECT status FROM {s}.alarms WHERE alarm_id = %s FOR UPDATE"),
                              [alarm_id]).fetchone()
            if found is None:
                return False
            c.execute(self.q("INSERT INTO {s}.alarm_notes (alarm_id, kind, note, by_name) VALUES (%s, %s, %s, %s)"),
                      [alarm_id, kind, note, by])
            if kind == "ack" and found[0] == "open":
                c.execute(self.q("UPDATE {s}.alarms SET status = 'acknowledged' WHERE alarm_id = %s"), [alarm_id])
        return True

    # -- work orders ----------------------------------------------------------------------
    def work_order_standing(self, work_order_id: str) -> dict[str, Any] | None:
        """The work order's asset, the flow's status and whether a completion or cancellation was
        logged for it that the flow may not have applied yet; None when there is no such work order."""
        rows = self.rows("SELECT w.asset_id, w.status, EXISTS (SELECT 1 FROM {s}.maintenance_log m "
                         "WHERE m.work_order_id = w.work_order_id) AS logged "
                         "FROM {s}.work_orders w WHERE w.work_order_id = %s", [work_order_id])
        return rows[0] if rows else None

    def update_work_order(self, work_order_id: str, asset_id: str, effective_at: datetime,
                          fields: dict[str, Any], comment: str, by: str) -> int:
        """Store a planner's change of a work order (and its audit row) in one transaction; its seq.

        The row is refused (`WorkOrderClosedError`) when the work order is closed by then or a
        completion was logged for it, checked under a lock of the work order's row.
        """
        with self.conn() as c, c.transaction():
            # under the control input's lock, as every control table's rows are: seq in commit order
            c.execute(LOCK_CONTROLS, [lock_key("controls", self.schema)])
            row = c.execute(self.q("SELECT status, EXISTS (SELECT 1 FROM {s}.maintenance_log m "
                                   "WHERE m.work_order_id = w.work_order_id) FROM {s}.work_orders w "
                                   "WHERE work_order_id = %s FOR UPDATE"), [work_order_id]).fetchone()
            if row is None or row[0] in ("done", "cancelled") or row[1]:
                raise WorkOrderClosedError(work_order_id, row[0] if row else "missing", bool(row and row[1]))
            seq = c.execute(self.q("INSERT INTO {s}.work_order_updates (work_order_id, asset_id, effective_at, "
                                   "fields, comment, by_name) VALUES (%s, %s, %s, %s, %s, %s) RETURNING seq"),
                            [work_order_id, asset_id, effective_at, Jsonb(fields), comment, by]).fetchone()
            c.execute(self.q("INSERT INTO {s}.api_audit (key_name, action, subject_id, detail) "
                             "VALUES (%s, 'work_order_updated', %s, %s)"),
                      [by, work_order_id, Jsonb({"fields": fields, "comment": comment,
                                                 "effective_at": effective_at.isoformat()})])
        return int(cast(tuple[Any, ...], seq)[0])

    # -- ingest -------------------------------------------------------------------------
    def ingest(self, batch_id: str, key_name: str, readings: Readings, rejects: Sequence[Invalid],
               audit: dict[str, Any] | None = None) -> bool:
        """Store a batch durably; False when `batch_id` was stored before (a retried POST).

        The batch row, its readings (one text COPY built column-wise), its dead letters and, when
        `audit` is given, its audit row commit together: one round of fsync per batch.
        """
        with self.conn() as c, c.transaction():
            new = c.execute(self.q("INSERT INTO {s}.ingest_batches (batch_id, key_name, accepted, rejected) "
                                   "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING batch_id"),
                            [batch_id, key_name, len(readings), len(rejects)]).fetchone()
            if new is None:
                return False
            if len(readings):
                with c.cursor().copy(self.q(
                        "COPY {s}.ingest_readings (batch_id, asset_id, sensor, ts, value, quality, unit) "
                        "FROM STDIN")) as copy:
                    copy.write(copy_text(batch_id, readings))
            if rejects:
                doc = orjson.dumps([i.to_dict() for i in rejects]).decode().replace("\\u0000", "\\ufffd")
                c.execute(self.q(INSERT_DEAD_LETTERS), [doc])
            if audit is not None:
                c.execute(self.q("INSERT INTO {s}.api_audit (key_name, action, subject_id, detail) "
                                 "VALUES (%s, 'ingest', %s, %s)"), [key_name, batch_id, Jsonb(audit)])
        return True

    def ingested_since(self, seq: int, limit: int = 50_000) -> tuple[int, Readings]:
        """Ingested readings after `seq`, in order: (last seq read, readings); for the flow's ingest source."""
        with self.conn() as c:
            rows = c.execute(self.q("SELECT seq, asset_id, sensor, ts, value, quality, unit "
                                    "FROM {s}.ingest_readings WHERE seq > %s ORDER BY seq LIMIT %s"),
                             [seq, limit]).fetchall()
        if not rows:
            return seq, Readings.empty()
        rd = Readings.of([(a, s_, int(t.timestamp() * 1000), v) for _, a, s_, t, v, _q, _u in rows])
        quality = [QUALITY_UNKNOWN if r[5] is None else r[5] for r in rows]
        unit = [r[6] for r in rows]
        return rows[-1][0], Readings(
            rd.asset_id, rd.sensor, rd.ts, rd.value,
            np.array(quality, dtype=np.int16) if any(q != QUALITY_UNKNOWN for q in quality) else None,
            np.array(unit, dtype=object) if any(u is not None for u in unit) else None)

    # -- the change feed ------------------------------------------------------------------
    def changes_since(self, seq: int, limit: int = 200) -> list[dict[str, Any]]:
        return self.rows("SELECT seq, at, kind, subject_id, asset_id, status FROM {s}.change_log "
                         "WHERE seq > %s ORDER BY seq LIMIT %s", [seq, limit])

    def last_change(self) -> int:
        with self.conn() as c:
            row = c.execute(self.q("SELECT coalesce(max(seq), 0) FROM {s}.change_log")).fetchone()
            return int(cast(tuple[Any, ...], row)[0])  # an aggregate returns one row
