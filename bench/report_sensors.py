"""How long a report of one asset with many sensors takes, and its peak memory.

    python -m bench.report_sensors [--sensors 460] [--dsn postgresql://postgres@127.0.0.1:5432/test]

Writes 24 h of 10-minute feature windows for one asset with `--sensors` sensors (one ramps, three
anomalies name it) into a fresh schema, renders the report of that asset, drops the schema. Last line:
`sensors=<n> report_s=<s> max_rss_mb=<m> bytes=<b>`.
"""

from __future__ import annotations

import argparse
import resource
import secrets
import tempfile
import time
from pathlib import Path

import psycopg

from smart_maintenance.config.registry import load_registry
from smart_maintenance.connectors.postgres.schema import ensure_schema
from smart_maintenance.connectors.postgres.sink import PostgresWriter
from smart_maintenance.report.html import write_report
from tests.integration.test_report import anomaly, features, settings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sensors", type=int, default=460)
    ap.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    args = ap.parse_args()
    schema = f"bench_{secrets.token_hex(4)}"
    ensure_schema(args.dsn, schema)
    try:
        sensors = {f"s{i:03d}": (10.0 + i, 0.5) for i in range(args.sensors)}
        ramp = f"s{args.sensors // 2:03d}"
        with PostgresWriter(args.dsn, schema, copy_rows=50_000) as w:
            w.write_features([features("skid-9", sensors, hours=24, ramp=(ramp, 12, 9.0))])
            w.upsert_anomalies([anomaly(f"k{i}", "skid-9", 20 + i / 6, "confirmed", ramp) for i in range(3)])
        with tempfile.TemporaryDirectory() as d:
            started = time.perf_counter()
            s = write_report(settings(args.dsn, schema), Path(d) / "r.html", None, "skid-9", load_registry())
            took = time.perf_counter() - started
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"sensors={args.sensors} report_s={took:.1f} max_rss_mb={rss:.0f} bytes={s.bytes}")
    finally:
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("DROP SCHEMA {} CASCADE").format(psycopg.sql.Identifier(schema)))


if __name__ == "__main__":
    main()
