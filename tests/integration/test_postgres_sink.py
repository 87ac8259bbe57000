"""The PostgreSQL sink against real servers: schema, idempotent writes, alarms, partitions."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import psycopg
import pytest
from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, run_main
from psycopg import sql

from smart_maintenance.config.settings import Settings
from smart_maintenance.connectors.postgres.schema import LATEST_VERSION, LOOP_TABLES, MIGRATIONS, ensure_schema
from smart_maintenance.connectors.postgres.server import PostgresSinkError, resolve_dsn
from smart_maintenance.connectors.postgres.sink import PostgresSink, PostgresWriter, describe
from smart_maintenance.operators.records import Alarm, Anomaly, FeatureBatch, Invalid, Readings

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 5, tzinfo=timezone.utc)
JAN5 = 1_767_571_200_000  # 2026-01-05T00:00Z in epoch ms
DAY_MS = 86_400_000


def table(dsn: str, schema: str, name: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        query = sql.SQL("SELECT * FROM {} ORDER BY 1, 2, 3, 4").format(sql.Identifier(schema, name))
        return conn.execute(query).fetchall()


def alarm(status: str, minutes: int, count: int = 1) -> Alarm:
    at = T0 + timedelta(minutes=minutes)
    return Alarm("al-1", "pump-01", "machine", status, 3, T0, at, at if status == "cleared" else None,
                 0.9, count, "an-1", ("vibration",), "vibration above baseline")


def sample() -> tuple[Readings, FeatureBatch, Anomaly, Invalid]:
    readings = Readings.of([("pump-01", "vibration", JAN5, 2.5), ("pump-01", "vibration", JAN5 + 1000, 2.75),
                            ("fan-07", 'temp "C"', JAN5, -1.0)])
    values = np.arange(2 * 2 * 8, dtype=float).reshape(2, 2, 8)
    values[0, 1, 7] = 0  # no reading of the second sensor in the first window: no row
    values[1, 0, 1] = np.nan  # std unknown: NULL
    features = FeatureBatch("pump-01", ("vibration", "current"), np.array([JAN5, JAN5 + 60_000]),
                            np.array([JAN5 + 60_000, JAN5 + 120_000]), values)
    anomaly = Anomaly("an-1", "pump-01", T0, T0 + timedelta(minutes=1), 0.91, "confirmed", 0.8, 3,
                      ("vibration z=7.1",), (("vibration", 0.75), ("current", 0.25)), {"robust_z": 0.95})
    return readings, features, anomaly, Invalid("bad_json", "expected an object", '{"a":\x00', "file.jsonl:3")


def test_schema_created_twice_is_a_noop(pg_dsn: str, pg_schema: str) -> None:
    assert ensure_schema(pg_dsn, pg_schema) == [m.version for m in MIGRATIONS]
    assert ensure_schema(pg_dsn, pg_schema) == []
    with psycopg.connect(pg_dsn) as conn:
        versions = conn.execute(sql.SQL("SELECT version, name FROM {} ORDER BY 1").format(
            sql.Identifier(pg_schema, "schema_migrations"))).fetchall()
    assert versions == [(1, "readings"), (2, "features"), (3, "anomalies"), (4, "alarms"), (5, "dead_letters"),
                        (6, "anomaly feature explanations"), (7, "the maintenance loop"),
                        (8, "review cases"), (9, "the HTTP API"),
                        (10, "admitted assets"),
                        (11, "reading quality and unit, hourly and daily roll-ups"), (12, "work order updates"),
                        (13, "quality and unit of readings taken in over the API"),
                        (14, "room on the roll-ups' pages for their updates")]


def test_concurrent_starts_migrate_once(pg_dsn: str, pg_schema: str) -> None:
    with ThreadPoolExecutor(4) as pool:
        applied = list(pool.map(lambda _: ensure_schema(pg_dsn, pg_schema), range(4)))
    assert sorted(v for a in applied for v in a) == [m.version for m in MIGRATIONS]


def test_replay_leaves_the_same_rows(pg_dsn: str, pg_schema: str) -> None:
    ensure_schema(pg_dsn, pg_schema)
    readings, features, anomaly, invalid = sample()
    tables = ("readings", "features", "anomalies", "alarms", "dead_letters")
    snapshots = []
    with PostgresWriter(pg_dsn, pg_schema, copy_rows=2) as writer:
        for _ in range(2):
            writer.write_readings(readings)
            writer.write_features([features, features])
            writer.upsert_anomalies([anomaly, anomaly])
            writer.upsert_alarms([alarm("open", 0)])
            writer.upsert_dead_letters([invalid, invalid])
            snapshots.append({t: table(pg_dsn, pg_schema, t) for t in tables})
    assert snapshots[0] == snapshots[1]
    assert {t: len(rows) for t, rows in snapshots[1].items()} == {
        "readings": 3, "features": 3, "anomalies": 1, "alarms": 1, "dead_letters": 1}
    feature = snapshots[1]["features"][1]  # pump-01, second window, current
    assert feature[3:] == ("current", 24.0, 25.0, 26.0, 27.0, 28.0, 29.0, 30.0, 31)
    assert snapshots[1]["features"][2][4:6] == (16.0, None)
    assert snapshots[1]["dead_letters"][0][1:5] == ("bad_json", "expected an object", '{"a":\ufffd', "file.jsonl:3")
    assert snapshots[1]["anomalies"][0][9] == [{"sensor": "vibration", "share": 0.75},
                                               {"sensor": "current", "share": 0.25}]


def test_alarm_upsert_never_moves_backwards(pg_dsn: str, pg_schema: str) -> None:
    ensure_schema(pg_dsn, pg_schema)

    def stored() -> tuple[str, int]:
        row = table(pg_dsn, pg_schema, "alarms")[0]
        return row[3], row[9]  # status, anomaly_count

    with PostgresWriter(pg_dsn, pg_schema, copy_rows=100) as writer:
        writer.upsert_alarms([alarm("open", 5, count=4)])
        writer.upsert_alarms([alarm("open", 0, count=1)])  # a replayed older state
        assert stored() == ("open", 4)
        writer.upsert_alarms([alarm("cleared", 5, count=4)])  # same time: cleared wins
        writer.upsert_alarms([alarm("open", 5, count=4)])
        assert stored() == ("cleared", 4)
        writer.upsert_alarms([alarm("open", 9, count=1), alarm("cleared", 9, count=1)][::-1])  # one batch
        assert stored() == ("cleared", 1)
        assert table(pg_dsn, pg_schema, "alarms")[0][7] == T0 + timedelta(minutes=9)


def test_readings_partitions_across_months(pg_dsn: str, pg_schema: str) -> None:
    ensure_schema(pg_dsn, pg_schema)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # lands in the default partition
        conn.execute(sql.SQL("INSERT INTO {} VALUES ('p', 's', %s, 1.0)").format(
            sql.Identifier(pg_schema, "readings")), [datetime(2026, 4, 2, tzinfo=timezone.utc)])
    days = [0, 26, 27, 60, 85, 88]  # Jan 5, Jan 31, Feb 1, Mar 6, Mar 31, Apr 3
    batch = Readings.of([("p", "s", JAN5 + d * DAY_MS, float(d)) for d in days])
    with PostgresWriter(pg_dsn, pg_schema, copy_rows=4) as writer:
        assert writer.write_readings(batch) == 6
    with psycopg.connect(pg_dsn) as conn:
        where = conn.execute(sql.SQL("SELECT tableoid::regclass::text, count(*) FROM {} GROUP BY 1 ORDER BY 1")
                             .format(sql.Identifier(pg_schema, "readings"))).fetchall()
    assert [(name.split(".")[-1], n) for name, n in where] == [
        ("readings_p2026_01", 2), ("readings_p2026_02", 1), ("readings_p2026_03", 2), ("readings_p2026_04", 2)]


def test_describe(pg_dsn: str, pg_schema: str) -> None:
    ensure_schema(pg_dsn, pg_schema)
    readings, features, anomaly, invalid = sample()
    with PostgresWriter(pg_dsn, pg_schema, copy_rows=1000) as writer:
        writer.write_readings(readings)
        writer.upsert_alarms([alarm("open", 0), replace(alarm("cleared", 3), alarm_id="al-2")])
        writer.upsert_dead_letters([invalid])
    info = describe(pg_dsn, pg_schema)
    assert info["schema"] == pg_schema and info["schema_version"] == LATEST_VERSION
    assert info["tables"] == {"readings": 3, "features": 0, "anomalies": 0, "alarms": 2, "dead_letters": 1,
                              **{t: 0 for t in LOOP_TABLES}}
    assert info["work_orders_open"] == 0 and info["reviews_pending"] == 0
    assert (info["readings_from"], info["readings_to"]) == (T0, T0 + timedelta(seconds=1))
    assert info["alarms_open"] == 1 and info["total_bytes"] > 0
    assert info["server_version"][:2] in ("15", "16", "17", "18")
    assert info["timescaledb"] is None  # detected when the server has it; this machine's servers do not


def test_retention_drops_whole_months_of_raw_readings_only(pg_dsn: str, pg_schema: str) -> None:
    from smart_maintenance.connectors.postgres.schema import prune_readings

    ensure_schema(pg_dsn, pg_schema)
    days = [0, 27, 60, 88]  # Jan 5, Feb 1, Mar 6, Apr 3 (2026)
    with PostgresWriter(pg_dsn, pg_schema, copy_rows=4) as writer:
        writer.write_readings(Readings.of([("p", "s", JAN5 + d * DAY_MS, float(d)) for d in days]))
    now = datetime(2026, 4, 15, tzinfo=timezone.utc)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert prune_readings(conn, pg_schema, 45, now) == ["readings_p2026_01", "readings_p2026_02"]  # ended <= Mar 1
        assert prune_readings(conn, pg_schema, 45, now) == []
        left = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(pg_schema, "readings"))).fetchone()
    assert left == (2,)


def test_reconnects_after_connection_loss(pg_dsn: str, pg_schema: str) -> None:
    ensure_schema(pg_dsn, pg_schema)
    readings = sample()[0]
    with PostgresWriter(pg_dsn, pg_schema, copy_rows=100) as writer:
        writer.write_readings(readings)
        pid = writer._conn.info.backend_pid  # type: ignore[union-attr]
        with psycopg.connect(pg_dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        writer.upsert_dead_letters([sample()[3]])
        assert writer._conn.info.backend_pid != pid  # type: ignore[union-attr]
    assert len(table(pg_dsn, pg_schema, "dead_letters")) == 1


def test_errors_are_postgres_sink_errors(pg_dsn: str, pg_schema: str, tmp_path: Any) -> None:
    with PostgresWriter(pg_dsn, pg_schema, copy_rows=10) as writer:  # schema never migrated
        with pytest.raises(PostgresSinkError, match="upsert alarms"):
            writer.upsert_alarms([alarm("open", 0)])
    bad = Settings(data_dir=tmp_path, postgres={"dsn": "postgresql://app:hunter2@127.0.0.1:9/x"})
    with pytest.raises(PostgresSinkError, match="does not answer") as err:
        resolve_dsn(bad)
    assert "hunter2" not in str(err.value) and "127.0.0.1" in str(err.value)
    with pytest.raises(ValueError, match="stream"):
        PostgresSink(bad, "nope")


def test_resolve_dsn_attaches_to_the_embedded_server(embedded_pg: str, embedded_data_dir: Any) -> None:
    assert (embedded_data_dir / "pgdata" / "PG_VERSION").is_file()  # data_dir was created for it
    assert resolve_dsn(Settings(data_dir=embedded_data_dir, postgres={"dsn": None})) == embedded_pg


def test_sink_in_a_dataflow(pg_dsn: str, pg_schema: str, tmp_path: Any) -> None:
    settings = Settings(data_dir=tmp_path, postgres={"dsn": pg_dsn, "schema_name": pg_schema})
    readings = sample()[0]
    flow = Dataflow("pg_sink")
    batches = op.input("in", flow, TestingSource([readings.take(np.array([0, 1])), readings, Readings.empty()]))
    op.output("out", batches, PostgresSink(settings, "readings"))
    run_main(flow)
    assert [r[3] for r in table(pg_dsn, pg_schema, "readings")] == [-1.0, 2.5, 2.75]


def test_anomalies_sink_times_each_window_from_detection_to_its_commit(pg_dsn: str, pg_schema: str,
                                                                       tmp_path: Any) -> None:
    from smart_maintenance import latency

    settings = Settings(data_dir=tmp_path, postgres={"dsn": pg_dsn, "schema_name": pg_schema})
    anomaly = sample()[2]
    end_ms = round(anomaly.window_end.timestamp() * 1000)
    latency.closed(anomaly.asset_id, np.array([end_ms]), 0)
    latency.detected(anomaly.asset_id, np.array([end_ms]))
    before = latency.observed("detect_to_stored"), latency.observed("due_to_stored")
    flow = Dataflow("pg_anomalies")
    op.output("out", op.input("in", flow, TestingSource([anomaly])), PostgresSink(settings, "anomalies"))
    run_main(flow)
    assert (latency.observed("detect_to_stored") - before[0], latency.observed("due_to_stored") - before[1]) == (1, 1)
    assert len(table(pg_dsn, pg_schema, "anomalies")) == 1


def test_records_written_off_the_flow_thread_land_and_are_timed(pg_dsn: str, pg_schema: str, tmp_path: Any) -> None:
    """default_outputs sends anomalies, alarms and dead letters through the background writer (PostgresBulkSink)."""
    from smart_maintenance import latency
    from smart_maintenance.connectors.postgres.bulk import PostgresBulkSink
    from smart_maintenance.dataflows.outputs import default_outputs

    settings = Settings(data_dir=tmp_path, postgres={"dsn": pg_dsn, "schema_name": pg_schema})
    for stream in ("anomalies", "alarms", "dead_letters"):
        assert [type(s) for s in default_outputs(settings)[stream] if "Postgres" in type(s).__name__] == [
            PostgresBulkSink]
    _, _, anomaly, invalid = sample()
    end_ms = round(anomaly.window_end.timestamp() * 1000)
    latency.closed(anomaly.asset_id, np.array([end_ms]), 0)
    latency.detected(anomaly.asset_id, np.array([end_ms]))
    before = latency.observed("detect_to_stored")
    flow = Dataflow("pg_records")
    for stream, item in (("anomalies", anomaly), ("dead_letters", invalid)):
        keyed = op.key_on(f"key_{stream}", op.input(f"in_{stream}", flow, TestingSource([item, item])), lambda _: "")
        op.output(f"out_{stream}", keyed, PostgresBulkSink(settings, stream, parts=1))
    run_main(flow)
    assert latency.observed("detect_to_stored") - before == 1  # the second copy finds its window gone
    assert len(table(pg_dsn, pg_schema, "anomalies")) == 1  # upserted by id
    assert len(table(pg_dsn, pg_schema, "dead_letters")) == 1
