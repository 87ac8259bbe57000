"""The review queue and the maintenance log in PostgreSQL, for people and the control input.

`LoopStore` is what the CLI and `sources/controls.py` use: the review queue
(list, show, decide), the maintenance log, and `controls_since`, which reads
decisions, completed maintenance and planners' work-order changes back in
`seq` order. The flow's writes are `LoopWriter`'s, in `connectors/postgres/loop.py`.

Rows of `review_decisions`, `maintenance_log` and `work_order_updates` are
inserted under one advisory lock per schema, so `seq` is allocated in commit
order: a reader polling `seq > last` never skips a row committed late with a
smaller seq.

    store = LoopStore(resolve_dsn(settings), settings.postgres.schema_name)
    with store:
        for r in store.list_reviews():
            ...
        store.decide(review_id, "reject", note="pump was being cleaned", decided_by="ana")
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any, cast

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from smart_maintenance.connectors.postgres.loop import LOCK_CONTROLS, _Connected
from smart_maintenance.connectors.postgres.schema import lock_key
from smart_maintenance.connectors.postgres.server import PostgresSinkError
from smart_maintenance.operators.controls import (
    DECISIONS,
    ControlError,
    MaintenanceRecord,
    ReviewDecision,
    WorkOrderChange,
)
from smart_maintenance.operators.records import dt_to_ms, iso, ms_to_dt

__all__ = ["REVIEW_STATUSES", "LoopStore", "ReviewClosedError", "UnknownReviewError"]

log = logging.getLogger(__name__)

# decision -> the review's status afterwards; "deferred" stays reviewable
_STATUS_AFTER = {"approve": "approved", "reject": "rejected", "defer": "deferred"}
REVIEW_STATUSES = ("pending", "deferred", "approved", "rejected")
_LIST_FILTERS = {"open": ("pending", "deferred"), "all": REVIEW_STATUSES} | {s: (s,) for s in REVIEW_STATUSES}


class UnknownReviewError(PostgresSinkError, LookupError):
    """No review with that id in the queue."""


class ReviewClosedError(PostgresSinkError):
    """The review was already approved or rejected (decide again with force=True)."""


_REVIEW_FIELDS = ("review_id, asset_id, window_start, window_end, score, severity, status, "
                  "queued_at, decided_at, decided_by, note, window_count, "
                  "coalesce(first_window_end, window_end) AS first_window_end, sensors, trend, "
                  "last_anomaly_id, updated_at")
INSERT_DECISION = (
    "INSERT INTO {s}.review_decisions (control_id, review_id, asset_id, decision, window_end, decided_by,"
    " note, decided_at, anomaly) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING seq"
)


class LoopStore(_Connected):
    """The review queue and the maintenance log, for the CLI and the control input."""

    def list_reviews(self, status: str = "pending", asset_id: str | None = None,
                     limit: int = 50) -> list[dict[str, Any]]:
        """Review cases by status (`pending`, `deferred`, `approved`, `rejected`, `open` = pending or
        deferred, `all`), most severe first, then oldest last window first. Each has its peak window's `reasons`;
        `score` is the case's peak score, `window_start`/`window_end` its first window's start and last one's end."""
        if status not in _LIST_FILTERS:
            raise ValueError(f"status must be one of {', '.join(_LIST_FILTERS)}, got {status!r}")
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        query = self._q(
            f"SELECT {_REVIEW_FIELDS}, anomaly->'reasons' AS reasons FROM {{s}}.reviews "  # noqa: S608 constant SQL
            "WHERE status = ANY(%s) AND (%s::text IS NULL OR asset_id = %s) "
            "ORDER BY severity DESC, window_end, review_id LIMIT %s")
        params = [list(_LIST_FILTERS[status]), asset_id, asset_id, limit]
        return self._run("list reviews", lambda c: c.cursor(row_factory=dict_row).execute(query, params).fetchall())

    def get_review(self, review_id: str) -> dict[str, Any] | None:
        """One review with its anomaly record and its decisions (oldest first), or None."""
        review_q = self._q(
            f"SELECT {_REVIEW_FIELDS}, anomaly FROM {{s}}.reviews WHERE review_id = %s")  # noqa: S608 constant SQL
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
        """Record a person's decision on a whole case; it reaches the running flow through `controls_since`.

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

    def controls_since(self, decision_seq: int, maintenance_seq: int, limit: int = 500, *,
                       change_seq: int = 0) -> list[tuple[str, int, ReviewDecision | MaintenanceRecord
                                                         | WorkOrderChange]]:
        """Decisions, maintenance records and planners' work-order changes after the given seqs:
        `("decision" | "maintenance" | "change", seq, control)`.

        At most `limit` of each kind; each kind in `seq` order, the three merged
        by the wall time they were recorded. A change that only comments is not
        a control. A stored change that fails its checks (only a hand-written
        row can) is logged and left out.
        """
        decisions_q = self._q(
            "SELECT seq, review_id, asset_id, decision, window_end, decided_by, note, decided_at, anomaly "
            "FROM {s}.review_decisions WHERE seq > %s ORDER BY seq LIMIT %s")
        maintenance_q = self._q(
            "SELECT seq, maintenance_id, asset_id, completed_at, outcome, work_order_id, technician_id, action, "
            "notes, parts, source, logged_at FROM {s}.maintenance_log WHERE seq > %s ORDER BY seq LIMIT %s")
        changes_q = self._q(
            "SELECT seq, work_order_id, asset_id, effective_at, fields, by_name, at FROM {s}.work_order_updates "
            "WHERE seq > %s AND fields <> '{{}}'::jsonb ORDER BY seq LIMIT %s")

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
            for seq, wo, asset, effective, fields, by, at in conn.execute(changes_q, [change_seq, limit]):
                try:
                    change = WorkOrderChange.from_fields(fields, work_order_id=wo, asset_id=asset,
                                                         effective_at=effective, seq=seq, by=by)
                except ControlError as e:
                    log.warning("work_order_updates row %s is not a usable change, left out: %s", seq, e)
                    continue
                out.append((at, 2, "change", seq, change))
            return out

        rows = self._run("read controls", read)
        rows.sort(key=lambda r: (r[0], r[1], r[3]))
        return [(kind, seq, control) for _, _, kind, seq, control in rows]

    def latest_seqs(self) -> tuple[int, int, int]:
        """The last `seq` of review_decisions, maintenance_log and work_order_updates (0 when empty): "now" for
        the control input."""
        query = self._q("SELECT (SELECT coalesce(max(seq), 0) FROM {s}.review_decisions), "
                        "(SELECT coalesce(max(seq), 0) FROM {s}.maintenance_log), "
                        "(SELECT coalesce(max(seq), 0) FROM {s}.work_order_updates)")
        # three aggregates: always one row
        d, m, c = self._run("read latest seqs", lambda c: cast(tuple[Any, Any, Any], c.execute(query).fetchone()))
        return int(d), int(m), int(c)

    def work_order(self, work_order_id: str) -> dict[str, Any] | None:
        """One stored work order as the flow's record (`WorkOrder.to_dict()` form: times in RFC 3339), or None."""
        query = self._q("SELECT * FROM {s}.work_orders WHERE work_order_id = %s")
        row = self._run("read a work order",
                        lambda c: c.cursor(row_factory=dict_row).execute(query, [work_order_id]).fetchone())
        if row is None:
            return None
        return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}

    def open_work_orders(self, asset_id: str | None = None) -> list[dict[str, Any]]:
        """Work orders not done or cancelled, by due time."""
        query = self._q(
            "SELECT work_order_id, asset_id, alarm_id, kind, status, priority, due_at, technician_id, "
            "scheduled_start, reason FROM {s}.work_orders WHERE status NOT IN ('done', 'cancelled') "
            "AND (%s::text IS NULL OR asset_id = %s) ORDER BY due_at, work_order_id")
        return self._run("list open work orders",
                         lambda c: c.cursor(row_factory=dict_row).execute(query, [asset_id, asset_id]).fetchall())
