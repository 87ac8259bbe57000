"""A plant's stored history for a what-if: its readings as a replay file, its labels, its maintenance.

Readings leave PostgreSQL through a server-side cursor in time order, 100,000
rows at a time, into a long-format Parquet file (`asset_id, sensor, ts, value`)
that the replay source reads like any backfill: memory stays flat whatever the
history's length.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
from psycopg.rows import dict_row

from smart_maintenance.connectors.postgres.schema import render

_SCHEMA = pa.schema([("asset_id", pa.string()), ("sensor", pa.string()),
                     ("ts", pa.timestamp("ms", tz="UTC")), ("value", pa.float64())])


@dataclass(frozen=True)
class Span:
    """The stored readings in a range: first and last time, rows, assets."""

    start: datetime | None
    end: datetime | None
    rows: int
    assets: int


def _args(start: datetime | None, end: datetime | None, assets: Sequence[str]) -> dict[str, Any]:
    return {"start": start, "end": end, "assets": list(assets)}


# each query takes one range (on its table's own time column) and a set of assets; None or none means all
_SPAN = (
    "SELECT min(ts), max(ts), count(*), count(DISTINCT asset_id) FROM {s}.readings WHERE "
    "(%(start)s::timestamptz IS NULL OR ts >= %(start)s) "
    "AND (%(end)s::timestamptz IS NULL OR ts < %(end)s) "
    "AND (cardinality(%(assets)s::text[]) = 0 OR asset_id = ANY(%(assets)s::text[]))"
)
_EXPORT = (
    "SELECT asset_id, sensor, ts, value FROM {s}.readings WHERE "
    "(%(start)s::timestamptz IS NULL OR ts >= %(start)s) "
    "AND (%(end)s::timestamptz IS NULL OR ts < %(end)s) "
    "AND (cardinality(%(assets)s::text[]) = 0 OR asset_id = ANY(%(assets)s::text[])) "
    "ORDER BY ts, asset_id, sensor"
)
_REVIEWS = (
    "SELECT review_id, asset_id, status, window_start, first_window_end, window_end FROM {s}.reviews "
    "WHERE status IN ('approved', 'rejected') AND "
    "(%(start)s::timestamptz IS NULL OR window_end >= %(start)s) "
    "AND (%(end)s::timestamptz IS NULL OR window_end < %(end)s) "
    "AND (cardinality(%(assets)s::text[]) = 0 OR asset_id = ANY(%(assets)s::text[])) "
    "ORDER BY window_end, review_id"
)
_MAINTENANCE = (
    "SELECT m.maintenance_id, m.asset_id, m.completed_at, m.outcome, m.work_order_id, m.technician_id, "
    "m.action, m.notes, m.source, a.opened_at AS alarm_opened_at, a.cleared_at AS alarm_cleared_at "
    "FROM {s}.maintenance_log m "
    "LEFT JOIN {s}.work_orders w ON w.work_order_id = m.work_order_id AND m.work_order_id <> '' "
    "LEFT JOIN {s}.alarms a ON a.alarm_id = w.alarm_id WHERE "
    "(%(start)s::timestamptz IS NULL OR m.completed_at >= %(start)s) "
    "AND (%(end)s::timestamptz IS NULL OR m.completed_at < %(end)s) "
    "AND (cardinality(%(assets)s::text[]) = 0 OR m.asset_id = ANY(%(assets)s::text[])) "
    "ORDER BY m.completed_at, m.maintenance_id"
)
_ALARMS = (
    "SELECT kind, count(*) FROM {s}.alarms WHERE "
    "(%(start)s::timestamptz IS NULL OR opened_at >= %(start)s) "
    "AND (%(end)s::timestamptz IS NULL OR opened_at < %(end)s) "
    "AND (cardinality(%(assets)s::text[]) = 0 OR asset_id = ANY(%(assets)s::text[])) "
    "GROUP BY kind"
)


def span(dsn: str, schema: str, start: datetime | None, end: datetime | None, assets: Sequence[str]) -> Span:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(render(_SPAN, schema), _args(start, end, assets)).fetchone()
    assert row is not None  # noqa: S101 - an aggregate always returns a row
    return Span(row[0], row[1], int(row[2]), int(row[3]))


def export_readings(dsn: str, schema: str, path: Path, start: datetime | None, end: datetime | None,
                    assets: Sequence[str], progress: Callable[[int], None] | None = None,
                    chunk: int = 100_000) -> int:
    """Write the stored readings (time order) to a Parquet file; the number of rows written."""
    n = 0
    with psycopg.connect(dsn) as conn, conn.transaction(), pq.ParquetWriter(path, _SCHEMA) as writer:
        with conn.cursor(name="whatif_export") as cur:
            cur.itersize = chunk
            cur.execute(render(_EXPORT, schema), _args(start, end, assets))
            while rows := cur.fetchmany(chunk):
                a, s, t, v = zip(*rows, strict=True)
                writer.write_table(pa.table([pa.array(a, pa.string()), pa.array(s, pa.string()),
                                             pa.array(t, pa.timestamp("ms", tz="UTC")),
                                             pa.array(v, pa.float64())], schema=_SCHEMA))
                n += len(rows)
                if progress is not None:
                    progress(len(rows))
    return n


def decided_reviews(dsn: str, schema: str, start: datetime | None, end: datetime | None,
                    assets: Sequence[str]) -> list[dict[str, Any]]:
    """Review cases approved or rejected, about windows in the range."""
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        return list(conn.execute(render(_REVIEWS, schema), _args(start, end, assets)))


def maintenance(dsn: str, schema: str, start: datetime | None, end: datetime | None,
                assets: Sequence[str]) -> list[dict[str, Any]]:
    """The maintenance log in the range, each row with the span of the alarm its work order came from (if any)."""
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        return list(conn.execute(render(_MAINTENANCE, schema), _args(start, end, assets)))


def stored_alarms(dsn: str, schema: str, start: datetime | None, end: datetime | None,
                  assets: Sequence[str]) -> dict[str, int]:
    """Alarms the running flow stored in the range, by kind."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(render(_ALARMS, schema), _args(start, end, assets)).fetchall()
    return {str(k): int(c) for k, c in rows}
