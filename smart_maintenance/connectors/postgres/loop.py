"""PostgreSQL side of the maintenance loop: the flow's writes of its streams.

`LoopWriter` stores what the flow produces (predictions, work orders, the
current plan, reviews to queue, threshold changes, maintenance records), every
write idempotent so a replay after recovery leaves the same rows; `LoopSink`
is its Bytewax sink. What people and the control input read and decide (the
review queue, the maintenance log, `controls_since`) is `LoopStore`, in
`connectors/postgres/store.py`.

Rows of `review_decisions` and `maintenance_log` are inserted under one
advisory lock per schema, so `seq` is allocated in commit order: a reader
polling `seq > last` never skips a row committed late with a smaller seq.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timezone
from functools import partial
from typing import Any, TypeVar, cast

import psycopg
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from smart_maintenance.config.settings import PostgresSettings, Settings
from smart_maintenance.connectors.postgres.connection import PgConnection
from smart_maintenance.connectors.postgres.schema import (
    INSERT_DEAD_LETTERS,
    _changed,
    _do_update,
    _upsert_sql,
    json_doc,
    lock_key,
    render,
)
from smart_maintenance.connectors.postgres.server import postgres_section, resolve_dsn
from smart_maintenance.operators.controls import MaintenanceRecord
from smart_maintenance.operators.judge.cases import ReviewCase
from smart_maintenance.operators.records import Anomaly, Invalid

__all__ = ["ASSIGNMENT_COLUMNS", "LOOP_STREAMS", "THRESHOLD_CHANGE_COLUMNS", "LoopSink", "LoopWriter"]

log = logging.getLogger(__name__)
T = TypeVar("T")



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
    "score": "float8", "severity": "int2", "anomaly": "jsonb", "first_window_end": "timestamptz",
    "window_count": "int4", "sensors": "jsonb", "trend": "jsonb", "last_anomaly_id": "text",
}
_REVIEW_GROWS = ("window_end", "score", "severity", "anomaly", "window_count", "sensors", "trend", "last_anomaly_id")
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
# a case grows while its windows arrive; its status (pending, decided) is the people's and stays
UPSERT_REVIEWS = _upsert_sql("reviews", "review_id", _REVIEW_COLS, _do_update(
    _REVIEW_GROWS, "EXCLUDED.window_count > t.window_count", also=["updated_at = now()"])) + \
    " RETURNING review_id, (xmax = 0) AS inserted"
INSERT_THRESHOLD_CHANGES = _upsert_sql("threshold_changes", "change_id", _THRESHOLD_COLS, "DO NOTHING")
INSERT_MAINTENANCE = _upsert_sql("maintenance_log", "maintenance_id", _MAINTENANCE_COLS, "DO NOTHING") + \
    " RETURNING maintenance_id"
LOCK_CONTROLS = "SELECT pg_advisory_xact_lock(%s)"


def _json(records: Sequence[dict[str, Any]]) -> str:
    return json_doc(records)


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
            insert = partial(self._insert_controls, statement=INSERT_MAINTENANCE, doc=doc)
            new += len(self._run("store maintenance", insert))
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
            self._run(what, lambda c: c.execute(query, [doc]))  # noqa: B023 _run calls it at once
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
                (latest,) = cast(tuple[Any], conn.execute(newest).fetchone())  # max() returns one row
                if latest is not None and latest > planned_at:
                    return 0  # a newer plan is stored: this one is a replay
                if rows:
                    conn.execute(upsert, [_json(rows)])
                if whole or unplaced:
                    conn.execute(delete, params)
                return len(rows)

        return self._run("store plan", write)

    def queue_reviews(self, cases: Sequence[ReviewCase | Anomaly]) -> int:
        """Queue or grow review cases (a lone `needs_review` anomaly is a case of one window).

        A stored case only grows (more windows win); its status and decision
        are left as they are. Returns how many cases were newly queued.
        """
        latest: dict[str, ReviewCase] = {}
        for c in cases:
            case = c if isinstance(c, ReviewCase) else ReviewCase.from_anomaly(c)
            held = latest.get(case.case_id)
            if held is None or case.window_count >= held.window_count:
                latest[case.case_id] = case
        rows = []
        for case in latest.values():
            d = case.to_dict()
            rows.append({"review_id": case.case_id, "asset_id": case.asset_id, "window_start": d["window_start"],
                         "window_end": d["window_end"], "score": d["peak_score"], "severity": case.severity,
                         "anomaly": d["anomaly"], "first_window_end": d["first_window_end"],
                         "window_count": case.window_count, "sensors": d["sensors"], "trend": d["trend"],
                         "last_anomaly_id": case.last_anomaly_id})
        query, new = self._q(UPSERT_REVIEWS), 0
        for lo in range(0, len(rows), self.chunk_rows):
            doc = _json(rows[lo: lo + self.chunk_rows])
            written = self._run("queue reviews",
                                lambda c: c.execute(query, [doc]).fetchall())  # noqa: B023 _run calls it at once
            new += sum(1 for _, inserted in written if inserted)
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


# -- Bytewax ----------------------------------------------------------------------------

LOOP_STREAMS = ("predictions", "work_orders", "assignments", "reviews", "threshold_changes", "maintenance_log")


class LoopSink(DynamicSink[Any]):
    """Writes one maintenance-loop stream to PostgreSQL (one connection per worker, schema migrated once).

    Items by stream: `Prediction`; `WorkOrder` (or anything with a `.work_order`);
    a plan with `.assignments`, `.unplaced` and `.planned_at` (or a dict with those keys);
    a `ReviewCase` (or a lone `needs_review` `Anomaly`); a threshold-change dict; a `MaintenanceRecord`.
    """

    def __init__(self, settings: Settings | PostgresSettings, stream: str):
        if stream not in LOOP_STREAMS:
            raise ValueError(f"stream must be one of {', '.join(LOOP_STREAMS)}, got {stream!r}")
        self._pg = postgres_section(settings)
        self._stream = stream

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _LoopPartition:
        pg = self._pg
        writer = LoopWriter(resolve_dsn(pg, ride_out=True), pg.schema_name, outage_s=pg.outage_s).open()
        return _LoopPartition(writer, self._stream)


def _plan_parts(item: Any) -> tuple[Sequence[dict[str, Any]], Sequence[str], Any]:
    """A plan's assignments, unplaced work order ids and `planned_at` (None: from the assignments)."""
    if isinstance(item, dict):
        return item.get("assignments", ()), item.get("unplaced", ()), item.get("planned_at")
    return item.assignments, item.unplaced, getattr(item, "planned_at", None)


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
                assignments, unplaced, planned_at = _plan_parts(plan)
                w.store_plan(assignments, unplaced, planned_at=planned_at)
        elif self._stream == "reviews":
            w.queue_reviews(items)
        elif self._stream == "threshold_changes":
            w.store_threshold_changes(items)
        else:
            w.store_maintenance(items)

    def close(self) -> None:
        self._writer.close()
