"""The HTTP API under load: concurrent readers, then batched ingest, against one uvicorn worker.

    python -m bench.api [--dsn postgresql://postgres@127.0.0.1:5432/test] [--readings 1000000]
                        [--clients 200] [--seconds 20] [--ingest-clients 4] [--batch 5000]

Fills a fresh schema with `--readings` readings (12 assets x 4 sensors, one per second), a few alarms,
cases and work orders; starts `smart-maintenance serve`'s app in a uvicorn subprocess (one worker,
loopback); runs `--clients` asyncio clients (httpx, one keep-alive connection each) for `--seconds` on a mix of
read routes (assets, cases, alarms, a 200-point readings query); then `--ingest-clients` clients POST
batches of `--batch` readings for `--seconds`. Last line:
`api_rps=<x> api_p95_ms=<x> ingest_per_s=<x>`. The schema is dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import httpx
import numpy as np
import orjson
import psycopg
from psycopg import sql

from smart_maintenance.connectors.postgres.api_store import ApiStore
from smart_maintenance.connectors.postgres.schema import ensure_schema

T0 = datetime(2026, 1, 5, tzinfo=timezone.utc)
ASSETS = [f"pump-{i:02d}" for i in range(1, 13)]
SENSORS = ["temp", "vibration", "current", "pressure"]

SERVER = """
import sys, uvicorn
from smart_maintenance.api.app import create_app
from smart_maintenance.api.config import ApiConfig
from smart_maintenance.connectors.postgres.api_store import ApiStore
from smart_maintenance.connectors.postgres.store import LoopStore
dsn, schema, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = ApiStore(dsn, schema, pool_size=8).open()
app = create_app(ApiConfig(port=port, rate_per_s=1e9, burst=10**9, max_body_bytes=64 * 1024 * 1024), store, {},
                 lambda: LoopStore(dsn, schema).open())
uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, timeout_keep_alive=60,
            backlog=4096)
"""


def fill(dsn: str, schema: str, n: int) -> None:
    ensure_schema(dsn, schema)
    per = n // (len(ASSETS) * len(SENSORS))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL(
            "INSERT INTO {} (asset_id, sensor, ts, value) SELECT a, s, %s + make_interval(secs => i), "
            "sin(i / 600.0) + random() * 0.1 FROM unnest(%s::text[]) a, unnest(%s::text[]) s, generate_series(0, %s) i"
        ).format(sql.Identifier(schema, "readings")), [T0, ASSETS, SENSORS, per - 1])
        for i, a in enumerate(ASSETS[:6]):
            conn.execute(sql.SQL(
                "INSERT INTO {} (alarm_id, asset_id, kind, status, severity, opened_at, updated_at, peak_score, "
                "anomaly_count, last_anomaly_id) VALUES (%s, %s, 'machine', 'open', %s, %s, %s, 0.9, 3, 'x')"
            ).format(sql.Identifier(schema, "alarms")), [f"al-{a}", a, 1 + i % 5, T0, T0])
            conn.execute(sql.SQL(
                "INSERT INTO {} (review_id, asset_id, window_start, window_end, score, severity, anomaly, "
                "first_window_end, window_count) VALUES (%s, %s, %s, %s, 0.7, 3, '{{}}', %s, 4)"
            ).format(sql.Identifier(schema, "reviews")), [f"case-{a}", a, T0, T0 + timedelta(hours=1), T0])
        conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(schema, "readings")))


def _p95(latencies: list[float]) -> float:
    return float(np.percentile(np.array(latencies) * 1000, 95)) if latencies else float("nan")


async def readers(url: str, token: str, clients: int, seconds: float) -> tuple[float, float, int]:
    routes = ["/api/assets", "/api/cases", "/api/alarms",
              "/api/assets/pump-03/readings?points=200&start=2026-01-05T00:00:00Z&end=2026-01-06T00:00:00Z"]
    lat: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    # one pool of `clients` keep-alive connections: an AsyncClient per task would build an SSL context each,
    # seconds of CPU on the event loop that show up as server latency
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, limits=limits,
                                 timeout=60) as c:
        async def one(i: int) -> None:
            nonlocal errors
            k = i
            while time.perf_counter() < stop:
                t = time.perf_counter()
                try:
                    r = await c.get(routes[k % len(routes)])
                    lat.append(time.perf_counter() - t)
                    errors += r.status_code != 200
                except httpx.TransportError:  # counted, never retried silently
                    errors += 1
                k += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(clients)))
        return len(lat) / (time.perf_counter() - t0), _p95(lat), errors


async def ingesters(url: str, token: str, clients: int, batch: int, seconds: float) -> tuple[float, int]:
    stored = 0
    errors = 0
    stop = time.perf_counter() + seconds

    async def one(i: int) -> None:
        nonlocal stored, errors
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}",
                                                            "Content-Type": "application/x-ndjson"}, timeout=60) as c:
            k = 0
            while time.perf_counter() < stop:
                base = int(T0.timestamp() * 1000) + (i * 10**7 + k * batch) * 1000  # past times: none rejected
                body = b"\n".join(orjson.dumps({"asset_id": f"ing-{i}", "sensor": "temp", "ts": base + j * 1000,
                                                "value": float(j)}) for j in range(batch))
                r = await c.post("/api/ingest/readings", content=body)
                if r.status_code == 202:
                    stored += r.json()["accepted"]
                else:
                    errors += 1
                k += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(clients)))
    return stored / (time.perf_counter() - t0), errors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dsn", default=os.environ.get("SMART_MAINTENANCE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test"))
    ap.add_argument("--readings", type=int, default=1_000_000)
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--ingest-clients", type=int, default=4)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--port", type=int, default=18_765)
    a = ap.parse_args()
    schema = f"bench_api_{secrets.token_hex(4)}"
    t = time.perf_counter()
    fill(a.dsn, schema, a.readings)
    with psycopg.connect(a.dsn) as conn:
        n = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, "readings"))).fetchone()[0]
    print(f"store: {n:,} readings in schema {schema} ({time.perf_counter() - t:.1f} s)", flush=True)
    with ApiStore(a.dsn, schema, pool_size=1) as store:
        reader, ingest = store.create_key("bench-read", ["read"]), store.create_key("bench-ingest", ["ingest"])
    server = subprocess.Popen([sys.executable, "-c", SERVER, a.dsn, schema, str(a.port)])
    url = f"http://127.0.0.1:{a.port}"
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        rps, p95, errs = asyncio.run(readers(url, reader, a.clients, a.seconds))
        print(f"reads: {a.clients} clients, {a.seconds:.0f} s: {rps:,.0f} requests/s, p95 {p95:.1f} ms, "
              f"{errs} failed (non-200 or transport error)", flush=True)
        per_s, ierrs = asyncio.run(ingesters(url, ingest, a.ingest_clients, a.batch, a.seconds))
        print(f"ingest: {a.ingest_clients} clients x {a.batch}-reading NDJSON batches: {per_s:,.0f} readings/s, "
              f"{ierrs} failed batches", flush=True)
        print(f"api_rps={rps:.0f} api_p95_ms={p95:.1f} ingest_per_s={per_s:.0f}")
    finally:
        server.terminate()
        server.wait(10)
        with psycopg.connect(a.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


if __name__ == "__main__":
    main()
