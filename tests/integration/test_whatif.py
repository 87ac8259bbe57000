"""`smart-maintenance whatif` on a stored history: replays reproduce the live run, candidates scored, --apply."""

import json
import secrets
import tomllib

import psycopg
import pytest
from typer.testing import CliRunner

from smart_maintenance.cli import app
from smart_maintenance.config.settings import Settings

pytestmark = pytest.mark.integration


def _rows(output: str) -> dict[str, dict]:
    return {r["candidate"]: r for r in (json.loads(line) for line in output.splitlines() if line.startswith("{"))}


def test_whatif_scores_candidates_on_the_plants_own_labels_and_applies_one(embedded_pg, tmp_path, monkeypatch):
    schema = f"t_{secrets.token_hex(5)}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SMART_MAINTENANCE__POSTGRES__DSN", embedded_pg)
    monkeypatch.setenv("SMART_MAINTENANCE__POSTGRES__SCHEMA_NAME", schema)
    runner = CliRunner()
    try:
        ran = runner.invoke(app, ["run", "--duration", "2d", "--assets", "4"])
        assert ran.exit_code == 0, ran.output
        with psycopg.connect(embedded_pg, autocommit=True) as conn:
            stored = conn.execute(f"SELECT count(*) FROM {schema}.alarms WHERE kind = 'machine'").fetchone()[0]
            (alarm_asset, opened, cleared) = conn.execute(
                f"SELECT asset_id, opened_at, coalesce(cleared_at, opened_at) FROM {schema}.alarms "
                f"WHERE kind = 'machine' ORDER BY opened_at LIMIT 1").fetchone()
            # the plant's word on it: a planner approved a case over that alarm
            conn.execute(f"INSERT INTO {schema}.reviews (review_id, asset_id, window_start, window_end, score, "
                         f"severity, anomaly, status) VALUES ('r-true', %s, %s, %s, 0.9, 3, '{{}}', 'approved')",
                         [alarm_asset, opened, cleared])
        assert stored >= 1

        cands = ["--try", "deaf: validation.open_threshold=0.97 validation.confirm_threshold=0.99 "
                          "validation.max_open=0.99",
                 "--try", f"same: alarms.clear_windows={Settings().alarms.clear_windows}"]  # the default again
        got = runner.invoke(app, ["whatif", *cands, "--json", "--apply", "deaf"])
        assert got.exit_code == 0, got.output
        rows = _rows(got.stdout)
        current, same, deaf = rows["current"], rows["same"], rows["deaf"]
        assert current["machine_alarms"] == stored  # a replay of the stored history reproduces the live run
        assert current["true"] >= 1 and current["faults_found"] >= 1 and current["precision"] == 1.0
        assert {k: v for k, v in same.items() if k not in ("candidate", "settings")} == (
            {k: v for k, v in current.items() if k not in ("candidate", "settings")} | {"gained": 0, "lost": 0})
        assert deaf["machine_alarms"] < current["machine_alarms"] and deaf["lost"] >= 1
        assert deaf["faults_found"] < current["faults_found"]

        toml = (tmp_path / "smart-maintenance.toml").read_text()
        assert "whatif" in toml and "precision 1.00 ->" in toml  # the comment says what was measured
        assert tomllib.loads(toml)["validation"] == {"open_threshold": 0.97, "confirm_threshold": 0.99,
                                                    "max_open": 0.99}
    finally:
        with psycopg.connect(embedded_pg, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def test_whatif_refuses_bad_candidates_before_replaying(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    bad = runner.invoke(app, ["whatif", "--try", "x: postgres.dsn=postgresql://evil"])
    assert bad.exit_code == 2 and "a what-if tries only" in bad.output
    unknown = runner.invoke(app, ["whatif", "--try", "a: validation.open_threshold=0.7", "--apply", "b"])
    assert unknown.exit_code == 2 and "is not one of the candidates" in unknown.output
    invalid = runner.invoke(app, ["whatif", "--try", "a: validation.open_threshold=0.9"])  # above confirm_threshold
    assert invalid.exit_code == 2 and "open_threshold" in invalid.output
