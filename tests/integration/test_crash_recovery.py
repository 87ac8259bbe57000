"""SIGKILL the flow at five random points of a replay: nothing lost, nothing doubled."""

import random
import secrets
import subprocess
import time

import psycopg
import pytest

from bench.recovery import _command, compare, flow_env, make_csv, run_with_kills

pytestmark = pytest.mark.integration


def test_killed_replay_resumes_without_loss_or_duplicates(embedded_pg, tmp_path):
    csv = tmp_path / "plant.csv"
    expected = make_csv(csv, assets=8, hours=36)
    straight, crashed = f"t_{secrets.token_hex(4)}_a", f"t_{secrets.token_hex(4)}_b"
    try:
        t = time.perf_counter()
        subprocess.run(_command(None), env=flow_env(embedded_pg, straight, csv), check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        full_s = time.perf_counter() - t
        rng = random.Random(11)
        delays = [rng.uniform(1.0, max(1.5, 0.9 * full_s)) for _ in range(5)]
        run = run_with_kills(flow_env(embedded_pg, crashed, csv), tmp_path / "recovery", delays)
        assert run.kills >= 5
        assert compare(embedded_pg, straight, crashed, expected) == (0, 0)
        with psycopg.connect(embedded_pg) as conn:
            anomalies, alarms = conn.execute(
                f"SELECT (SELECT count(*) FROM {crashed}.anomalies), (SELECT count(*) FROM {crashed}.alarms)"
            ).fetchone()
        assert anomalies > 20, (anomalies, alarms)  # the scenario has something to lose or double
    finally:
        with psycopg.connect(embedded_pg, autocommit=True) as conn:
            for schema in (straight, crashed):
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
