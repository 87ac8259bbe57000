"""The readings-store path alone, live-shaped batches: one item per asset (before) against one per partition (now).

    python bench/store_batches.py [--per-asset 2,10,50] [--readings 400000] [--dsn DSN]

Real Bytewax (`run_main`, 1 worker) and a real PostgreSQL (`--dsn`, default: an embedded server in a temp dir):
batches of 200 assets x 5 sensors, `per-asset` readings of each asset per batch (live, an asset's share of a
10 ms poll at 40,000/s is about 2; a backlog's 10,000-message batches give about 50), split by asset (the
windows need it in both), stored by `PostgresBulkSink("readings")` with 2 partitions:
- `asset_items`: the split's `(asset_id, AssetReadings)` items to the sink, joined by the writer one
  `Readings` per item (`Readings.concat`), as before branch `live`;
- `batches`: what the flow does now (`emit` with the sink's `batches()`: one `(part key, Readings)` item
  per partition and batch, the writer joins `AssetReadings` items in one step).
CPU is the process's (`time.process_time()`, all threads: the writers' too) per reading stored, median of 3
alternating runs each. Last line: `store_us_asset_items_<n>=<x> store_us_batches_<n>=<x>` per `per-asset` n.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import secrets
import shutil
import tempfile
import time

import bytewax.operators as op
import numpy as np
import psycopg
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, run_main

from smart_maintenance.config.settings import PostgresSettings
from smart_maintenance.connectors.postgres import bulk
from smart_maintenance.connectors.postgres.schema import ensure_schema
from smart_maintenance.dataflows.outputs import emit
from smart_maintenance.dataflows.steps import Steps
from smart_maintenance.operators.records import AssetReadings, Readings

ASSETS, SENSORS = 200, 5


def per_item_concat(items: list[AssetReadings]) -> Readings:
    """The writer's join before: a `Readings` per item, then `Readings.concat`."""
    return Readings.concat([Readings(np.full(len(a), a.asset_id, dtype=object), a.sensor, a.ts, a.value, a.quality,
                                     a.unit) for a in items])


def batches(per_asset: int, total: int) -> list[Readings]:
    per_batch = per_asset * ASSETS
    out, t0 = [], 1_796_000_000_000
    for b in range(total // per_batch):
        i = np.arange(b * per_batch, (b + 1) * per_batch)
        out.append(Readings(np.array([f"asset-{k % ASSETS:03d}" for k in i], dtype=object),
                            np.array([f"s{(k // ASSETS) % SENSORS}" for k in i], dtype=object),
                            t0 + i.astype(np.int64), np.random.default_rng(b).random(per_batch)))
    return out


def run(dsn: str, mode: str, data: list[Readings]) -> float:
    schema = f"store_{secrets.token_hex(3)}"
    ensure_schema(dsn, schema)
    sink = bulk.PostgresBulkSink(PostgresSettings(dsn=dsn, schema_name=schema), "readings")
    flow = Dataflow("store_batches")
    readings = op.input("read", flow, TestingSource(data))
    by_asset = op.flat_map("split_by_asset", readings, Steps.split)
    op.inspect("windows_stand_in", by_asset, lambda *_: None)
    joined = bulk._readings
    try:
        if mode == "asset_items":
            bulk._readings = per_item_concat
            op.output("store_readings_0", by_asset, sink)
        else:
            emit("store_readings", readings, [sink])
        cpu = time.process_time()
        run_main(flow)
        cpu = time.process_time() - cpu
    finally:
        bulk._readings = joined
    with psycopg.connect(dsn, autocommit=True) as conn:
        stored = conn.execute(f"SELECT count(*) FROM {schema}.readings").fetchone()[0]
        conn.execute(f"DROP SCHEMA {schema} CASCADE")
    if stored != sum(len(r) for r in data):
        raise RuntimeError(f"{mode}: stored {stored} of {sum(len(r) for r in data)} readings")
    return cpu / stored * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-asset", default="2,10,50")
    ap.add_argument("--readings", type=int, default=400_000)
    ap.add_argument("--dsn", default=None)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sm-store-"))
    tmp.chmod(0o755)
    try:
        dsn = args.dsn
        if dsn is None:
            from smart_maintenance.connectors.postgres.server import embedded_dsn

            dsn = embedded_dsn(tmp / "pgdata")
        figures = []
        for n in (int(x) for x in args.per_asset.split(",")):
            data = batches(n, args.readings)
            got: dict[str, list[float]] = {"asset_items": [], "batches": []}
            for round_ in range(3):
                for mode in ("asset_items", "batches") if round_ % 2 == 0 else ("batches", "asset_items"):
                    got[mode].append(run(dsn, mode, data))
            print(f"{n} readings per asset and batch: µs of CPU per reading stored, asset items "
                  f"{[round(x, 2) for x in got['asset_items']]}, batches {[round(x, 2) for x in got['batches']]}",
                  file=sys.stderr)
            figures.append(f"store_us_asset_items_{n}={np.median(got['asset_items']):.2f} "
                           f"store_us_batches_{n}={np.median(got['batches']):.2f}")
        print(" ".join(figures))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
