"""Quarantine of unknown assets on real PostgreSQL: `assets admit|list` and the flow's view of admissions."""

from __future__ import annotations

import getpass
import json
import secrets
import time
from collections.abc import Iterator

import psycopg
import pytest
from typer.testing import CliRunner

from smart_maintenance.cli.app import app
from smart_maintenance.connectors.postgres.admission import AdmissionStore
from smart_maintenance.stores.admission import Admission

pytestmark = pytest.mark.integration


@pytest.fixture
def schema(embedded_pg: str, monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[str]:
    name = f"t_{secrets.token_hex(5)}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SMART_MAINTENANCE__POSTGRES__DSN", embedded_pg)
    monkeypatch.setenv("SMART_MAINTENANCE__POSTGRES__SCHEMA_NAME", name)
    yield name
    with psycopg.connect(embedded_pg, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def test_admit_and_list_from_the_command_line(embedded_pg: str, schema: str) -> None:
    runner = CliRunner()
    with AdmissionStore(embedded_pg, schema) as store:  # migrates; then the flow "saw" two unknown assets
        assert store.admitted_ids() == set()
    with psycopg.connect(embedded_pg, autocommit=True) as conn:
        for asset in ("stray-1", "new-pump"):
            conn.execute(f"INSERT INTO {schema}.features (asset_id, sensor, window_start, window_end, mean, std, min,"
                         " max, slope, rms, last, count) VALUES (%s, 't', '2026-01-05T10:00Z', '2026-01-05T10:05Z',"
                         " 1, 0, 1, 1, 0, 1, 1, 30)", [asset])
    before = [json.loads(line) for line in runner.invoke(app, ["assets", "list", "--json"]).stdout.splitlines()]
    standing = {r["asset_id"]: r["standing"] for r in before}
    assert standing["stray-1"] == standing["new-pump"] == "quarantined"
    assert "registered" in standing.values()  # the built-in plant's assets
    admitted = runner.invoke(app, ["assets", "admit", "new-pump", "--note", "line 3"])
    assert admitted.exit_code == 0 and "admitted new-pump" in admitted.output
    again = runner.invoke(app, ["assets", "admit", "new-pump"])
    assert again.exit_code == 0 and "new-pump was already admitted" in again.output
    listed = runner.invoke(app, ["assets", "list", "--json"]).stdout.splitlines()
    after = {r["asset_id"]: r for r in map(json.loads, listed)}
    assert after["new-pump"]["standing"] == "admitted" and after["stray-1"]["standing"] == "quarantined"
    assert (after["new-pump"]["admitted_by"], after["new-pump"]["note"]) == (f"cli:{getpass.getuser()}", "line 3")
    table = runner.invoke(app, ["assets", "list"])
    assert table.exit_code == 0 and "1 quarantined asset(s)" in table.output
    bad = runner.invoke(app, ["assets", "admit", "bad\nid"])
    assert bad.exit_code == 2 and "printable" in bad.output


def test_a_live_flow_sees_an_admission_within_its_refresh_and_a_replay_reads_once(embedded_pg: str,
                                                                                 schema: str) -> None:
    now = [0.0]
    with AdmissionStore(embedded_pg, schema) as store:
        live = Admission({"pump-01"}, load=store.admitted_ids, refresh_s=5.0, clock=lambda: now[0])
        replay = Admission({"pump-01"}, load=store.admitted_ids, refresh_s=None, clock=lambda: now[0])
        assert live("pump-01") and not live("pump-77") and not replay("pump-77")
        store.admit(["pump-77"], admitted_by="ana")
        now[0] = 4.0
        assert not live("pump-77")  # read at most every 5 s
        now[0] = 5.0
        live("pump-77")  # due: re-read in the background
        deadline = time.monotonic() + 10
        while not live("pump-77") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert live("pump-77")
        assert not replay("pump-77")  # a replay's answer does not change during the run
    assert Admission({"pump-01"}, quarantine=False)("anything")
