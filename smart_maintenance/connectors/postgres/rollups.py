"""The daily roll-up of readings, merged from the hourly one an hour at a time.

A chunk of readings upserts one `readings_hourly` row per series and hour it holds; `readings_daily` takes
the hours before `readings_daily_merged.hourly_before` (migration 15). When the writer stores a reading of a
later hour than that, `merge_daily` folds the hourly rows of the hours in between into the daily ones and
moves `hourly_before` on, so the daily roll-up costs one small statement per hour instead of one upserted row
per series in every chunk. A reading of an hour already merged (late, or a replay of old data) goes to both
roll-ups in its chunk's statement (`schema.DAILY_HOURS`).

Guarantees: `READINGS_DAILY` (the stored daily rows plus the hourly rows not merged yet) is exactly the
aggregate of the stored readings per series and day, at any moment, read in one statement. A merge and a
chunk exclude each other on the one row of `readings_daily_merged` (FOR UPDATE / FOR SHARE), so no reading is
counted by both or by neither. Without that row (TimescaleDB's continuous aggregates) `readings_daily` is read
as stored and nothing merges.
"""

from __future__ import annotations

import math

import psycopg

from smart_maintenance.connectors.postgres.schema import _MERGE_ROLLUP, ROLLUP_ORDER, render

_PENDING = "(SELECT coalesce((SELECT hourly_before FROM {s}.readings_daily_merged), 'infinity'))"
READINGS_DAILY = (
    "(SELECT asset_id, sensor, bucket, min, max, sum, count FROM {s}.readings_daily UNION ALL "  # noqa: S608
    "SELECT asset_id, sensor, date_bin('1 day', bucket, '2000-01-01T00:00:00Z'), min, max, sum, count "
    f"FROM {{s}}.readings_hourly WHERE bucket >= {_PENDING}) AS readings_daily"
)
"""The daily roll-up as readers take it (a relation with the columns of `readings_daily`; a day may be two rows,
the merged hours and the others, which readers' min/max/sum/count aggregates combine)."""

_MERGE = (
    # the hours from `hourly_before` up to `until` (at most the current hour of the wall clock: a reading dated in
    # the future does not hold every later chunk to the dearer path)
    "WITH w AS (SELECT hourly_before AS lo, least(to_timestamp(%(until_ms)s::float8 / 1000), "  # noqa: S608
    "date_bin('1 hour', now(), '2000-01-01T00:00:00Z')) AS hi FROM {s}.readings_daily_merged), "
    "merged AS (INSERT INTO {s}.readings_daily AS t (asset_id, sensor, bucket, min, max, sum, count) "
    "SELECT h.asset_id, h.sensor, date_bin('1 day', h.bucket, '2000-01-01T00:00:00Z'), min(h.min), max(h.max), "
    "sum(h.sum), sum(h.count) FROM {s}.readings_hourly h, w WHERE h.bucket >= w.lo AND h.bucket < w.hi "
    f"GROUP BY 1, 2, 3 {ROLLUP_ORDER} {_MERGE_ROLLUP}) "
    "UPDATE {s}.readings_daily_merged m SET hourly_before = w.hi FROM w WHERE w.hi > w.lo"
)


def merge_daily(conn: psycopg.Connection, schema: str, until_ms: int) -> float:
    """Fold the hourly rows of the hours before `until_ms` (epoch ms) not merged yet into `readings_daily`.

    Returns `hourly_before` after the call as epoch seconds (-inf before anything merged, inf when the schema
    has no such row: nothing to merge, ever). Idempotent; safe beside writers and other merges.
    """
    with conn.transaction():
        # a statement of its own: the merge's statement then reads the hourly rows of every chunk committed before
        # this lock was granted, and no chunk commits hourly rows of a merged hour without adding them to daily
        row = conn.execute(render("SELECT 1 FROM {s}.readings_daily_merged FOR UPDATE", schema)).fetchone()
        if row is None:
            return math.inf
        conn.execute(render(_MERGE, schema), {"until_ms": until_ms})
        got = conn.execute(render("SELECT extract(epoch FROM hourly_before)::float8 FROM {s}.readings_daily_merged",
                                  schema)).fetchone()
    return float(got[0]) if got is not None else math.inf
