"""Disk cost per sensor-year on plain PostgreSQL: raw 1 Hz readings vs the hourly and daily roll-ups.

    python bench/storage_cost.py [--sensors 10] [--hours 24] [--rollup-sensors 20]

1. raw: `--sensors` sensors at 1 Hz for `--hours`, through the real sink (`PostgresWriter`, quality and
   unit on every reading as an MQTT JSON payload would give them) into a fresh embedded PostgreSQL; the
   readings partitions' `pg_total_relation_size` (heap, primary key, BRIN, after VACUUM) per reading,
   times 31,536,000 readings per sensor-year. Also without quality and unit (`raw_plain_bytes_per_row`).
2. roll-ups: `--rollup-sensors` sensors with one reading an hour for a year through the same sink: that
   makes exactly a sensor-year of hourly and daily roll-up rows each; their tables' size per sensor.
3. the writer's cost of keeping roll-ups: the same raw batch written with the roll-up statement and with
   the raw-only statement (TimescaleDB's) into two fresh schemas, interleaved in 24 slices in time order
   (alternating which goes first), in this run (`rollup_write_overhead`); and
   the unit conversion per reading (`convert_ns_per_reading`, every reading of the batch converted).

TimescaleDB compression is not measurable here (the extension cannot be installed on this machine).
Last line: `raw_mb_per_sensor_year=<x> rollup_mb_per_sensor_year=<x>`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import psycopg
from psycopg import sql
from rich.console import Console

from smart_maintenance.config.settings import load_settings
from smart_maintenance.connectors.postgres.schema import ensure_month_partition, ensure_schema
from smart_maintenance.connectors.postgres.server import resolve_dsn, stop_embedded
from smart_maintenance.connectors.postgres.sink import PostgresWriter
from smart_maintenance.operators.ingest.units import convert_units
from smart_maintenance.operators.records import Parsed, Readings

console = Console(stderr=True)
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
YEAR_S = 365 * 86_400
SENSORS = ("temperature", "vibration", "pressure", "current", "speed")


def readings(sensors: int, n_per_sensor: int, step_ms: int, *, labelled: bool, t0: int = T0) -> Readings:
    """`sensors` sensors (pump-NN / realistic names) with `n_per_sensor` readings each, `step_ms` apart."""
    names = [(f"pump-{i // len(SENSORS):02d}", SENSORS[i % len(SENSORS)]) for i in range(sensors)]
    n = sensors * n_per_sensor
    asset = np.repeat(np.array([a for a, _ in names], dtype=object), n_per_sensor)
    sensor = np.repeat(np.array([s for _, s in names], dtype=object), n_per_sensor)
    ts = np.tile(t0 + np.arange(n_per_sensor, dtype=np.int64) * step_ms, sensors)
    value = np.random.default_rng(7).normal(50.0, 5.0, n)
    if not labelled:
        return Readings(asset, sensor, ts, value)
    return Readings(asset, sensor, ts, value, np.full(n, 192, np.int16), np.full(n, "degC", dtype=object))


def relation_bytes(conn: psycopg.Connection, schema: str, table: str) -> int:
    """A table's total size with its indexes; a partitioned table's is the sum of its partitions'."""
    row = conn.execute(
        "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND (c.relname = %s "
        "OR c.oid IN (SELECT inhrelid FROM pg_inherits "
        "WHERE inhparent = format('%%I.%%I', %s::text, %s::text)::regclass))",
        [schema, table, schema, table]).fetchone()
    return int(row[0]) if row else 0


def opened(dsn: str, schema: str, batch: Readings, *, raw_only: bool) -> PostgresWriter:
    """A writer on a fresh schema whose month partitions exist (neither variant pays for them)."""
    ensure_schema(dsn, schema)
    w = PostgresWriter(dsn, schema, copy_rows=50_000).open()
    months = np.unique(batch.ts.astype("datetime64[ms]").astype("datetime64[M]").astype(np.int64))
    for m in months:
        w._run("partition", lambda c, m=int(m): ensure_month_partition(c, schema, m))
    w._hypertable = raw_only  # True: the raw-only statement, as on TimescaleDB, into the same partitions
    return w


def vacuum(dsn: str, schema: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for table in ("readings", "readings_hourly", "readings_daily"):
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(schema, table)))


def write(dsn: str, schema: str, batch: Readings, *, raw_only: bool = False) -> None:
    with opened(dsn, schema, batch, raw_only=raw_only) as w:
        w.write_readings(batch)
    vacuum(dsn, schema)


def compare(dsn: str, batch: Readings, rounds: int) -> tuple[float, float]:
    """Seconds to write `batch` with roll-ups and raw only, interleaved in `rounds` slices (alternating which
    goes first) so that the load of a shared machine falls on both alike."""
    a = opened(dsn, "cost_raw", batch, raw_only=False)
    b = opened(dsn, "cost_raw_only", batch, raw_only=True)
    spent = {id(a): 0.0, id(b): 0.0}
    bounds = np.linspace(0, len(batch), rounds + 1).astype(int)
    for k in range(rounds):
        part = batch.take(np.arange(bounds[k], bounds[k + 1]))
        for w in (a, b) if k % 2 == 0 else (b, a):
            t = time.perf_counter()
            w.write_readings(part)
            spent[id(w)] += time.perf_counter() - t
    a.close()
    b.close()
    vacuum(dsn, "cost_raw")
    vacuum(dsn, "cost_raw_only")
    return spent[id(a)], spent[id(b)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sensors", type=int, default=10)
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--rollup-sensors", type=int, default=20)
    args = ap.parse_args()
    per_sensor = int(args.hours * 3600)
    with tempfile.TemporaryDirectory(prefix="sm-bench-") as tmp:
        settings = load_settings(console=False, progress=False, data_dir=Path(tmp))
        dsn = resolve_dsn(settings)
        try:
            raw = readings(args.sensors, per_sensor, 1000, labelled=True)
            t_rollup, t_raw_only = compare(dsn, raw, rounds=24)
            plain = readings(args.sensors, per_sensor, 1000, labelled=False)
            write(dsn, "cost_plain", plain, raw_only=True)
            hourly = readings(args.rollup_sensors, 365 * 24, 3_600_000, labelled=True)
            write(dsn, "cost_rollup", hourly)
            with psycopg.connect(dsn, autocommit=True) as conn:
                raw_bytes = relation_bytes(conn, "cost_raw_only", "readings")
                plain_bytes = relation_bytes(conn, "cost_plain", "readings")
                rollup_bytes = {t: relation_bytes(conn, "cost_rollup", t)
                                for t in ("readings_hourly", "readings_daily")}
                counts = {t: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
                    sql.Identifier("cost_rollup", t))).fetchone()[0] for t in rollup_bytes}  # type: ignore[index]
        finally:
            stop_embedded(Path(tmp) / "pgdata")
    n = len(raw)
    parsed = Parsed(Readings(raw.asset_id, raw.sensor, raw.ts, raw.value, raw.quality,
                             np.full(n, "degF", dtype=object)))
    expected = {f"pump-{i:02d}": dict.fromkeys(SENSORS, "degC") for i in range(args.sensors)}
    convert_units(parsed, expected)  # warm
    t = time.perf_counter()
    out = convert_units(parsed, expected)
    convert_ns = (time.perf_counter() - t) / n * 1e9
    assert len(out.readings) == n
    per_row, plain_per_row = raw_bytes / n, plain_bytes / n
    raw_mb = per_row * YEAR_S / 1e6
    rollup_mb = sum(rollup_bytes.values()) / args.rollup_sensors / 1e6
    console.print(f"raw: {n:,} readings, {raw_bytes / 1e6:.1f} MB with quality and unit "
                  f"({per_row:.1f} B/reading), {plain_bytes / 1e6:.1f} MB without ({plain_per_row:.1f} B/reading)")
    console.print(f"roll-ups of {args.rollup_sensors} sensor-years: " + ", ".join(
        f"{t} {counts[t]:,} rows {b / 1e6:.2f} MB" for t, b in rollup_bytes.items()))
    console.print(f"write {n:,} readings: {t_rollup:.2f} s with roll-ups, {t_raw_only:.2f} s raw only")
    print(f"raw_bytes_per_row={per_row:.1f} raw_plain_bytes_per_row={plain_per_row:.1f} "
          f"write_s_rollups={t_rollup:.2f} write_s_raw_only={t_raw_only:.2f} "
          f"rollup_write_overhead={t_rollup / t_raw_only - 1:.2f} convert_ns_per_reading={convert_ns:.1f}")
    print(f"raw_mb_per_sensor_year={raw_mb:.0f} rollup_mb_per_sensor_year={rollup_mb:.2f}")


if __name__ == "__main__":
    main()
