"""PostgreSQL sinks: every stream that leaves the flow, stored idempotently.

Recovery replays output since the last snapshot (at-least-once), so every
write is an upsert keyed by the record's deterministic id: a replay leaves the
same rows. Readings and features are the volume: they go by binary COPY into
a temporary staging table, then one `INSERT ... SELECT ... ON CONFLICT`. The
COPY payload is built with numpy (fixed-width columns, asset and sensor names
sent once per chunk as arrays and joined back in SQL), so there is no Python
work per reading. Anomalies, alarms and dead letters are few: one
`jsonb_to_recordset` statement per chunk, fed by the records' `to_dict()`, so
the database holds what the JSONL files hold.

    writer = PostgresWriter(resolve_dsn(settings), "public", copy_rows=50_000)
    with writer:
        writer.write_readings(batch)
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import partial
from typing import Any, TypeVar, cast

import numpy as np
import orjson
import psycopg
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from psycopg import sql

from smart_maintenance import latency, metrics
from smart_maintenance.config.settings import PostgresSettings, Settings
from smart_maintenance.connectors.postgres.connection import DATA_ERRORS, PgConnection, migrate_once
from smart_maintenance.connectors.postgres.schema import (
    ALARM_STATUS_RANK,
    INSERT_DEAD_LETTERS,
    INSERT_FEATURES,
    INSERT_NEW_READINGS,
    INSERT_READINGS,
    INSERT_READINGS_RAW_ONLY,
    LOOP_TABLES,
    STAGING_TABLES,
    TABLES,
    UPSERT_ALARMS,
    UPSERT_ANOMALIES,
    ensure_month_partition,
    json_doc,
    render,
    timescaledb_version,
)
from smart_maintenance.connectors.postgres.server import (
    PostgresSinkError,
    postgres_section,
    redact,
    resolve_dsn,
)
from smart_maintenance.connectors.postgres.timescale import readings_is_hypertable
from smart_maintenance.operators.ingest.codes import factorize
from smart_maintenance.operators.records import (
    Alarm,
    Anomaly,
    FeatureBatch,
    Invalid,
    Readings,
)

__all__ = ["STREAMS", "PostgresSink", "PostgresSinkError", "PostgresWriter", "describe"]

log = logging.getLogger(__name__)
T = TypeVar("T")

STREAMS: tuple[str, ...] = TABLES
_PG_EPOCH_MS = 946_684_800_000  # 2000-01-01, the zero of PostgreSQL's binary timestamps
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_COPY_TRAILER = struct.pack(">h", -1)


class PostgresWriter(PgConnection):
    """Writes the flow's records into one schema over one connection.

    Connection loss (and other operational errors, deadlocks included) is
    retried with bounded exponential backoff on a new connection; any other
    error raises PostgresSinkError. Every write is idempotent, so retrying a
    half-done chunk is harmless. The schema must exist (see `ensure_schema`).
    """

    def __init__(
        self,
        dsn: str,
        schema: str,
        copy_rows: int,
        *,
        attempts: int = 5,
        max_wait_s: float = 5.0,
        outage_s: float | None = None,
    ):
        if copy_rows < 1:
            raise ValueError(f"copy_rows must be at least 1, got {copy_rows}")
        super().__init__(dsn, schema, attempts=attempts, max_wait_s=max_wait_s, outage_s=outage_s)
        self.copy_rows = copy_rows
        self._partitions: set[int] = set()  # months whose readings partition exists
        self._hypertable: bool | None = None  # TimescaleDB: no month partitions, continuous aggregates roll up
        self._misses = 0  # chunks in a row whose plain insert met a stored key (see `_new_first`)
        self._skip = 0  # chunks left to store with ON CONFLICT directly

    def __repr__(self) -> str:
        return f"PostgresWriter({redact(self._dsn)!r}, {self.schema!r}, copy_rows={self.copy_rows})"

    def _setup(self, conn: psycopg.Connection) -> None:
        for statement in STAGING_TABLES:
            conn.execute(statement)

    # -- readings and features: binary COPY into staging, then one INSERT ---------

    def write_readings(self, batch: Readings) -> int:
        """Store a batch of readings (first value wins for a key); returns rows sent."""
        n = len(batch)
        if n == 0:
            return 0
        if self._hypertable is None:
            self._hypertable = self._run("inspect readings", partial(readings_is_hypertable, schema=self.schema))
        for month in [] if self._hypertable else _months(batch.ts):
            if month not in self._partitions:
                self._run("create readings partition",
                          partial(ensure_month_partition, schema=self.schema, month=int(month)))
                self._partitions.add(int(month))
        insert = render(INSERT_READINGS_RAW_ONLY if self._hypertable else INSERT_READINGS, self.schema)
        new = None if self._hypertable else render(INSERT_NEW_READINGS, self.schema)

        def write(lo: int, hi: int) -> None:
            part = batch.take(slice(lo, hi))  # type: ignore[arg-type]  # take() also slices; records.py says ndarray
            a, assets = _codes(part.asset_id)
            s, sensors = _codes(part.sensor)
            u, units = _codes(part.unit) if part.unit is not None else (np.zeros(len(part), np.int32), [])
            payload = _copy_payload([(a, ">i4"), (s, ">i4"), (_pg_micros(part.ts), ">i8"), (part.value, ">f8"),
                                     (part.quality_or_unknown(), ">i2"), (u, ">i4")])
            first = new if new is not None and self._new_first() else None
            plain = self._run("write readings", lambda c: self._stage_and_insert(
                c, "sm_stage_readings", payload, insert, [assets, sensors, units], first=first))
            if first is not None:
                self._tried_new(plain)

        def row(i: int) -> dict[str, Any]:
            out: dict[str, Any] = {"asset_id": str(batch.asset_id[i]), "sensor": str(batch.sensor[i]),
                                   "ts": int(batch.ts[i]), "value": float(batch.value[i])}
            if batch.quality is not None and batch.quality[i] >= 0:
                out["quality"] = int(batch.quality[i])
            if batch.unit is not None and batch.unit[i] is not None:
                out["unit"] = str(batch.unit[i])
            return out

        for lo in range(0, n, self.copy_rows):
            self._isolating("readings", lo, min(lo + self.copy_rows, n), write, row)
        return n

    def write_features(self, batches: list[FeatureBatch]) -> int:
        """Upsert the features of closed windows (last batch wins); returns rows sent."""
        rows = 0
        insert = render(INSERT_FEATURES, self.schema)
        for chunk in _chunks(batches, self.copy_rows, lambda b: b.values.shape[0] * b.values.shape[1]):

            def write(lo: int, hi: int, chunk: list[FeatureBatch] = chunk) -> None:
                cols, assets, sensors = _feature_columns(chunk[lo:hi])
                if len(cols[0][0]):
                    self._run("write features", lambda c: self._stage_and_insert(
                        c, "sm_stage_features", _copy_payload(cols), insert, [assets, sensors]))

            def row(i: int, chunk: list[FeatureBatch] = chunk) -> dict[str, Any]:
                b = chunk[i]
                return {"asset_id": b.asset_id, "windows": len(b), "sensors": list(b.sensors)[:16]}

            self._isolating("features", 0, len(chunk), write, row)
            rows += sum(int((b.values[:, :, 7] > 0).sum()) for b in chunk)
        return rows

    @staticmethod
    def _stage_and_insert(conn: psycopg.Connection, stage: str, payload: bytes, insert: sql.Composed,
                          params: list[Any], *, first: sql.Composed | None = None) -> bool:
        """COPY `payload` into `stage`, then `first` (in a savepoint) or, if it meets a stored key, `insert`.

        True when `first` stored the chunk.
        """
        with conn.transaction(), conn.cursor() as cur:
            with cur.copy(sql.SQL("COPY {} FROM STDIN (FORMAT BINARY)").format(sql.Identifier(stage))) as copy:
                copy.write(payload)
            if first is not None:
                try:
                    with conn.transaction():
                        cur.execute(first, params)
                    return True
                except psycopg.errors.UniqueViolation:
                    pass  # rolled back to the savepoint: the staged rows are still there
            cur.execute(insert, params)
        return False

    def _new_first(self) -> bool:
        """Whether to try the plain insert (INSERT_NEW_READINGS) on the next chunk of readings.

        Yes, unless the last ones met stored keys: after k such chunks in a row the next min(2^k, 64)
        go straight to ON CONFLICT, so a replay or a source that repeats keys wastes little on failed
        attempts, and new readings after them soon take the cheap path again.
        """
        if self._skip:
            self._skip -= 1
            return False
        return True

    def _tried_new(self, stored: bool) -> None:
        self._misses = 0 if stored else self._misses + 1
        self._skip = min(1 << self._misses, 64) if self._misses else 0

    # -- records: one jsonb_to_recordset statement per chunk ------------------------

    def upsert_anomalies(self, anomalies: list[Anomaly]) -> int:
        """Insert or update anomalies by id (the last of duplicates wins)."""
        latest = list({a.anomaly_id: a for a in anomalies}.values())
        return self._upsert("upsert anomalies", UPSERT_ANOMALIES, latest)

    def upsert_alarms(self, alarms: list[Alarm]) -> int:
        """Insert or advance alarms; a state older than the stored one is ignored."""
        latest: dict[str, Alarm] = {}
        for a in alarms:
            if a.alarm_id not in latest or _alarm_order(a) > _alarm_order(latest[a.alarm_id]):
                latest[a.alarm_id] = a
        return self._upsert("upsert alarms", UPSERT_ALARMS, list(latest.values()))

    def upsert_dead_letters(self, invalid: list[Invalid]) -> int:
        """Store dead letters once each (first_seen is kept on replay)."""
        return self._upsert("store dead letters", INSERT_DEAD_LETTERS, invalid)

    def _upsert(self, what: str, statement: str, records: Sequence[Anomaly | Alarm | Invalid]) -> int:
        query = render(statement, self.schema)

        def write(lo: int, hi: int) -> None:
            doc = json_doc(r.to_dict() for r in records[lo:hi])
            self._run(what, lambda c: c.execute(query, [doc]))

        for lo in range(0, len(records), self.copy_rows):
            self._isolating(what, lo, min(lo + self.copy_rows, len(records)), write,
                            lambda i: records[i].to_dict(), dead_letters=statement is not INSERT_DEAD_LETTERS)
        return len(records)

    # -- a row the database refuses is a dead letter, never an outage ------------------

    def _isolating(self, what: str, lo: int, hi: int, write: Callable[[int, int], None],
                   row: Callable[[int], dict[str, Any]], *, dead_letters: bool = True) -> None:
        """`write(lo, hi)`; on a data error, halve the range until the refused rows stand alone.

        The other rows are stored; each refused one becomes an `unstorable` dead letter (or,
        when dead letters themselves are refused, a log line and a metric). k bad rows in n
        cost about k log2(n) extra statements.
        """
        try:
            write(lo, hi)
            return
        except PostgresSinkError as e:
            cause = e.__cause__
            if not isinstance(cause, DATA_ERRORS):
                raise
        if hi - lo > 1:
            mid = (lo + hi) // 2
            self._isolating(what, lo, mid, write, row, dead_letters=dead_letters)
            self._isolating(what, mid, hi, write, row, dead_letters=dead_letters)
            return
        why = f"{what}: the database refused the row: {type(cause).__name__}: {str(cause)[:300]}"
        log.error("row not stored (%s)", why)
        metrics.SINK_ERRORS.labels(f"postgres:{what}:row").inc()
        if dead_letters:
            try:
                raw = orjson.dumps(row(lo), default=str).decode()
            except (TypeError, orjson.JSONEncodeError):
                raw = ""
            self.upsert_dead_letters([Invalid("unstorable", why, raw, f"postgres:{self.schema}.{what}")])


def epoch_ms(t: datetime) -> int:
    return round(t.timestamp() * 1000)


def _alarm_order(a: Alarm) -> tuple[Any, int, int]:
    return (a.updated_at, ALARM_STATUS_RANK.get(a.status, 0), a.anomaly_count)


def _chunks(items: Sequence[Any], limit: int, size: Callable[[Any], int]) -> list[list[Any]]:
    """Consecutive groups of items of at most `limit` rows (an oversized item stands alone)."""
    out: list[list[Any]] = []
    group: list[Any] = []
    rows = 0
    for item in items:
        n = size(item)
        if group and rows + n > limit:
            out.append(group)
            group, rows = [], 0
        group.append(item)
        rows += n
    if group:
        out.append(group)
    return out


def _months(ts: np.ndarray) -> np.ndarray:
    """The distinct months (since 1970-01) of epoch-ms timestamps."""
    months = ts.astype("datetime64[ms]").astype("datetime64[M]").astype(np.int64)
    lo, hi = months.min(), months.max()
    return np.array([lo]) if lo == hi else np.unique(months)


def _codes(names: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """1-based codes into a list of distinct names (NUL, which text cannot hold, replaced); None is 0."""
    codes, uniques = factorize(names)
    return codes + 1, [str(u).replace("\x00", "\ufffd") for u in uniques]


def _pg_micros(ts_ms: np.ndarray) -> np.ndarray:
    return (ts_ms.astype(np.int64) - _PG_EPOCH_MS) * 1000


def _copy_payload(columns: list[tuple[np.ndarray, str]]) -> bytes:
    """A complete binary COPY stream of fixed-width, non-null columns, built without a row loop.

    Each row is an int16 field count, then per field an int32 byte length and
    the big-endian value (PostgreSQL's `COPY ... (FORMAT BINARY)`).
    """
    fields: list[tuple[str, str]] = [("n", ">i2")]
    for i, (_, dtype) in enumerate(columns):
        fields += [(f"l{i}", ">i4"), (f"v{i}", dtype)]
    rows = np.empty(len(columns[0][0]), dtype=np.dtype(fields))
    rows["n"] = len(columns)
    for i, (values, dtype) in enumerate(columns):
        rows[f"l{i}"] = np.dtype(dtype).itemsize
        rows[f"v{i}"] = values
    return _COPY_HEADER + rows.tobytes() + _COPY_TRAILER


def _feature_columns(batches: list[FeatureBatch]) -> tuple[list[tuple[np.ndarray, str]], list[str], list[str]]:
    """Flatten (window, sensor) cells with a count into COPY columns of sm_stage_features."""
    assets: dict[str, int] = {}
    sensors: dict[str, int] = {}
    parts: list[tuple[np.ndarray, ...]] = []
    for b in batches:
        acode = assets.setdefault(b.asset_id, len(assets) + 1)
        scode = np.array([sensors.setdefault(name, len(sensors) + 1) for name in b.sensors], dtype=np.int32)
        w, si = np.nonzero(b.values[:, :, 7] > 0)
        parts.append((np.full(len(w), acode, np.int32), scode[si], b.window_start[w],
                      b.window_end[w], b.values[w, si, :7], b.values[w, si, 7]))
    a, s, ws, we, floats, count = (np.concatenate([p[i] for p in parts]) for i in range(6))
    floats = floats.reshape(-1, 7)
    cols = [(np.arange(len(a)), ">i4"), (a, ">i4"), (s, ">i4"), (_pg_micros(ws), ">i8"), (_pg_micros(we), ">i8")]
    cols += [(floats[:, k], ">f8") for k in range(7)] + [(count, ">i4")]
    clean = [n.replace("\x00", "\ufffd") for n in (*assets, *sensors)]
    return cols, clean[: len(assets)], clean[len(assets):]


# -- the CLI's `db` command ---------------------------------------------------------

def describe(dsn: str, schema: str) -> dict[str, Any]:
    """What is stored: server, schema version, row counts, size, readings' time range, open alarms."""
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            return _describe(conn, schema)
    except psycopg.Error as e:
        raise PostgresSinkError(f"cannot describe schema {schema!r} at {redact(dsn)}: {e}") from e


def _describe(conn: psycopg.Connection, schema: str) -> dict[str, Any]:
    def one(query: str | sql.Composed, params: Sequence[Any] = ()) -> tuple[Any, ...]:
        return cast(tuple[Any, ...], conn.execute(query, params).fetchone())  # these queries return one row

    present = {t for (t,) in conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = %s", [schema])}
    out: dict[str, Any] = {
        "server_version": one("SHOW server_version")[0],
        "database": conn.info.dbname,
        "schema": schema,
        "schema_version": None,
        "tables": {},
        "total_bytes": int(one(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind IN ('r', 'm')",
            [schema])[0]),
        "readings_from": None,
        "readings_to": None,
        "alarms_open": 0,
        "timescaledb": timescaledb_version(conn),  # reported only: plain PostgreSQL is the tested path
    }
    def q(text: str) -> sql.Composed:
        return render(text, schema)

    if "schema_migrations" in present:
        out["schema_version"] = one(q("SELECT max(version) FROM {s}.schema_migrations"))[0]
    for table in (*TABLES, *LOOP_TABLES):
        if table in present:
            count = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))
            out["tables"][table] = one(count)[0]
    if "readings" in out["tables"]:
        out["readings_from"], out["readings_to"] = one(q("SELECT min(ts), max(ts) FROM {s}.readings"))
    if "alarms" in out["tables"]:
        out["alarms_open"] = one(q("SELECT count(*) FROM {s}.alarms WHERE status <> 'cleared'"))[0]
    if "work_orders" in out["tables"]:
        out["work_orders_open"] = one(
            q("SELECT count(*) FROM {s}.work_orders WHERE status NOT IN ('done', 'cancelled')"))[0]
    if "reviews" in out["tables"]:
        out["reviews_pending"] = one(
            q("SELECT count(*) FROM {s}.reviews WHERE status IN ('pending', 'deferred')"))[0]
    return out


# -- Bytewax ------------------------------------------------------------------------

class PostgresSink(DynamicSink[Any]):
    """Writes one stream (`readings`, `features`, `anomalies`, `alarms`, `dead_letters`) to PostgreSQL.

    Items: `Readings` batches, `FeatureBatch`, `Anomaly`, `Alarm` or `Invalid`
    by stream. Each worker has its own connection; the schema is migrated once
    per process when the first worker builds.
    """

    def __init__(self, settings: Settings | PostgresSettings, stream: str):
        if stream not in STREAMS:
            raise ValueError(f"stream must be one of {', '.join(STREAMS)}, got {stream!r}")
        self._pg = postgres_section(settings)
        self._stream = stream

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _PostgresPartition:
        pg = self._pg
        dsn = resolve_dsn(pg, ride_out=True)
        migrate_once(dsn, pg.schema_name)
        writer = PostgresWriter(dsn, pg.schema_name, pg.copy_rows, outage_s=pg.outage_s).open()
        return _PostgresPartition(writer, self._stream)


class _PostgresPartition(StatelessSinkPartition[Any]):
    def __init__(self, writer: PostgresWriter, stream: str):
        self._writer = writer
        self._stream = stream
        writers: dict[str, Callable[[list[Any]], int]] = {
            "readings": lambda items: writer.write_readings(Readings.concat(items)),
            "features": writer.write_features,
            "anomalies": writer.upsert_anomalies,
            "alarms": writer.upsert_alarms,
            "dead_letters": writer.upsert_dead_letters,
        }
        self._write = writers[stream]

    def write_batch(self, items: list[Any]) -> None:
        if items:
            self._write(items)
            if self._stream == "anomalies":  # committed: how long after its window closed
                latency.stored((a.asset_id, epoch_ms(a.window_end)) for a in items)

    def close(self) -> None:
        self._writer.close()
