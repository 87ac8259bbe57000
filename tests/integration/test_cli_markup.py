"""Output that is only text: asset ids that look like rich markup are printed as they are, by the real commands."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.synthetic import asset_day

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
CLOSER = "[/]"
LINK = "[link=http://evil.example]pump-07[/link]"


def cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from smart_maintenance.cli.app import main; main()", *args],
                          env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_markup_in_asset_ids_is_printed_as_text_by_replay_status_db_and_review(embedded_pg: str,
                                                                                   tmp_path: Path) -> None:
    schema = f"t_{secrets.token_hex(5)}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "250", "SMART_MAINTENANCE__POSTGRES__DSN": embedded_pg,
           "SMART_MAINTENANCE__POSTGRES__SCHEMA_NAME": schema, "SMART_MAINTENANCE__DETECTION__WARMUP_WINDOWS": "36",
           "SMART_MAINTENANCE__DETECTION__BASELINE_SIZE": "96", "SMART_MAINTENANCE__NOTIFY__CHANNELS": "[]",
           "SMART_MAINTENANCE__LOG_LEVEL": "ERROR",
           "SMART_MAINTENANCE__LIMITS__EVICT_AFTER_S": str(100 * 365 * 86_400.0)}  # status keeps the 2026 data
    rows = []
    for asset in (CLOSER, LINK):
        day = asset_day(asset, seed=1, drift_last_h=4)  # drifts: its alarm is still open at the end
        rows += [f"{t},{asset},{n},{v}\n" for n, t, v in zip(day.sensor, day.ts, day.value, strict=True)]
    csv = tmp_path / "r.csv"
    csv.write_text("ts,asset_id,sensor,value\n" + "".join(rows))
    try:
        replay = cli("replay", str(csv), env=env, cwd=tmp_path)
        assert replay.returncode == 0, replay.stderr[-3000:]
        assert "alarms still open" in replay.stderr
        status = cli("status", env=env, cwd=tmp_path)  # the container health check
        assert "Traceback" not in status.stderr and "MarkupError" not in status.stderr, status.stderr[-3000:]
        assert status.returncode == 1 and "unhealthy: 2 stale asset(s)" in status.stderr  # data from the past
        reviews = cli("review", "list", "--status", "all", "--asset", LINK, env=env, cwd=tmp_path)
        assert reviews.returncode == 0, reviews.stderr[-3000:]
        for out in (replay.stderr, status.stderr):
            assert f" {CLOSER} " in out or f"│ {CLOSER}" in out  # the id itself, not swallowed as a closing tag
            assert LINK in out  # the whole id: no hidden hyperlink
        assert f"asset {LINK}" in reviews.stdout
    finally:
        with psycopg.connect(embedded_pg, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
