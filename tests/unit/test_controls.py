"""Review decisions and maintenance records from outside: what parses, what is refused and why."""

from __future__ import annotations

import json
import pickle
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from smart_maintenance.cli.maintenance import read_records
from smart_maintenance.operators.control_auth import sign
from smart_maintenance.operators.controls import ControlError, MaintenanceRecord, ReviewDecision
from smart_maintenance.operators.records import Invalid
from smart_maintenance.sources.controls import parse_maintenance_message

WHEN = "2026-01-05T10:00:00Z"
WHEN_MS = 1_767_607_200_000


def decision(**fields: object) -> dict:
    return {"review_id": "a1", "asset_id": "pump-01", "decision": "approve", "window_end": WHEN} | fields


def test_a_decision_is_trimmed_and_case_insensitive() -> None:
    d = ReviewDecision.from_dict(decision(decision="  Reject ", review_id=" a1 ", note="  cleaning  "))
    assert (d.decision, d.review_id, d.note, d.at_ms) == ("reject", "a1", "cleaning", WHEN_MS)


@pytest.mark.parametrize("fields, reason", [
    ({"decision": "maybe"}, "decision must be one of approve, reject, defer"),
    ({"decision": ""}, "decision is required"),
    ({"review_id": None}, "review_id is required"),
    ({"asset_id": "   "}, "asset_id is required"),
    ({"asset_id": 7}, "asset_id must be a string, got int"),
    ({"window_end": "2026-01-05T10:00:00"}, "window_end needs a time zone"),
    ({"window_end": "yesterday"}, "not an RFC 3339 time"),
    ({"window_end": True}, "window_end is missing or not a time"),
    ({"window_end": None}, "window_end is missing or not a time"),
    ({"anomaly": ["not", "an", "object"]}, "anomaly must be an object"),
    ({"decided_by": 3}, "decided_by must be a string"),
])
def test_a_bad_decision_says_why(fields: dict, reason: str) -> None:
    with pytest.raises(ControlError, match=reason):
        ReviewDecision.from_dict(decision(**fields))


def test_a_decision_takes_its_time_from_the_anomaly_or_epoch_ms() -> None:
    doc = {k: v for k, v in decision(anomaly={"window_end": WHEN}).items() if k != "window_end"}
    from_anomaly = ReviewDecision.from_dict(doc)
    assert from_anomaly.at_ms == WHEN_MS
    assert ReviewDecision.from_dict(decision(window_end=WHEN_MS)).at_ms == WHEN_MS
    offset = ReviewDecision.from_dict(decision(window_end="2026-01-05T11:00:00+01:00"))
    assert offset.at_ms == WHEN_MS


def test_a_decision_round_trips_and_its_id_depends_on_when_it_was_made() -> None:
    d = ReviewDecision.from_dict(decision(decided_at="2026-01-06T08:00:00.000Z", anomaly={"score": 0.7}))
    again = ReviewDecision.from_dict(d.to_dict())
    assert again == d and again.control_id == d.control_id
    later = ReviewDecision.from_dict(decision(decided_at="2026-01-06T09:00:00.000Z"))
    assert later.control_id != d.control_id
    assert pickle.loads(pickle.dumps(d)) == d


def test_a_maintenance_record_has_defaults_and_a_stable_derived_id() -> None:
    m = MaintenanceRecord.from_dict({"asset_id": "pump-01", "completed_at": WHEN}, source="cli")
    assert (m.outcome, m.source, m.parts, m.at_ms, m.rebaseline) == ("repaired", "cli", (), WHEN_MS, True)
    assert m.completed_at == datetime(2026, 1, 5, 10, tzinfo=timezone.utc)
    same = MaintenanceRecord.from_dict({"asset_id": "pump-01", "completed_at": WHEN_MS, "outcome": "REPAIRED"})
    assert same.maintenance_id == m.maintenance_id  # the same work logged twice is one record
    other = MaintenanceRecord.from_dict({"asset_id": "pump-01", "completed_at": WHEN, "work_order_id": "w1"})
    assert other.maintenance_id != m.maintenance_id
    named = MaintenanceRecord.from_dict({"asset_id": "pump-01", "completed_at": WHEN, "maintenance_id": "M-17"})
    assert named.maintenance_id == "M-17"


def test_a_maintenance_record_round_trips_and_pickles() -> None:
    m = MaintenanceRecord.from_dict({
        "asset_id": "pump-01", "completed_at": datetime(2026, 1, 5, 10, tzinfo=timezone.utc),
        "outcome": "replaced", "parts": "bearing 6204, seal ,", "technician_id": "t1", "notes": "noisy"})
    assert m.parts == ("bearing 6204", "seal")
    back = MaintenanceRecord.from_dict(m.to_dict(), source="other")
    assert back.source == "other"  # the caller's verified origin, never the record's own claim
    assert back == replace(m, source="other")
    assert pickle.loads(pickle.dumps(m)) == m


@pytest.mark.parametrize("outcome, rebaseline", [
    ("repaired", True), ("replaced", True), ("adjusted", True), ("no_fault_found", False), ("cancelled", False)])
def test_only_work_that_changed_the_machine_rebaselines(outcome: str, rebaseline: bool) -> None:
    m = MaintenanceRecord.from_dict({"asset_id": "p", "completed_at": WHEN, "outcome": outcome})
    assert m.rebaseline is rebaseline


@pytest.mark.parametrize("doc, reason", [
    ([{"asset_id": "p"}], "must be an object, got list"),
    ({"completed_at": WHEN}, "asset_id is required"),
    ({"asset_id": "p"}, "completed_at is missing"),
    ({"asset_id": "p", "completed_at": "2026-01-05 10:00"}, "needs a time zone"),
    ({"asset_id": "p", "completed_at": datetime(2026, 1, 5)}, "needs a time zone"),
    ({"asset_id": "p", "completed_at": WHEN, "outcome": "fixed"}, "outcome must be one of repaired"),
    ({"asset_id": "p", "completed_at": WHEN, "parts": ["a", 3]}, "parts must be a list of strings"),
    ({"asset_id": "p", "completed_at": WHEN, "parts": {"a": 1}}, "parts must be a list of strings"),
    ({"asset_id": "p", "completed_at": WHEN, "notes": ["x"]}, "notes must be a string"),
])
def test_a_bad_maintenance_record_says_why(doc: object, reason: str) -> None:
    with pytest.raises(ControlError, match=reason):
        MaintenanceRecord.from_dict(doc)  # type: ignore[arg-type]


def test_a_maintenance_time_offset_is_honoured() -> None:
    m = MaintenanceRecord.from_dict({"asset_id": "p", "completed_at": "2026-01-05T05:00:00-05:00"})
    assert m.completed_at - datetime(2026, 1, 5, 10, tzinfo=timezone.utc) == timedelta(0)


def test_kafka_messages_become_records_or_dead_letters() -> None:
    good = parse_maintenance_message(b'{"asset_id": "p1", "completed_at": "2026-01-05T10:00:00Z"}', "kafka:m/0/1")
    assert isinstance(good, MaintenanceRecord) and good.source == "kafka:maintenance"
    not_json = parse_maintenance_message(b"\xff{oops", "kafka:m/0/2")
    assert isinstance(not_json, Invalid)
    assert (not_json.reason, not_json.origin, not_json.raw) == ("bad_maintenance", "kafka:m/0/2", "\ufffd{oops")
    assert not_json.detail.startswith("not JSON")
    tombstone = parse_maintenance_message(None, "kafka:m/0/3")
    assert isinstance(tombstone, Invalid) and tombstone.raw == ""
    wrong = parse_maintenance_message(b'{"asset_id": "p1", "completed_at": "soon"}', "kafka:m/0/4")
    assert isinstance(wrong, Invalid) and "not an RFC 3339 time" in wrong.detail


def test_record_files_are_a_json_array_one_object_or_json_lines(tmp_path: Path) -> None:
    array = tmp_path / "a.json"
    array.write_text('[{"asset_id": "p1"}, 5]')
    assert read_records(array) == [("[0]", {"asset_id": "p1"}), ("[1]", 5)]
    one = tmp_path / "o.json"
    one.write_text('{"asset_id": "p1"}\n')
    assert read_records(one) == [("[0]", {"asset_id": "p1"})]
    lines = tmp_path / "l.jsonl"
    lines.write_text('{"asset_id": "p1"}\n\n{"asset_id": \n{"asset_id": "p3"}\n')
    items = read_records(lines)
    assert [label for label, _ in items] == ["line 1", "line 3", "line 4"]
    assert isinstance(items[1][1], ValueError) and items[2][1] == {"asset_id": "p3"}


class _Msg:
    """What `Consumer.consume` returns, as far as the control source looks at it."""

    def __init__(self, error: object = None, partition: int = 0) -> None:
        self._error, self._partition = error, partition

    def error(self) -> object:
        return self._error

    def partition(self) -> int:
        return self._partition


def test_only_fatal_kafka_errors_stop_the_maintenance_topic(caplog: pytest.LogCaptureFixture) -> None:
    from confluent_kafka import KafkaError

    from smart_maintenance.sources.controls import ControlSourceError, _classify

    assert _classify(_Msg(), "maintenance", tail=True) == "message"
    assert _classify(_Msg(KafkaError(KafkaError._PARTITION_EOF)), "maintenance", tail=False) == "eof"
    for transient in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._TIMED_OUT):
        for tail in (True, False):
            assert _classify(_Msg(KafkaError(transient)), "maintenance", tail=tail) == "skip"
    assert "_ALL_BROKERS_DOWN" in caplog.text and "reading goes on" in caplog.text
    # a topic that went away: a live flow waits for it, a backfill cannot reach its end
    missing = _Msg(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART), partition=1)
    assert _classify(missing, "maintenance", tail=True) == "skip"
    with pytest.raises(ControlSourceError, match="maintenance/1: UNKNOWN_TOPIC_OR_PART"):
        _classify(missing, "maintenance", tail=False)
    with pytest.raises(ControlSourceError, match="_FATAL: producer fenced"):
        _classify(_Msg(KafkaError(KafkaError._FATAL, "producer fenced", fatal=True)), "maintenance", tail=True)


# -- authenticated controls (issue 15, item 4) ----------------------------------------------------------------

KEYS = {"ops-2026": b"k" * 32, "old": b"o" * 32}
GOOD = b'{"asset_id": "p1", "completed_at": "2026-01-05T10:00:00Z", "source": "cli"}'


def signed(value: bytes, key_id: str = "ops-2026", key: bytes | None = None) -> list[tuple[str, bytes]]:
    return [("sm-key-id", key_id.encode()), ("sm-signature", sign(key or KEYS[key_id], value).encode())]


def test_a_signed_message_is_accepted_and_its_origin_is_the_verified_key_not_the_payload() -> None:
    m = parse_maintenance_message(GOOD, "kafka:m/0/1", topic="m", keys=KEYS, headers=signed(GOOD))
    assert isinstance(m, MaintenanceRecord)
    assert m.source == "kafka:m key=ops-2026"  # the payload's "source": "cli" never reaches the audit trail
    old = parse_maintenance_message(GOOD, "kafka:m/0/2", topic="m", keys=KEYS, headers=signed(GOOD, "old"))
    assert isinstance(old, MaintenanceRecord) and old.source == "kafka:m key=old"  # keys rotate


@pytest.mark.parametrize("headers, reason", [
    (None, "unsigned_control"),
    ([("sm-key-id", b"ops-2026")], "unsigned_control"),
    ([("sm-signature", sign(KEYS["ops-2026"], GOOD).encode())], "bad_signature"),
    (signed(GOOD, "ops-2026", key=b"x" * 32), "bad_signature"),  # signed with a key we do not hold
    (signed(GOOD.replace(b"p1", b"p2")), "bad_signature"),  # signed for another payload
    ([("sm-key-id", b"ops-2026"), ("sm-signature", sign(KEYS["ops-2026"], GOOD)[7:].encode())], "bad_signature"),
    ([("sm-key-id", b"nobody"), ("sm-signature", b"sha256=00")], "unknown_key"),
    ([("sm-key-id", b"ops-2026"), ("sm-signature", b"\xff" * 5000)], "unsigned_control"),
])
def test_unsigned_or_badly_signed_messages_are_dead_letters_with_a_reason(headers: list | None, reason: str) -> None:
    bad = parse_maintenance_message(GOOD, "kafka:m/0/3", topic="m", keys=KEYS, headers=headers)
    assert isinstance(bad, Invalid) and (bad.reason, bad.origin) == (reason, "kafka:m/0/3")


@pytest.mark.parametrize("completed_at", [1e300, -1e300, 4_102_444_800_000, -1, "9999-12-31T23:59:59Z",
                                          "1900-01-01T00:00:00Z"])
def test_every_time_in_a_control_is_range_checked(completed_at: object) -> None:
    with pytest.raises(ControlError, match="out of range"):
        MaintenanceRecord.from_dict({"asset_id": "p", "completed_at": completed_at})
    with pytest.raises(ControlError, match="out of range"):
        ReviewDecision.from_dict(decision(window_end=completed_at))
    value = json.dumps({"asset_id": "p", "completed_at": completed_at}).encode()
    dead = parse_maintenance_message(value, "kafka:m/0/4", keys=KEYS, headers=signed(value))
    assert isinstance(dead, Invalid) and dead.reason == "bad_maintenance" and "out of range" in dead.detail


def test_a_deeply_nested_time_is_a_dead_letter_not_a_recursion_error() -> None:
    value = ('{"asset_id": "p", "completed_at": ' + "[" * 1000 + "]" * 1000 + "}").encode()
    dead = parse_maintenance_message(value, "kafka:m/0/5", keys=KEYS, headers=signed(value))
    assert isinstance(dead, Invalid) and dead.reason == "bad_maintenance"
    assert dead.detail == "completed_at is missing or not a time: a JSON list of 1 item(s)"
    with pytest.raises(ControlError, match="not a time: a JSON list"):
        MaintenanceRecord.from_dict({"asset_id": "p", "completed_at": _nested(5000)})


def _nested(depth: int) -> list:
    v: list = []
    for _ in range(depth):
        v = [v]
    return v


def test_a_maintenance_topic_needs_keys_and_keys_are_never_shown() -> None:
    from smart_maintenance.config.settings import KafkaSettings, Settings
    from smart_maintenance.sources.controls import ControlSource

    assert Settings().kafka.maintenance_topic is None  # off unless configured
    with pytest.raises(ValueError, match="maintenance_topic needs kafka.maintenance_keys"):
        KafkaSettings(maintenance_topic="maintenance")
    with pytest.raises(ValueError, match="at least 32 bytes"):
        KafkaSettings(maintenance_keys={"k": "short"})
    with pytest.raises(ValueError, match="key id"):
        KafkaSettings(maintenance_keys={"a b": "x" * 32})
    ok = Settings(kafka={"maintenance_topic": "maintenance", "maintenance_keys": {"k": "s3cret" * 8}})
    assert "s3cret" not in repr(ok) + str(ok)
    with pytest.raises(ValueError, match="needs kafka.maintenance_keys"):
        ControlSource(Settings(), live=True, kafka_topic="maintenance")
