"""Incident records, the text that gets embedded, ranking, settings, and the benchmark's labelled set."""

from __future__ import annotations

import pickle
from dataclasses import replace
from datetime import datetime, timezone

import pytest
from pydantic import ValidationError

from smart_maintenance.config.incident_settings import IncidentSettings
from smart_maintenance.config.settings import Settings
from smart_maintenance.operators.controls import MaintenanceRecord
from smart_maintenance.operators.incidents import (
    Candidate,
    Incident,
    closed_ms,
    document_text,
    from_dict,
    from_metadata,
    incident_from_closure,
    indexable,
    plain_reason,
    query_text,
    rank,
    to_metadata,
)
from smart_maintenance.operators.plan.work_orders import WorkOrder

T = datetime(2026, 1, 5, 10, tzinfo=timezone.utc)


def _wo(**kw) -> WorkOrder:
    base = dict(work_order_id="wo1", asset_id="pump-01", alarm_id="al1", kind="repair", status="done", priority=3,
                required_skills=("pumps",), duration_min=240, created_at=T, due_at=T, updated_at=T,
                sensors=("vibration", "temperature"), reason="persistent (3 of last 5); detectors: iforest,limits",
                site="north", asset_type="pump")
    return WorkOrder(**(base | kw))


def _record(**kw) -> MaintenanceRecord:
    d = {"asset_id": "pump-01", "completed_at": "2026-01-06T08:30:00Z", "work_order_id": "wo1",
         "outcome": "replaced", "action": "replaced DE bearing", "notes": "outer race pitted",
         "parts": ["6310-2Z"], "technician_id": "tech-01"}
    return MaintenanceRecord.from_dict(d | kw)


def _row(**kw) -> dict:
    d = {"asset_id": "pump-07", "asset_type": "pump", "sensors": ["vibration"], "symptoms": "DE bearing growling",
         "resolution": "replaced bearing", "outcome": "replaced", "closed_at": "2025-03-01T10:00:00Z"}
    return d | kw


def test_closure_builds_a_deterministic_incident():
    a = incident_from_closure(_wo(), _record())
    b = incident_from_closure(_wo(), _record())
    assert a == b and len(a.incident_id) == 16
    other = incident_from_closure(_wo(), _record(completed_at="2026-01-07T08:30:00Z"))
    assert other.incident_id != a.incident_id  # another maintenance record: another incident
    assert (a.asset_id, a.asset_type, a.site, a.sensors) == ("pump-01", "pump", "north", ("vibration", "temperature"))
    assert a.symptoms == "abnormal vibration, temperature"  # the detector jargon is gone
    assert a.resolution == "replaced DE bearing; outer race pitted; parts: 6310-2Z"
    assert a.outcome == "replaced" and a.closed_at == "2026-01-06T08:30:00+00:00"
    assert a.opened_at == T.isoformat() and a.work_order_id == "wo1" and a.alarm_id == "al1"


def test_closure_without_notes_says_the_outcome():
    inc = incident_from_closure(_wo(), _record(action="", notes="", parts=[], outcome="no_fault_found"))
    assert inc.resolution == "no fault found"


def test_instrumentation_work_order_reads_as_a_sensor_fault():
    wo = _wo(kind="instrumentation", sensors=("oil_temp",), reason="oil_temp: stuck", asset_type="compressor")
    assert query_text(wo) == "compressor: sensor fault on oil temp: oil temp stuck"
    assert incident_from_closure(wo, _record()).symptoms == "sensor fault on oil temp: oil temp stuck"


def test_query_text_without_asset_type():
    assert query_text(_wo(asset_type="", sensors=("flow",), reason="")) == "abnormal flow"


def test_plain_reason_keeps_what_describes_the_machine():
    assert plain_reason("persistent (4 of last 5); uncertain: fused score only") == ""
    assert plain_reason("not_persistent (1 of last 5); vibration: out_of_range") == "vibration out of range"


def test_cancelled_work_is_not_indexed():
    assert not indexable(_record(outcome="cancelled"))
    assert indexable(_record(outcome="no_fault_found"))


def test_document_text_is_compact_and_names_mode_fix_and_outcome():
    inc = from_dict(_row(failure_mode="bearing_wear", symptoms="DE brg growling.", resolution="repl brg 6310."))
    assert document_text(inc) == ("pump bearing wear: DE brg growling. Sensors: vibration. Fix: repl brg 6310. "
                                  "Outcome: replaced.")


def test_metadata_holds_only_scalars_and_round_trips():
    inc = incident_from_closure(_wo(), _record())
    meta = to_metadata(inc)
    assert all(isinstance(v, (str, int, float)) for v in meta.values())
    assert meta["sensors"] == "vibration,temperature" and meta["asset_type"] == "pump"
    assert meta["closed_ms"] == 1767688200000 and closed_ms(replace(inc, closed_at="")) == 0
    assert from_metadata(inc.incident_id, meta) == inc
    assert from_metadata("x", to_metadata(replace(inc, incident_id="x", sensors=()))).sensors == ()


def test_dict_round_trip_and_pickle():
    inc = incident_from_closure(_wo(), _record())
    assert from_dict(inc.to_dict()) == inc
    assert pickle.loads(pickle.dumps(inc)) == inc


def test_from_dict_defaults_and_derived_id():
    a = from_dict(_row(sensors="vibration, temperature", outcome=None))
    assert a.sensors == ("vibration", "temperature") and a.outcome == "repaired"
    assert a.incident_id == from_dict(_row(sensors="vibration, temperature")).incident_id
    assert a.incident_id != from_dict(_row(symptoms="other")).incident_id
    assert from_dict(_row(incident_id="cmms-1")).incident_id == "cmms-1"


@pytest.mark.parametrize(("row", "message"), [
    ("not a dict", "must be an object"),
    (_row(asset_id=None), "asset_id is required"),
    (_row(symptoms="  "), "symptoms is required"),
    (_row(resolution=3), "resolution must be a string"),
    (_row(outcome="fixed"), "outcome must be one of"),
    (_row(closed_at="yesterday"), "not an RFC 3339 time"),
    (_row(closed_at="2025-03-01T10:00:00"), "needs a time zone"),
    (_row(opened_at="03/01/2025"), "opened_at is not an RFC 3339 time"),
    (_row(sensors=[1, 2]), "sensors must be a list of strings"),
    (_row(sensors={"a": 1}), "sensors must be a list of strings"),
])
def test_from_dict_rejects_bad_records_with_the_reason(row, message):
    with pytest.raises(ValueError, match=message):
        from_dict(row)


def _cand(i: str, sim: float, sensors=(), vec=(1.0, 0.0), group=0) -> Candidate:
    return Candidate(i, sim, tuple(sensors), vec, group)


def test_rank_sensor_bonus_lifts_an_incident_with_the_same_sensors():
    cands = [_cand("a", 0.80, ("flow",)), _cand("b", 0.75, ("vibration", "temperature"))]
    assert [c.incident_id for c, _ in rank(cands, 2, diversity=0.0)] == ["a", "b"]
    ranked = rank(cands, 2, sensors=("vibration", "temperature"), sensor_bonus=0.15, diversity=0.0)
    assert [c.incident_id for c, _ in ranked] == ["b", "a"]
    assert ranked[0][1] == pytest.approx(0.90)


def test_rank_diversity_skips_near_copies_and_keeps_filter_matches_first():
    cands = [_cand("a", 0.9), _cand("b", 0.89), _cand("c", 0.6, vec=(0.0, 1.0)), _cand("z", 0.99, group=1)]
    assert [c.incident_id for c, _ in rank(cands, 3, diversity=0.0)] == ["a", "b", "c"]
    assert [c.incident_id for c, _ in rank(cands, 3, diversity=0.3)] == ["a", "c", "b"]
    assert [c.incident_id for c, _ in rank(cands, 4, diversity=0.3)][-1] == "z"  # fill-ups come last
    assert rank([], 3) == []
    with pytest.raises(ValueError):
        rank(cands, 3, diversity=1.0)


def test_settings_defaults_and_validation(monkeypatch):
    s = IncidentSettings()
    assert (s.enabled, s.chroma_url, s.collection, s.top_k, s.model_path) == (True, None, "incidents", 3, None)
    with pytest.raises(ValidationError):
        IncidentSettings(top_k=0)
    with pytest.raises(ValidationError):
        IncidentSettings(colour="blue")
    with pytest.raises(ValidationError):
        IncidentSettings(chroma_url="chroma:8000")
    with pytest.raises(ValidationError):
        IncidentSettings(collection="x")
    assert IncidentSettings(chroma_url=" ").chroma_url is None
    with pytest.raises(ValidationError):
        s.top_k = 5  # frozen
    monkeypatch.setenv("SMART_MAINTENANCE__INCIDENTS__TOP_K", "5")
    monkeypatch.setenv("SMART_MAINTENANCE__INCIDENTS__CHROMA_URL", "http://chroma:8000")
    root = Settings()
    assert root.incidents.top_k == 5 and root.incidents.chroma_url == "http://chroma:8000"


def test_benchmark_set_is_large_deterministic_and_reworded():
    from bench.incident_corpus import build, shared_ngrams

    incidents, queries, case_of = build(7)
    again, queries2, _ = build(7)
    assert incidents == again and queries == queries2
    assert len(incidents) >= 200 and len(queries) >= 100
    assert {i.asset_type for i in incidents} == {"pump", "compressor", "motor", "conveyor"}
    assert all(q.relevant and q.relevant <= q.relevant_mode for q in queries)
    assert shared_ngrams(incidents, queries, 4) == []  # no query repeats 4 words in a row of any incident
    assert len(set(case_of.values())) >= 30
    assert isinstance(incidents[0], Incident)
