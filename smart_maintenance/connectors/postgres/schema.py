"""The PostgreSQL schema of smart-maintenance, and its migrations.

Migrations are an ordered list applied once each, recorded in
`schema_migrations`. They run in one transaction under an advisory lock, so
many workers and processes can start together: the first migrates, the others
wait and find nothing left to do. A later feature adds a migration at the end
of `MIGRATIONS` (predictions, work_orders, assignments, notifications,
reviews, maintenance_log), never edits one that has shipped.

The SQL stays within what TimescaleDB also accepts (plain tables, a
timestamptz column in every key of a time series), so a deployment can move
the time-series tables to hypertables. `readings` is range-partitioned by
month with native partitioning, because TimescaleDB is not always available;
the writer creates a month's partition before the first row of that month.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import psycopg
from psycopg import sql

from smart_maintenance.connectors.postgres.server import PostgresSinkError, redact
from smart_maintenance.operators.records import FEATURES

TABLES: tuple[str, ...] = ("readings", "features", "anomalies", "alarms", "dead_letters")
ROLLUPS: dict[str, str] = {"readings_hourly": "hour", "readings_daily": "day"}
"""Roll-up tables of readings and the bucket each row covers (UTC: `date_bin` from 2000-01-01T00:00Z, three
times faster than `date_trunc(..., 'UTC')` and independent of the session's time zone)."""
ROLLUP_FILLFACTOR = 50
"""Percent of a roll-up page filled by inserts: the rest is room for HOT updates of its rows."""
LOOP_TABLES: tuple[str, ...] = (
    "predictions", "work_orders", "assignments", "notifications", "notification_attempts", "reviews",
    "review_decisions", "maintenance_log", "threshold_changes",
)


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of the schema; `{s}` in a statement is the schema identifier."""

    version: int
    name: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "readings", (
        """CREATE TABLE IF NOT EXISTS {s}.readings (
            asset_id text NOT NULL,
            sensor text NOT NULL,
            ts timestamptz NOT NULL,
            value double precision,
            PRIMARY KEY (asset_id, sensor, ts)
        ) PARTITION BY RANGE (ts)""",
        # catches what arrives before its month's partition exists; the writer
        # moves such rows when it creates the partition
        "CREATE TABLE IF NOT EXISTS {s}.readings_default PARTITION OF {s}.readings DEFAULT",
        "CREATE INDEX IF NOT EXISTS readings_ts_brin ON {s}.readings USING brin (ts)",
    )),
    Migration(2, "features", (
        """CREATE TABLE IF NOT EXISTS {s}.features (
            asset_id text NOT NULL,
            window_start timestamptz NOT NULL,
            window_end timestamptz NOT NULL,
            sensor text NOT NULL,
            mean double precision,
            std double precision,
            min double precision,
            max double precision,
            slope double precision,
            rms double precision,
            last double precision,
            count integer NOT NULL,
            PRIMARY KEY (asset_id, window_start, sensor)
        )""",
        "CREATE INDEX IF NOT EXISTS features_window_start_brin ON {s}.features USING brin (window_start)",
    )),
    Migration(3, "anomalies", (
        """CREATE TABLE IF NOT EXISTS {s}.anomalies (
            anomaly_id text PRIMARY KEY,
            asset_id text NOT NULL,
            window_start timestamptz NOT NULL,
            window_end timestamptz NOT NULL,
            score double precision NOT NULL,
            status text NOT NULL,
            confidence double precision NOT NULL,
            severity smallint NOT NULL,
            reasons jsonb NOT NULL DEFAULT '[]',
            contributions jsonb NOT NULL DEFAULT '[]',
            detector_scores jsonb NOT NULL DEFAULT '{{}}',
            sensors jsonb NOT NULL DEFAULT '[]',
            updated_at timestamptz NOT NULL DEFAULT now()
        )""",
        "CREATE INDEX IF NOT EXISTS anomalies_asset_window ON {s}.anomalies (asset_id, window_start)",
        "CREATE INDEX IF NOT EXISTS anomalies_status ON {s}.anomalies (status)",
    )),
    Migration(4, "alarms", (
        """CREATE TABLE IF NOT EXISTS {s}.alarms (
            alarm_id text PRIMARY KEY,
            asset_id text NOT NULL,
            kind text NOT NULL,
            status text NOT NULL,
            severity smallint NOT NULL,
            opened_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL,
            cleared_at timestamptz,
            peak_score double precision NOT NULL,
            anomaly_count integer NOT NULL,
            last_anomaly_id text NOT NULL,
            sensors jsonb NOT NULL DEFAULT '[]',
            reason text NOT NULL DEFAULT ''
        )""",
        "CREATE INDEX IF NOT EXISTS alarms_asset_opened ON {s}.alarms (asset_id, opened_at)",
        "CREATE INDEX IF NOT EXISTS alarms_status ON {s}.alarms (status)",
    )),
    Migration(5, "dead_letters", (
        """CREATE TABLE IF NOT EXISTS {s}.dead_letters (
            dead_letter_id text PRIMARY KEY,
            reason text NOT NULL,
            detail text NOT NULL,
            raw text NOT NULL,
            origin text NOT NULL,
            first_seen timestamptz NOT NULL DEFAULT now()
        )""",
        "CREATE INDEX IF NOT EXISTS dead_letters_reason ON {s}.dead_letters (reason)",
    )),
    Migration(6, "anomaly feature explanations", (
        "ALTER TABLE {s}.anomalies ADD COLUMN IF NOT EXISTS features jsonb NOT NULL DEFAULT '[]'",
    )),
    Migration(7, "the maintenance loop", (
        # time-to-failure estimates; times are event time, stored_at is the wall clock
        """CREATE TABLE IF NOT EXISTS {s}.predictions (
            prediction_id text PRIMARY KEY,
            asset_id text NOT NULL,
            alarm_id text NOT NULL,
            sensor text NOT NULL,
            method text NOT NULL,
            made_at timestamptz NOT NULL,
            failure_at timestamptz,
            lo timestamptz,
            hi timestamptz,
            ttf_hours double precision,
            lo_hours double precision,
            hi_hours double precision,
            horizon_end timestamptz NOT NULL,
            inputs jsonb NOT NULL DEFAULT '{{}}',
            stored_at timestamptz NOT NULL DEFAULT now()
        )""",
        "CREATE INDEX IF NOT EXISTS predictions_asset_made ON {s}.predictions (asset_id, made_at DESC)",
        "CREATE INDEX IF NOT EXISTS predictions_alarm_made ON {s}.predictions (alarm_id, made_at DESC)",
        # one row per work order, advanced by `revision` (never moves backwards)
        """CREATE TABLE IF NOT EXISTS {s}.work_orders (
            work_order_id text PRIMARY KEY,
            asset_id text NOT NULL,
            alarm_id text NOT NULL,
            kind text NOT NULL,
            status text NOT NULL,
            priority smallint NOT NULL,
            required_skills jsonb NOT NULL DEFAULT '[]',
            duration_min integer NOT NULL,
            created_at timestamptz NOT NULL,
            due_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL,
            closed_at timestamptz,
            prediction_id text,
            failure_at timestamptz,
            technician_id text,
            scheduled_start timestamptz,
            scheduled_end timestamptz,
            maintenance_id text,
            sensors jsonb NOT NULL DEFAULT '[]',
            reason text NOT NULL DEFAULT '',
            similar_incidents jsonb NOT NULL DEFAULT '[]',
            revision integer NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX IF NOT EXISTS work_orders_asset_created ON {s}.work_orders (asset_id, created_at)",
        "CREATE INDEX IF NOT EXISTS work_orders_status ON {s}.work_orders (status)",
        # the current plan: one row per planned work order, replaced by each plan
        """CREATE TABLE IF NOT EXISTS {s}.assignments (
            work_order_id text PRIMARY KEY,
            technician_id text NOT NULL,
            start_at timestamptz NOT NULL,
            end_at timestamptz NOT NULL,
            plan_id text NOT NULL,
            planned_at timestamptz NOT NULL,
            method text NOT NULL,
            solver_status text NOT NULL,
            objective bigint,
            bound bigint,
            gap double precision,
            solve_s double precision
        )""",
        "CREATE INDEX IF NOT EXISTS assignments_technician_start ON {s}.assignments (technician_id, start_at)",
        # one row per notification (deterministic id) and one per delivery attempt
        """CREATE TABLE IF NOT EXISTS {s}.notifications (
            notification_id text PRIMARY KEY,
            channel text NOT NULL,
            kind text NOT NULL,
            asset_id text NOT NULL,
            subject_id text NOT NULL,
            severity smallint NOT NULL,
            created_at timestamptz NOT NULL,
            status text NOT NULL,
            attempts integer NOT NULL DEFAULT 0,
            last_error text NOT NULL DEFAULT '',
            payload jsonb NOT NULL DEFAULT '{{}}',
            updated_at timestamptz NOT NULL DEFAULT now()
        )""",
        "CREATE INDEX IF NOT EXISTS notifications_asset_created ON {s}.notifications (asset_id, created_at)",
        """CREATE TABLE IF NOT EXISTS {s}.notification_attempts (
            notification_id text NOT NULL,
            attempt integer NOT NULL,
            attempted_at timestamptz NOT NULL DEFAULT now(),
            ok boolean NOT NULL,
            detail text NOT NULL DEFAULT '',
            PRIMARY KEY (notification_id, attempt)
        )""",
        # the human review queue: one row per needs_review anomaly
        """CREATE TABLE IF NOT EXISTS {s}.reviews (
            review_id text PRIMARY KEY,
            asset_id text NOT NULL,
            window_start timestamptz NOT NULL,
            window_end timestamptz NOT NULL,
            score double precision NOT NULL,
            severity smallint NOT NULL,
            anomaly jsonb NOT NULL,
            status text NOT NULL DEFAULT 'pending',
            queued_at timestamptz NOT NULL DEFAULT now(),
            decided_at timestamptz,
            decided_by text NOT NULL DEFAULT '',
            note text NOT NULL DEFAULT ''
        )""",
        "CREATE INDEX IF NOT EXISTS reviews_status_window ON {s}.reviews (status, window_end)",
        # decisions and completed maintenance: `seq` orders them for the flow's control input
        """CREATE TABLE IF NOT EXISTS {s}.review_decisions (
            seq bigserial UNIQUE,
            control_id text PRIMARY KEY,
            review_id text NOT NULL,
            asset_id text NOT NULL,
            decision text NOT NULL,
            window_end timestamptz NOT NULL,
            decided_by text NOT NULL DEFAULT '',
            note text NOT NULL DEFAULT '',
            decided_at timestamptz NOT NULL DEFAULT now(),
            anomaly jsonb NOT NULL DEFAULT '{{}}'
        )""",
        """CREATE TABLE IF NOT EXISTS {s}.maintenance_log (
            seq bigserial UNIQUE,
            maintenance_id text PRIMARY KEY,
            asset_id text NOT NULL,
            completed_at timestamptz NOT NULL,
            outcome text NOT NULL,
            work_order_id text NOT NULL DEFAULT '',
            technician_id text NOT NULL DEFAULT '',
            action text NOT NULL DEFAULT '',
            notes text NOT NULL DEFAULT '',
            parts jsonb NOT NULL DEFAULT '[]',
            source text NOT NULL DEFAULT '',
            logged_at timestamptz NOT NULL DEFAULT now()
        )""",
        "CREATE INDEX IF NOT EXISTS maintenance_log_asset_completed ON {s}.maintenance_log (asset_id, completed_at)",
        # the audit trail of feedback-learned thresholds
        """CREATE TABLE IF NOT EXISTS {s}.threshold_changes (
            change_id text PRIMARY KEY,
            asset_id text NOT NULL,
            at timestamptz NOT NULL,
            old_threshold double precision NOT NULL,
            new_threshold double precision NOT NULL,
            cause text NOT NULL,
            control_id text NOT NULL,
            note text NOT NULL DEFAULT ''
        )""",
        "CREATE INDEX IF NOT EXISTS threshold_changes_asset_at ON {s}.threshold_changes (asset_id, at)",
    )),
    Migration(8, "review cases", (
        # a review row is a case now: the uncertain windows of one asset and episode; rows queued before
        # become cases of one window (their id stays the anomaly id, so their decisions still apply);
        # first_window_end stays nullable (readers take window_end) so an older writer's row still fits
        "ALTER TABLE {s}.reviews ADD COLUMN IF NOT EXISTS first_window_end timestamptz",
        "ALTER TABLE {s}.reviews ADD COLUMN IF NOT EXISTS window_count integer NOT NULL DEFAULT 1",
        "ALTER TABLE {s}.reviews ADD COLUMN IF NOT EXISTS sensors jsonb NOT NULL DEFAULT '[]'",
        "ALTER TABLE {s}.reviews ADD COLUMN IF NOT EXISTS trend jsonb NOT NULL DEFAULT '[]'",
        "ALTER TABLE {s}.reviews ADD COLUMN IF NOT EXISTS last_anomaly_id text NOT NULL DEFAULT ''",
        "ALTER TABLE {s}.reviews ADD COLUMN IF NOT EXISTS updated_at timestamptz NOT NULL DEFAULT now()",
        """UPDATE {s}.reviews SET first_window_end = window_end, last_anomaly_id = review_id,
            trend = jsonb_build_array(jsonb_build_array(window_end, round(score::numeric, 4))),
            sensors = CASE WHEN jsonb_array_length(coalesce(anomaly->'sensors', '[]')) > 0 THEN anomaly->'sensors'
                      ELSE coalesce((SELECT jsonb_agg(c->'sensor') FROM (
                          SELECT c FROM jsonb_array_elements(coalesce(anomaly->'contributions', '[]')) c LIMIT 3) x),
                          '[]') END
            WHERE first_window_end IS NULL""",
        "CREATE INDEX IF NOT EXISTS reviews_asset_window ON {s}.reviews (asset_id, window_end)",
    )),
    Migration(9, "the HTTP API", (
        # API keys: only the sha256 of the token is kept; `key_id` is the token's public prefix
        """CREATE TABLE IF NOT EXISTS {s}.api_keys (
            key_id text PRIMARY KEY,
            name text NOT NULL UNIQUE,
            token_sha256 text NOT NULL,
            scopes jsonb NOT NULL DEFAULT '[]',
            sites jsonb NOT NULL DEFAULT '[]',
            created_at timestamptz NOT NULL DEFAULT now(),
            revoked_at timestamptz,
            last_used_at timestamptz
        )""",
        # who did what through the API (decisions, acknowledgements, completions, ingest, keys)
        """CREATE TABLE IF NOT EXISTS {s}.api_audit (
            seq bigserial PRIMARY KEY,
            at timestamptz NOT NULL DEFAULT now(),
            key_name text NOT NULL,
            action text NOT NULL,
            subject_id text NOT NULL DEFAULT '',
            detail jsonb NOT NULL DEFAULT '{{}}'
        )""",
        """CREATE TABLE IF NOT EXISTS {s}.alarm_notes (
            seq bigserial PRIMARY KEY,
            alarm_id text NOT NULL,
            kind text NOT NULL,
            note text NOT NULL DEFAULT '',
            by_name text NOT NULL DEFAULT '',
            at timestamptz NOT NULL DEFAULT now()
        )""",
        "CREATE INDEX IF NOT EXISTS alarm_notes_alarm ON {s}.alarm_notes (alarm_id, seq)",
        # readings POSTed to the API, durable before the 202; the flow's ingest source reads them by seq
        """CREATE TABLE IF NOT EXISTS {s}.ingest_batches (
            batch_id text PRIMARY KEY,
            key_name text NOT NULL,
            received_at timestamptz NOT NULL DEFAULT now(),
            accepted integer NOT NULL,
            rejected integer NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS {s}.ingest_readings (
            seq bigserial PRIMARY KEY,
            batch_id text NOT NULL,
            asset_id text NOT NULL,
            sensor text NOT NULL,
            ts timestamptz NOT NULL,
            value double precision NOT NULL
        )""",
        # a change feed of alarms, review cases and work orders for the live stream (server-sent events)
        """CREATE TABLE IF NOT EXISTS {s}.change_log (
            seq bigserial PRIMARY KEY,
            at timestamptz NOT NULL DEFAULT now(),
            kind text NOT NULL,
            subject_id text NOT NULL,
            asset_id text NOT NULL,
            status text NOT NULL DEFAULT ''
        )""",
        """CREATE OR REPLACE FUNCTION {s}.sm_log_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO {s}.change_log (kind, subject_id, asset_id, status)
            VALUES (TG_ARGV[0], to_jsonb(NEW)->>TG_ARGV[1], NEW.asset_id, coalesce(to_jsonb(NEW)->>'status', ''));
            RETURN NULL;
        END $$""",
        "DROP TRIGGER IF EXISTS alarms_change ON {s}.alarms",
        "CREATE TRIGGER alarms_change AFTER INSERT OR UPDATE ON {s}.alarms FOR EACH ROW "
        "EXECUTE FUNCTION {s}.sm_log_change('alarm', 'alarm_id')",
        "DROP TRIGGER IF EXISTS reviews_change ON {s}.reviews",
        "CREATE TRIGGER reviews_change AFTER INSERT OR UPDATE ON {s}.reviews FOR EACH ROW "
        "EXECUTE FUNCTION {s}.sm_log_change('case', 'review_id')",
        "DROP TRIGGER IF EXISTS work_orders_change ON {s}.work_orders",
        "CREATE TRIGGER work_orders_change AFTER INSERT OR UPDATE ON {s}.work_orders FOR EACH ROW "
        "EXECUTE FUNCTION {s}.sm_log_change('work_order', 'work_order_id')",
    )),
    Migration(10, "admitted assets", (
        # assets a person admitted out of quarantine: they may create work orders and notify (cli/assets.py)
        """CREATE TABLE IF NOT EXISTS {s}.admitted_assets (
            asset_id text PRIMARY KEY,
            admitted_at timestamptz NOT NULL DEFAULT now(),
            admitted_by text NOT NULL DEFAULT '',
            note text NOT NULL DEFAULT ''
        )""",
    )),
    Migration(11, "reading quality and unit, hourly and daily roll-ups", (
        # what the source said of a reading: quality 192 good / 64 uncertain (bad is never stored), the
        # value's unit (the registry's after conversion); NULL when the source did not say
        "ALTER TABLE {s}.readings ADD COLUMN IF NOT EXISTS quality smallint",
        "ALTER TABLE {s}.readings ADD COLUMN IF NOT EXISTS unit text",
        *(f"""CREATE TABLE IF NOT EXISTS {{s}}.{table} (
            asset_id text NOT NULL,
            sensor text NOT NULL,
            bucket timestamptz NOT NULL,
            min double precision NOT NULL,
            max double precision NOT NULL,
            sum double precision NOT NULL,
            count bigint NOT NULL,
            PRIMARY KEY (asset_id, sensor, bucket)
        )""" for table in ROLLUPS),
        # the readings stored before this migration, rolled up once
        *(f"INSERT INTO {{s}}.{table} (asset_id, sensor, bucket, min, max, sum, count) "  # noqa: S608 - constants
          f"SELECT asset_id, sensor, date_bin('1 {unit}', ts, '2000-01-01T00:00:00Z'), min(value), max(value), "
          f"sum(value), count(value) FROM {{s}}.readings WHERE value IS NOT NULL GROUP BY 1, 2, 3 "
          "ON CONFLICT DO NOTHING" for table, unit in ROLLUPS.items()),
    )),
    Migration(12, "work order updates", (
        # a planner's changes to a work order over the API (technician, times, priority, status, comments),
        # each at its event time `effective_at`; reads fold them over the flow's row (api_reads.py)
        """CREATE TABLE IF NOT EXISTS {s}.work_order_updates (
            seq bigserial PRIMARY KEY,
            work_order_id text NOT NULL,
            asset_id text NOT NULL,
            effective_at timestamptz NOT NULL,
            fields jsonb NOT NULL DEFAULT '{{}}',
            comment text NOT NULL DEFAULT '',
            by_name text NOT NULL,
            at timestamptz NOT NULL DEFAULT now()
        )""",
        "CREATE INDEX IF NOT EXISTS work_order_updates_order ON {s}.work_order_updates (work_order_id, effective_at)",
    )),
    Migration(13, "quality and unit of readings taken in over the API", (
        # what the sender said of each reading, carried to the flow as a source's columns are (NULL: not said)
        "ALTER TABLE {s}.ingest_readings ADD COLUMN IF NOT EXISTS quality smallint",
        "ALTER TABLE {s}.ingest_readings ADD COLUMN IF NOT EXISTS unit text",
    )),
    Migration(14, "room on the roll-ups' pages for their updates", (
        # every chunk of readings updates a roll-up row per series and bucket it holds: with room left on
        # the row's page the update is HOT (no new index entry, the old version pruned in place), about 10%
        # less server CPU per reading at live-sized chunks (docs/storage.md). Takes effect on pages written
        # from now on; ordinary tables only (TimescaleDB's continuous aggregates are views).
        *(f"""DO $$ BEGIN
            IF (SELECT relkind FROM pg_class WHERE oid = to_regclass('{{s}}.{table}')) = 'r' THEN
                ALTER TABLE {{s}}.{table} SET (fillfactor = {ROLLUP_FILLFACTOR});
            END IF;
        END $$""" for table in ROLLUPS),  # noqa: S608 - module constants only
    )),
)

LATEST_VERSION = MIGRATIONS[-1].version


def lock_key(*parts: str) -> int:
    """A signed 64-bit advisory-lock key derived from `parts` (same in every process)."""
    digest = hashlib.blake2b("\x1f".join(("smart_maintenance", *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def render(statement: str, schema: str) -> sql.Composed:
    return sql.SQL(statement).format(s=sql.Identifier(schema))


def migrate(conn: psycopg.Connection, schema: str) -> list[int]:
    """Bring `schema` to `LATEST_VERSION`; returns the versions applied by this call.

    Idempotent and safe to run from many processes at once.
    """
    applied: list[int] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [lock_key("schema", schema)])
        exists = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [schema]).fetchone()
        if not exists:  # checked first: CREATE SCHEMA needs a privilege even when it exists
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(render(
            """CREATE TABLE IF NOT EXISTS {s}.schema_migrations (
                version integer PRIMARY KEY,
                name text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )""", schema))
        done = {v for (v,) in conn.execute(render("SELECT version FROM {s}.schema_migrations", schema))}
        if done and max(done) > LATEST_VERSION:
            raise PostgresSinkError(
                f"schema {schema!r} is at version {max(done)}, newer than this code ({LATEST_VERSION}): upgrade"
            )
        for m in MIGRATIONS:
            if m.version in done:
                continue
            for statement in m.statements:
                conn.execute(render(statement, schema))
            conn.execute(
                render("INSERT INTO {s}.schema_migrations (version, name) VALUES (%s, %s)", schema),
                [m.version, m.name],
            )
            applied.append(m.version)
    return applied


def ensure_schema(dsn: str, schema: str) -> list[int]:
    """Connect, migrate, disconnect: the versions applied now (empty when up to date)."""
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            return migrate(conn, schema)
    except psycopg.Error as e:
        raise PostgresSinkError(f"cannot migrate schema {schema!r} at {redact(dsn)}: {e}") from e


# -- monthly partitions of readings ------------------------------------------------

MIN_MONTH = (1 - 1970) * 12  # January of year 1
MAX_MONTH = (9999 - 1970) * 12 + 10  # November 9999: its end bound still fits a datetime


def month_start(month: int) -> datetime:
    """Start of `month` (months since 1970-01) as an aware UTC datetime."""
    year, m0 = divmod(month, 12)
    return datetime(1970 + year, m0 + 1, 1, tzinfo=timezone.utc)


_PARTITION = re.compile(r"^readings_p(\d{4})_(\d{2})$")


def prune_readings(conn: psycopg.Connection, schema: str, retention_days: float, now: datetime) -> list[str]:
    """Drop the readings partitions whose month ended more than `retention_days` before `now`; their names.

    Only whole months go (a partition is dropped, never deleted from), so the
    cost does not grow with the rows; the default partition is never dropped.
    """
    cutoff = now - timedelta(days=retention_days)
    names = [r[0] for r in conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace "
        "WHERE n.nspname = %s AND p.relname = 'readings' ORDER BY 1", [schema])]
    dropped = []
    for name in names:
        m = _PARTITION.match(name)
        if m is None:
            continue
        month = (int(m.group(1)) - 1970) * 12 + int(m.group(2)) - 1
        if month_start(month + 1) <= cutoff:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(schema, name)))
            dropped.append(name)
    return dropped


def prune_rollups(conn: psycopg.Connection, schema: str, hourly_days: float | None, daily_days: float | None,
                  now: datetime) -> dict[str, int]:
    """Delete roll-up rows whose bucket started more than their retention before `now`; rows deleted per table."""
    out: dict[str, int] = {}
    for table, days in (("readings_hourly", hourly_days), ("readings_daily", daily_days)):
        if days is None:
            continue
        cur = conn.execute(sql.SQL("DELETE FROM {} WHERE bucket < %s").format(sql.Identifier(schema, table)),
                           [now - timedelta(days=days)])
        out[table] = cur.rowcount
    return out


def timescaledb_version(conn: psycopg.Connection) -> str | None:
    """The TimescaleDB extension's version when the server has it installed, else None.

    Detected and reported only: the tested path is plain PostgreSQL (readings
    natively partitioned by month), which TimescaleDB also runs unchanged.
    """
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    return None if row is None else str(row[0])


def partition_name(month: int) -> str:
    start = month_start(month)
    return f"readings_p{start.year:04d}_{start.month:02d}"


def ensure_month_partition(conn: psycopg.Connection, schema: str, month: int) -> bool:
    """Create the readings partition of `month` unless it exists; True if usable.

    Months a datetime cannot bound stay in the default partition. If rows of
    the month already sit in the default partition, they move into the new one.
    """
    if not MIN_MONTH <= month <= MAX_MONTH:
        return False
    name, lo, hi = partition_name(month), month_start(month), month_start(month + 1)
    with conn.transaction():
        # concurrent CREATE ... IF NOT EXISTS of one table can still collide in the catalog
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [lock_key("partition", schema)])
        try:
            with conn.transaction():
                conn.execute(sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {p} PARTITION OF {s}.readings FOR VALUES FROM ({lo}) TO ({hi})"
                ).format(p=sql.Identifier(schema, name), s=sql.Identifier(schema),
                         lo=sql.Literal(lo), hi=sql.Literal(hi)))
        except psycopg.errors.CheckViolation:
            _adopt_default_rows(conn, schema, name, lo, hi)
    return True


def _adopt_default_rows(conn: psycopg.Connection, schema: str, name: str, lo: datetime, hi: datetime) -> None:
    """Create the partition beside the table, move the month's default rows into it, attach it."""
    ids = {"p": sql.Identifier(schema, name), "d": sql.Identifier(schema, "readings_default"),
           "r": sql.Identifier(schema, "readings"), "lo": sql.Literal(lo), "hi": sql.Literal(hi)}
    conn.execute(sql.SQL("CREATE TABLE {p} (LIKE {r} INCLUDING ALL)").format(**ids))
    conn.execute(sql.SQL(
        "WITH moved AS (DELETE FROM {d} WHERE ts >= %s AND ts < %s RETURNING *) INSERT INTO {p} SELECT * FROM moved"
    ).format(**ids), [lo, hi])
    conn.execute(sql.SQL("ALTER TABLE {r} ATTACH PARTITION {p} FOR VALUES FROM ({lo}) TO ({hi})").format(**ids))


# -- the statements the writer runs ---------------------------------------------------
# Readings and features arrive by binary COPY into per-connection staging tables;
# the other records as one JSON array of their `to_dict()` per statement.

_FLOATS = FEATURES[:7]  # mean .. last; count is the integer column
ALARM_STATUS_RANK = {"open": 0, "acknowledged": 1, "cleared": 2}  # a later status wins a tie on updated_at

STAGING_TABLES = (
    "CREATE TEMP TABLE IF NOT EXISTS sm_stage_readings"
    " (a int4, s int4, ts timestamptz, value float8, q int2, u int4) ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE IF NOT EXISTS sm_stage_features (ord int4, a int4, s int4, ws timestamptz,"
    " we timestamptz, mean float8, std float8, min float8, max float8, slope float8, rms float8,"
    " last float8, count int4) ON COMMIT DELETE ROWS",
)
_NAMES = (  # names travel once per chunk as arrays; the staged rows carry 1-based codes
    "JOIN unnest(%s::text[]) WITH ORDINALITY AS an(name, i) ON an.i = st.a "
    "JOIN unnest(%s::text[]) WITH ORDINALITY AS sn(name, i) ON sn.i = st.s "
)


def _changed(columns: Sequence[str]) -> str:
    """True when the proposed row differs, so a replay rewrites nothing."""
    return (f"({', '.join(f't.{c}' for c in columns)}) IS DISTINCT FROM "
            f"({', '.join(f'EXCLUDED.{c}' for c in columns)})")


def _do_update(columns: Sequence[str], where: str, *, also: Sequence[str] = ()) -> str:
    sets = [f"{c} = EXCLUDED.{c}" for c in columns] + list(also)
    return f"DO UPDATE SET {', '.join(sets)} WHERE {where}"


def _upsert_sql(table: str, key: str, columns: dict[str, str], on_conflict: str) -> str:
    """INSERT from a JSON array of the records' `to_dict()`, typed by `columns`."""
    cols = ", ".join(columns)
    record = ", ".join(f"{c} {t}" for c, t in columns.items())
    return (f"INSERT INTO {{s}}.{table} AS t ({cols}) SELECT {cols} "  # noqa: S608 - module constants only
            f"FROM jsonb_to_recordset(%s::jsonb) AS x({record}) ON CONFLICT ({key}) {on_conflict}")


_JSON_NUL = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")  # an escaped NUL, not a literal backslash before u0000


def json_doc(records: Iterable[dict[str, Any]]) -> str:
    r"""The JSON array an `_upsert_sql` statement takes, with NUL (which text columns cannot hold) as U+FFFD.

    The regex runs only when the text holds `\u0000` at all: it tries every byte (about 40 ns each, 4.9 ms
    for one burst of 200 anomalies, on the thread that shares the GIL with the flow), the search for the
    escape does not (a few µs).

    >>> json_doc([{"a": "x\x00y", "b": 1.5}])
    '[{"a":"x\\ufffdy","b":1.5}]'
    >>> json_doc([{"a": "x\\u0000"}]) == orjson.dumps([{"a": "x\\u0000"}]).decode()  # text, not a NUL: kept
    True
    """
    doc = orjson.dumps(list(records))
    if b"\\u0000" in doc:
        doc = _JSON_NUL.sub(rb"\1\\ufffd", doc)
    return doc.decode()


def _rollup_upsert(table: str, unit: str, source: str) -> str:
    """Merge the readings of `source` into a roll-up: min of minima, max of maxima, sums and counts added."""
    return (f"INSERT INTO {{s}}.{table} AS t (asset_id, sensor, bucket, min, max, sum, count) "  # noqa: S608
            f"SELECT asset_id, sensor, date_bin('1 {unit}', ts, '2000-01-01T00:00:00Z'), min(value), max(value), "
            f"sum(value), count(value) FROM {source} WHERE value IS NOT NULL GROUP BY 1, 2, 3 ORDER BY 1, 2, 3 "
            "ON CONFLICT (asset_id, sensor, bucket) DO UPDATE SET min = least(t.min, EXCLUDED.min), "
            "max = greatest(t.max, EXCLUDED.max), sum = t.sum + EXCLUDED.sum, count = t.count + EXCLUDED.count")


# Readings and their roll-ups in one statement: the roll-ups merge only the rows this statement inserted
# (RETURNING of ON CONFLICT DO NOTHING), so a replayed batch, whose rows are already stored, adds nothing
# to them: they stay exactly the aggregates of the stored raw readings, with no re-scan of the hour.
INSERT_READINGS = (
    "WITH ins AS (INSERT INTO {s}.readings (asset_id, sensor, ts, value, quality, unit) "  # noqa: S608
    "SELECT an.name, sn.name, st.ts, st.value, NULLIF(st.q, -1), un.name FROM sm_stage_readings st " + _NAMES
    + "LEFT JOIN unnest(%s::text[]) WITH ORDINALITY AS un(name, i) ON un.i = st.u "
    # in key order the primary-key index is filled page by page: about 20% faster
    "ORDER BY 1, 2, 3 ON CONFLICT DO NOTHING RETURNING asset_id, sensor, ts, value), "
    "hourly AS (" + _rollup_upsert("readings_hourly", "hour", "ins") + ") "
    + _rollup_upsert("readings_daily", "day", "ins")
)
# The same for a chunk whose keys are all new, as nearly every chunk's are (replays after a recovery are the
# exception): a plain INSERT, with no speculative insertion per row (a lock and an extra WAL record each), costs
# the server about a third less. A key already stored, or twice in the chunk, makes it fail with a unique
# violation: the writer then rolls it back and runs INSERT_READINGS, which stores exactly the same rows.
INSERT_NEW_READINGS = INSERT_READINGS.replace(" ON CONFLICT DO NOTHING", "")
INSERT_READINGS_RAW_ONLY = (  # TimescaleDB: continuous aggregates roll up, the writer stores raw readings only
    "INSERT INTO {s}.readings (asset_id, sensor, ts, value, quality, unit) "  # noqa: S608 - module constants only
    "SELECT an.name, sn.name, st.ts, st.value, NULLIF(st.q, -1), un.name FROM sm_stage_readings st " + _NAMES
    + "LEFT JOIN unnest(%s::text[]) WITH ORDINALITY AS un(name, i) ON un.i = st.u "
    "ORDER BY 1, 2, 3 ON CONFLICT DO NOTHING"
)
_FEATURE_DATA = ("window_end", *_FLOATS, "count")
INSERT_FEATURES = (
    f"INSERT INTO {{s}}.features AS t (asset_id, window_start, window_end, sensor, {', '.join(_FLOATS)}, count) "
    "SELECT DISTINCT ON (an.name, st.ws, sn.name) an.name, st.ws, st.we, sn.name, "
    + ", ".join(f"NULLIF(st.{c}, 'NaN')" for c in _FLOATS) + ", st.count "
    "FROM sm_stage_features st " + _NAMES + "ORDER BY an.name, st.ws, sn.name, st.ord DESC "
    "ON CONFLICT (asset_id, window_start, sensor) " + _do_update(_FEATURE_DATA, _changed(_FEATURE_DATA))
)
_ANOMALY_COLS = {"anomaly_id": "text", "asset_id": "text", "window_start": "timestamptz",
                 "window_end": "timestamptz", "score": "float8", "status": "text", "confidence": "float8",
                 "severity": "int2", "reasons": "jsonb", "contributions": "jsonb",
                 "detector_scores": "jsonb", "sensors": "jsonb", "features": "jsonb"}
_ALARM_COLS = {"alarm_id": "text", "asset_id": "text", "kind": "text", "status": "text", "severity": "int2",
               "opened_at": "timestamptz", "updated_at": "timestamptz", "cleared_at": "timestamptz",
               "peak_score": "float8", "anomaly_count": "int4", "last_anomaly_id": "text",
               "sensors": "jsonb", "reason": "text"}
_DEAD_LETTER_COLS = {"dead_letter_id": "text", "reason": "text", "detail": "text", "raw": "text", "origin": "text"}
_ANOMALY_DATA = list(_ANOMALY_COLS)[1:]
UPSERT_ANOMALIES = _upsert_sql("anomalies", "anomaly_id", _ANOMALY_COLS, _do_update(
    _ANOMALY_DATA, _changed(_ANOMALY_DATA), also=["updated_at = now()"]))
# an alarm never moves backwards: a replayed older state loses to the stored newer one
_RANK = "(CASE {}.status " + " ".join(f"WHEN '{k}' THEN {v}" for k, v in ALARM_STATUS_RANK.items()) + " ELSE 0 END)"
UPSERT_ALARMS = _upsert_sql("alarms", "alarm_id", _ALARM_COLS, _do_update(
    list(_ALARM_COLS)[1:],
    f"(EXCLUDED.updated_at, {_RANK.format('EXCLUDED')}, EXCLUDED.anomaly_count)"
    f" > (t.updated_at, {_RANK.format('t')}, t.anomaly_count)",
))
INSERT_DEAD_LETTERS = _upsert_sql("dead_letters", "dead_letter_id", _DEAD_LETTER_COLS, "DO NOTHING")
