"""End to end, on real services: a simulated bearing failure becomes an alarm, a prediction, a work order
planned on a technician, a signed webhook and an email; logging the repair with the CLI closes the work order
and the asset stops alarming.

Run 1 replays the plant up to just before the repair; the repair is then logged with
`smart-maintenance log-maintenance`; run 2 backfills the whole period again and finds the record in
PostgreSQL, applied at its event time.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from email import message_from_bytes
from email.policy import default as email_policy

import orjson
import psycopg
import pytest
from bytewax.testing import run_main
from psycopg import sql
from typer.testing import CliRunner

from smart_maintenance.cli import app
from smart_maintenance.config.registry import load_registry
from smart_maintenance.config.settings import load_settings
from smart_maintenance.dataflows.plant import build_flow
from smart_maintenance.operators.records import iso
from smart_maintenance.sources.simulator import SimulatorSource, ground_truth, simulated_maintenance
from tests.integration.test_notify_channels import Mailbox, Receiver, docs_verify_signature, smtp_server

pytestmark = pytest.mark.integration
SECRET = "e2e-webhook-key"


def _settings(dsn: str, schema: str, hook: str, smtp_port: int, hours: float, data_dir=None):
    return load_settings(
        console=False, progress=False, source="simulator", data_dir=data_dir or ".smart-maintenance",
        incidents={"enabled": data_dir is not None},
        postgres={"dsn": dsn, "schema_name": schema},
        simulator={"assets": 5, "duration_s": hours * 3600.0, "maintenance_log": False},
        # the two runs differ in length: a warm-up capped at a share of each recording would differ too
        detection={"warmup_share": 1.0},
        prediction={"offload": False},
        notify={"channels": ["webhook", "email"], "ledger": "postgres",
                "webhook": {"url": hook, "secret": SECRET},
                "email": {"host": "127.0.0.1", "port": smtp_port, "to": ["planner@plant.example"]}},
    )


def _run(settings, plant) -> None:
    run_main(build_flow(settings, source=SimulatorSource(settings.simulator, plant), registry=plant),
             epoch_interval=timedelta(seconds=5))


@pytest.fixture
def schema(embedded_pg: str):
    name = f"t_{secrets.token_hex(6)}"
    yield name
    with psycopg.connect(embedded_pg, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def test_failure_to_notified_plan_to_logged_repair(embedded_pg: str, schema: str, monkeypatch, tmp_path) -> None:
    plant = load_registry().with_simulated(5)
    full = _settings(embedded_pg, schema, "http://x", 25, 48)
    (repair,) = simulated_maintenance(ground_truth(plant, full.simulator))  # conveyor-01's bearing
    asset, repaired_at = repair.asset_id, repair.completed_at
    before_repair_h = (repair.at_ms - ground_truth(plant, full.simulator).start_ms) / 3_600_000 - 1.0

    mailbox = Mailbox()
    smtp = smtp_server(mailbox)
    try:
        with Receiver() as hooks:
            _run(_settings(embedded_pg, schema, hooks.url + "/hook", smtp.port, before_repair_h, tmp_path), plant)
            with psycopg.connect(embedded_pg) as conn:
                q = lambda text, *p: conn.execute(sql.SQL(text).format(s=sql.Identifier(schema)), p).fetchall()  # noqa: E731
                (alarm_id,) = [r[0] for r in
                               q("SELECT alarm_id FROM {s}.alarms WHERE asset_id = %s AND kind = 'machine'", asset)]
                preds = q("SELECT method, failure_at FROM {s}.predictions WHERE alarm_id = %s", alarm_id)
                [(wo_id, status, tech, due, pred_id)] = q(
                    "SELECT work_order_id, status, technician_id, due_at, prediction_id FROM {s}.work_orders "
                    "WHERE alarm_id = %s", alarm_id)
            assert preds and any(f is not None for _, f in preds)
            assert status == "scheduled" and tech is not None and pred_id is not None
            skills = {t.technician_id: set(t.skills) for t in plant.technicians}[tech]
            assert {"mechanical", "conveyors"} <= skills

            verify = docs_verify_signature()
            bodies = []
            for path, headers, body in hooks.requests:
                assert path == "/hook"
                assert verify(SECRET.encode(), headers, body)
                bodies.append(orjson.loads(body))
            kinds = {(b["kind"], b["subject_id"]) for b in bodies}
            assert ("alarm_opened", alarm_id) in kinds and ("work_order_scheduled", wo_id) in kinds
            subjects = [message_from_bytes(raw, policy=email_policy)["Subject"] for _, _, raw in mailbox.messages]
            assert any(asset in s for s in subjects) and len(mailbox.messages) == len(hooks.requests)
            sent_first = len(hooks.requests)

            env = {"SMART_MAINTENANCE__POSTGRES__DSN": embedded_pg, "SMART_MAINTENANCE__POSTGRES__SCHEMA_NAME": schema}
            result = CliRunner().invoke(app, [
                "log-maintenance", "--asset", asset, "--completed-at", iso(repair.at_ms), "--work-order", wo_id,
                "--outcome", "repaired", "--action", "replaced drive-end bearing", "--notes", "outer race spalled",
                "--technician", tech], env=env)
            assert result.exit_code == 0, result.output

            monkeypatch.setenv("SMART_MAINTENANCE__POSTGRES__DSN", embedded_pg)
            _run(_settings(embedded_pg, schema, hooks.url + "/hook", smtp.port, 48, tmp_path), plant)
            with psycopg.connect(embedded_pg) as conn:
                q = lambda text, *p: conn.execute(sql.SQL(text).format(s=sql.Identifier(schema)), p).fetchall()  # noqa: E731
                [(status, closed_at, maintenance_id)] = q(
                    "SELECT status, closed_at, maintenance_id FROM {s}.work_orders WHERE work_order_id = %s", wo_id)
                later = q("SELECT alarm_id FROM {s}.alarms WHERE asset_id = %s AND kind = 'machine' AND opened_at > %s",
                          asset, repaired_at)
                [(cleared_at,)] = q("SELECT cleared_at FROM {s}.alarms WHERE alarm_id = %s", alarm_id)
            assert status == "done" and closed_at == repaired_at and maintenance_id
            assert cleared_at is not None and cleared_at <= repaired_at and later == []
            # the repair is now a past incident: the memory finds it for the same symptoms
            from smart_maintenance.stores.incidents import ask

            hits = ask(_settings(embedded_pg, schema, "http://x", 25, 48, tmp_path), "conveyor bearing hot", k=1)
            assert hits and hits[0]["work_order_id"] == wo_id and "drive-end bearing" in hits[0]["resolution"]
            # the backfill repeats run 1's notifications' ids: none is sent twice
            ids = [orjson.loads(b)["notification_id"] for _, _, b in hooks.requests]
            assert len(ids) == len(set(ids)) and len(ids) >= sent_first
    finally:
        smtp.stop()
