"""PostgreSQL's CPU per reading when readings arrive live (small batches on a clock), by the readings writer's gather.

    PYTHONPATH=$PWD python bench/store_live.py [--rate 100000] [--seconds 15] [--slice-ms 10]
                                               [--gather 0,0.25] [--rounds 2] [--assets 200]

A fresh embedded PostgreSQL in a temp dir (every server process is this run's). The flow's live readings sink
(`PostgresLocalSink("readings")` built for 1 worker: 2 writer threads and connections, split by asset) gets a
`--slice-ms` slice of `--assets` x 5 sensors readings every slice at `--rate` readings/s, in time order (as a
live flow hands them over), for `--seconds`; then it is closed (all stored). Once per `--gather` value
(`postgres.readings_gather_s`), alternated within each round, each into a fresh schema whose month partitions
exist. Per run: the server's CPU (postmaster + children, psutil) per reading, this process's CPU per reading
(feeding, the writers' COPY payloads, psycopg), the server's commits per 1,000 readings (`pg_stat_database`;
also the other connections' few statements), and how far the feeder fell behind its clock at worst.
Medians over rounds. Last line: `name=value` pairs per gather value g: `pg_us_<g>`, `proc_us_<g>`,
`commits_per_k_<g>`, and the load average at the start and end.
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
from dataclasses import dataclass

import numpy as np
import psutil
import psycopg
from psycopg import sql

from bench.store_cost import postmaster_of, readings, server_cpu
from smart_maintenance.config.settings import PostgresSettings
from smart_maintenance.connectors.postgres.bulk import PostgresLocalSink
from smart_maintenance.connectors.postgres.schema import ensure_month_partition, ensure_schema, render
from smart_maintenance.connectors.postgres.server import embedded_dsn, stop_embedded
from smart_maintenance.operators.records import Readings


@dataclass
class Run:
    pg_us: float
    proc_us: float
    commits_per_k: float
    behind_ms: float


def _commits(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_force_next_flush()")
        time.sleep(1.2)  # the other backends flush their counters within a second
        return int(conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
                                ).fetchone()[0])  # type: ignore[index]


def run(dsn: str, postmaster: psutil.Process, gather_s: float, data: Readings, rate: int, slice_ms: float) -> Run:
    schema = f"live_{secrets.token_hex(3)}"
    ensure_schema(dsn, schema)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for m in np.unique(data.ts.astype("datetime64[ms]").astype("datetime64[M]").astype(np.int64)):
            ensure_month_partition(conn, schema, int(m))
    pg = PostgresSettings(dsn=dsn, schema_name=schema, readings_gather_s=gather_s, rollup_hourly_days=None)
    per = max(1, round(rate * slice_ms / 1000))
    slices = [data.take(slice(lo, lo + per)) for lo in range(0, len(data), per)]  # type: ignore[arg-type]
    part = PostgresLocalSink(pg, "readings").build("store_live", 0, 1)
    c0 = _commits(dsn)
    pg0, me0 = server_cpu(postmaster), time.process_time()
    start = time.perf_counter()
    behind = 0.0
    for i, s in enumerate(slices):
        due = start + (i + 1) * slice_ms / 1000  # a slice is handed over once its last reading is due
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        else:
            behind = max(behind, -wait)
        part.write_batch([s])
    part.close()
    me1 = time.process_time()
    pg1 = server_cpu(postmaster)
    c1 = _commits(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        stored = conn.execute(render("SELECT count(*) FROM {s}.readings", schema)).fetchone()[0]  # type: ignore[index]
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
        conn.execute("CHECKPOINT")
    if stored != len(data):
        raise RuntimeError(f"gather {gather_s}: stored {stored}, expected {len(data)}")
    n = len(data)
    return Run((pg1 - pg0) / n * 1e6, (me1 - me0) / n * 1e6, (c1 - c0) / n * 1000, behind * 1000)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=100_000)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--slice-ms", type=float, default=10.0)
    ap.add_argument("--gather", default="0,0.25")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--assets", type=int, default=200)
    args = ap.parse_args()
    gathers = [float(g) for g in args.gather.split(",")]
    data = readings(int(args.rate * args.seconds), args.assets)
    tmp = Path(tempfile.mkdtemp(prefix="sm-store-live-"))
    tmp.chmod(0o755)  # as root the embedded server runs as another user
    pgdata = tmp / "pgdata"
    load0 = os.getloadavg()[0]
    got: dict[float, list[Run]] = {g: [] for g in gathers}
    try:
        dsn = embedded_dsn(pgdata)
        postmaster = postmaster_of(pgdata)
        run(dsn, postmaster, gathers[0], data.take(slice(0, args.rate)), args.rate, args.slice_ms)  # type: ignore[arg-type]  # warm
        for r in range(args.rounds):
            for g in gathers if r % 2 == 0 else gathers[::-1]:
                f = run(dsn, postmaster, g, data, args.rate, args.slice_ms)
                got[g].append(f)
                print(f"round {r} gather {g}: pg {f.pg_us:.2f} us/reading, process {f.proc_us:.2f}, "
                      f"commits {f.commits_per_k:.3f} per 1,000 readings, feeder behind {f.behind_ms:.0f} ms, "
                      f"load {os.getloadavg()[0]:.2f}", file=sys.stderr)
    finally:
        stop_embedded(pgdata)
        shutil.rmtree(tmp, ignore_errors=True)
    out = [f"rate={args.rate}", f"slice_ms={args.slice_ms:g}"]
    for g, fs in got.items():
        out += [f"pg_us_{g:g}={np.median([f.pg_us for f in fs]):.2f}",
                f"proc_us_{g:g}={np.median([f.proc_us for f in fs]):.2f}",
                f"commits_per_k_{g:g}={np.median([f.commits_per_k for f in fs]):.3f}"]
    out += [f"load_start={load0:.2f}", f"load_end={os.getloadavg()[0]:.2f}"]
    print(" ".join(out))


if __name__ == "__main__":
    main()
