"""Decisions and repairs re-enter a *running* live flow: `review reject` and `log-maintenance` on the CLI while
`python -m bytewax.run` runs the simulated plant; the flow's control input picks them up from PostgreSQL."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time

import psycopg
import pytest
from psycopg import sql
from typer.testing import CliRunner

from smart_maintenance.cli import app
from smart_maintenance.config.registry import load_registry
from smart_maintenance.config.settings import load_settings
from smart_maintenance.operators.records import iso
from smart_maintenance.sources.simulator import ground_truth, simulated_maintenance

pytestmark = pytest.mark.integration


def _wait(what: str, probe, timeout_s: float = 90.0, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = probe()
        if got:
            return got
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the flow exited ({proc.returncode}) while waiting for {what}")
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_running_flow_applies_a_review_decision_and_a_logged_repair(embedded_pg: str, tmp_path) -> None:
    schema = f"t_{secrets.token_hex(5)}"
    env = dict(os.environ) | {
        "SMART_MAINTENANCE__POSTGRES__DSN": embedded_pg,
        "SMART_MAINTENANCE__POSTGRES__SCHEMA_NAME": schema,
        "SMART_MAINTENANCE__DATA_DIR": str(tmp_path / "state"),
        "SMART_MAINTENANCE__SOURCE": "simulator",
        "SMART_MAINTENANCE__SIMULATOR__ASSETS": "5",
        "SMART_MAINTENANCE__SIMULATOR__DURATION_S": str(2 * 86_400),
        "SMART_MAINTENANCE__SIMULATOR__SPEED": "6000",  # 2 days in about 30 s: live pacing
        "SMART_MAINTENANCE__NOTIFY__CHANNELS": "[]",
        "SMART_MAINTENANCE__INCIDENTS__ENABLED": "false",
        "SMART_MAINTENANCE__CONSOLE": "false",
    }
    settings = load_settings(simulator={"assets": 5, "duration_s": 2 * 86_400.0})
    (repair,) = simulated_maintenance(ground_truth(load_registry().with_simulated(5), settings.simulator))
    log_file = (tmp_path / "flow.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "bytewax.run", "smart_maintenance.dataflows.plant:build_flow()"],
                            env=env, stdout=subprocess.DEVNULL, stderr=log_file)
    runner = CliRunner()
    cli_env = {k: env[k] for k in ("SMART_MAINTENANCE__POSTGRES__DSN", "SMART_MAINTENANCE__POSTGRES__SCHEMA_NAME")}

    def rows(query: str, *params):
        try:
            with psycopg.connect(embedded_pg) as conn:
                return conn.execute(sql.SQL(query).format(s=sql.Identifier(schema)), params).fetchall()
        except psycopg.errors.UndefinedTable:
            return []  # not migrated yet

    try:
        (review_id, asset_id), *_ = _wait("a review in the queue", lambda: rows(
            "SELECT review_id, asset_id FROM {s}.reviews ORDER BY window_end LIMIT 1"), proc=proc)
        result = runner.invoke(app, ["review", "reject", review_id, "--note", "valve test", "--by", "ana"], env=cli_env)
        assert result.exit_code == 0, result.output
        [(old, new, cause)] = _wait("the flow to learn from the decision", lambda: rows(
            "SELECT old_threshold, new_threshold, cause FROM {s}.threshold_changes WHERE asset_id = %s", asset_id),
            proc=proc)
        assert (old, new, cause) == (0.6, 0.65, "review rejected")

        (wo_id,), *_ = _wait("the failing asset's work order", lambda: rows(
            "SELECT work_order_id FROM {s}.work_orders WHERE asset_id = %s AND kind = 'repair'", repair.asset_id),
            proc=proc)
        result = runner.invoke(app, ["log-maintenance", "--asset", repair.asset_id, "--completed-at",
                                     iso(repair.at_ms), "--work-order", wo_id, "--notes", "bearing replaced"],
                               env=cli_env)
        assert result.exit_code == 0, result.output
        [(status, closed_at)] = _wait("the work order to close", lambda: [r for r in rows(
            "SELECT status, closed_at FROM {s}.work_orders WHERE work_order_id = %s", wo_id) if r[0] == "done"],
            proc=proc)
        assert closed_at == repair.completed_at
        assert proc.poll() is None  # still running: a live flow
    finally:
        proc.kill()
        proc.wait()
        log_file.close()
        with psycopg.connect(embedded_pg, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
