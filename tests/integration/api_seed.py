"""A small plant in one schema for the API and web-UI tests: readings, an alarm, a review case,
a work order on a plan, and keys of every scope."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import psycopg
from psycopg import sql

from smart_maintenance.connectors.postgres.api_store import SCOPES, ApiStore
from smart_maintenance.connectors.postgres.loop import LoopWriter
from smart_maintenance.connectors.postgres.schema import ensure_schema
from smart_maintenance.operators.judge.cases import fold_cases
from smart_maintenance.operators.records import Anomaly

T0 = datetime(2026, 1, 5, tzinfo=timezone.utc)
KNOWN = {"pump-01": {"site": "north", "type": "pump"}, "motor-02": {"site": "south", "type": "motor"}}


def _insert(conn: psycopg.Connection, schema: str, table: str, rows: list[dict[str, Any]]) -> None:
    for row in rows:
        conn.execute(sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            sql.Identifier(schema, table), sql.SQL(", ").join(map(sql.Identifier, row)),
            sql.SQL(", ").join(sql.Placeholder() * len(row))),
            [orjson.dumps(v).decode() if isinstance(v, (list, dict)) else v for v in row.values()])


def h(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def anomaly(asset: str, minutes: int, score: float = 0.7) -> Anomaly:
    start = h(minutes / 60)
    return Anomaly(f"an-{asset}-{minutes}", asset, start, start + timedelta(minutes=10), score, "needs_review", 0.5, 3,
                   ("single detector <b>not</b> persistent",), (("vibration", 0.8), ("temp", 0.2)))


def seed(dsn: str, schema: str) -> dict[str, Any]:
    """Store the plant; returns its ids and a token per scope (`read`, ... `admin`, `north-read`)."""
    ensure_schema(dsn, schema)
    _, cases_pump = fold_cases(None, "pump-01", [anomaly("pump-01", m) for m in (600, 620, 640)])
    _, cases_motor = fold_cases(None, "motor-02", [anomaly("motor-02", 700, 0.8)])
    with LoopWriter(dsn, schema) as w:
        w.queue_reviews([*cases_pump, *cases_motor])
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("INSERT INTO {} (asset_id, sensor, ts, value) SELECT 'pump-01', s, %s + "
                             "make_interval(mins => i), i * 0.01 + (s = 'temp')::int FROM generate_series(0, 2879) i, "
                             "unnest(ARRAY['vibration', 'temp']) s").format(sql.Identifier(schema, "readings")), [T0])
        _insert(conn, schema, "alarms", [
            {"alarm_id": "al-pump", "asset_id": "pump-01", "kind": "machine", "status": "open", "severity": 4,
             "opened_at": h(30), "updated_at": h(31), "peak_score": 0.9, "anomaly_count": 5,
             "last_anomaly_id": "an-x", "sensors": ["vibration"], "reason": "vibration <script>x</script> high"},
            {"alarm_id": "al-motor", "asset_id": "motor-02", "kind": "machine", "status": "open", "severity": 2,
             "opened_at": h(20), "updated_at": h(21), "peak_score": 0.8, "anomaly_count": 2,
             "last_anomaly_id": "an-y", "sensors": ["current"], "reason": "current high"}])
        _insert(conn, schema, "work_orders", [
            {"work_order_id": "wo-pump", "asset_id": "pump-01", "alarm_id": "al-pump", "kind": "repair",
             "status": "scheduled", "priority": 4, "duration_min": 120, "created_at": h(31), "due_at": h(40),
             "updated_at": h(31), "technician_id": "tech-01", "scheduled_start": h(33), "scheduled_end": h(35),
             "reason": "vibration above baseline", "required_skills": ["mechanical"]}])
        _insert(conn, schema, "assignments", [
            {"work_order_id": "wo-pump", "technician_id": "tech-01", "start_at": h(33), "end_at": h(35),
             "plan_id": "plan-1", "planned_at": h(31), "method": "cp-sat", "solver_status": "OPTIMAL"}])
        _insert(conn, schema, "predictions", [
            {"prediction_id": "pr-1", "asset_id": "pump-01", "alarm_id": "al-pump", "sensor": "vibration",
             "method": "prophet", "made_at": h(31), "failure_at": h(60), "lo": h(50), "hi": h(70), "ttf_hours": 29.0,
             "lo_hours": 19.0, "hi_hours": 39.0, "horizon_end": h(100)}])
    with ApiStore(dsn, schema) as store:
        tokens = {s: store.create_key(f"key-{s}", [s]) for s in SCOPES}
        tokens["north-read"] = store.create_key("north-reader", ["read", "review"], ["north"])
        tokens["planner"] = store.create_key("planner", ["read", "review", "maintain"])
    return {"pump_case": cases_pump[0].case_id, "motor_case": cases_motor[0].case_id, "tokens": tokens}
