"""The TimescaleDB conversion's SQL as text: TimescaleDB cannot be installed here, so this is what is checked."""

from __future__ import annotations

from psycopg import sql

from smart_maintenance.connectors.postgres.schema import render
from smart_maintenance.connectors.postgres.timescale import TimescalePlan, conversion_statements


def test_conversion_makes_a_compressed_hypertable_and_continuous_aggregates() -> None:
    tx, after = conversion_statements(TimescalePlan(retention_days=30, hourly_days=400, daily_days=None))
    text = "\n".join(tx)
    assert "create_hypertable(format('%%I.readings_ht', %(schema)s)::regclass, 'ts', " \
           "chunk_time_interval => INTERVAL '86400 seconds')" in text
    assert "timescaledb.compress_segmentby = 'asset_id, sensor'" in text
    assert "add_compression_policy(format('%%I.readings', %(schema)s)::regclass, INTERVAL '604800 seconds')" in text
    assert "add_retention_policy(format('%%I.readings', %(schema)s)::regclass, INTERVAL '2592000 seconds')" in text
    # the aggregates keep the roll-up tables' names and columns, so readers keep their SQL
    for table, bucket in (("readings_hourly", "1 hour"), ("readings_daily", "1 day")):
        assert f"DROP TABLE IF EXISTS {{s}}.{table}" in tx
        assert (f"CREATE MATERIALIZED VIEW {{s}}.{table} WITH (timescaledb.continuous) AS SELECT asset_id, sensor, "
                f"time_bucket(INTERVAL '{bucket}', ts) AS bucket, min(value) AS min, max(value) AS max, "
                "sum(value) AS sum, count(value) AS count") in text
        assert any(f"add_continuous_aggregate_policy(format('%%I.{table}'" in s for s in tx)
    assert sum("add_retention_policy" in s for s in tx) == 2  # raw and hourly; daily is kept forever
    # the old rows move before the partitioned table goes, and the swap is in that order
    order = [next(i for i, s in enumerate(tx) if s.startswith(p)) for p in (
        "INSERT INTO {s}.readings_ht", "DROP TABLE {s}.readings CASCADE", "ALTER TABLE {s}.readings_ht RENAME")]
    assert order == sorted(order)
    assert after == [f"CALL refresh_continuous_aggregate(format('%%I.{t}', %(schema)s)::regclass, NULL, NULL)"
                     for t in ("readings_hourly", "readings_daily")]


def test_no_retention_policy_when_kept_forever_and_statements_render() -> None:
    tx, after = conversion_statements(TimescalePlan(retention_days=None, hourly_days=None, daily_days=None))
    assert not any("add_retention_policy" in s for s in tx)
    for s in tx + after:  # every statement is valid for psycopg's composition with a schema identifier
        assert isinstance(render(s, "plant_a"), sql.Composed)
