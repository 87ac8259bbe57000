"""The HTTP API under load: concurrent readers, then batched ingest, against one uvicorn worker.

    python -m bench.api [--dsn postgresql://postgres@127.0.0.1:5432/test] [--readings 1000000]
                        [--clients 200] [--procs 4] [--seconds 20] [--ingest-clients 4] [--batch 5000]
                        [--read-cache-s 1.0]

Fills a fresh schema with `--readings` readings (12 assets x 4 sensors, one per second), a few alarms,
cases and work orders; starts `smart-maintenance serve`'s app in a uvicorn subprocess (one worker,
loopback, uvloop + httptools, the read cache at `--read-cache-s`; 0 turns it off).

Load (closed loop): `--clients` HTTP/1.1 keep-alive connections spread over `--procs` client
processes; each connection sends its next request as soon as the previous answer is read, for
`--seconds`, cycling over four read routes (assets, open cases, active alarms, a 200-point readings
query over one asset's day: about 83,000 rows aggregated in SQL). Throughput = answers / wall time; latency
= send to last byte of the answer. The clients are minimal asyncio sockets (no HTTP library) so that they
cost little CPU; their CPU, the server's and the whole machine's are printed, as CPU-seconds per request.
Then `--ingest-clients` connections (in as many processes) POST NDJSON batches of `--batch` readings
for `--seconds` (a 202 counts only after the server committed the batch).

Last line: `api_rps=<x> api_p95_ms=<x> ingest_per_s=<x> server_cpu_ms_per_req=<x> client_cpu_share=<x>`.
The schema is dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timedelta, timezone
from multiprocessing import get_context
from urllib.parse import urlsplit

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
dsn, schema, port, cache_s = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
known = {f"pump-{i:02d}": {"site": "default", "type": "pump"} for i in range(1, 13)}
store = ApiStore(dsn, schema, pool_size=8).open()
app = create_app(ApiConfig(port=port, rate_per_s=1e9, burst=10**9, max_body_bytes=64 * 1024 * 1024,
                           read_cache_s=cache_s), store, known, lambda: LoopStore(dsn, schema).open())
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


READ_ROUTES = ("/api/assets", "/api/cases", "/api/alarms",
               "/api/assets/pump-03/readings?points=200&start=2026-01-05T00:00:00Z&end=2026-01-06T00:00:00Z")


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    request: bytes) -> tuple[int, bytes]:
    """Send one request on a keep-alive connection and read its whole answer: (status code, body)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    at = head.lower().find(b"content-length:")
    if at < 0:
        raise ConnectionError("an answer without Content-Length")
    body = await reader.readexactly(int(head[at + 15:head.index(b"\r\n", at)]))
    return int(head[9:12]), body


async def _clients(url: str, requests: list[bytes], clients: int, seconds: float, ok: int,
                   offset: int) -> tuple[list[float], int, int]:
    """`clients` connections in a closed loop for `seconds`: (latencies, errors, good answers).

    An answer is good when its status is `ok`; for 202 (ingest) the good count is the readings accepted."""
    host, port = urlsplit(url).hostname, urlsplit(url).port
    lat: list[float] = []
    errors = good = 0
    stop = time.perf_counter() + seconds

    async def one(i: int) -> None:
        nonlocal errors, good
        reader, writer = await asyncio.open_connection(host, port)
        k = offset + i
        try:
            while time.perf_counter() < stop:
                t = time.perf_counter()
                try:
                    status, body = await _exchange(reader, writer, requests[k % len(requests)])
                except (OSError, asyncio.IncompleteReadError, ConnectionError):  # counted, then reconnect
                    errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                    continue
                lat.append(time.perf_counter() - t)
                good += (orjson.loads(body)["accepted"] if ok == 202 else 1) if status == ok else 0
                errors += status != ok
                k += 1
        finally:
            writer.close()

    await asyncio.gather(*(one(i) for i in range(clients)))
    return lat, errors, good


def _process(url: str, requests: list[bytes], clients: int, seconds: float, ok: int,
             offset: int) -> tuple[list[float], int, int, float, float]:
    """One client process: (latencies, errors, good answers, wall seconds, CPU seconds)."""
    import uvloop

    cpu, t0 = time.process_time(), time.perf_counter()
    lat, errors, good = uvloop.run(_clients(url, requests, clients, seconds, ok, offset))
    return lat, errors, good, time.perf_counter() - t0, time.process_time() - cpu


def _get(path: str, token: str) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n\r\n").encode()


def _post(path: str, token: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/x-ndjson\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def _ingest_bodies(token: str, proc: int, batch: int, n: int = 8) -> list[bytes]:
    """`n` different batches for one ingest process (past timestamps: none is rejected)."""
    out = []
    for k in range(n):
        base = int(T0.timestamp() * 1000) + (proc * 10**6 + k * batch) * 1000  # 2026-01 to 2026-02
        body = b"\n".join(orjson.dumps({"asset_id": f"ing-{proc}", "sensor": "temp", "ts": base + j * 1000,
                                        "value": float(j)}) for j in range(batch))
        out.append(_post("/api/ingest/readings", token, body))
    return out


def _cpu_of(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy() -> float:
    """CPU seconds all cores have been busy since boot."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


def load(url: str, per_process: list[list[bytes]], clients: int, seconds: float, ok: int,
         server_pid: int) -> dict[str, float]:
    """Run the client processes at once; throughput, latency and CPU figures."""
    procs = len(per_process)
    shares = [clients // procs + (i < clients % procs) for i in range(procs)]
    server0, busy0 = _cpu_of(server_pid), _machine_busy()
    with ProcessPoolExecutor(procs, mp_context=get_context("fork")) as pool:
        runs = list(pool.map(_process, [url] * procs, per_process, shares, [seconds] * procs, [ok] * procs,
                             [sum(shares[:i]) for i in range(procs)]))
    server, busy = _cpu_of(server_pid) - server0, _machine_busy() - busy0
    lat = [x for r in runs for x in r[0]]
    wall = max(r[3] for r in runs)
    good, client_cpu = sum(r[2] for r in runs), sum(r[4] for r in runs)
    n = max(1, len(lat))
    return {"rps": len(lat) / wall, "p50_ms": float(np.percentile(np.array(lat) * 1000, 50)) if lat else 0.0,
            "p95_ms": _p95(lat), "errors": sum(r[1] for r in runs), "good": good, "wall_s": wall,
            "client_cpu_s": client_cpu, "server_cpu_s": server, "machine_cpu_s": busy,
            "server_cpu_ms_per_req": server / n * 1000, "client_cpu_ms_per_req": client_cpu / n * 1000}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dsn", default=os.environ.get("SMART_MAINTENANCE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test"))
    ap.add_argument("--readings", type=int, default=1_000_000)
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--procs", type=int, default=4, help="client processes the readers are spread over")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--ingest-clients", type=int, default=4)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--read-cache-s", type=float, default=1.0, help="the server's read cache (0: off)")
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
    server = subprocess.Popen([sys.executable, "-c", SERVER, a.dsn, schema, str(a.port), str(a.read_cache_s)])
    url = f"http://127.0.0.1:{a.port}"
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        gets = [_get(r, reader) for r in READ_ROUTES]
        r = load(url, [gets] * a.procs, a.clients, a.seconds, 200, server.pid)
        print(f"reads: {a.clients} clients in {a.procs} processes, closed loop, {r['wall_s']:.0f} s, read cache "
              f"{a.read_cache_s} s: {r['rps']:,.0f} requests/s, p50 {r['p50_ms']:.1f} ms, p95 {r['p95_ms']:.1f} ms, "
              f"{r['errors']:.0f} failed", flush=True)
        print(f"reads CPU: server {r['server_cpu_s']:.1f} s ({r['server_cpu_ms_per_req']:.3f} ms/request), "
              f"clients {r['client_cpu_s']:.1f} s ({r['client_cpu_ms_per_req']:.3f} ms/request), "
              f"whole machine {r['machine_cpu_s']:.1f} s of {(os.cpu_count() or 1) * r['wall_s']:.0f} s "
              f"on {os.cpu_count()} cores "
              f"(PostgreSQL and anything else running: the rest)", flush=True)
        bodies = [_ingest_bodies(ingest, i, a.batch) for i in range(a.ingest_clients)]
        w = load(url, bodies, a.ingest_clients, a.seconds, 202, server.pid)
        per_s = w["good"] / w["wall_s"]  # readings accepted (a 202 counts its "accepted")
        print(f"ingest: {a.ingest_clients} clients x {a.batch}-reading NDJSON batches: {per_s:,.0f} readings/s, "
              f"p95 {w['p95_ms']:.0f} ms per batch, {w['errors']:.0f} failed batches; server CPU "
              f"{w['server_cpu_s'] / max(1, w['good']) * 1e6:.1f} us/reading, machine "
              f"{w['machine_cpu_s']:.1f} s", flush=True)
        print(f"api_rps={r['rps']:.0f} api_p95_ms={r['p95_ms']:.1f} ingest_per_s={per_s:.0f} "
              f"server_cpu_ms_per_req={r['server_cpu_ms_per_req']:.3f} "
              f"client_cpu_share={r['client_cpu_s'] / max(1e-9, r['machine_cpu_s']):.2f}")
    finally:
        server.terminate()
        server.wait(10)
        with psycopg.connect(a.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


if __name__ == "__main__":
    main()
