"""A row the database refuses is a dead letter; the rest of its batch is stored at once, not retried as an outage."""

from __future__ import annotations

import random
import string
import time

import psycopg
import pytest
from psycopg import sql

from smart_maintenance.connectors.postgres.connection import is_transient
from smart_maintenance.connectors.postgres.schema import ensure_schema
from smart_maintenance.connectors.postgres.sink import PostgresWriter
from smart_maintenance.operators.records import Invalid, Readings

pytestmark = pytest.mark.integration

JAN5 = 1_767_571_200_000


def _huge_id() -> str:
    # random text does not compress: the key is beyond a B-tree entry's ~2.7 KB limit
    rng = random.Random(15)
    return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(9000))


def _count(dsn: str, schema: str, table: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))).fetchone()[0]


def test_a_key_beyond_the_index_limit_dead_letters_that_row_only(pg_dsn: str, pg_schema: str) -> None:
    ensure_schema(pg_dsn, pg_schema)
    rows = [("pump-01", "t", JAN5 + i * 1000, float(i)) for i in range(10)]
    rows.insert(4, (_huge_id(), "t", JAN5, 1.0))
    writer = PostgresWriter(pg_dsn, pg_schema, copy_rows=1000, outage_s=60.0)  # an outage would wait a minute
    with writer:
        t = time.perf_counter()
        writer.write_readings(Readings.of(rows))
        elapsed = time.perf_counter() - t
        writer.upsert_dead_letters([Invalid("bad_json", "x", _huge_id(), "o")])  # dead letters have no such key
    assert elapsed < 10, f"took {elapsed:.1f} s: retried as an outage"
    assert _count(pg_dsn, pg_schema, "readings") == 10
    with psycopg.connect(pg_dsn) as conn:
        letters = conn.execute(sql.SQL("SELECT reason, origin, detail FROM {} ORDER BY reason").format(
            sql.Identifier(pg_schema, "dead_letters"))).fetchall()
    assert [r[0] for r in letters] == ["bad_json", "unstorable"]
    assert letters[1][1].endswith(".readings") and "ProgramLimitExceeded" in letters[1][2]


def test_data_errors_are_not_transient() -> None:
    assert not is_transient(psycopg.errors.ProgramLimitExceeded("index row size exceeds maximum"))
    assert not is_transient(psycopg.errors.NumericValueOutOfRange("out of range"))
    assert is_transient(psycopg.OperationalError("server closed the connection unexpectedly"))
