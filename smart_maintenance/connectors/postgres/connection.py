"""One PostgreSQL connection with retries: the base of every writer and store.

Opened lazily, autocommit, in UTC. Connection loss (and other operational
errors, deadlocks included) is retried with bounded exponential backoff on a
new connection: a few attempts for tools and tests, up to `outage_s` for a
flow riding out an outage. Any other error raises `PostgresSinkError`.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, Self, TypeVar

import psycopg
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from smart_maintenance import metrics
from smart_maintenance.connectors.postgres.schema import ensure_schema, prune_readings, prune_rollups
from smart_maintenance.connectors.postgres.server import PostgresSinkError, redact
from smart_maintenance.connectors.postgres.timescale import readings_is_hypertable

log = logging.getLogger(__name__)
T = TypeVar("T")

SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")

DATA_ERRORS: tuple[type[psycopg.Error], ...] = (
    psycopg.DataError,  # a value the column cannot hold
    psycopg.IntegrityError,  # a constraint a row breaks
    psycopg.errors.ProgramLimitExceeded,  # a key too large for its index (class 54): about the row, not the server
)
"""Errors caused by what a row holds: retrying cannot help and they are never an outage."""


def is_transient(e: BaseException) -> bool:
    """An error worth retrying on a new connection (the server or the network, not the data)."""
    return isinstance(e, (psycopg.OperationalError, psycopg.InterfaceError)) and not isinstance(e, DATA_ERRORS)


_migrated: set[tuple[str, str]] = set()
_migrate_lock = threading.Lock()


def migrate_once(dsn: str, schema: str) -> None:
    """Migrate `schema` the first time this process asks (every later call returns at once)."""
    with _migrate_lock:
        if (dsn, schema) not in _migrated:
            ensure_schema(dsn, schema)
            _migrated.add((dsn, schema))


_pruned: set[tuple[str, str]] = set()


def prune_once(dsn: str, schema: str, retention_days: float | None, hourly_days: float | None = None,
               daily_days: float | None = None) -> list[str]:
    """Drop raw readings past `postgres.retention_days` and roll-ups past theirs, the first time this process
    asks; the raw partitions dropped."""
    with _migrate_lock:
        if (dsn, schema) in _pruned:
            return []
        _pruned.add((dsn, schema))
    now = datetime.now(timezone.utc)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            if readings_is_hypertable(conn, schema):
                return []  # TimescaleDB: its retention policies drop chunks and aggregates
            dropped = prune_readings(conn, schema, retention_days, now) if retention_days is not None else []
            deleted = prune_rollups(conn, schema, hourly_days, daily_days, now)
    except psycopg.Error as e:
        raise PostgresSinkError(f"cannot prune old readings in {schema!r} at {redact(dsn)}: {e}") from e
    if dropped:
        log.info("dropped %d month(s) of raw readings older than %g days: %s", len(dropped), retention_days,
                 ", ".join(dropped))
    for table, n in deleted.items():
        if n:
            log.info("deleted %d %s rows past their retention", n, table)
    return dropped


class PgConnection:
    """A lazily opened autocommit connection (UTC); operational errors retried on a new one.

    Subclasses add their statements; `_setup(conn)` runs on each new connection.
    """

    def __init__(self, dsn: str, schema: str, *, attempts: int = 5, max_wait_s: float = 5.0,
                 outage_s: float | None = None, migrate: bool = False):
        if not SCHEMA_NAME.match(schema):
            raise ValueError(f"schema must match {SCHEMA_NAME.pattern}, got {schema!r}")
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {attempts}")
        self._dsn, self.schema, self._migrate = dsn, schema, migrate
        self._conn: psycopg.Connection | None = None
        self._retrying = Retrying(
            retry=retry_if_exception(is_transient),
            # a flow rides out an outage of up to outage_s; tests and tools give up after a few attempts
            stop=stop_after_attempt(attempts) if outage_s is None else stop_after_delay(outage_s),
            wait=wait_exponential(multiplier=0.1, max=max_wait_s),
            before_sleep=self._drop_connection,
            reraise=True,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({redact(self._dsn)!r}, {self.schema!r})"

    def open(self) -> Self:
        self._run("connect", lambda conn: None)
        return self

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _setup(self, conn: psycopg.Connection) -> None:
        """Per-connection preparation (temporary tables, ...)."""

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            if self._migrate:
                migrate_once(self._dsn, self.schema)
            conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=10)
            conn.execute("SET TIME ZONE 'UTC'")
            self._setup(conn)
            self._conn = conn
        return self._conn

    def _drop_connection(self, state: Any) -> None:
        log.warning("PostgreSQL at %s: %s; reconnecting (attempt %d)",
                    redact(self._dsn), state.outcome.exception(), state.attempt_number)
        self.close()

    def _run(self, what: str, fn: Callable[[psycopg.Connection], T]) -> T:
        try:
            with metrics.SINK_WRITE.labels(f"postgres:{what}").time():
                return self._retrying(lambda: fn(self._connection()))
        except psycopg.Error as e:
            metrics.SINK_ERRORS.labels(f"postgres:{what}").inc()
            raise PostgresSinkError(
                f"{what} in schema {self.schema!r} at {redact(self._dsn)} failed: {type(e).__name__}: {e}"
            ) from e
