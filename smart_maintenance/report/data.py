"""What the report needs, read from PostgreSQL in a few parametrised queries.

The period is event time: from `since` (or the oldest data) to the newest
data of the scope, so a replay of old recordings reports on them. A `since`
given as a duration counts back from that newest data. Sensor trends are
downsampled in SQL to at most `points` buckets per asset and sensor (mean of
the window means, min of the minima, max of the maxima), so a year of
one-minute windows still draws quickly. Tables that a schema lacks (an older
schema, or none at all) read as empty: a fresh database gives an empty report.

    data = load_report_data(dsn, "public", since=timedelta(days=7), asset=None)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, cast

import pandas as pd
import psycopg
from psycopg import sql

from smart_maintenance.connectors.postgres.server import redact
from smart_maintenance.operators.kpis import frame


class ReportDataError(Exception):
    """The report's data could not be read from PostgreSQL."""


@dataclass(frozen=True)
class ReportData:
    """The report's inputs: one DataFrame per table, already filtered to the period and asset."""

    period_start: datetime | None  # None: no data at all
    period_end: datetime | None
    asset: str | None
    assets_seen: tuple[str, ...]  # assets with features or alarms in scope
    trends: pd.DataFrame  # asset_id, sensor, ts, mean, vmin, vmax, windows
    anomalies: pd.DataFrame  # asset_id, window_start, window_end, score, status, severity, sensor
    alarms: pd.DataFrame  # those open at any time in the period
    predictions: pd.DataFrame  # the latest per alarm
    work_orders: pd.DataFrame
    assignments: pd.DataFrame  # the current plan, with the work order's asset, kind and priority
    decisions: pd.DataFrame  # review_decisions
    reviews_pending: int
    maintenance: pd.DataFrame  # maintenance_log
    threshold_changes: pd.DataFrame
    missing_tables: tuple[str, ...] = field(default=())


_TABLES = ("features", "anomalies", "alarms", "predictions", "work_orders", "assignments", "reviews",
           "review_decisions", "maintenance_log", "threshold_changes")


def load_report_data(dsn: str, schema: str, *, since: datetime | timedelta | None = None,
                     asset: str | None = None, points: int = 500) -> ReportData:
    """Read the report's data for `asset` (None: all) from `since` (None: all time) to the newest data."""
    if points < 2:
        raise ValueError(f"points must be at least 2, got {points}")
    if isinstance(since, datetime) and since.tzinfo is None:
        raise ValueError("since needs a time zone")
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            conn.execute("SET TIME ZONE 'UTC'")
            return _Loader(conn, schema, asset).load(since, points)
    except psycopg.Error as e:
        raise ReportDataError(f"cannot read the report's data from schema {schema!r} at {redact(dsn)}: {e}") from e


class _Loader:
    def __init__(self, conn: psycopg.Connection, schema: str, asset: str | None):
        self.conn, self.schema, self.asset = conn, schema, asset
        self.present = {t for (t,) in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s", [schema])}

    def t(self, name: str) -> sql.Identifier:
        return sql.Identifier(self.schema, name)

    def where_asset(self, column: str = "asset_id") -> tuple[sql.Composable, list[Any]]:
        if self.asset is None:
            return sql.SQL("TRUE"), []
        return sql.SQL("{} = %s").format(sql.Identifier(column)), [self.asset]

    def query(self, table: str, statement: sql.Composed, params: list[Any], columns: list[str]) -> pd.DataFrame:
        if table not in self.present:
            return frame([], columns)
        cur = self.conn.execute(statement, params)
        names = [d.name for d in cur.description or []]
        return frame(pd.DataFrame(cur.fetchall(), columns=names), columns)

    def bounds(self) -> tuple[datetime | None, datetime | None]:
        """Oldest and newest event time of the scope's sensor data: features, anomalies, alarms."""
        parts = []
        asset_sql, _ = self.where_asset()
        for table, lo, hi in (("features", "window_start", "window_end"), ("anomalies", "window_start", "window_end"),
                              ("alarms", "opened_at", "updated_at")):
            if table in self.present:
                parts.append(sql.SQL("SELECT min({lo}) AS lo, max({hi}) AS hi FROM {t} WHERE {a}").format(
                    lo=sql.Identifier(lo), hi=sql.Identifier(hi), t=self.t(table), a=asset_sql))
        if not parts:
            return None, None
        statement = sql.SQL("SELECT min(lo), max(hi) FROM ({}) AS b").format(sql.SQL(" UNION ALL ").join(parts))
        params = [self.asset] * len(parts) if self.asset is not None else []
        lo, hi = cast(tuple[Any, Any], self.conn.execute(statement, params).fetchone())  # aggregates: one row
        return lo, hi

    def load(self, since: datetime | timedelta | None, points: int) -> ReportData:
        first, end = self.bounds()
        if end is None:
            start = since if isinstance(since, datetime) else None
        elif isinstance(since, timedelta):
            start = end - since
        else:
            start = since if since is not None else first
        if start is not None and end is not None and start > end:  # nothing since then: an empty period
            end = start
        lo = start or datetime(1, 1, 2, tzinfo=timezone.utc)
        hi = end or datetime(9999, 12, 30, tzinfo=timezone.utc)
        a, ap = self.where_asset()
        step = max((hi - lo).total_seconds() / points, 1.0) if start and end else 1.0

        trends = self.query("features", sql.SQL(
            "SELECT asset_id, sensor, to_timestamp(avg(t)) AS ts, avg(mean) AS mean, min(min) AS vmin, "
            "max(max) AS vmax, count(*) AS windows FROM ("
            " SELECT asset_id, sensor, mean, min, max, extract(epoch FROM window_start) AS t FROM {t}"
            " WHERE window_start >= %s AND window_start <= %s AND {a}) AS f "
            "GROUP BY asset_id, sensor, floor((t - %s) / %s) ORDER BY asset_id, sensor, ts"
        ).format(t=self.t("features"), a=a), [lo, hi, *ap, lo.timestamp(), step],
            ["asset_id", "sensor", "ts", "mean", "vmin", "vmax", "windows"])
        if len(trends):
            trends["ts"] = pd.to_datetime(trends["ts"], utc=True)
        anomalies = self.query("anomalies", sql.SQL(
            "SELECT asset_id, window_start, window_end, score, status, severity, "
            # the sensor to mark it on: the faulty one, else the top contributor
            " coalesce(sensors->>0, contributions->0->>'sensor') AS sensor "
            "FROM {t} WHERE window_end >= %s AND window_start <= %s AND {a} ORDER BY asset_id, window_start"
        ).format(t=self.t("anomalies"), a=a), [lo, hi, *ap],
            ["asset_id", "window_start", "window_end", "score", "status", "severity", "sensor"])
        alarms = self.query("alarms", sql.SQL(
            "SELECT alarm_id, asset_id, kind, status, severity, opened_at, updated_at, cleared_at, peak_score, "
            " anomaly_count, sensors, reason FROM {t} "
            "WHERE opened_at <= %s AND (cleared_at IS NULL OR cleared_at >= %s) AND {a} ORDER BY opened_at DESC"
        ).format(t=self.t("alarms"), a=a), [hi, lo, *ap],
            ["alarm_id", "asset_id", "kind", "status", "severity", "opened_at", "updated_at", "cleared_at",
             "peak_score", "anomaly_count", "sensors", "reason"])
        predictions = self.query("predictions", sql.SQL(
            "SELECT DISTINCT ON (alarm_id) prediction_id, asset_id, alarm_id, sensor, method, made_at, failure_at, "
            " lo, hi, ttf_hours, lo_hours, hi_hours, horizon_end FROM {t} "
            "WHERE made_at <= %s AND {a} ORDER BY alarm_id, made_at DESC"
        ).format(t=self.t("predictions"), a=a), [hi, *ap],
            ["prediction_id", "asset_id", "alarm_id", "sensor", "method", "made_at", "failure_at", "lo", "hi",
             "ttf_hours", "lo_hours", "hi_hours", "horizon_end"])
        work_orders = self.query("work_orders", sql.SQL(
            "SELECT work_order_id, asset_id, alarm_id, kind, status, priority, duration_min, created_at, due_at, "
            " closed_at, technician_id, scheduled_start, scheduled_end, maintenance_id, failure_at, reason "
            "FROM {t} WHERE (closed_at IS NULL OR closed_at >= %s) AND created_at <= %s AND {a} "
            "ORDER BY created_at DESC"
        ).format(t=self.t("work_orders"), a=a), [lo, hi, *ap],
            ["work_order_id", "asset_id", "alarm_id", "kind", "status", "priority", "duration_min", "created_at",
             "due_at", "closed_at", "technician_id", "scheduled_start", "scheduled_end", "maintenance_id",
             "failure_at", "reason"])
        assignments = pd.DataFrame()
        if "work_orders" in self.present:
            assignments = self.query("assignments", sql.SQL(
                "SELECT s.work_order_id, s.technician_id, s.start_at, s.end_at, s.method, s.solver_status, s.gap, "
                " w.asset_id, w.kind, w.priority FROM {t} AS s JOIN {w} AS w USING (work_order_id) "
                "WHERE {a} ORDER BY s.technician_id, s.start_at"
            ).format(t=self.t("assignments"), w=self.t("work_orders"),
                     a=sql.SQL("w.asset_id = %s") if self.asset is not None else sql.SQL("TRUE")), ap,
                ["work_order_id", "technician_id", "start_at", "end_at", "method", "solver_status", "gap",
                 "asset_id", "kind", "priority"])
        if not len(assignments):
            assignments = frame([], ["work_order_id", "technician_id", "start_at", "end_at", "asset_id", "kind",
                                     "priority"])
        decisions = self.query("review_decisions", sql.SQL(
            "SELECT seq, review_id, asset_id, decision, window_end, decided_by, note, decided_at FROM {t} "
            "WHERE window_end >= %s AND window_end <= %s AND {a} ORDER BY seq"
        ).format(t=self.t("review_decisions"), a=a), [lo, hi, *ap],
            ["seq", "review_id", "asset_id", "decision", "window_end", "decided_by", "note", "decided_at"])
        pending = 0
        if "reviews" in self.present:
            row = self.conn.execute(sql.SQL(
                "SELECT count(*) FROM {t} WHERE status IN ('pending', 'deferred') AND {a}"
            ).format(t=self.t("reviews"), a=a), ap).fetchone()
            pending = cast(tuple[Any, ...], row)[0]  # count(*) returns one row
        maintenance = self.query("maintenance_log", sql.SQL(
            "SELECT maintenance_id, asset_id, completed_at, outcome, work_order_id, technician_id, action, notes, "
            " parts FROM {t} WHERE completed_at >= %s AND {a} ORDER BY completed_at DESC"  # logged after the data: kept
        ).format(t=self.t("maintenance_log"), a=a), [lo, *ap],
            ["maintenance_id", "asset_id", "completed_at", "outcome", "work_order_id", "technician_id", "action",
             "notes", "parts"])
        changes = self.query("threshold_changes", sql.SQL(
            # every change of an asset: the first one splits its false-positive rate, wherever the period starts
            "SELECT change_id, asset_id, at, old_threshold, new_threshold, cause, control_id, note FROM {t} "
            "WHERE at <= %s AND {a} ORDER BY at"
        ).format(t=self.t("threshold_changes"), a=a), [hi, *ap],
            ["change_id", "asset_id", "at", "old_threshold", "new_threshold", "cause", "control_id", "note"])
        seen = sorted(set(trends["asset_id"]) | set(alarms["asset_id"]) | set(anomalies["asset_id"]))
        return ReportData(
            period_start=start if end is not None else None, period_end=end, asset=self.asset,
            assets_seen=tuple(seen), trends=trends, anomalies=anomalies, alarms=alarms, predictions=predictions,
            work_orders=work_orders, assignments=assignments, decisions=decisions, reviews_pending=int(pending),
            maintenance=maintenance, threshold_changes=changes,
            missing_tables=tuple(t for t in _TABLES if t not in self.present),
        )
