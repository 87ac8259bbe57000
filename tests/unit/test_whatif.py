"""The what-if's pure parts: labels from the plant's word, alarms scored against them, candidates parsed."""

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from smart_maintenance.operators.whatif import (
    Episode,
    Label,
    episodes_of,
    gained_lost,
    labels_from,
    parse_candidate,
    score,
)

T0 = datetime(2026, 1, 5, tzinfo=timezone.utc)
H = 3_600_000


def ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def test_labels_from_reviews_and_maintenance():
    reviews = [
        {"asset_id": "p1", "status": "approved", "window_start": T0, "first_window_end": None,
         "window_end": T0 + timedelta(hours=1)},
        {"asset_id": "p1", "status": "rejected", "window_start": T0 + timedelta(hours=5), "first_window_end": None,
         "window_end": T0 + timedelta(hours=6)},
        {"asset_id": "p1", "status": "pending", "window_start": T0, "first_window_end": None, "window_end": T0},
    ]
    log = [
        {"asset_id": "p2", "completed_at": T0 + timedelta(days=3), "outcome": "repaired"},
        {"asset_id": "p2", "completed_at": T0 + timedelta(days=4), "outcome": "no_fault_found",
         "alarm_opened_at": T0 + timedelta(days=3, hours=20), "alarm_cleared_at": None},
        {"asset_id": "p3", "completed_at": T0 + timedelta(days=4), "outcome": "no_fault_found"},
        {"asset_id": "p3", "completed_at": T0 + timedelta(days=5), "outcome": "cancelled"},
    ]
    got = labels_from(reviews, log, lookback_ms=24 * H)
    assert Label("p1", ms(T0), ms(T0) + H, True, "review") in got
    assert Label("p1", ms(T0) + 5 * H, ms(T0) + 6 * H, False, "review") in got
    assert Label("p2", ms(T0) + 48 * H, ms(T0) + 72 * H, True, "maintenance") in got  # the lookback before a repair
    assert Label("p2", ms(T0) + 92 * H, ms(T0) + 96 * H, False, "maintenance") in got  # the alarm behind the order
    assert Label("p3", ms(T0) + 72 * H, ms(T0) + 96 * H, False, "maintenance") in got  # no order: the lookback
    assert len(got) == 5  # pending reviews and cancellations say nothing


def test_score_counts_true_false_unlabelled_and_faults_found():
    labels = [Label("p1", 0, 100, True, "review"), Label("p1", 1000, 1100, True, "maintenance"),
              Label("p1", 500, 600, False, "review")]
    eps = [Episode("a", "p1", "machine", 90, 95), Episode("a2", "p1", "machine", 99, 300),  # both on one fault
           Episode("b", "p1", "machine", 550, 650), Episode("c", "p2", "machine", 0, 10),
           Episode("d", "p1", "sensor_fault", 1000, 1001)]
    s = score(eps, labels, end_ms=2000)
    assert (s.machine, s.sensor_fault, s.true, s.false, s.unlabelled) == (4, 1, 2, 1, 1)
    assert (s.faults, s.faults_found, s.precision, s.recall) == (2, 1, 2 / 3, 0.5)  # sensor faults don't count
    still_open = score([Episode("o", "p1", "machine", 1050, None)], labels, end_ms=2000)
    assert still_open.true == 1  # open to the end of the history: overlaps the repair's lookback
    assert score([], labels, 2000).precision is None


def test_gained_and_lost_match_by_asset_kind_and_overlap():
    base = [Episode("a", "p1", "machine", 0, 100), Episode("b", "p2", "machine", 0, 100)]
    cand = [Episode("x", "p1", "machine", 50, 200), Episode("y", "p2", "sensor_fault", 0, 100),
            Episode("z", "p3", "machine", 0, 1)]
    assert gained_lost(base, cand, end_ms=1000) == (2, 1)  # y (other kind) and z gained; b lost
    assert gained_lost(base, base, end_ms=1000) == (0, 0)


def test_alarm_states_fold_into_episodes():
    def state(aid, status, cleared=None, sensors=("vibration",)):
        return SimpleNamespace(alarm_id=aid, asset_id="p1", kind="machine", status=status, opened_at=T0,
                               cleared_at=cleared, sensors=sensors)

    eps = episodes_of([state("a", "open"), state("a", "open", sensors=("temperature",)),
                       state("a", "cleared", T0 + timedelta(hours=2)), state("b", "open", sensors=())])
    assert eps == [Episode("a", "p1", "machine", ms(T0), ms(T0) + 2 * H, frozenset({"vibration", "temperature"})),
                   Episode("b", "p1", "machine", ms(T0), None)]


@pytest.mark.parametrize("text", ["no colon here", "bad name!: validation.open_threshold=1", "x: nokey",
                                  "x: validation.open_threshold", "x:", "x: postgres.dsn=a", "x: source.y=1"])
def test_bad_candidates_are_refused(text):
    with pytest.raises(ValueError):
        parse_candidate(text)


def test_candidate_values_parse_as_json_else_text():
    c = parse_candidate("w: detection.warmup=12h, detection.detectors=[\"iforest\"] validation.persistence_k=2")
    assert c.overrides == {"detection": {"warmup": "12h", "detectors": ["iforest"]}, "validation": {"persistence_k": 2}}
    assert c.describe() == 'detection.warmup="12h" detection.detectors=["iforest"] validation.persistence_k=2'
