"""PostgreSQL's own CPU per 1 M stored readings, split by part: COPY to staging, the insert, the roll-ups.

    python bench/store_cost.py [--readings 1000000] [--batch 20000] [--rounds 2] [--assets 200]
                               [--variants before,full,raw,raw_new,copy]

A fresh embedded PostgreSQL in a temp dir (so that every server process is this run's): `--readings` readings of
`--assets` assets x 5 sensors at 1 Hz in time order (as a backlog or a live flow hands them over), stored by the real
writer (`PostgresWriter.write_readings`, quality and unit on every reading) in `--batch`-row batches, each
variant into a fresh schema whose month partitions exist. Variants:
- `full`: what the writer does (COPY to staging, then `INSERT_NEW_READINGS`: plain insert + hourly and daily
  roll-ups, falling back to `INSERT_READINGS` with ON CONFLICT if a key is stored already: never here);
- `before`: as before: `INSERT_READINGS` (ON CONFLICT DO NOTHING) on every chunk, the roll-up tables' pages
  filled by inserts (no fillfactor, as before migration 14); `plain_only`: the plain insert, roll-ups as before;
- `raw_new`: COPY to staging, then the plain insert without roll-ups; `raw`: the same with ON CONFLICT
  (`INSERT_READINGS_RAW_ONLY`, TimescaleDB's statement);
- `copy`: COPY to staging only (nothing inserted; the transaction's commit empties it).
So insert = raw_new - copy and roll-ups = full - raw_new. `--variants` may name more (see VARIANTS).

Server CPU is the postmaster's own plus its reaped children's plus its live children's (psutil, user + system):
`pg_cpu_s_per_m` is all of it, `backend_cpu_s_per_m` the writer's backend alone (its `pg_backend_pid()`),
the rest (`bg`) is WAL writer, checkpointer, background writer, autovacuum. `writer_cpu_s_per_m` is this
process's CPU in `write_readings` (building the COPY payload, psycopg). Variants alternate within each round
(A B A B, the order flipped every round); the figure is the median over rounds. Also the load average.
Last line: `name=value` pairs, `pg_cpu_s_per_m_<variant>=...` etc.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import psutil
import psycopg
from psycopg import sql

from smart_maintenance.connectors.postgres import schema as pg_schema
from smart_maintenance.connectors.postgres import sink
from smart_maintenance.connectors.postgres.schema import ensure_month_partition, ensure_schema, render
from smart_maintenance.connectors.postgres.server import embedded_dsn, stop_embedded
from smart_maintenance.connectors.postgres.sink import PostgresWriter
from smart_maintenance.operators.records import Readings

SENSORS = 5
T0 = 1_796_083_200_000  # 2026-12-01T00:00:00Z


def readings(n: int, assets: int = 200, seed: int = 7) -> Readings:
    """`n` readings of `assets` x SENSORS series at 1 Hz, in time order (every series once per second)."""
    series = assets * SENSORS
    i = np.arange(n)
    sid = i % series
    asset = np.array([f"pump-{a:03d}" for a in range(assets)], dtype=object)[sid // SENSORS]
    names = ("temperature", "vibration", "pressure", "current", "speed")
    sensor = np.array(names, dtype=object)[sid % SENSORS]
    ts = T0 + (i // series).astype(np.int64) * 1000
    value = np.random.default_rng(seed).normal(50.0, 5.0, n)
    return Readings(asset, sensor, ts, value, np.full(n, 192, np.int16), np.full(n, "degC", dtype=object))


def server_cpu(postmaster: psutil.Process) -> float:
    """CPU seconds of the server: the postmaster, its reaped children and its live children."""
    t = postmaster.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in postmaster.children():
        try:
            c = child.cpu_times()
            total += c.user + c.system
        except psutil.Error:  # gone since: counted in children_* once reaped (or lost if not yet: tiny)
            pass
    return total


def proc_cpu(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


@dataclass
class Figures:
    pg: float
    backend: float
    writer: float


def _rollups_full(conn: psycopg.Connection, schema: str) -> None:
    """The roll-up tables as before migration 14: pages filled by inserts (no room for HOT updates)."""
    for table in ("readings_hourly", "readings_daily"):
        conn.execute(render(f"ALTER TABLE {{s}}.{table} RESET (fillfactor)", schema))


def _collate_c(conn: psycopg.Connection, schema: str) -> None:
    for table in ("readings", "readings_hourly", "readings_daily"):
        conn.execute(render(f"ALTER TABLE {{s}}.{table} ALTER COLUMN asset_id TYPE text COLLATE \"C\", "
                            "ALTER COLUMN sensor TYPE text COLLATE \"C\"", schema))


_RAW = pg_schema.INSERT_READINGS_RAW_ONLY
_NEW = pg_schema.INSERT_NEW_READINGS
_COPY_ONLY = "SELECT 1 WHERE %s::text[] IS NOT NULL AND %s::text[] IS NOT NULL AND %s::text[] IS NOT NULL"
_ROLL_ONCE = (  # both roll-ups from one aggregation of the inserted rows: daily from this statement's hourly rows
    _NEW[:_NEW.index("hourly AS (")]
    + "h AS (SELECT asset_id, sensor, date_bin('1 hour', ts, '2000-01-01T00:00:00Z') AS bucket, min(value) AS min,"
    " max(value) AS max, sum(value) AS sum, count(value) AS count FROM ins WHERE value IS NOT NULL GROUP BY 1, 2, 3),"
    " hourly AS (INSERT INTO {s}.readings_hourly AS t (asset_id, sensor, bucket, min, max, sum, count)"
    " SELECT * FROM h ORDER BY 1, 2, 3 ON CONFLICT (asset_id, sensor, bucket) DO UPDATE SET"
    " min = least(t.min, EXCLUDED.min), max = greatest(t.max, EXCLUDED.max), sum = t.sum + EXCLUDED.sum,"
    " count = t.count + EXCLUDED.count) "
    "INSERT INTO {s}.readings_daily AS t (asset_id, sensor, bucket, min, max, sum, count)"
    " SELECT asset_id, sensor, date_bin('1 day', bucket, '2000-01-01T00:00:00Z'), min(min), max(max), sum(sum),"
    " sum(count) FROM h GROUP BY 1, 2, 3 ORDER BY 1, 2, 3 ON CONFLICT (asset_id, sensor, bucket) DO UPDATE SET"
    " min = least(t.min, EXCLUDED.min), max = greatest(t.max, EXCLUDED.max), sum = t.sum + EXCLUDED.sum,"
    " count = t.count + EXCLUDED.count"
)


@dataclass(frozen=True)
class Variant:
    insert: str | None = None  # INSERT_READINGS (ON CONFLICT); None: the writer's
    new: str | None = None  # INSERT_NEW_READINGS (tried first); None: the writer's, "": never tried (as before)
    prepare: Callable[[psycopg.Connection, str], None] | None = None


VARIANTS: dict[str, Variant] = {
    "full": Variant(),  # what the writer does
    "before": Variant(new="", prepare=_rollups_full),  # as before: ON CONFLICT on every chunk, roll-ups' pages full
    "plain_only": Variant(prepare=_rollups_full),  # the plain insert, roll-ups' pages full
    "raw": Variant(insert=_RAW, new=""),
    "raw_new": Variant(new=_NEW[:_NEW.index(", hourly AS (")].replace("WITH ins AS (", "", 1)[:-1]
                       .replace(" RETURNING asset_id, sensor, ts, value", "")),
    "copy": Variant(insert=_COPY_ONLY, new=""),
    # experiments
    "full_c": Variant(prepare=_collate_c),
    "full_codesort": Variant(new=_NEW.replace("ORDER BY 1, 2, 3 RETURNING", "ORDER BY st.a, st.s, st.ts RETURNING")),
    "full_once": Variant(new=_ROLL_ONCE),
    "full_once_c": Variant(new=_ROLL_ONCE, prepare=_collate_c),
}


def run(dsn: str, postmaster: psutil.Process, variant: str, data: Readings, batch: int) -> Figures:
    schema = f"cost_{variant}_{secrets.token_hex(3)}"
    ensure_schema(dsn, schema)
    v = VARIANTS[variant]
    if v.prepare is not None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            v.prepare(conn, schema)
    w = PostgresWriter(dsn, schema, copy_rows=batch).open()
    months = np.unique(data.ts.astype("datetime64[ms]").astype("datetime64[M]").astype(np.int64))
    for m in months:
        w._run("partition", lambda c, m=int(m): ensure_month_partition(c, schema, m))
        w._partitions.add(int(m))
    w._hypertable = False
    if v.new == "":
        w._new_first = lambda: False  # type: ignore[method-assign]
    pid = w._run("backend pid", lambda c: c.execute("SELECT pg_backend_pid()").fetchone()[0])  # type: ignore[index]
    parts = [data.take(slice(lo, lo + batch)) for lo in range(0, len(data), batch)]  # type: ignore[arg-type]
    time.sleep(0.2)
    saved = sink.INSERT_READINGS, sink.INSERT_NEW_READINGS
    sink.INSERT_READINGS = v.insert or saved[0]  # the writer runs these: a variant swaps its own in
    sink.INSERT_NEW_READINGS = v.new or saved[1]
    try:
        pg0, be0, me0 = server_cpu(postmaster), proc_cpu(pid), time.process_time()
        for part in parts:
            w.write_readings(part)
        me1 = time.process_time()
    finally:
        sink.INSERT_READINGS, sink.INSERT_NEW_READINGS = saved
    w._run("checkpoint", lambda c: c.execute("CHECKPOINT"))  # the WAL and dirty pages this run made, written now
    time.sleep(0.3)
    pg1, be1 = server_cpu(postmaster), proc_cpu(pid)
    w.close()
    with psycopg.connect(dsn, autocommit=True) as conn:
        stored = conn.execute(render("SELECT count(*) FROM {s}.readings", schema)).fetchone()[0]  # type: ignore[index]
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
        conn.execute("CHECKPOINT")
    want = 0 if variant.startswith("copy") else len(data)
    if stored != want:
        raise RuntimeError(f"{variant}: stored {stored}, expected {want}")
    m = len(data) / 1e6
    return Figures((pg1 - pg0) / m, (be1 - be0) / m, (me1 - me0) / m)


def postmaster_of(pgdata: Path) -> psutil.Process:
    pid = int((pgdata / "postmaster.pid").read_text().split()[0])
    return psutil.Process(pid)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--readings", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--assets", type=int, default=200)
    ap.add_argument("--variants", default="before,full,raw,raw_new,copy")
    args = ap.parse_args()
    variants = args.variants.split(",")
    data = readings(args.readings, args.assets)
    tmp = Path(tempfile.mkdtemp(prefix="sm-store-cost-"))
    tmp.chmod(0o755)
    pgdata = tmp / "pgdata"
    try:
        dsn = embedded_dsn(pgdata)
        postmaster = postmaster_of(pgdata)
        with psycopg.connect(dsn, autocommit=True) as conn:
            collation = conn.execute("SELECT datcollate FROM pg_database WHERE datname = current_database()"
                                     ).fetchone()[0]  # type: ignore[index]
        run(dsn, postmaster, variants[0], data.take(slice(0, 50_000)), args.batch)  # type: ignore[arg-type]  # warm
        got: dict[str, list[Figures]] = {v: [] for v in variants}
        loads = [os.getloadavg()[0]]
        for r in range(args.rounds):
            for v in variants if r % 2 == 0 else variants[::-1]:
                f = run(dsn, postmaster, v, data, args.batch)
                got[v].append(f)
                loads.append(os.getloadavg()[0])
                print(f"round {r} {v}: pg {f.pg:.2f} (backend {f.backend:.2f}, bg {f.pg - f.backend:.2f}) "
                      f"writer {f.writer:.2f} CPU-s per 1 M readings, load {loads[-1]:.2f}", file=sys.stderr)
    finally:
        stop_embedded(pgdata)
        shutil.rmtree(tmp, ignore_errors=True)
    out = [f"collation={collation}", f"batch={args.batch}", f"assets={args.assets}"]
    for v, fs in got.items():
        pg, be, wr = (float(np.median([getattr(f, k) for f in fs])) for k in ("pg", "backend", "writer"))
        out += [f"pg_cpu_s_per_m_{v}={pg:.2f}", f"backend_cpu_s_per_m_{v}={be:.2f}",
                f"bg_cpu_s_per_m_{v}={pg - be:.2f}", f"writer_cpu_s_per_m_{v}={wr:.2f}"]
    out.append(f"load_min={min(loads):.2f} load_max={max(loads):.2f}")
    print(" ".join(out))


if __name__ == "__main__":
    main()
