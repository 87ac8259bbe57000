"""The command line against real PostgreSQL."""

import json
import secrets

import psycopg
import pytest
from typer.testing import CliRunner

from smart_maintenance.cli import app

pytestmark = pytest.mark.integration


def test_replay_prints_a_summary_and_db_describes_it(embedded_pg, tmp_path, monkeypatch):
    schema = f"t_{secrets.token_hex(5)}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SMART_MAINTENANCE__POSTGRES__DSN", embedded_pg)
    monkeypatch.setenv("SMART_MAINTENANCE__POSTGRES__SCHEMA_NAME", schema)
    csv = tmp_path / "r.csv"
    csv.write_text("ts,asset_id,sensor,value\n" + "".join(
        f"{1767225600000 + i * 10_000},p1,temp,{20 + i % 7}\n" for i in range(600)
    ) + "1767225600000,p1,temp,oops\n")
    try:
        result = CliRunner().invoke(app, ["replay", str(csv), "--out", "out"])
        assert result.exit_code == 0, result.output
        assert "readings" in result.output and "600" in result.output
        assert "dead letters (bad_value)" in result.output
        assert (tmp_path / "out" / "readings.jsonl").read_text().count("\n") == 600
        # a second file's summary counts what that run did, not the database's totals
        csv2 = tmp_path / "r2.csv"
        csv2.write_text("ts,asset_id,sensor,value\n" + "".join(
            f"{1767232000000 + i * 10_000},p2,temp,{20 + i % 5}\n" for i in range(300)))
        second = CliRunner().invoke(app, ["replay", str(csv2)])
        assert second.exit_code == 0, second.output
        counts = {line.split("│")[1].strip(): line.split("│")[2].strip()
                  for line in second.output.splitlines() if line.count("│") >= 3}
        assert counts["readings"] == "300", second.output
        assert not any(k.startswith("dead letters") for k in counts), second.output
        described = CliRunner().invoke(app, ["db"])
        assert described.exit_code == 0 and "tables.readings" in described.output
    finally:
        with psycopg.connect(embedded_pg, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def test_bad_arguments_are_clear_errors(tmp_path):
    runner = CliRunner()
    assert "a duration is a number and a unit" in runner.invoke(app, ["run", "--duration", "soon"]).output
    missing = runner.invoke(app, ["replay", str(tmp_path / "nope.csv")])
    flat = " ".join(missing.output.replace("│", " ").split())  # rich wraps a long path inside its box
    assert missing.exit_code != 0 and "does not exist" in flat


def test_replay_reads_a_plant_local_clock_with_timezone(embedded_pg, tmp_path, monkeypatch):
    schema = f"t_{secrets.token_hex(5)}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SMART_MAINTENANCE__POSTGRES__DSN", embedded_pg)
    monkeypatch.setenv("SMART_MAINTENANCE__POSTGRES__SCHEMA_NAME", schema)
    csv = tmp_path / "chiller-01.csv"  # 09:00 in Berlin (winter) is 08:00 UTC
    csv.write_text("time,temp\n" + "".join(f"2026-01-15 09:{i // 6:02d}:{i % 6 * 10:02d},{20 + i % 3}\n"
                                           for i in range(120)))
    try:
        result = CliRunner().invoke(app, ["replay", str(csv), "--timezone", "Europe/Berlin", "--out", "out"])
        assert result.exit_code == 0, result.output
        first = json.loads((tmp_path / "out" / "readings.jsonl").read_text().splitlines()[0])
        assert first["ts"].startswith("2026-01-15T08:00:00"), first
        with psycopg.connect(embedded_pg) as conn:
            lo, n = conn.execute(f"SELECT min(ts), count(*) FROM {schema}.readings").fetchone()
        assert (lo.isoformat(), n) == ("2026-01-15T08:00:00+00:00", 120)
        bad = CliRunner().invoke(app, ["replay", str(csv), "--timezone", "Berlin"])
        assert bad.exit_code != 0 and "unknown time zone" in " ".join(bad.output.replace("│", " ").split())
    finally:
        with psycopg.connect(embedded_pg, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
