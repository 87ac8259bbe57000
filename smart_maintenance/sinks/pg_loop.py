"""PostgreSQL side of the maintenance loop: its streams, the review queue, the maintenance log.

`LoopWriter` stores what the flow produces (predictions, work orders, the
current plan, reviews to queue, threshold changes, maintenance records), every
write idempotent so a replay after recovery leaves the same rows. `LoopStore`
is what people and the control input use: the review queue (list, show,
decide), the maintenance log, and `controls_since`, which reads decisions and
completed maintenance back in `seq` order for `sources/controls.py`.

Rows of `review_decisions` and `maintenance_log` are inserted under one
advisory lock per schema, so `seq` is allocated in commit order: a reader
polling `seq > last` never skips a row committed late with a smaller seq.

    store = LoopStore(resolve_dsn(settings), settings.postgres.schema_name)
    with store:
        for r in store.list_reviews():
            ...
        store.decide(review_id, "reject", note="pump was being cleaned", decided_by="ana")
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, TypeVar

import orjson
import psycopg
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from smart_maintenance.operators.controls import DECISIONS, ControlError, MaintenanceRecord, ReviewDecision
from smart_maintenance.operators.records import Anomaly, Invalid, dt_to_ms, iso, ms_to_dt
from smart_maintenance.sinks.pg_schema import (
    INSERT_DEAD_LETTERS,
    _changed,
    _do_update,
    _upsert_sql,
    lock_key,
    render,
)
from smart_maintenance.sinks.pg_connection import PgConnection
from smart_maintenance.sinks.pg_server import PostgresSinkError

__all__ = [
    "ASSIGNMENT_COLUMNS", "LOOP_STREAMS", "REVIEW_STATUSES", "THRESHOLD_CHANGE_COLUMNS", "LoopSink", "LoopStore",
    "LoopWriter", "ReviewClosedError", "UnknownReviewError",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

_JSON_NUL = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")  # text columns cannot hold NUL

# decision -> the review's status afterwards; "deferred" stays reviewable
_STATUS_AFTER = {"approve": "approved", "reject": "rejected", "defer": "deferred"}
REVIEW_STATUSES = ("pending", "deferred", "approved", "rejected")
_LIST_FILTERS = {"open": ("pending", "deferred"), "all": REVIEW_STATUSES} | {s: (s,) for s in REVIEW_STATUSES}


class UnknownReviewError(PostgresSinkError, LookupError):
    """No review with that id in the queue."""


class ReviewClosedError(PostgresSinkError):
    """The review was already approved or rejected (decide again with force=True)."""


# -- the statements ----------------------------------------------------------------------

_PREDICTION_COLS = {
    "prediction_id": "text", "asset_id": "text", "alarm_id": "text", "sensor": "text", "method": "text",
    "made_at": "timestamptz", "failure_at": "timestamptz", "lo": "timestamptz", "hi": "timestamptz",
    "ttf_hours": "float8", "lo_hours": "float8", "hi_hours": "float8", "horizon_end": "timestamptz",
    "inputs": "jsonb",
}
_WORK_ORDER_COLS = {
    "work_order_id": "text", "asset_id": "text", "alarm_id": "text", "kind": "text", "status": "text",
    "priority": "int2", "required_skills": "jsonb", "duration_min": "int4", "created_at": "timestamptz",
    "due_at": "timestamptz", "updated_at": "timestamptz", "closed_at": "timestamptz", "prediction_id": "text",
    "failure_at": "timestamptz", "technician_id": "text", "scheduled_start": "timestamptz",
    "scheduled_end": "timestamptz", "maintenance_id": "text", "sensors": "jsonb", "reason": "text",
    "similar_incidents": "jsonb", "revision": "int4",
}
_ASSIGNMENT_COLS = {
    "work_order_id": "text", "technician_id": "text", "start_at": "timestamptz", "end_at": "timestamptz",
    "plan_id": "text", "planned_at": "timestamptz", "method": "text", "solver_status": "text",
    "objective": "int8", "bound": "int8", "gap": "float8", "solve_s": "float8",
}
_REVIEW_COLS = {
    "review_id": "text", "asset_id": "text", "window_start": "timestamptz", "window_end": "timestamptz",
    "score": "float8", "severity": "int2", "anomaly": "jsonb",
}
_THRESHOLD_COLS = {
    "change_id": "text", "asset_id": "text", "at": "timestamptz", "old_threshold": "float8",
    "new_threshold": "float8", "cause": "text", "control_id": "text", "note": "text",
}
_MAINTENANCE_COLS = {
    "maintenance_id": "text", "asset_id": "text", "completed_at": "timestamptz", "outcome": "text",
    "work_order_id": "text", "technician_id": "text", "action": "text", "notes": "text", "parts": "jsonb",
    "source": "text",
}
ASSIGNMENT_COLUMNS: tuple[str, ...] = tuple(_ASSIGNMENT_COLS)
THRESHOLD_CHANGE_COLUMNS: tuple[str, ...] = tuple(_THRESHOLD_COLS)
_NULLABLE_ASSIGNMENT = frozenset({"objective", "bound", "gap", "solve_s"})

_PREDICTION_DATA = list(_PREDICTION_COLS)[1:]
UPSERT_PREDICTIONS = _upsert_sql("predictions", "prediction_id", _PREDICTION_COLS,
                                 _do_update(_PREDICTION_DATA, _changed(_PREDICTION_DATA)))
# a work order never moves backwards: an older revision loses to the stored newer one
UPSERT_WORK_ORDERS = _upsert_sql("work_orders", "work_order_id", _WORK_ORDER_COLS,
                                 _do_update(list(_WORK_ORDER_COLS)[1:], "EXCLUDED.revision > t.revision"))
# a replayed older plan does not overwrite a newer one
UPSERT_ASSIGNMENTS = _upsert_sql("assignments", "work_order_id", _ASSIGNMENT_COLS, _do_update(
    list(_ASSIGNMENT_COLS)[1:],
    "EXCLUDED.planned_at >= t.planned_at AND " + _changed(list(_ASSIGNMENT_COLS)[1:])))
DELETE_UNPLACED = "DELETE FROM {s}.assignments WHERE work_order_id = ANY(%s::text[]) AND planned_at <= %s"
DELETE_NOT_PLACED = "DELETE FROM {s}.assignments WHERE NOT work_order_id = ANY(%s::text[]) AND planned_at <= %s"
INSERT_REVIEWS = _upsert_sql("reviews", "review_id", _REVIEW_COLS, "DO NOTHING") + " RETURNING review_id"
INSERT_THRESHOLD_CHANGES = _upsert_sql("threshold_changes", "change_id", _THRESHOLD_COLS, "DO NOTHING")
INSERT_MAINTENANCE = _upsert_sql("maintenance_log", "maintenance_id", _MAINTENANCE_COLS, "DO NOTHING") + \
    " RETURNING maintenance_id"
LOCK_CONTROLS = "SELECT pg_advisory_xact_lock(%s)"


def _json(records: Sequence[dict[str, Any]]) -> str:
    return _JSON_NUL.sub(rb"\1\\ufffd", orjson.dumps(list(records))).decode()


# -- one connection with retries --------------------------------------------------------

class _Connected(PgConnection):
    """A retrying connection that migrates the schema on first use."""

    def __init__(self, dsn: str, schema: str, *, attempts: int = 5, max_wait_s: float = 5.0,
                 outage_s: float | None = None):
        super().__init__(dsn, schema, attempts=attempts, max_wait_s=max_wait_s, outage_s=outage_s, migrate=True)

    def _q(self, statement: str) -> Any:
        return render(statement, self.schema)

    def _insert_controls(self, conn: psycopg.Connection, statement: str, doc: str) -> list[tuple[Any, ...]]:
        """Insert into a control table under the schema's control lock, so seq follows commit order."""
        with conn.transaction():
            conn.execute(LOCK_CONTROLS, [lock_key("controls", self.schema)])
            return conn.execute(self._q(statement), [doc]).fetchall()

    def store_maintenance(self, records: Sequence[MaintenanceRecord], chunk_rows: int = 1_000) -> int:
        """Log maintenance records once each (by `maintenance_id`); returns how many were new."""
        rows = list({r.maintenance_id: r.to_dict() for r in records}.values())
        new = 0
        for lo in range(0, len(rows), chunk_rows):
            doc = _json(rows[lo: lo + chunk_rows])
            new += len(self._run("store maintenance", lambda c: self._insert_controls(c, INSERT_MAINTENANCE, doc)))
        return new

    def store_dead_letters(self, invalid: Sequence[Invalid]) -> int:
        """Dead-letter unusable input (a bad maintenance message), once each."""
        if not invalid:
            return 0
        doc, query = _json([i.to_dict() for i in invalid]), self._q(INSERT_DEAD_LETTERS)
        self._run("store dead letters", lambda c: c.execute(query, [doc]))
        return len(invalid)


# -- the flow's writer -------------------------------------------------------------------

class LoopWriter(_Connected):
    """Writes the maintenance loop's streams into one schema (migrated on first use).

    Retries connection loss with backoff (for `outage_s` seconds when given,
    else `attempts` times); other errors raise PostgresSinkError.
    """

    def __init__(self, dsn: str, schema: str, *, chunk_rows: int = 1_000, attempts: int = 5,
                 max_wait_s: float = 5.0, outage_s: float | None = None):
        super().__init__(dsn, schema, attempts=attempts, max_wait_s=max_wait_s, outage_s=outage_s)
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
        self.chunk_rows = chunk_rows

    def _write(self, what: str, statement: str, rows: Sequence[dict[str, Any]]) -> int:
        query = self._q(statement)
        for lo in range(0, len(rows), self.chunk_rows):
            doc = _json(rows[lo: lo + self.chunk_rows])
            self._run(what, lambda c: c.execute(query, [doc]))
        return len(rows)

    def upsert_predictions(self, predictions: Sequence[Any]) -> int:
        """Insert or update predictions by id (the last of duplicates wins)."""
        latest = {p.prediction_id: p.to_dict() for p in predictions}
        return self._write("upsert predictions", UPSERT_PREDICTIONS, list(latest.values()))

    def upsert_work_orders(self, orders: Sequence[Any]) -> int:
        """Insert or advance work orders: the highest `revision` wins, in the batch and against the table."""
        latest: dict[str, Any] = {}
        for wo in orders:
            held = latest.get(wo.work_order_id)
            if held is None or wo.revision >= held.revision:
                latest[wo.work_order_id] = wo
        return self._write("upsert work orders", UPSERT_WORK_ORDERS, [w.to_dict() for w in latest.values()])

    def store_plan(self, assignments: Sequence[dict[str, Any]], unplaced_work_order_ids: Sequence[str] = (),
                   *, planned_at: datetime | None = None, whole: bool = True) -> int:
        """Store one plan: upsert its assignments, drop the rows of work orders it left unplaced.

        `assignments` are dicts with the keys `ASSIGNMENT_COLUMNS` (more keys
        are ignored; datetimes aware or RFC 3339 text; objective, bound, gap,
        solve_s may be None). `unplaced_work_order_ids` lose their row. With
        `whole` (a plan covers all open work, as `dispatch.replan` makes them)
        every other row the plan did not place goes too: work closed since
        the last plan. A row written by a newer plan (`planned_at`, default:
        the assignments' latest, else now) is never touched, and a plan older
        than the newest stored is skipped whole: a replayed old plan changes
        nothing. One transaction; returns the assignments stored.
        """
        for i, a in enumerate(assignments):
            missing = [c for c in ASSIGNMENT_COLUMNS if c not in a and c not in _NULLABLE_ASSIGNMENT]
            if missing:
                raise ValueError(f"assignment {i} lacks {', '.join(missing)} (keys: {', '.join(ASSIGNMENT_COLUMNS)})")
        rows = list({a["work_order_id"]: {c: a.get(c) for c in ASSIGNMENT_COLUMNS} for a in assignments}.values())
        if planned_at is not None:
            planned_at = _as_dt(planned_at)
        else:
            stamps = [_as_dt(r["planned_at"]) for r in rows]
            planned_at = max(stamps) if stamps else datetime.now(timezone.utc)
        placed = [r["work_order_id"] for r in rows]
        unplaced = sorted(set(unplaced_work_order_ids) - set(placed))
        upsert = self._q(UPSERT_ASSIGNMENTS)
        delete = self._q(DELETE_NOT_PLACED if whole else DELETE_UNPLACED)
        params = [placed, planned_at] if whole else [unplaced, planned_at]

        newest = self._q("SELECT max(planned_at) FROM {s}.assignments")

        def write(conn: psycopg.Connection) -> int:
            with conn.transaction():
                conn.execute(LOCK_CONTROLS, [lock_key("plan", self.schema)])
                (latest,) = conn.execute(newest).fetchone()
                if latest is not None and latest > planned_at:
                    return 0  # a newer plan is stored: this one is a replay
                if rows:
                    conn.execute(upsert, [_json(rows)])
                if whole or unplaced:
                    conn.execute(delete, params)
                return len(rows)

        return self._run("store plan", write)

    def queue_reviews(self, anomalies: Sequence[Anomaly]) -> int:
        """Queue `needs_review` anomalies; one already queued (or decided) is left as it is.

        Returns how many were newly queued.
        """
        rows = []
        for a in anomalies:
            d = a.to_dict()
            rows.append({"review_id": a.anomaly_id, "asset_id": a.asset_id, "window_start": d["window_start"],
                         "window_end": d["window_end"], "score": d["score"], "severity": a.severity, "anomaly": d})
        query, new = self._q(INSERT_REVIEWS), 0
        for lo in range(0, len(rows), self.chunk_rows):
            doc = _json(rows[lo: lo + self.chunk_rows])
            new += len(self._run("queue reviews", lambda c: c.execute(query, [doc]).fetchall()))
        return new

    def store_threshold_changes(self, changes: Sequence[dict[str, Any]]) -> int:
        """Append to the threshold audit trail (keys: `THRESHOLD_CHANGE_COLUMNS`; note optional)."""
        rows = []
        for i, c in enumerate(changes):
            missing = [k for k in THRESHOLD_CHANGE_COLUMNS if k not in c and k != "note"]
            if missing:
                raise ValueError(f"threshold change {i} lacks {', '.join(missing)}")
            rows.append({k: c.get(k, "") if k == "note" else c[k] for k in THRESHOLD_CHANGE_COLUMNS})
        return self._write("store threshold changes", INSERT_THRESHOLD_CHANGES, rows)


def _as_dt(value: Any) -> datetime:
    dt = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=timezone.utc)  # as the UTC session reads it


# -- people and the control input ------------------------------------------------------

_REVIEW_FIELDS = ("review_id, asset_id, window_start, window_end, score, severity, status, "
                  "queued_at, decided_at, decided_by, note")
INSERT_DECISION = (
    "INSERT INTO {s}.review_decisions (control_id, review_id, asset_id, decision, window_end, decided_by,"
    " note, decided_at, anomaly) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING seq"
)


class LoopStore(_Connected):
    """The review queue and the maintenance log, for the CLI and the control input."""

    def list_reviews(self, status: str = "pending", asset_id: str | None = None,
                     limit: int = 50) -> list[dict[str, Any]]:
        """Reviews by status (`pending`, `deferred`, `approved`, `rejected`, `open` = pending or
        deferred, `all`), most severe first, then oldest window first. Each has the anomaly's `reasons`."""
        if status not in _LIST_FILTERS:
            raise ValueError(f"status must be one of {', '.join(_LIST_FILTERS)}, got {status!r}")
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        query = self._q(
            f"SELECT {_REVIEW_FIELDS}, anomaly->'reasons' AS reasons FROM {{s}}.reviews "
            "WHERE status = ANY(%s) AND (%s::text IS NULL OR asset_id = %s) "
            "ORDER BY severity DESC, window_end, review_id LIMIT %s")
        params = [list(_LIST_FILTERS[status]), asset_id, asset_id, limit]
        return self._run("list reviews", lambda c: c.cursor(row_factory=dict_row).execute(query, params).fetchall())

    def get_review(self, review_id: str) -> dict[str, Any] | None:
        """One review with its anomaly record and its decisions (oldest first), or None."""
        review_q = self._q(f"SELECT {_REVIEW_FIELDS}, anomaly FROM {{s}}.reviews WHERE review_id = %s")
        decisions_q = self._q(
            "SELECT seq, control_id, decision, decided_by, note, decided_at FROM {s}.review_decisions "
            "WHERE review_id = %s ORDER BY seq")

        def get(conn: psycopg.Connection) -> dict[str, Any] | None:
            cur = conn.cursor(row_factory=dict_row)
            row = cur.execute(review_q, [review_id]).fetchone()
            if row is not None:
                row["decisions"] = cur.execute(decisions_q, [review_id]).fetchall()
            return row

        return self._run("get review", get)

    def decide(self, review_id: str, decision: str, note: str = "", decided_by: str = "",
               *, force: bool = False, now: datetime | None = None) -> ReviewDecision:
        """Record a person's decision; it reaches the running flow through `controls_since`.

        Raises UnknownReviewError for an id not in the queue, ReviewClosedError
        when it was already approved or rejected (unless `force`: a person may
        change their mind), ControlError for an unknown decision.
        """
        decision = decision.strip().lower()
        if decision not in DECISIONS:
            raise ControlError(f"decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
        at = now or datetime.now(timezone.utc)
        decided_ms = dt_to_ms(at)  # millisecond text, so the control id is reproducible from the row
        select_q = self._q("SELECT asset_id, window_end, anomaly, status, decided_by, decided_at "
                           "FROM {s}.reviews WHERE review_id = %s FOR UPDATE")
        insert_q = self._q(INSERT_DECISION)
        update_q = self._q("UPDATE {s}.reviews SET status = %s, decided_at = %s, decided_by = %s, note = %s "
                           "WHERE review_id = %s")

        def run(conn: psycopg.Connection) -> ReviewDecision:
            with conn.transaction():
                conn.execute(LOCK_CONTROLS, [lock_key("controls", self.schema)])
                row = conn.execute(select_q, [review_id]).fetchone()
                if row is None:
                    raise UnknownReviewError(f"no review {review_id!r} in schema {self.schema!r}")
                asset_id, window_end, anomaly, status, by, when = row
                if status in ("approved", "rejected") and not force:
                    at_text = f" at {when:%Y-%m-%d %H:%M} UTC" if when is not None else ""
                    raise ReviewClosedError(f"review {review_id!r} was already {status} by {by or 'someone'}"
                                            f"{at_text}; use force to decide again")
                d = ReviewDecision(review_id=review_id, asset_id=asset_id, decision=decision,
                                   at_ms=dt_to_ms(window_end), decided_by=decided_by.strip(), note=note.strip(),
                                   decided_at=iso(decided_ms), anomaly=anomaly)
                conn.execute(insert_q, [d.control_id, review_id, asset_id, decision, window_end, d.decided_by,
                                        d.note, ms_to_dt(decided_ms), Jsonb(anomaly)])
                conn.execute(update_q, [_STATUS_AFTER[decision], ms_to_dt(decided_ms), d.decided_by, d.note,
                                        review_id])
                return d

        return self._run("decide review", run)

    def log_maintenance(self, record: MaintenanceRecord) -> bool:
        """Store one completion record; False if its `maintenance_id` was logged before."""
        return self.store_maintenance([record]) == 1

    def controls_since(self, decision_seq: int, maintenance_seq: int,
                       limit: int = 500) -> list[tuple[str, int, ReviewDecision | MaintenanceRecord]]:
        """Decisions and maintenance records after the given seqs: `("decision" | "maintenance", seq, control)`.

        At most `limit` of each kind; each kind in `seq` order, the two merged
        by the wall time they were recorded.
        """
        decisions_q = self._q(
            "SELECT seq, review_id, asset_id, decision, window_end, decided_by, note, decided_at, anomaly "
            "FROM {s}.review_decisions WHERE seq > %s ORDER BY seq LIMIT %s")
        maintenance_q = self._q(
            "SELECT seq, maintenance_id, asset_id, completed_at, outcome, work_order_id, technician_id, action, "
            "notes, parts, source, logged_at FROM {s}.maintenance_log WHERE seq > %s ORDER BY seq LIMIT %s")

        def read(conn: psycopg.Connection) -> list[tuple[datetime, int, str, int, Any]]:
            out: list[tuple[datetime, int, str, int, Any]] = []
            for seq, rid, asset, dec, wend, by, note, at, anomaly in conn.execute(
                    decisions_q, [decision_seq, limit]):
                out.append((at, 0, "decision", seq, ReviewDecision(
                    review_id=rid, asset_id=asset, decision=dec, at_ms=dt_to_ms(wend), decided_by=by, note=note,
                    decided_at=iso(dt_to_ms(at)), anomaly=anomaly)))
            for seq, mid, asset, done, outcome, wo, tech, action, notes, parts, source, logged in conn.execute(
                    maintenance_q, [maintenance_seq, limit]):
                out.append((logged, 1, "maintenance", seq, MaintenanceRecord(
                    maintenance_id=mid, asset_id=asset, at_ms=dt_to_ms(done), outcome=outcome, work_order_id=wo,
                    technician_id=tech, action=action, notes=notes, parts=tuple(parts), source=source)))
            return out

        rows = self._run("read controls", read)
        rows.sort(key=lambda r: (r[0], r[1], r[3]))
        return [(kind, seq, control) for _, _, kind, seq, control in rows]

    def latest_seqs(self) -> tuple[int, int]:
        """The last `seq` of review_decisions and of maintenance_log (0 when empty): "now" for the control input."""
        query = self._q("SELECT (SELECT coalesce(max(seq), 0) FROM {s}.review_decisions), "
                        "(SELECT coalesce(max(seq), 0) FROM {s}.maintenance_log)")
        d, m = self._run("read latest seqs", lambda c: c.execute(query).fetchone())
        return int(d), int(m)

    def open_work_orders(self, asset_id: str | None = None) -> list[dict[str, Any]]:
        """Work orders not done or cancelled, by due time."""
        query = self._q(
            "SELECT work_order_id, asset_id, alarm_id, kind, status, priority, due_at, technician_id, "
            "scheduled_start, reason FROM {s}.work_orders WHERE status NOT IN ('done', 'cancelled') "
            "AND (%s::text IS NULL OR asset_id = %s) ORDER BY due_at, work_order_id")
        return self._run("list open work orders",
                         lambda c: c.cursor(row_factory=dict_row).execute(query, [asset_id, asset_id]).fetchall())



# -- Bytewax ----------------------------------------------------------------------------

LOOP_STREAMS = ("predictions", "work_orders", "assignments", "reviews", "threshold_changes", "maintenance_log")


class LoopSink(DynamicSink):
    """Writes one maintenance-loop stream to PostgreSQL (one connection per worker, schema migrated once).

    Items by stream: `Prediction`; `WorkOrder` (or anything with a `.work_order`);
    a plan with `.assignments` and `.unplaced` (or a dict with those keys);
    a `needs_review` `Anomaly`; a threshold-change dict; a `MaintenanceRecord`.
    """

    def __init__(self, settings: Any, stream: str):
        if stream not in LOOP_STREAMS:
            raise ValueError(f"stream must be one of {', '.join(LOOP_STREAMS)}, got {stream!r}")
        self._settings = settings
        self._stream = stream

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _LoopPartition:
        from smart_maintenance.sinks.pg_server import resolve_dsn

        pg = self._settings.postgres
        writer = LoopWriter(resolve_dsn(self._settings), pg.schema_name, outage_s=pg.outage_s).open()
        return _LoopPartition(writer, self._stream)


def _plan_parts(item: Any) -> tuple[Sequence[dict[str, Any]], Sequence[str]]:
    if isinstance(item, dict):
        return item.get("assignments", ()), item.get("unplaced", ())
    return item.assignments, item.unplaced


class _LoopPartition(StatelessSinkPartition[Any]):
    def __init__(self, writer: LoopWriter, stream: str):
        self._writer = writer
        self._stream = stream

    def write_batch(self, items: list[Any]) -> None:
        if not items:
            return
        w = self._writer
        if self._stream == "predictions":
            w.upsert_predictions(items)
        elif self._stream == "work_orders":
            w.upsert_work_orders([getattr(i, "work_order", None) or i for i in items])
        elif self._stream == "assignments":
            for plan in items:  # in order: each plan replaces the one before
                w.store_plan(*_plan_parts(plan))
        elif self._stream == "reviews":
            w.queue_reviews(items)
        elif self._stream == "threshold_changes":
            w.store_threshold_changes(items)
        else:
            w.store_maintenance(items)

    def close(self) -> None:
        self._writer.close()
