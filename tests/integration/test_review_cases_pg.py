"""Review cases on real PostgreSQL: a case grows while keeping its decision, and old queues migrate."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from psycopg.types.json import Jsonb

from smart_maintenance.connectors.postgres import schema
from smart_maintenance.connectors.postgres.loop import LoopWriter
from smart_maintenance.connectors.postgres.store import LoopStore
from smart_maintenance.operators.judge.cases import fold_cases
from smart_maintenance.operators.records import Anomaly

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 5, 8, tzinfo=timezone.utc)


def _a(minutes: int, score: float = 0.7) -> Anomaly:
    start = T0 + timedelta(minutes=minutes)
    return Anomaly(f"an{minutes}", "pump-01", start, start + timedelta(minutes=5), score, "needs_review", 0.5, 3,
                   ("single detector",), (("vibration", 0.8), ("temp", 0.2)))


def test_a_case_grows_in_place_and_keeps_its_decision(pg_dsn: str, pg_schema: str) -> None:
    case, (c1,) = fold_cases(None, "pump-01", [_a(0)])
    case, (c3,) = fold_cases(case, "pump-01", [_a(10, 0.9), _a(20)])
    with LoopWriter(pg_dsn, pg_schema) as w:
        assert w.queue_reviews([c1]) == 1
        assert w.queue_reviews([c3, c1]) == 0  # the same case, grown: no new row
    with LoopStore(pg_dsn, pg_schema) as store:
        (row,) = store.list_reviews()
        assert (row["review_id"], row["window_count"], row["score"]) == (c1.case_id, 3, 0.9)
        assert row["window_start"] == T0 and row["window_end"] == T0 + timedelta(minutes=25)
        assert row["sensors"] == ["vibration", "temp"] and len(row["trend"]) == 3
        d = store.decide(c1.case_id, "reject", note="cleaning", decided_by="ana")
        assert d.anomaly["anomaly_id"] == "an10"  # the peak window's record goes back to the flow
    _, (c4,) = fold_cases(case, "pump-01", [_a(30)])
    with LoopWriter(pg_dsn, pg_schema) as w:
        w.queue_reviews([c4])
        w.queue_reviews([c1])  # a replayed older state never shrinks it
    with LoopStore(pg_dsn, pg_schema) as store:
        got = store.get_review(c1.case_id)
        assert (got["status"], got["window_count"]) == ("rejected", 4)
        assert store.list_reviews() == []


def test_queued_reviews_of_an_old_store_become_one_window_cases(pg_dsn: str, pg_schema: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        with monkeypatch.context() as m:  # the schema as the code before review cases left it
            m.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:7])
            m.setattr(schema, "LATEST_VERSION", 7)
            assert schema.migrate(conn, pg_schema) == [1, 2, 3, 4, 5, 6, 7]
        a = _a(0)
        conn.execute(schema.render(
            "INSERT INTO {s}.reviews (review_id, asset_id, window_start, window_end, score, severity, anomaly) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)", pg_schema),
            [a.anomaly_id, a.asset_id, a.window_start, a.window_end, a.score, a.severity, Jsonb(a.to_dict())])
        assert schema.migrate(conn, pg_schema) == [m.version for m in schema.MIGRATIONS[7:]]  # 8 onwards
    with LoopStore(pg_dsn, pg_schema) as store:
        (row,) = store.list_reviews()
        assert (row["review_id"], row["window_count"], row["first_window_end"]) == ("an0", 1, a.window_end)
        assert row["sensors"] == ["vibration", "temp"] and row["last_anomaly_id"] == "an0"
        assert [p[1] for p in row["trend"]] == [0.7]
        assert store.decide("an0", "approve").review_id == "an0"
