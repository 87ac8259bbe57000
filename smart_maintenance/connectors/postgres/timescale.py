"""When the server has TimescaleDB: readings as a compressed hypertable, roll-ups as continuous aggregates.

UNTESTED against a real TimescaleDB: the extension cannot be installed where
this was written. The statements are unit-tested as text (tests/unit/
test_timescale.py); the guard (`adopt_timescaledb` does nothing unless the
extension is installed and `readings` is still the partitioned table) is
tested on plain PostgreSQL. Plain PostgreSQL (monthly partitions, roll-up
tables kept by the writer) is the tested path.

The conversion runs once, at the first start that finds the extension, under
the schema's advisory lock: a hypertable `readings` (daily chunks, compressed
after `compress_after_days`, segmented by asset and sensor) takes the rows of
the partitioned one, and `readings_hourly` / `readings_daily` become
continuous aggregates with the same columns (asset_id, sensor, bucket, min,
max, sum, count), so every reader keeps its SQL. Retention is TimescaleDB's
policies then, not `prune_once`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psycopg

from smart_maintenance.connectors.postgres.schema import ROLLUPS, lock_key, render, timescaledb_version
from smart_maintenance.connectors.postgres.server import PostgresSinkError, redact

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TimescalePlan:
    """The retention and compression a conversion sets up (days; None: keep forever)."""

    retention_days: float | None = None
    hourly_days: float | None = 400.0
    daily_days: float | None = None
    compress_after_days: float = 7.0
    chunk_days: float = 1.0


def _interval(days: float) -> str:
    return f"INTERVAL '{float(days) * 86400:.0f} seconds'"


def _cagg(table: str, unit: str) -> str:
    return (f"CREATE MATERIALIZED VIEW {{s}}.{table} WITH (timescaledb.continuous) AS "  # noqa: S608 - constants
            f"SELECT asset_id, sensor, time_bucket(INTERVAL '1 {unit}', ts) AS bucket, min(value) AS min, "
            "max(value) AS max, sum(value) AS sum, count(value) AS count "
            "FROM {s}.readings WHERE value IS NOT NULL GROUP BY asset_id, sensor, bucket WITH NO DATA")


def conversion_statements(plan: TimescalePlan) -> tuple[list[str], list[str]]:
    """(statements run in one transaction, statements run after it outside any transaction); `{s}` is the schema.

    `CALL refresh_continuous_aggregate` cannot run in a transaction block: it fills the aggregates from the
    rows that were there before the conversion; the policies keep them current after that.
    """
    tx = [
        "CREATE TABLE {s}.readings_ht (LIKE {s}.readings INCLUDING DEFAULTS INCLUDING CONSTRAINTS)",
        "ALTER TABLE {s}.readings_ht ADD PRIMARY KEY (asset_id, sensor, ts)",
        "SELECT create_hypertable(format('%%I.readings_ht', %(schema)s)::regclass, 'ts', "
        f"chunk_time_interval => {_interval(plan.chunk_days)})",
        "INSERT INTO {s}.readings_ht (asset_id, sensor, ts, value, quality, unit) "
        "SELECT asset_id, sensor, ts, value, quality, unit FROM {s}.readings",
        "DROP TABLE {s}.readings CASCADE",
        "ALTER TABLE {s}.readings_ht RENAME TO readings",
        "ALTER TABLE {s}.readings SET (timescaledb.compress, timescaledb.compress_segmentby = 'asset_id, sensor', "
        "timescaledb.compress_orderby = 'ts')",
        "SELECT add_compression_policy(format('%%I.readings', %(schema)s)::regclass, "
        f"{_interval(plan.compress_after_days)})",
    ]
    if plan.retention_days is not None:
        tx.append("SELECT add_retention_policy(format('%%I.readings', %(schema)s)::regclass, "
                  f"{_interval(plan.retention_days)})")
    after = []
    for (table, unit), keep in zip(ROLLUPS.items(), (plan.hourly_days, plan.daily_days), strict=True):
        start, end, every = ("3 days", "1 hour", "30 minutes") if unit == "hour" else ("7 days", "1 day", "1 hour")
        tx += [
            f"DROP TABLE IF EXISTS {{s}}.{table}",
            _cagg(table, unit),
            f"SELECT add_continuous_aggregate_policy(format('%%I.{table}', %(schema)s)::regclass, "
            f"start_offset => INTERVAL '{start}', end_offset => INTERVAL '{end}', "
            f"schedule_interval => INTERVAL '{every}')",
        ]
        if keep is not None:
            tx.append(f"SELECT add_retention_policy(format('%%I.{table}', %(schema)s)::regclass, {_interval(keep)})")
        after.append(f"CALL refresh_continuous_aggregate(format('%%I.{table}', %(schema)s)::regclass, NULL, NULL)")
    return tx, after


def readings_is_hypertable(conn: psycopg.Connection, schema: str) -> bool:
    """True once `readings` is no longer the partitioned table (a hypertable is a plain table with chunks)."""
    row = conn.execute("SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                       "WHERE n.nspname = %s AND c.relname = 'readings'", [schema]).fetchone()
    return row is not None and row[0] == "r"


def adopt_timescaledb(conn: psycopg.Connection, schema: str, plan: TimescalePlan) -> bool:
    """Convert `schema` to hypertable and continuous aggregates if the extension is there and it is not done yet.

    True when this call converted. `conn` must be in autocommit mode. A no-op on plain PostgreSQL.
    """
    if timescaledb_version(conn) is None:
        return False
    tx, after = conversion_statements(plan)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [lock_key("schema", schema)])
        if readings_is_hypertable(conn, schema):
            return False
        for statement in tx:
            _execute(conn, statement, schema)
    for statement in after:
        _execute(conn, statement, schema)
    log.warning("converted %s.readings to a TimescaleDB hypertable with continuous aggregates (untested path)",
                schema)
    return True


def _execute(conn: psycopg.Connection, statement: str, schema: str) -> None:
    if "%(schema)s" in statement:
        conn.execute(render(statement, schema), {"schema": schema})
    else:
        conn.execute(render(statement, schema))


def adopt_once(dsn: str, schema: str, plan: TimescalePlan) -> bool:
    """`adopt_timescaledb` on a connection of its own; errors as `PostgresSinkError`."""
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            return adopt_timescaledb(conn, schema, plan)
    except psycopg.Error as e:
        raise PostgresSinkError(f"cannot convert {schema!r} at {redact(dsn)} to TimescaleDB: {e}") from e
