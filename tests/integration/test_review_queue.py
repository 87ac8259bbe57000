"""The human review queue on real PostgreSQL: queue, list, show, decide, and the CLI over it."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from typer.testing import CliRunner

from smart_maintenance.cli.review import review_app
from smart_maintenance.connectors.postgres.loop import LoopWriter
from smart_maintenance.connectors.postgres.store import LoopStore, ReviewClosedError, UnknownReviewError
from smart_maintenance.operators.controls import ControlError, ReviewDecision
from smart_maintenance.operators.records import Anomaly

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 5, 8, tzinfo=timezone.utc)


def anomaly(anomaly_id: str, asset: str = "pump-01", minutes: int = 0, severity: int = 3) -> Anomaly:
    start = T0 + timedelta(minutes=minutes)
    return Anomaly(anomaly_id, asset, start, start + timedelta(minutes=5), 0.71, "needs_review", 0.55, severity,
                   ("single detector", "not persistent"), (("vibration", 0.8), ("temp", 0.2)),
                   {"baseline": 0.7, "iforest": 0.4}, (), (("vibration.rms", 0.6),))


@pytest.fixture
def queued(pg_dsn: str, pg_schema: str) -> LoopStore:
    with LoopWriter(pg_dsn, pg_schema) as w:
        assert w.queue_reviews([anomaly("a1"), anomaly("a2", minutes=10, severity=5),
                                anomaly("b1", asset="fan-02", minutes=5)]) == 3
    with LoopStore(pg_dsn, pg_schema) as store:
        yield store


def test_the_queue_lists_most_severe_then_oldest_and_filters(queued: LoopStore) -> None:
    assert [r["review_id"] for r in queued.list_reviews()] == ["a2", "a1", "b1"]
    assert [r["review_id"] for r in queued.list_reviews(asset_id="fan-02")] == ["b1"]
    assert [r["review_id"] for r in queued.list_reviews(limit=1)] == ["a2"]
    first = queued.list_reviews()[1]
    assert first["reasons"] == ["single detector", "not persistent"]
    assert first["window_end"] == T0 + timedelta(minutes=5)
    assert queued.list_reviews(status="approved") == []
    with pytest.raises(ValueError, match="status must be one of"):
        queued.list_reviews(status="nope")


def test_decisions_change_the_queue_and_are_kept_with_the_anomaly(queued: LoopStore, pg_dsn: str,
                                                                  pg_schema: str) -> None:
    d = queued.decide("a1", "reject", note="pump was being cleaned", decided_by="ana")
    at_ms = int((T0 + timedelta(minutes=5)).timestamp() * 1000)
    assert (d.decision, d.asset_id, d.at_ms) == ("reject", "pump-01", at_ms)
    assert d.anomaly["contributions"][0] == {"sensor": "vibration", "share": 0.8}
    deferred = queued.decide("b1", "DEFER", note="ask the night shift")
    assert deferred.decision == "defer"
    assert [r["review_id"] for r in queued.list_reviews()] == ["a2"]
    assert [r["review_id"] for r in queued.list_reviews(status="open")] == ["a2", "b1"]  # defer stays reviewable
    assert [r["review_id"] for r in queued.list_reviews(status="rejected")] == ["a1"]
    shown = queued.get_review("a1")
    assert (shown["status"], shown["decided_by"], shown["note"]) == ("rejected", "ana", "pump was being cleaned")
    assert [x["decision"] for x in shown["decisions"]] == ["reject"]
    assert shown["decisions"][0]["control_id"] == d.control_id
    # re-queueing the same anomaly (a replay) never resets the decision
    with LoopWriter(pg_dsn, pg_schema) as w:
        assert w.queue_reviews([anomaly("a1")]) == 0
    assert queued.get_review("a1")["status"] == "rejected"
    # what the flow reads back is the decision that was made, with the same control id
    back = [c for kind, _, c in queued.controls_since(0, 0) if kind == "decision"]
    assert back == [d, deferred] and [c.control_id for c in back] == [d.control_id, deferred.control_id]
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute(f"SELECT window_end, anomaly->>'anomaly_id' FROM {pg_schema}.review_decisions "
                            "ORDER BY seq").fetchall()
    assert rows == [(T0 + timedelta(minutes=5), "a1"), (T0 + timedelta(minutes=10), "b1")]


def test_deciding_is_checked(queued: LoopStore) -> None:
    with pytest.raises(UnknownReviewError, match="no review 'zz'"):
        queued.decide("zz", "approve")
    with pytest.raises(ControlError, match="decision must be one of"):
        queued.decide("a1", "ignore")
    queued.decide("a1", "approve", decided_by="ana")
    with pytest.raises(ReviewClosedError, match="already approved by ana"):
        queued.decide("a1", "reject")
    again = queued.decide("a1", "reject", note="changed my mind", force=True,
                          now=datetime.now(timezone.utc) + timedelta(seconds=1))
    assert isinstance(again, ReviewDecision) and queued.get_review("a1")["status"] == "rejected"
    assert [x["decision"] for x in queued.get_review("a1")["decisions"]] == ["approve", "reject"]
    assert queued.get_review("nope") is None


@pytest.fixture
def cli_env(queued: LoopStore, pg_dsn: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch, tmp_path) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SMART_MAINTENANCE__POSTGRES__DSN", pg_dsn)
    monkeypatch.setenv("SMART_MAINTENANCE__POSTGRES__SCHEMA_NAME", pg_schema)
    return CliRunner()


def test_the_review_commands(cli_env: CliRunner, queued: LoopStore) -> None:
    listed = cli_env.invoke(review_app, ["list"])
    assert listed.exit_code == 0, listed.output
    assert all(i in listed.output for i in ("a1", "a2", "b1", "pump-01", "fan-02"))
    as_json = cli_env.invoke(review_app, ["list", "--asset", "fan-02", "--json"])
    assert [json.loads(line)["review_id"] for line in as_json.stdout.splitlines()] == ["b1"]
    shown = cli_env.invoke(review_app, ["show", "a1"])
    assert shown.exit_code == 0 and "vibration 80%" in shown.output and "single detector" in shown.output
    approved = cli_env.invoke(review_app, ["approve", "a1", "--note", "bearing noise, real", "--by", "ana"])
    assert approved.exit_code == 0, approved.output
    assert "approved" in approved.output
    got = queued.get_review("a1")
    assert (got["status"], got["note"], got["decided_by"]) == ("approved", "bearing noise, real", "ana")
    assert "approve" in cli_env.invoke(review_app, ["show", "a1"]).output
    twice = cli_env.invoke(review_app, ["reject", "a1"])
    assert twice.exit_code == 2 and "already approved" in twice.output
    deferred = cli_env.invoke(review_app, ["defer", "b1", "-n", "later"])
    assert deferred.exit_code == 0 and "deferred" in deferred.output
    assert "b1" in cli_env.invoke(review_app, ["list", "--status", "deferred"]).output


def test_unknown_review_ids_are_usage_errors(cli_env: CliRunner) -> None:
    for args in (["show", "nope"], ["approve", "nope", "--note", "x"], ["reject", "nope"], ["defer", "nope"]):
        result = cli_env.invoke(review_app, args)
        assert result.exit_code == 2, (args, result.output)
        assert "no review 'nope'" in result.output
    bad_status = cli_env.invoke(review_app, ["list", "--status", "maybe"])
    assert bad_status.exit_code == 2 and "status must be one of" in bad_status.output


def test_an_unreachable_database_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SMART_MAINTENANCE__POSTGRES__DSN", "postgresql://nobody:secret@127.0.0.1:1/none")
    result = CliRunner().invoke(review_app, ["list"])
    assert result.exit_code == 1 and "does not answer" in result.output and "secret" not in result.output
