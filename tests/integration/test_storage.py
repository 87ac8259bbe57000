"""Storage that lasts: quality and unit stored, roll-ups exact under replays, roll-up retention, the
TimescaleDB guard on plain PostgreSQL, and the migration's roll-up of readings stored before it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import sql

from smart_maintenance.connectors.postgres.schema import MIGRATIONS, ensure_schema, migrate, prune_rollups
from smart_maintenance.connectors.postgres.sink import PostgresWriter
from smart_maintenance.connectors.postgres.timescale import TimescalePlan, adopt_timescaledb, readings_is_hypertable
from smart_maintenance.operators.records import Readings

T0 = 1_767_571_200_000  # 2026-01-05T00:00:00Z
H = 3_600_000


def rows(dsn: str, query: str, schema: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql.SQL(query).format(s=sql.Identifier(schema))).fetchall()


def batch(n: int, seed: int, t0: int = T0) -> Readings:
    """`n` readings of 2 assets x 2 sensors spread over 30 hours (two days), with quality and units."""
    rng = np.random.default_rng(seed)
    ts = t0 + rng.integers(0, 30 * H, n)
    asset = np.array(["p1", "p2"], dtype=object)[rng.integers(0, 2, n)]
    sensor = np.array(["temp", "vib"], dtype=object)[rng.integers(0, 2, n)]
    return Readings(asset, sensor, ts, rng.normal(50, 10, n), rng.choice(np.array([-1, 64, 192], np.int16), n),
                    np.where(sensor == "temp", "degC", None).astype(object))


def raw_aggregate(dsn: str, schema: str, unit: str) -> list[tuple[Any, ...]]:
    return rows(dsn, f"SELECT asset_id, sensor, date_trunc('{unit}', ts, 'UTC'), min(value), max(value), "
                f"round(sum(value)::numeric, 6), count(*) FROM {{s}}.readings GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
                schema)


def rollup(dsn: str, schema: str, table: str) -> list[tuple[Any, ...]]:
    return rows(dsn, f"SELECT asset_id, sensor, bucket, min, max, round(sum::numeric, 6), count "
                f"FROM {{s}}.{table} ORDER BY 1, 2, 3", schema)


def test_quality_and_unit_are_stored(pg_dsn: str, pg_schema: str) -> None:
    ensure_schema(pg_dsn, pg_schema)
    b = Readings.of([("p1", "temp", T0, 1.0), ("p1", "temp", T0 + 1, 2.0), ("p1", "vib", T0, 3.0)], [192, 64, -1])
    b = Readings(b.asset_id, b.sensor, b.ts, b.value, b.quality, np.array(["degC", None, "mm/s"], dtype=object))
    with PostgresWriter(pg_dsn, pg_schema, copy_rows=100) as w:
        w.write_readings(b)
        w.write_readings(Readings.of([("p2", "s", T0, 4.0)]))  # a source without either: NULLs
    got = rows(pg_dsn, "SELECT asset_id, sensor, value, quality, unit FROM {s}.readings ORDER BY 1, 2, 3", pg_schema)
    assert got == [("p1", "temp", 1.0, 192, "degC"), ("p1", "temp", 2.0, 64, None), ("p1", "vib", 3.0, None, "mm/s"),
                   ("p2", "s", 4.0, None, None)]


def test_rollups_are_the_aggregates_of_the_stored_readings_under_replays(pg_dsn: str, pg_schema: str) -> None:
    ensure_schema(pg_dsn, pg_schema)
    first, second = batch(3000, 1), batch(2000, 2)
    with PostgresWriter(pg_dsn, pg_schema, copy_rows=700) as w:
        w.write_readings(first)
        w.write_readings(Readings.concat([second, first.take(np.arange(0, 3000, 3))]))  # a replay overlapping
        w.write_readings(first)  # at-least-once: the whole batch again
        w.write_readings(second.take(np.arange(500)))
    stored = rows(pg_dsn, "SELECT count(*) FROM {s}.readings", pg_schema)[0][0]
    assert 4500 < stored <= 5000  # random keys may collide: first value wins
    assert rollup(pg_dsn, pg_schema, "readings_hourly") == raw_aggregate(pg_dsn, pg_schema, "hour")
    assert rollup(pg_dsn, pg_schema, "readings_daily") == raw_aggregate(pg_dsn, pg_schema, "day")
    assert sum(r[-1] for r in rollup(pg_dsn, pg_schema, "readings_daily")) == stored
    assert len(rollup(pg_dsn, pg_schema, "readings_daily")) == 2 * 2 * 2  # assets x sensors x days


def test_rollups_are_kept_past_raw_retention_and_pruned_by_their_own(pg_dsn: str, pg_schema: str) -> None:
    from smart_maintenance.connectors.postgres.schema import prune_readings

    ensure_schema(pg_dsn, pg_schema)
    day = 24 * H
    with PostgresWriter(pg_dsn, pg_schema, copy_rows=100) as w:
        w.write_readings(Readings.of([("p", "s", T0 + d * day, float(d)) for d in (0, 40, 80)]))
    now = datetime(2026, 4, 1, tzinfo=timezone.utc)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert prune_readings(conn, pg_schema, 30, now) == ["readings_p2026_01", "readings_p2026_02"]
        assert prune_rollups(conn, pg_schema, 45, None, now) == {"readings_hourly": 2}  # Jan 5, Feb 14 < Feb 15
    assert rows(pg_dsn, "SELECT count(*) FROM {s}.readings", pg_schema) == [(1,)]
    assert rows(pg_dsn, "SELECT count(*) FROM {s}.readings_hourly", pg_schema) == [(1,)]
    daily = rows(pg_dsn, "SELECT bucket, sum / count FROM {s}.readings_daily ORDER BY 1", pg_schema)
    assert [d[1] for d in daily] == [0.0, 40.0, 80.0]  # forever by default
    assert daily[0][0] == datetime(2026, 1, 5, tzinfo=timezone.utc)


def test_migration_rolls_up_the_readings_stored_before_it(pg_dsn: str, pg_schema: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from smart_maintenance.connectors.postgres import schema

    monkeypatch.setattr(schema, "MIGRATIONS", MIGRATIONS[:10])
    monkeypatch.setattr(schema, "LATEST_VERSION", 10)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        migrate(conn, pg_schema)
        conn.execute(sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ('2026-01-01') TO ('2026-02-01')")
                     .format(sql.Identifier(pg_schema, "readings_p2026_01"), sql.Identifier(pg_schema, "readings")))
        conn.execute(sql.SQL("INSERT INTO {}.readings VALUES ('p', 's', %s, 1.0), ('p', 's', %s, 3.0)")
                     .format(sql.Identifier(pg_schema)),
                     [datetime(2026, 1, 5, 10, 1, tzinfo=timezone.utc),
                      datetime(2026, 1, 5, 10, 59, tzinfo=timezone.utc)])
    monkeypatch.undo()
    assert ensure_schema(pg_dsn, pg_schema) == [m.version for m in MIGRATIONS[10:]]  # 11 onwards
    assert rows(pg_dsn, "SELECT bucket, min, max, sum, count FROM {s}.readings_hourly", pg_schema) == [
        (datetime(2026, 1, 5, 10, tzinfo=timezone.utc), 1.0, 3.0, 4.0, 2)]


def test_timescaledb_conversion_is_a_noop_on_plain_postgresql(pg_dsn: str, pg_schema: str) -> None:
    ensure_schema(pg_dsn, pg_schema)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert adopt_timescaledb(conn, pg_schema, TimescalePlan()) is False
        assert readings_is_hypertable(conn, pg_schema) is False  # still the partitioned table
    with PostgresWriter(pg_dsn, pg_schema, copy_rows=10) as w:  # the writer keeps partitions and roll-ups
        w.write_readings(Readings.of([("p", "s", T0, 1.0)]))
    assert rows(pg_dsn, "SELECT count FROM {s}.readings_daily", pg_schema) == [(1,)]
    assert rows(pg_dsn, "SELECT tableoid::regclass::text FROM {s}.readings", pg_schema) == [
        (f"{pg_schema}.readings_p2026_01",)]


def test_rollup_retention_deletes_only_old_buckets(pg_dsn: str, pg_schema: str) -> None:
    ensure_schema(pg_dsn, pg_schema)
    with PostgresWriter(pg_dsn, pg_schema, copy_rows=10) as w:
        w.write_readings(Readings.of([("p", "s", T0, 1.0), ("p", "s", T0 + 10 * H, 2.0)]))
    now = datetime.fromtimestamp(T0 / 1000, timezone.utc) + timedelta(days=1, hours=5)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert prune_rollups(conn, pg_schema, 1.0, 1.0, now) == {"readings_hourly": 1, "readings_daily": 1}
        assert prune_rollups(conn, pg_schema, None, None, now) == {}
    assert rows(pg_dsn, "SELECT min FROM {s}.readings_hourly", pg_schema) == [(2.0,)]


def test_api_readings_read_long_ranges_from_the_rollups(pg_dsn: str, pg_schema: str) -> None:
    from smart_maintenance.connectors.postgres.api_reads import readings
    from smart_maintenance.connectors.postgres.api_store import ApiStore

    ensure_schema(pg_dsn, pg_schema)
    day = 24 * H
    with PostgresWriter(pg_dsn, pg_schema, copy_rows=1000) as w:  # every 10 min for 60 days, value = day number
        w.write_readings(Readings.of([("p", "s", T0 + k * 600_000, float(k * 600_000 // day))
                                      for k in range(60 * 144)]))
    start = datetime.fromtimestamp(T0 / 1000, timezone.utc)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # raw readings past retention: the roll-ups remain
        conn.execute(sql.SQL("DELETE FROM {} WHERE ts >= %s").format(sql.Identifier(pg_schema, "readings")),
                     [start + timedelta(days=10)])
    with ApiStore(pg_dsn, pg_schema) as store:
        daily = readings(store, "p", start, start + timedelta(days=60), 30)["s"]  # two-day buckets: daily roll-up
        hourly = readings(store, "p", start, start + timedelta(days=30), 180)["s"]  # 4 h buckets: hourly roll-up
        raw = readings(store, "p", start, start + timedelta(days=6), 6)["s"]  # a week or less: raw
    assert len(daily) == 30 and [p[4] for p in daily] == [288] * 30
    assert [p[1] for p in daily][:3] == [0.5, 2.5, 4.5] and (daily[-1][2], daily[-1][3]) == (58.0, 59.0)
    assert len(hourly) == 180 and hourly[-1][1] == 29.0 and sum(p[4] for p in hourly) == 30 * 144
    assert [p[4] for p in raw] == [144] * 6 and raw[0][0] == start


def test_json_replay_through_the_flow_stores_converted_values_with_quality_and_unit(
        pg_dsn: str, pg_schema: str, tmp_path: Any) -> None:
    """The whole flow: JSON readings with units and quality, replayed into PostgreSQL."""
    import orjson
    from bytewax.testing import run_main

    from smart_maintenance.config.settings import Settings
    from smart_maintenance.dataflows.plant import build_flow

    lines = [
        {"asset_id": "pump-01", "sensor": "temperature", "ts": T0, "value": 212.0, "unit": "degF", "quality": "good"},
        {"asset_id": "pump-01", "sensor": "temperature", "ts": T0 + 1000, "value": 50.0, "unit": "°C"},
        {"asset_id": "pump-01", "sensor": "vibration", "ts": T0, "value": 0.1, "unit": "in/s", "quality": 200},
        {"asset_id": "pump-01", "sensor": "vibration", "ts": T0 + 1000, "value": 3.0},
        {"asset_id": "pump-01", "sensor": "temperature", "ts": T0 + 2000, "value": 5.0, "unit": "bar"},
        {"asset_id": "pump-01", "sensor": "temperature", "ts": T0 + 3000, "value": 60.0, "quality": "bad"},
        {"asset_id": "pump-01", "sensor": "temperature", "ts": T0 + 4000, "value": 61.0, "quality": "uncertain"},
    ]
    path = tmp_path / "plant.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(x) for x in lines) + b"\n")
    settings = Settings(console=False, progress=False, source="replay", replay={"paths": (path,)},
                        postgres={"dsn": pg_dsn, "schema_name": pg_schema})
    run_main(build_flow(settings))
    got = rows(pg_dsn, "SELECT sensor, ts, value, quality, unit FROM {s}.readings ORDER BY 1, 2", pg_schema)
    t0 = datetime.fromtimestamp(T0 / 1000, timezone.utc)
    assert [(s, ts - t0, round(v, 6), q, u) for s, ts, v, q, u in got] == [
        ("temperature", timedelta(0), 100.0, 192, "degC"),
        ("temperature", timedelta(seconds=1), 50.0, None, "degC"),
        ("vibration", timedelta(0), 2.54, 192, "mm/s"),
        ("vibration", timedelta(seconds=1), 3.0, None, None),
    ]
    letters = rows(pg_dsn, "SELECT reason, detail FROM {s}.dead_letters ORDER BY 1, 2", pg_schema)
    assert [r for r, _ in letters] == ["bad_quality", "bad_quality", "unit_mismatch"]
    assert "'bar'" in letters[2][1] and "'degC'" in letters[2][1]
    assert rows(pg_dsn, "SELECT sensor, round(sum / count), count FROM {s}.readings_hourly ORDER BY 1",
                pg_schema) == [("temperature", 75, 2), ("vibration", 3, 2)]


def test_on_a_hypertable_the_writer_stores_raw_readings_only(pg_dsn: str, pg_schema: str) -> None:
    """The TimescaleDB writer path, run on plain PostgreSQL: continuous aggregates would roll up, not it."""
    ensure_schema(pg_dsn, pg_schema)
    with PostgresWriter(pg_dsn, pg_schema, copy_rows=10) as w:
        w.write_readings(Readings.of([("p", "s", T0, 1.0)]))  # creates the month's partition, rolls up
        w._hypertable = True
        w.write_readings(Readings.of([("p", "s", T0 + 1, 2.0)], [64]))
    assert rows(pg_dsn, "SELECT value, quality FROM {s}.readings ORDER BY ts", pg_schema) == [(1.0, None), (2.0, 64)]
    assert rows(pg_dsn, "SELECT count FROM {s}.readings_hourly", pg_schema) == [(1,)]


# -- new readings by plain INSERT, stored keys by ON CONFLICT -----------------------------------------------------

def spy_on_plain_inserts(monkeypatch: pytest.MonkeyPatch) -> list[bool | None]:
    """What each chunk of readings did: True stored by the plain insert, False fell back, None not tried."""
    seen: list[bool | None] = []
    original = PostgresWriter._stage_and_insert

    def spy(conn: psycopg.Connection, stage: str, payload: bytes, insert: Any, params: list[Any], *,
            first: Any = None) -> bool:
        stored = original(conn, stage, payload, insert, params, first=first)
        if stage == "sm_stage_readings":
            seen.append(None if first is None else stored)
        return stored

    monkeypatch.setattr(PostgresWriter, "_stage_and_insert", staticmethod(spy))
    return seen


def dead_letters(dsn: str, schema: str) -> int:
    return int(rows(dsn, "SELECT count(*) FROM {s}.dead_letters", schema)[0][0])


def test_new_readings_take_the_plain_insert_and_stored_ones_fall_back(pg_dsn: str, pg_schema: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    ensure_schema(pg_dsn, pg_schema)
    seen = spy_on_plain_inserts(monkeypatch)
    first = batch(1000, 1)
    first = first.take(np.unique(np.stack([first.asset_id.astype(str), first.sensor.astype(str),
                                            first.ts.astype(str)]), axis=1, return_index=True)[1])  # no repeated key
    later = batch(1000, 3, t0=T0 + 40 * H)  # another two days: all new
    with PostgresWriter(pg_dsn, pg_schema, copy_rows=len(first)) as w:
        w.write_readings(first)
        assert seen == [True]  # new: the plain insert stored it
        w.write_readings(first)  # replayed: the plain insert meets a stored key, ON CONFLICT skips them all
        assert seen == [True, False]
        w.write_readings(later)
        w.write_readings(later)
        assert seen == [True, False, None, None]  # after a miss, the next 2 chunks go straight to ON CONFLICT
        w.write_readings(batch(1000, 4, t0=T0 + 80 * H))
        assert seen[-1] is True  # and then new readings take the plain insert again
    assert dead_letters(pg_dsn, pg_schema) == 0
    assert rollup(pg_dsn, pg_schema, "readings_hourly") == raw_aggregate(pg_dsn, pg_schema, "hour")
    assert rollup(pg_dsn, pg_schema, "readings_daily") == raw_aggregate(pg_dsn, pg_schema, "day")


def test_a_key_twice_in_one_chunk_is_stored_once_and_rolled_up_once(pg_dsn: str, pg_schema: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    ensure_schema(pg_dsn, pg_schema)
    seen = spy_on_plain_inserts(monkeypatch)
    with PostgresWriter(pg_dsn, pg_schema, copy_rows=100) as w:
        w.write_readings(Readings.of([("p", "s", T0, 1.0), ("p", "s", T0 + 1, 2.0), ("p", "s", T0, 1.0)]))
    assert seen == [False]
    assert rows(pg_dsn, "SELECT ts, value FROM {s}.readings", pg_schema) == [
        (datetime(2026, 1, 5, tzinfo=timezone.utc), 1.0), (datetime(2026, 1, 5, 0, 0, 0, 1000, tzinfo=timezone.utc),
                                                          2.0)]
    assert rows(pg_dsn, "SELECT min, max, sum, count FROM {s}.readings_daily", pg_schema) == [(1.0, 2.0, 3.0, 2)]
    assert dead_letters(pg_dsn, pg_schema) == 0


def test_the_plain_insert_backs_off_exponentially_while_chunks_meet_stored_keys() -> None:
    w = PostgresWriter("postgresql://unused", "s", copy_rows=10)
    tried = []
    for _ in range(200):  # every attempt misses (a source that repeats its keys)
        t = w._new_first()
        tried.append(t)
        if t:
            w._tried_new(False)
    gaps = np.diff(np.flatnonzero(tried)) - 1
    assert gaps.tolist()[:7] == [2, 4, 8, 16, 32, 64, 64]
    assert sum(tried) <= 10  # at most about 1 chunk in 65 pays a failed attempt
    w._tried_new(True)
    assert w._new_first() and w._new_first()  # a success: every chunk tries again


def test_concurrent_writers_of_the_same_readings_store_them_once(pg_dsn: str, pg_schema: str) -> None:
    import threading

    ensure_schema(pg_dsn, pg_schema)
    data = [batch(3000, seed) for seed in range(4)]
    errors: list[BaseException] = []

    def write() -> None:
        try:
            with PostgresWriter(pg_dsn, pg_schema, copy_rows=500) as w:
                for b in data:
                    w.write_readings(b)
        except BaseException as e:  # noqa: BLE001 - re-raised on the test's thread
            errors.append(e)

    threads = [threading.Thread(target=write) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert dead_letters(pg_dsn, pg_schema) == 0
    assert rollup(pg_dsn, pg_schema, "readings_hourly") == raw_aggregate(pg_dsn, pg_schema, "hour")
    assert rollup(pg_dsn, pg_schema, "readings_daily") == raw_aggregate(pg_dsn, pg_schema, "day")


def fillfactors(dsn: str, schema: str) -> dict[str, Any]:
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute("SELECT c.relname::text, c.reloptions FROM pg_class c JOIN pg_namespace n "
                                 "ON n.oid = c.relnamespace WHERE n.nspname = %s "
                                 "AND c.relname IN ('readings_hourly', 'readings_daily')", [schema]).fetchall())


def test_migration_14_leaves_room_on_rollup_pages_and_keeps_the_data(pg_dsn: str, pg_schema: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from smart_maintenance.connectors.postgres import schema

    monkeypatch.setattr(schema, "MIGRATIONS", MIGRATIONS[:13])
    monkeypatch.setattr(schema, "LATEST_VERSION", 13)
    ensure_schema(pg_dsn, pg_schema)
    first, second = batch(3000, 1), batch(2000, 2, t0=T0 + 20 * H)  # overlapping hours
    with PostgresWriter(pg_dsn, pg_schema, copy_rows=700) as w:
        w.write_readings(first)  # stored by the previous version's schema
    before = rows(pg_dsn, "SELECT * FROM {s}.readings ORDER BY 1, 2, 3", pg_schema)
    assert fillfactors(pg_dsn, pg_schema) == {"readings_hourly": None, "readings_daily": None}
    monkeypatch.undo()
    assert ensure_schema(pg_dsn, pg_schema) == [14]
    assert fillfactors(pg_dsn, pg_schema) == {"readings_hourly": ["fillfactor=50"], "readings_daily": ["fillfactor=50"]}
    assert rows(pg_dsn, "SELECT * FROM {s}.readings ORDER BY 1, 2, 3", pg_schema) == before
    with PostgresWriter(pg_dsn, pg_schema, copy_rows=700) as w:
        w.write_readings(second)
        w.write_readings(Readings.concat([first, second]))  # a replay of both
    assert rollup(pg_dsn, pg_schema, "readings_hourly") == raw_aggregate(pg_dsn, pg_schema, "hour")
    assert rollup(pg_dsn, pg_schema, "readings_daily") == raw_aggregate(pg_dsn, pg_schema, "day")
    assert dead_letters(pg_dsn, pg_schema) == 0


def test_migration_14_passes_over_rollups_that_are_views(pg_dsn: str, pg_schema: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from smart_maintenance.connectors.postgres import schema

    monkeypatch.setattr(schema, "MIGRATIONS", MIGRATIONS[:13])
    monkeypatch.setattr(schema, "LATEST_VERSION", 13)
    ensure_schema(pg_dsn, pg_schema)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # as TimescaleDB's continuous aggregates replace them
        for table in ("readings_hourly", "readings_daily"):
            conn.execute(sql.SQL("DROP TABLE {t}; CREATE VIEW {t} AS SELECT asset_id, sensor, ts AS bucket FROM {r}")
                         .format(t=sql.Identifier(pg_schema, table), r=sql.Identifier(pg_schema, "readings")))
    monkeypatch.undo()
    assert ensure_schema(pg_dsn, pg_schema) == [14]
    assert fillfactors(pg_dsn, pg_schema) == {"readings_hourly": None, "readings_daily": None}
