"""Readings POSTed to the API reach the flow: the `api` source reads the durable ingest table in order."""

from __future__ import annotations

import secrets
from datetime import timedelta

import psycopg
import pytest
from bytewax.testing import TestingSink, run_main
from psycopg import sql

from smart_maintenance.config.registry import load_registry
from smart_maintenance.config.settings import load_settings
from smart_maintenance.connectors.postgres.api_store import ApiStore
from smart_maintenance.dataflows.plant import STREAMS, build_flow
from smart_maintenance.operators.records import Readings
from smart_maintenance.sources.api_ingest import ApiIngestSource

pytestmark = pytest.mark.integration
T0 = 1_767_225_600_000  # 2026-01-01


def test_ingested_batches_reach_the_flow_in_order_and_resume_after_the_snapshot(embedded_pg: str) -> None:
    schema = f"t_{secrets.token_hex(6)}"
    try:
        with ApiStore(embedded_pg, schema) as store:
            rows = [("pump-07", s, T0 + i * 1000, float(i)) for i in range(600) for s in ("temp", "vibration")]
            assert store.ingest("b1", "test", Readings.of(rows[:800]), [])
            assert store.ingest("b2", "test", Readings.of(rows[800:]), [])
            assert not store.ingest("b2", "test", Readings.of(rows[800:]), [])  # a retried POST stores nothing
        settings = load_settings(console=False, progress=False)
        out: dict[str, list] = {s: [] for s in STREAMS}
        source = ApiIngestSource(embedded_pg, schema, live=False, batch_rows=500)
        flow = build_flow(settings, source=source, registry=load_registry(),
                          sinks={s: [TestingSink(out[s])] for s in STREAMS}, static_controls=lambda a: [])
        run_main(flow, epoch_interval=timedelta(0))
        got = Readings.concat(out["readings"])
        assert list(zip(got.asset_id, got.sensor, got.ts.tolist(), got.value.tolist())) == rows
        part = source.build_part("s", "api_ingest", 1000)  # a resume after seq 1000 reads the rest only
        (batch,) = part.next_batch()
        assert len(batch.readings) == 200 and batch.readings.value[0] == rows[1000][3]
        with pytest.raises(StopIteration):
            part.next_batch()
        part.close()
    finally:
        with psycopg.connect(embedded_pg, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
