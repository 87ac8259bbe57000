"""The HTML report against real PostgreSQL: a scenario stored as the flow stores it, rendered and read back."""

from __future__ import annotations

import doctest
import os
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import psycopg
import pytest
import typer
from psycopg import sql
from typer.testing import CliRunner

from smart_maintenance.cli.report import report_command
from smart_maintenance.config.registry import load_registry
from smart_maintenance.config.settings import Settings
from smart_maintenance.connectors.postgres.schema import ensure_schema
from smart_maintenance.connectors.postgres.sink import PostgresWriter
from smart_maintenance.operators.records import Alarm, Anomaly, FeatureBatch, dt_to_ms
from smart_maintenance.report import charts as report_charts
from smart_maintenance.report import html as report_html
from smart_maintenance.report.html import write_report

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 5, tzinfo=timezone.utc)
SCRIPT = "<script>alert(1)</script>"
ODD_ASSET = "tank-<7>$x$"  # unregistered, and markup and mathtext in a name


def h(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def features(asset_id: str, sensors: dict[str, tuple[float, float]], hours: int = 48, window_min: int = 10,
             ramp: tuple[str, float, float] | None = None, seed: int = 1) -> FeatureBatch:
    """Windows of `hours` with each sensor's mean noisy around `level`; `ramp` = (sensor, from hour, rise)."""
    rng = np.random.default_rng(seed)
    n = hours * 60 // window_min
    start = dt_to_ms(T0) + np.arange(n, dtype=np.int64) * window_min * 60_000
    values = np.zeros((n, len(sensors), 8))
    t_h = np.arange(n) * window_min / 60
    for s, (name, (level, noise)) in enumerate(sensors.items()):
        mean = level + noise * rng.normal(size=n) + 0.3 * noise * np.sin(t_h / 24 * 2 * np.pi)
        if ramp and ramp[0] == name:
            mean += ramp[2] * np.clip((t_h - ramp[1]) / (hours - ramp[1]), 0, None) ** 2
        values[:, s, 0] = mean
        values[:, s, 1] = noise
        values[:, s, 2] = mean - 2 * noise
        values[:, s, 3] = mean + 2 * noise
        values[:, s, 5] = mean
        values[:, s, 6] = mean
        values[:, s, 7] = 60
    return FeatureBatch(asset_id, tuple(sensors), start, start + window_min * 60_000, values)


def anomaly(aid: str, asset_id: str, at_h: float, status: str, sensor: str, score: float = 0.8) -> Anomaly:
    return Anomaly(aid, asset_id, h(at_h), h(at_h + 1 / 6), score, status, 0.7, 3, (f"{sensor} high",),
                   ((sensor, 0.8), ("current", 0.2)), {"robust_z": score})


def alarm(aid: str, asset_id: str, kind: str, opened_h: float, cleared_h: float | None, severity: int,
          reason: str) -> Alarm:
    cleared = h(cleared_h) if cleared_h is not None else None
    return Alarm(aid, asset_id, kind, "cleared" if cleared else "open", severity, h(opened_h),
                 cleared or h(47), cleared, 0.9, 12, "x", ("vibration",), reason)


def insert(conn: psycopg.Connection, schema: str, table: str, rows: list[dict[str, Any]]) -> None:
    for row in rows:
        cols = list(row)
        conn.execute(sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            sql.Identifier(schema, table), sql.SQL(", ").join(map(sql.Identifier, cols)),
            sql.SQL(", ").join(sql.Placeholder() * len(cols))),
            [orjson.dumps(v).decode() if isinstance(v, (list, dict)) else v for v in row.values()])


def store_scenario(dsn: str, schema: str) -> None:
    """Two days of a small plant: a pump degrading now, a motor repaired, a compressor's false alarm."""
    ensure_schema(dsn, schema)
    with PostgresWriter(dsn, schema, copy_rows=10_000) as w:
        w.write_features([
            features("pump-01", {"vibration": (2.0, 0.2), "temperature": (50.0, 1.5), "pressure": (6.5, 0.1),
                                 "current": (38.0, 1.0)}, ramp=("vibration", 30, 7.0)),
            features("motor-01", {"vibration": (1.5, 0.15), "winding_temp": (70.0, 2.0), "speed": (1470, 5)},
                     seed=2),
            features("compressor-01", {"oil_temp": (58.0, 1.0), "discharge_pressure": (7.8, 0.1)}, seed=3),
            features(ODD_ASSET, {"level": (3.0, 0.3)}, hours=24, seed=4),
        ])
        w.upsert_anomalies([
            *(anomaly(f"p{i}", "pump-01", 36 + i, "confirmed", "vibration", 0.9) for i in range(8)),
            anomaly("m1", "motor-01", 10, "confirmed", "vibration"), anomaly("m2", "motor-01", 4, "needs_review",
                                                                             "winding_temp"),
            anomaly("c1", "compressor-01", 25, "rejected", "oil_temp", 0.5),
        ])
        w.upsert_alarms([
            alarm("al-pump", "pump-01", "machine", 36, None, 4, "vibration above baseline"),
            alarm("al-motor", "motor-01", "machine", 10, 14, 3, "vibration & current <rising>"),
            alarm("al-comp", "compressor-01", "sensor_fault", 25, 27, 2, "oil_temp flatline"),
        ])
    with psycopg.connect(dsn, autocommit=True) as conn:
        insert(conn, schema, "predictions", [{
            "prediction_id": "pr-1", "asset_id": "pump-01", "alarm_id": "al-pump", "sensor": "vibration",
            "method": "prophet", "made_at": h(40), "failure_at": h(60), "lo": h(52), "hi": h(70),
            "ttf_hours": 20.0, "lo_hours": 12.0, "hi_hours": 30.0, "horizon_end": h(40 + 168)}])
        insert(conn, schema, "work_orders", [
            {"work_order_id": "wo-pump", "asset_id": "pump-01", "alarm_id": "al-pump", "kind": "repair",
             "status": "scheduled", "priority": 5, "duration_min": 240, "created_at": h(36), "due_at": h(48),
             "updated_at": h(40), "technician_id": "tech-01", "scheduled_start": h(44), "scheduled_end": h(48),
             "reason": "vibration above baseline"},
            {"work_order_id": "wo-motor", "asset_id": "motor-01", "alarm_id": "al-motor", "kind": "repair",
             "status": "done", "priority": 3, "duration_min": 180, "created_at": h(10), "due_at": h(30),
             "updated_at": h(20), "closed_at": h(20), "maintenance_id": "mt-1", "reason": "vibration"},
            {"work_order_id": "wo-comp", "asset_id": "compressor-01", "alarm_id": "al-comp",
             "kind": "instrumentation", "status": "done", "priority": 2, "duration_min": 60, "created_at": h(25),
             "due_at": h(40), "updated_at": h(30), "closed_at": h(30), "reason": "oil_temp flatline"},
        ])
        insert(conn, schema, "assignments", [
            {"work_order_id": "wo-pump", "technician_id": "tech-01", "start_at": h(44), "end_at": h(48),
             "plan_id": "plan-1", "planned_at": h(40), "method": "cp-sat", "solver_status": "OPTIMAL"}])
        insert(conn, schema, "maintenance_log", [
            {"maintenance_id": "mt-1", "asset_id": "motor-01", "completed_at": h(20), "outcome": "repaired",
             "work_order_id": "wo-motor", "technician_id": "tech-02", "action": "realigned coupling",
             "notes": f"{SCRIPT} coupling worn", "parts": ["coupling"]},
            {"maintenance_id": "mt-2", "asset_id": "compressor-01", "completed_at": h(30),
             "outcome": "no_fault_found", "work_order_id": "wo-comp", "technician_id": "tech-04",
             "notes": "sensor fine"},
        ])
        insert(conn, schema, "reviews", [
            {"review_id": "m2", "asset_id": "motor-01", "window_start": h(4), "window_end": h(4.2), "score": 0.7,
             "severity": 2, "anomaly": {}, "status": "pending"}])
        insert(conn, schema, "review_decisions", [
            {"control_id": f"c{i}", "review_id": f"r{i}", "asset_id": "motor-01", "decision": d,
             "window_end": h(at), "decided_at": h(at + 1), "note": note}
            for i, (d, at, note) in enumerate([("reject", 5, "valve test"), ("approve", 30, ""),
                                               ("approve", 33, ""), ("defer", 34, "")])])
        insert(conn, schema, "threshold_changes", [
            {"change_id": "tc-1", "asset_id": "motor-01", "at": h(5), "old_threshold": 0.6, "new_threshold": 0.65,
             "cause": "review rejected", "control_id": "c0", "note": "<b>valve test</b>"}])


def settings(dsn: str, schema: str) -> Settings:
    return Settings(postgres={"dsn": dsn, "schema_name": schema})


def cells(html: str, asset_id: str) -> list[str]:
    """The fleet table's cells of one asset."""
    row = re.search(r"<tr><td>" + re.escape(asset_id) + r"</td>(.*?)</tr>", html, re.S)
    assert row, f"no fleet row for {asset_id}"
    return re.findall(r"<td[^>]*>(.*?)</td>", row.group(1), re.S)


def test_doctests() -> None:
    assert doctest.testmod(report_html).failed == 0
    assert doctest.testmod(report_charts).failed == 0


def test_report_shows_the_scenario(pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    store_scenario(pg_dsn, pg_schema)
    out = tmp_path / "r" / "report.html"
    summary = write_report(settings(pg_dsn, pg_schema), out, None, None, load_registry())
    html = out.read_text()
    assert summary.period_start == T0 and summary.period_end == h(48)
    assert out.stat().st_mode & 0o044 or os.umask(os.umask(0)) & 0o044  # readable by others unless umask says no
    assert summary.assets == 13 and summary.alarms == 3  # the 12 registered and the odd one
    # four trend charts, the forecast, the schedule; every one a real PNG
    imgs = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(imgs) == summary.images == 6
    # KPIs: 2 machine alarms / (13 assets x 2/7 weeks); 1 of 3 reviews rejected; 1 of 2 visits found nothing
    assert "0.54" in html and "1 rejected of 3 decided cases; 1 pending" in html
    assert "50%" in html and "1 of 2 maintenance visits" in html
    assert "100% → 0%" in html  # motor-01: its one rejection came before the threshold moved
    assert "10.0 h" in html and "forecast lead 24.0 h (1)" in html  # motor repaired 10 h after; pump forecast
    assert "7.5 h" in html and "2 work orders" in html  # MTTR: (10 h + 5 h) / 2
    assert "26.0 d" in html and "(1 repair)" in html and "— (0 gaps)" in html  # MTBF: 13 x 48 h / 1 repair
    # fleet health: the pump is worst (severity 4, failure 12 h after the newest data, 8 recent anomalies)
    pump = cells(html, "pump-01")
    # 100 - 12 x 4 - 25 (failure within 24 h) - 2 x 8 = 11
    assert pump == [
        "pump",
        "north",
        "5",
        "1",
        "4",
        "2026-01-06\u00a019:10",
        "11",
        "12.0 h",
        "1",
        "2026-01-07\u00a000:00",
    ]
    assert html.index("<td>pump-01</td>") < html.index("<td>motor-01</td>")
    assert cells(html, "motor-01")[5] == "2026-01-05\u00a010:10"
    assert cells(html, "tank-&lt;7&gt;$x$")[0] == "unregistered"
    # user text is escaped everywhere, and no markup from the data reaches the page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; coupling worn" in html
    assert "&lt;b&gt;valve test&lt;/b&gt;" in html and "&lt;rising&gt;" in html
    assert "<script" not in html.lower() and "<b>valve" not in html and ODD_ASSET not in html


def test_filters_by_asset_and_since(pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    store_scenario(pg_dsn, pg_schema)
    out = tmp_path / "motor.html"
    s = write_report(settings(pg_dsn, pg_schema), out, None, "motor-01", load_registry())
    html = out.read_text()
    assert s.assets == 1 and s.alarms == 1 and s.images == 1  # no open alarm, no plan: only its trend
    assert "<td>motor-01</td>" in html and "pump-01" not in html and "compressor-01" not in html
    assert "&lt;script&gt;" in html  # its maintenance note
    s = write_report(settings(pg_dsn, pg_schema), out, timedelta(hours=12), None, load_registry())
    html = out.read_text()
    assert s.period_start == h(36) and s.period_end == h(48)
    assert s.alarms == 1 and "al-motor" not in html and "coupling worn" not in html  # both before the period
    assert "1 opened" in html


def test_empty_database_gives_a_valid_page(pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    out = tmp_path / "empty.html"
    s = write_report(settings(pg_dsn, pg_schema), out, None, None, None)  # the schema does not even exist
    html = out.read_text()
    assert s.images == 0 and s.assets == 0 and s.period_end is None
    assert "No data in the database yet." in html and "No assets: no data." in html
    assert html.rstrip().endswith("</html>") and "<img" not in html
    ensure_schema(pg_dsn, pg_schema)  # migrated but empty, with the built-in plant's registry
    s = write_report(settings(pg_dsn, pg_schema), out, None, None, load_registry())
    html = out.read_text()
    assert s.assets == 12 and s.images == 0 and "tables not present" not in html
    assert "No feature windows in the period: no data." in html


def test_command_writes_the_report(pg_dsn: str, pg_schema: str, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    store_scenario(pg_dsn, pg_schema)
    monkeypatch.setenv("SMART_MAINTENANCE__POSTGRES__DSN", pg_dsn)
    monkeypatch.setenv("SMART_MAINTENANCE__POSTGRES__SCHEMA_NAME", pg_schema)
    monkeypatch.chdir(tmp_path)
    app = typer.Typer()
    app.command()(report_command)
    result = CliRunner().invoke(app, ["--since", "2026-01-06T00:00Z", "--asset", "pump-01", "--out", "p.html"])
    assert result.exit_code == 0, result.output
    assert "1 assets, 3 charts, 1 alarms" in result.output
    page = (tmp_path / "p.html").read_text().replace("\u00a0", " ")
    assert "Period (event time): 2026-01-06 00:00 – 2026-01-07 00:00 UTC" in page
    bad = CliRunner().invoke(app, ["--since", "last tuesday"])
    assert bad.exit_code == 2 and "neither a duration" in bad.output


def test_report_of_a_replayed_plant(pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    """The real flow replays a day of two unregistered assets (x drifts at the end); the report shows it."""
    from bytewax.testing import run_main

    from smart_maintenance.dataflows.plant import build_flow
    from tests.synthetic import asset_day

    rows = []
    for day in (asset_day("x", seed=1, drift_last_h=4), asset_day("y", seed=2)):
        rows += [f"{t},{day.asset_id},{s},{v}\n" for t, s, v in zip(day.ts, day.sensor, day.value)]
    csv = tmp_path / "plant.csv"
    csv.write_text("ts,asset_id,sensor,value\n" + "".join(rows))
    flow_settings = Settings(console=False, progress=False, source="replay", replay={"paths": (csv,)},
                             postgres={"dsn": pg_dsn, "schema_name": pg_schema},
                             detection={"warmup_windows": 36, "baseline_size": 96})
    ensure_schema(pg_dsn, pg_schema)
    from smart_maintenance.connectors.postgres.admission import AdmissionStore

    with AdmissionStore(pg_dsn, pg_schema) as store:  # x and y are not registered: admit x, y stays quarantined
        store.admit(["x"], admitted_by="test")
    run_main(build_flow(flow_settings))
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        q = lambda text: conn.execute(sql.SQL(text).format(s=sql.Identifier(pg_schema))).fetchall()  # noqa: E731
        orders = q("SELECT work_order_id, created_at FROM {s}.work_orders WHERE asset_id = 'x' AND kind = 'repair'")
        plans, forecasts = q("SELECT count(*) FROM {s}.assignments")[0][0], q(
            "SELECT count(*) FROM {s}.predictions p JOIN {s}.alarms a USING (alarm_id) WHERE a.status <> 'cleared'")
        assert len(orders) == 1, "the drift should open a machine alarm and its work order"
        (order_id, created), = orders
        insert(conn, pg_schema, "maintenance_log", [{  # the repair closes it 5 h later
            "maintenance_id": "mt-x", "asset_id": "x", "completed_at": created + timedelta(hours=5),
            "outcome": "replaced", "work_order_id": order_id, "technician_id": "tech-01", "notes": SCRIPT}])
    out = tmp_path / "replay.html"
    s = write_report(settings(pg_dsn, pg_schema), out, None, None, load_registry())
    html = out.read_text()
    assert s.period_start == datetime(2026, 1, 1, tzinfo=timezone.utc) and s.assets == 14  # 12 registered, x, y
    assert s.images == 2 + (plans > 0) + (forecasts[0][0] > 0)  # x and y trends, the plan, forecasts if any
    assert html.count('alt="sensor trends of') == 2
    assert cells(html, "x")[0] == "unregistered" and cells(html, "y")[0] == "unregistered"
    assert "5.0 h" in html and "maintenance done, 1 work order<" in html  # MTTR and lead time of the replayed alarm
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script" not in html


def test_an_asset_with_hundreds_of_sensors_draws_the_relevant_ones_and_lists_the_rest(
        pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    ensure_schema(pg_dsn, pg_schema)
    sensors = {f"s{i:03d}": (10.0 + i, 0.5) for i in range(460)}
    with PostgresWriter(pg_dsn, pg_schema, copy_rows=50_000) as w:
        w.write_features([features("skid-9", sensors, hours=24, ramp=("s317", 12, 9.0))])
        w.upsert_anomalies([anomaly(f"k{i}", "skid-9", 20 + i / 6, "confirmed", "s317") for i in range(3)])
    out = tmp_path / "skid.html"
    summary = write_report(settings(pg_dsn, pg_schema), out, None, "skid-9", load_registry())
    page = out.read_text()
    assert summary.images == 1
    assert f"{460 - report_charts.MAX_PLOTTED_SENSORS} more sensors, not drawn" in page
    listed = re.search(r"more sensors, not drawn \(.*?\): (.*?)</p>", page).group(1).split(", ")
    drawn = set(sensors) - set(listed)
    assert len(drawn) == report_charts.MAX_PLOTTED_SENSORS and len(listed) == len(set(listed))
    assert "s317" in drawn  # the sensor its anomalies name is drawn
    assert listed == sorted(listed)  # the rest: no registry entry, no mention: by name
