"""The API's reads: assets with a health score, alarms, cases, work orders, schedule, predictions,
readings by range (downsampled), maintenance history. Every function takes `assets`: the asset ids
the caller may see, or None for all (a key limited to sites).

Health score (0..100, 100 = nothing open): 100 - 15 x the severity of an open machine alarm
- 10 if a sensor-fault alarm is open - 5 per open review case (at most 3 counted), never below 0.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from smart_maintenance.connectors.postgres.api_store import ApiStore

__all__ = ["CASE_STATUSES", "alarms", "assets", "case", "cases", "health", "maintenance", "predictions",
           "readings", "schedule", "work_orders"]

CASE_STATUSES = {"open": ("pending", "deferred"), "pending": ("pending",), "deferred": ("deferred",),
                 "approved": ("approved",), "rejected": ("rejected",),
                 "all": ("pending", "deferred", "approved", "rejected")}
_VISIBLE = "(%s::text[] IS NULL OR asset_id = ANY(%s::text[]))"


def _v(assets: list[str] | None) -> list[Any]:
    return [assets, assets]


def health(machine_severity: int, sensor_faults: int, open_cases: int) -> int:
    """The asset's health score (see the module docstring).

    >>> health(0, 0, 0), health(4, 1, 5)
    (100, 15)
    """
    return max(0, 100 - 15 * machine_severity - (10 if sensor_faults else 0) - 5 * min(open_cases, 3))


def assets(store: ApiStore, known: dict[str, dict[str, str]], visible: list[str] | None) -> list[dict[str, Any]]:
    """Every asset the registry knows or the flow has seen, with its health and what is open on it."""
    seen = {r["asset_id"]: r["last"] for r in store.rows(
        f"SELECT asset_id, max(window_end) AS last FROM {{s}}.features "  # noqa: S608 constant SQL
        f"WHERE {_VISIBLE} GROUP BY 1", _v(visible))}
    alarm_rows = store.rows(
        f"SELECT asset_id, kind, max(severity) AS sev, count(*) AS n FROM {{s}}.alarms "  # noqa: S608 constant SQL
        f"WHERE status <> 'cleared' AND {_VISIBLE} GROUP BY 1, 2", _v(visible))
    case_rows = {r["asset_id"]: r["n"] for r in store.rows(
        f"SELECT asset_id, count(*) AS n FROM {{s}}.reviews "  # noqa: S608 constant SQL
        "WHERE status IN ('pending', 'deferred') "
        f"AND {_VISIBLE} GROUP BY 1", _v(visible))}
    wo_rows = {r["asset_id"]: r["n"] for r in store.rows(
        f"SELECT asset_id, count(*) AS n FROM {{s}}.work_orders "  # noqa: S608 constant SQL
        "WHERE status NOT IN ('done', 'cancelled') "
        f"AND {_VISIBLE} GROUP BY 1", _v(visible))}
    ids = set(seen) | {a for a in known if visible is None or a in visible}
    out = []
    for a in sorted(ids):
        machine = max((r["sev"] for r in alarm_rows if r["asset_id"] == a and r["kind"] == "machine"), default=0)
        faults = sum(r["n"] for r in alarm_rows if r["asset_id"] == a and r["kind"] == "sensor_fault")
        n_alarms = sum(r["n"] for r in alarm_rows if r["asset_id"] == a)
        info = known.get(a, {})
        out.append({"asset_id": a, "site": info.get("site", "default"), "type": info.get("type", ""),
                    "health": health(machine, faults, case_rows.get(a, 0)), "open_alarms": n_alarms,
                    "open_cases": case_rows.get(a, 0), "open_work_orders": wo_rows.get(a, 0),
                    "last_window_end": seen.get(a)})
    return out


def alarms(store: ApiStore, visible: list[str] | None, status: str = "active", asset: str | None = None,
           limit: int = 200) -> list[dict[str, Any]]:
    """Alarms, newest first; `active` = open or acknowledged, `all`, or one status."""
    statuses = {"active": ["open", "acknowledged"], "all": ["open", "acknowledged", "cleared"]}.get(status, [status])
    return store.rows(
        "SELECT alarm_id, asset_id, kind, status, severity, opened_at, "  # noqa: S608 constant SQL
        "updated_at, cleared_at, peak_score, anomaly_count, sensors, reason, "
        "(SELECT coalesce(jsonb_agg(jsonb_build_object('kind', n.kind, 'note', "
        "n.note, 'by', n.by_name, 'at', n.at) ORDER BY n.seq), '[]') FROM {s}.alarm_notes n "
        "WHERE n.alarm_id = a.alarm_id) AS notes "
        f"FROM {{s}}.alarms a WHERE status = ANY(%s) AND (%s::text IS NULL OR asset_id = %s) AND {_VISIBLE} "
        "ORDER BY updated_at DESC, alarm_id LIMIT %s", [statuses, asset, asset, *_v(visible), limit])


_CASE = ("review_id AS case_id, asset_id, window_start, coalesce(first_window_end, window_end) AS first_window_end, "
         "window_end, window_count, score AS peak_score, severity, status, sensors, trend, queued_at, decided_at, "
         "decided_by, note, anomaly->'reasons' AS reasons")


def cases(store: ApiStore, visible: list[str] | None, status: str = "open", asset: str | None = None,
          limit: int = 200) -> list[dict[str, Any]]:
    """Review cases, most severe first, then oldest last window first."""
    if status not in CASE_STATUSES:
        raise ValueError(f"status must be one of {', '.join(CASE_STATUSES)}")
    return store.rows(
        f"SELECT {_CASE} FROM {{s}}.reviews "  # noqa: S608 constant SQL
        "WHERE status = ANY(%s) AND (%s::text IS NULL OR asset_id = %s) "
        f"AND {_VISIBLE} ORDER BY severity DESC, window_end, review_id LIMIT %s",
        [list(CASE_STATUSES[status]), asset, asset, *_v(visible), limit])


def case(store: ApiStore, visible: list[str] | None, case_id: str) -> dict[str, Any] | None:
    rows = store.rows(f"SELECT {_CASE}, anomaly FROM {{s}}.reviews "  # noqa: S608 constant SQL
                      f"WHERE review_id = %s AND {_VISIBLE}", [case_id, *_v(visible)])
    if not rows:
        return None
    row = rows[0]
    row["decisions"] = store.rows("SELECT seq, decision, decided_by, note, decided_at FROM {s}.review_decisions "
                                  "WHERE review_id = %s ORDER BY seq", [case_id])
    return row


# The flow's work orders with the planners' changes (work_order_updates) folded over them: per field the
# change with the latest event time (`effective_at`, then arrival) wins; a work order the flow closed
# keeps its closed status. `planner_changes` holds the fields set by hand, `comments` every comment.
_WORK_ORDERS = """(SELECT w.work_order_id, w.asset_id, w.alarm_id, w.kind,
    CASE WHEN w.status IN ('done', 'cancelled') THEN w.status ELSE coalesce(o.f->>'status', w.status) END AS status,
    coalesce((o.f->>'priority')::int, w.priority) AS priority, w.required_skills, w.duration_min, w.created_at,
    coalesce((o.f->>'due_at')::timestamptz, w.due_at) AS due_at, greatest(w.updated_at, o.last) AS updated_at,
    w.closed_at, w.failure_at, coalesce(o.f->>'technician_id', w.technician_id) AS technician_id,
    coalesce((o.f->>'scheduled_start')::timestamptz, w.scheduled_start) AS scheduled_start,
    CASE WHEN o.f ? 'scheduled_start' THEN (o.f->>'scheduled_start')::timestamptz
         + make_interval(mins => w.duration_min) ELSE w.scheduled_end END AS scheduled_end,
    w.maintenance_id, w.sensors, w.reason, w.similar_incidents,
    coalesce(o.f, '{{}}') AS planner_changes, coalesce(o.comments, '[]') AS comments
  FROM {s}.work_orders w LEFT JOIN LATERAL (SELECT
    (SELECT jsonb_object_agg(k, v) FROM (SELECT DISTINCT ON (e.key) e.key AS k, e.value AS v
       FROM {s}.work_order_updates u, jsonb_each(u.fields) e WHERE u.work_order_id = w.work_order_id
       ORDER BY e.key, u.effective_at DESC, u.seq DESC) x) AS f,
    (SELECT jsonb_agg(jsonb_build_object('comment', u.comment, 'by', u.by_name, 'effective_at', u.effective_at)
       ORDER BY u.effective_at, u.seq) FROM {s}.work_order_updates u
       WHERE u.work_order_id = w.work_order_id AND u.comment <> '') AS comments,
    (SELECT max(u.effective_at) FROM {s}.work_order_updates u WHERE u.work_order_id = w.work_order_id) AS last
  ) o ON true) wo"""


def work_orders(store: ApiStore, visible: list[str] | None, status: str = "open", asset: str | None = None,
                limit: int = 200, work_order_id: str | None = None) -> list[dict[str, Any]]:
    """Work orders by due time, with the planners' changes: `open` = not done or cancelled, `all`, or one status."""
    where = {"open": "status NOT IN ('done', 'cancelled')", "all": "true"}.get(status, "status = %s")
    params: list[Any] = [] if status in ("open", "all") else [status]
    return store.rows(
        f"SELECT * FROM {_WORK_ORDERS} WHERE {where} "  # noqa: S608 constant SQL
        f"AND (%s::text IS NULL OR asset_id = %s) AND (%s::text IS NULL OR work_order_id = %s) AND {_VISIBLE} "
        "ORDER BY due_at, work_order_id LIMIT %s",
        [*params, asset, asset, work_order_id, work_order_id, *_v(visible), limit])


def schedule(store: ApiStore, visible: list[str] | None) -> list[dict[str, Any]]:
    """The current plan: one row per planned work order, by technician and start."""
    return store.rows(
        "SELECT a.work_order_id, a.technician_id, a.start_at, a.end_at, a.method, a.solver_status, a.gap, "
        "w.asset_id, w.kind, w.priority, w.status FROM {s}.assignments a JOIN {s}.work_orders w USING (work_order_id) "
        "WHERE (%s::text[] IS NULL OR w.asset_id = ANY(%s::text[])) ORDER BY a.technician_id, a.start_at",
        _v(visible))


def predictions(store: ApiStore, visible: list[str] | None, asset: str | None = None,
                limit: int = 100) -> list[dict[str, Any]]:
    return store.rows(
        "SELECT prediction_id, asset_id, alarm_id, sensor, method, made_at, "  # noqa: S608 constant SQL
        "failure_at, lo, hi, ttf_hours, "
        f"lo_hours, hi_hours FROM {{s}}.predictions WHERE (%s::text IS NULL OR asset_id = %s) AND {_VISIBLE} "
        "ORDER BY made_at DESC, prediction_id LIMIT %s", [asset, asset, *_v(visible), limit])


def maintenance(store: ApiStore, visible: list[str] | None, asset: str | None = None,
                limit: int = 100) -> list[dict[str, Any]]:
    return store.rows(
        "SELECT maintenance_id, asset_id, completed_at, outcome, work_order_id, "  # noqa: S608 constant SQL
        "technician_id, action, notes, "
        f"parts, source, logged_at FROM {{s}}.maintenance_log WHERE (%s::text IS NULL OR asset_id = %s) "
        f"AND {_VISIBLE} ORDER BY completed_at DESC, maintenance_id LIMIT %s", [asset, asset, *_v(visible), limit])


def readings(store: ApiStore, asset: str, start: datetime, end: datetime, points: int,
             sensor: str | None = None) -> dict[str, list[list[Any]]]:
    """Per sensor at most `points` points in [start, end): the mean, min and max of equal time buckets.

    Each point is [bucket start, mean, min, max, count]. A range longer than a week is read from the roll-ups
    (which outlive the raw readings) when its buckets are an hour or longer: the daily one for buckets of a day
    or more, else the hourly one; a roll-up row counts in the bucket its hour or day starts in. Shorter ranges
    and finer buckets are read from the raw readings.
    """
    if points < 1 or end <= start:
        raise ValueError("need points >= 1 and end after start")
    width = (end - start).total_seconds() / points
    if (end - start).total_seconds() <= 7 * 86_400:
        width_for_source = 0.0  # a week of raw readings is read directly, exactly
    else:
        width_for_source = width
    rollup = "sum(sum) / sum(count)::float8 AS mean, min(min) AS lo, max(max) AS hi, sum(count)::bigint AS n"
    table, ts, after, cols = (  # `after`: the first row time that falls in [start, end)
        ("readings_daily", "bucket", "%s - interval '1 day'", rollup) if width_for_source >= 86_400 else
        ("readings_hourly", "bucket", "%s - interval '1 hour'", rollup) if width_for_source >= 3_600 else
        ("readings", "ts", "%s - interval '1 microsecond'",
         "avg(value) AS mean, min(value) AS lo, max(value) AS hi, count(*) AS n"))
    rows = store.rows(
        f"SELECT sensor, greatest(least(floor(extract(epoch FROM {ts} - %s) / %s), %s - 1), 0)::int AS b, "  # noqa: S608
        f"{cols} FROM {{s}}.{table} WHERE asset_id = %s AND {ts} > {after} AND {ts} < %s "
        "AND (%s::text IS NULL OR sensor = %s) GROUP BY 1, 2 ORDER BY 1, 2",
        [start, width, points, asset, start, end, sensor, sensor])
    out: dict[str, list[list[Any]]] = {}
    for r in rows:
        t = datetime.fromtimestamp(start.timestamp() + r["b"] * width, tz=start.tzinfo)
        out.setdefault(r["sensor"], []).append([t, r["mean"], r["lo"], r["hi"], r["n"]])
    return out
