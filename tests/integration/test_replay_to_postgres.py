"""The whole flow into real PostgreSQL: a replay twice leaves the same rows; 1 and 2 workers agree."""

import secrets

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from bytewax.testing import cluster_main, run_main

from smart_maintenance.config.settings import Settings
from smart_maintenance.dataflows.plant import build_flow
from tests.synthetic import asset_day

pytestmark = pytest.mark.integration

COUNTS = (
    "SELECT (SELECT count(*) FROM {s}.readings), (SELECT count(*) FROM {s}.features),"
    " (SELECT count(*) FROM {s}.anomalies), (SELECT count(*) FROM {s}.alarms),"
    " (SELECT count(*) FROM {s}.dead_letters)"
)


@pytest.fixture(scope="module")
def plant_csv(tmp_path_factory):
    """Two assets for a day (x drifts at the end) as a long CSV, plus two bad rows."""
    days = [asset_day("x", seed=1, drift_last_h=4), asset_day("y", seed=2)]
    table = pa.table({
        "ts": np.concatenate([d.ts for d in days]),
        "asset_id": np.concatenate([np.full(len(d), d.asset_id) for d in days]),
        "sensor": np.concatenate([d.sensor.astype(str) for d in days]),
        "value": np.concatenate([d.value for d in days]).astype(str),
    })
    path = tmp_path_factory.mktemp("replay") / "plant.csv"
    pacsv.write_csv(table, path)
    with path.open("a") as f:
        f.write("1767225600000,x,a,not-a-number\n1767225600000,x,a,nan\n")
    return path


def _settings(dsn, schema, path):
    return Settings(
        console=False, progress=False, source="replay", replay={"paths": (path,)},
        postgres={"dsn": dsn, "schema_name": schema},
        detection={"warmup_windows": 36, "baseline_size": 96},
    )


def _state(dsn, schema):
    with psycopg.connect(dsn) as conn:
        counts = conn.execute(COUNTS.format(s=schema)).fetchone()
        alarms = conn.execute(f"SELECT alarm_id, status FROM {schema}.alarms ORDER BY 1").fetchall()
        anomalies = conn.execute(f"SELECT anomaly_id, status FROM {schema}.anomalies ORDER BY 1").fetchall()
        letters = conn.execute(f"SELECT reason FROM {schema}.dead_letters ORDER BY 1").fetchall()
    return counts, alarms, anomalies, letters


def test_replaying_twice_leaves_the_same_rows(pg_dsn, pg_schema, plant_csv):
    settings = _settings(pg_dsn, pg_schema, plant_csv)
    run_main(build_flow(settings))
    first = _state(pg_dsn, pg_schema)
    counts, alarms, anomalies, letters = first
    assert counts[0] == 2 * 8640 * 5  # every good reading stored once
    assert counts[1] == 2 * 288 * 5  # features: windows x sensors
    assert letters == [("bad_value",), ("non_finite",)]
    assert {a for a, s in alarms} and all(s in ("open", "cleared") for _, s in alarms)
    run_main(build_flow(settings))
    assert _state(pg_dsn, pg_schema) == first


def test_two_workers_store_what_one_worker_stores(embedded_pg, plant_csv):
    one, two = f"t_{secrets.token_hex(4)}_w1", f"t_{secrets.token_hex(4)}_w2"
    try:
        run_main(build_flow(_settings(embedded_pg, one, plant_csv)))
        cluster_main(build_flow(_settings(embedded_pg, two, plant_csv)), [], 0, worker_count_per_proc=2)
        assert _state(embedded_pg, one) == _state(embedded_pg, two)
    finally:
        with psycopg.connect(embedded_pg, autocommit=True) as conn:
            for schema in (one, two):
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
