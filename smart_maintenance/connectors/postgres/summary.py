"""What a run left in PostgreSQL, for the CLI's closing summary."""

from __future__ import annotations

from typing import Any, cast

import psycopg
from psycopg import sql


def _one(conn: psycopg.Connection, query: sql.Composed) -> Any:
    """The value of a one-value query (count(*) always returns one row)."""
    return cast(tuple[Any, ...], conn.execute(query).fetchone())[0]


def summarize(dsn: str, schema: str) -> dict[str, Any]:
    """Row counts by kind, and the alarms still open (most severe first)."""
    s = sql.Identifier(schema)
    counts: dict[str, int] = {}
    with psycopg.connect(dsn) as conn:
        for table in ("readings", "features"):
            counts[table] = _one(conn, sql.SQL("SELECT count(*) FROM {}.{}").format(s, sql.Identifier(table)))
        for status, n in conn.execute(
            sql.SQL("SELECT status, count(*) FROM {}.anomalies GROUP BY 1 ORDER BY 1").format(s)
        ):
            counts[f"anomalies {status}"] = n
        for kind, n in conn.execute(sql.SQL("SELECT kind, count(*) FROM {}.alarms GROUP BY 1 ORDER BY 1").format(s)):
            counts[f"alarms ({kind})"] = n
        for reason, n in conn.execute(
            sql.SQL("SELECT reason, count(*) FROM {}.dead_letters GROUP BY 1 ORDER BY 1").format(s)
        ):
            counts[f"dead letters: {reason}"] = n
        present = {t for (t,) in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", [schema])}
        if "predictions" in present:
            for method, n in conn.execute(
                sql.SQL("SELECT method, count(*) FROM {}.predictions GROUP BY 1 ORDER BY 1").format(s)
            ):
                counts[f"predictions ({method})"] = n
        if "work_orders" in present:
            for kind, status, n in conn.execute(
                sql.SQL("SELECT kind, status, count(*) FROM {}.work_orders GROUP BY 1, 2 ORDER BY 1, 2").format(s)
            ):
                counts[f"work orders ({kind}, {status})"] = n
        for table, label in (("reviews", "reviews pending"), ("maintenance_log", "maintenance logged")):
            if table in present:
                where = sql.SQL(" WHERE status IN ('pending', 'deferred')") if table == "reviews" else sql.SQL("")
                count = sql.SQL("SELECT count(*) FROM {}.{}").format(s, sql.Identifier(table))
                counts[label] = _one(conn, count + where)
        open_alarms = conn.execute(
            sql.SQL(
                "SELECT asset_id, kind, severity, opened_at, array_to_string(ARRAY("
                "SELECT jsonb_array_elements_text(sensors)), ', ') FROM {}.alarms "
                "WHERE status = 'open' ORDER BY severity DESC, opened_at"
            ).format(s)
        ).fetchall()
    return {"counts": counts, "open_alarms": open_alarms}


def last_seen(dsn: str, schema: str) -> dict[str, Any]:
    """Per asset the end of its newest closed window; and the number of open alarms."""
    s = sql.Identifier(schema)
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        rows = conn.execute(
            sql.SQL("SELECT asset_id, max(window_end) FROM {}.features GROUP BY 1 ORDER BY 1").format(s)
        ).fetchall()
        open_alarms = _one(conn, sql.SQL("SELECT count(*) FROM {}.alarms WHERE status = 'open'").format(s))
    return {"assets": dict(rows), "open_alarms": open_alarms}
