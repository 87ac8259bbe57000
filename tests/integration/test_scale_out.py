"""Two processes (`-i/-a`) store exactly what one worker stores."""

import re
import secrets
import socket
import subprocess
import sys

import psycopg
import pytest

from bench.recovery import _command, flow_env, make_csv

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rows(dsn, schema):
    with psycopg.connect(dsn) as conn:
        return (
            conn.execute(f"SELECT count(*), count(DISTINCT asset_id) FROM {schema}.readings").fetchone(),
            conn.execute(f"SELECT anomaly_id, status, score FROM {schema}.anomalies ORDER BY 1").fetchall(),
            conn.execute(f"SELECT alarm_id, status, severity FROM {schema}.alarms ORDER BY 1").fetchall(),
        )


CLI = [sys.executable, "-c", "from smart_maintenance.cli import main; main()"]


@pytest.fixture(scope="module")
def one_worker(embedded_pg, tmp_path_factory):
    """The plant's CSV and what one worker stores from it: run once, compared with both ways of running two."""
    csv = tmp_path_factory.mktemp("scale_out") / "plant.csv"
    make_csv(csv, assets=6, hours=30)
    schema = f"t_{secrets.token_hex(4)}_p1"
    try:
        subprocess.run(_command(None), env=flow_env(embedded_pg, schema, csv), check=True, timeout=300)
        yield csv, _rows(embedded_pg, schema)
    finally:
        with psycopg.connect(embedded_pg, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.mark.parametrize("how", ["bytewax.run", "cli"])
def test_two_processes_match_one_worker(embedded_pg, one_worker, how):
    """Bytewax's own runner, or our CLI's `replay -i/-a --epoch-s` (the same cluster flags)."""
    csv, single = one_worker
    two = f"t_{secrets.token_hex(4)}_p2"
    try:
        addresses = f"127.0.0.1:{_free_port()};127.0.0.1:{_free_port()}"
        if how == "cli":
            commands = [CLI + ["replay", str(csv), "--epoch-s", "0.5", "-i", str(i), "-a", addresses]
                        for i in (0, 1)]
        else:
            commands = [_command(None) + ["-i", str(i), "-a", addresses] for i in (0, 1)]
        procs = [subprocess.Popen(cmd, env=flow_env(embedded_pg, two, csv), stderr=subprocess.PIPE, text=True)
                 for cmd in commands]
        logs = [p.communicate(timeout=300)[1] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], logs
        double = _rows(embedded_pg, two)
        assert single == double
        if how == "cli":  # one cluster: each process read its share, not the whole file (its summary's count)
            read = [int(m.group(1).replace(",", "")) if (m := re.search(r"│ readings\s+│\s+([\d,]+)", log)) else 0
                    for log in logs]
            assert sum(read) == single[0][0], read
        assert single[0][1] == 6 and single[1]  # every asset stored, and there were anomalies to compare
    finally:
        with psycopg.connect(embedded_pg, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {two} CASCADE")
