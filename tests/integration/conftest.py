"""Real PostgreSQL for integration tests: the embedded server, and the machine's when it answers.

Every test that takes `pg_schema` gets a fresh random schema on each server,
dropped afterwards, so tests never see each other's rows. Set
`SMART_MAINTENANCE_TEST_PG` to test against another external server.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from smart_maintenance.config.settings import Settings
from smart_maintenance.connectors.postgres.server import PostgresSinkError, check_dsn, resolve_dsn


def _server_dir() -> Path:
    """A directory for the embedded server outside pytest's basetemp.

    As root the server runs as another user, so the directories above its data
    must stay traversable; every pytest session resets its basetemp root to
    0700, which would lock out the server of a session running alongside. The
    directory is removed at exit, after the server stops (atexit runs in reverse).
    """
    path = Path(tempfile.mkdtemp(prefix="sm-test-pg-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


EXTERNAL_DSN = os.environ.get("SMART_MAINTENANCE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def embedded_data_dir() -> Path:
    """The `data_dir` of the session's embedded server; missing until the server starts."""
    return _server_dir() / "data"


@pytest.fixture(scope="session")
def embedded_pg(embedded_data_dir: Path) -> str:
    """The DSN of one embedded server for the whole session, started as the product starts it."""
    return resolve_dsn(Settings(data_dir=embedded_data_dir, postgres={"dsn": None}))


@pytest.fixture(scope="session", params=["embedded", "external"])
def pg_dsn(request: pytest.FixtureRequest) -> str:
    """A DSN per server: the embedded one, then the external one."""
    if request.param == "embedded":
        return request.getfixturevalue("embedded_pg")
    try:
        check_dsn(EXTERNAL_DSN, timeout_s=2)
    except PostgresSinkError as e:
        pytest.skip(f"{e}; start a server there or set SMART_MAINTENANCE_TEST_PG")
    return EXTERNAL_DSN


@pytest.fixture
def pg_schema(pg_dsn: str) -> Iterator[str]:
    """A schema name no other test uses; the schema is dropped after the test."""
    name = f"t_{secrets.token_hex(6)}"
    yield name
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))
