import pickle

from smart_maintenance.operators.judge.alarms import AlarmConfig, track_alarms
from smart_maintenance.operators.judge.validation import Verdict
from smart_maintenance.operators.records import Anomaly, ms_to_dt


def _v(i, status, score, severity=3):
    a = None
    if status != "normal":
        a = Anomaly(f"an{i}", "p1", ms_to_dt(i * 60_000), ms_to_dt((i + 1) * 60_000), score, status, 0.9, severity,
                    ("r",), (("temp", 1.0),))
    return Verdict(i * 60_000, (i + 1) * 60_000, status, score, True, False, a)


def test_alarm_opens_escalates_and_clears_with_hysteresis():
    verdicts = [_v(0, "normal", 0.1), _v(1, "confirmed", 0.8), _v(2, "confirmed", 0.95, 5), _v(3, "normal", 0.5),
                _v(4, "normal", 0.3), _v(5, "normal", 0.45), _v(6, "normal", 0.2), _v(7, "normal", 0.2),
                _v(8, "normal", 0.1)]
    state, alarms = track_alarms(None, "p1", verdicts, AlarmConfig(clear_threshold=0.4, clear_windows=3))
    assert [(a.status, a.severity) for a in alarms] == [("open", 3), ("open", 5), ("cleared", 5)]
    assert len({a.alarm_id for a in alarms}) == 1
    assert alarms[-1].cleared_at == ms_to_dt(9 * 60_000)  # end of window 8: 0.45 at window 5 reset the count
    assert alarms[-1].anomaly_count == 2 and state.open == {}


def test_alarm_id_is_deterministic_and_state_pickles():
    s1, a1 = track_alarms(None, "p1", [_v(4, "confirmed", 0.9)], AlarmConfig())
    s2, a2 = track_alarms(None, "p1", [_v(4, "confirmed", 0.9)], AlarmConfig())
    assert a1[0].alarm_id == a2[0].alarm_id
    assert pickle.loads(pickle.dumps(s1)) == s1


def test_only_uncertain_windows_outside_an_open_machine_alarm_go_to_people():
    from smart_maintenance.operators.judge.alarms import reviews_needed

    cfg = AlarmConfig(clear_threshold=0.4, clear_windows=2)
    verdicts = [_v(0, "needs_review", 0.6), _v(1, "confirmed", 0.9), _v(2, "needs_review", 0.6),
                _v(3, "normal", 0.1), _v(4, "normal", 0.1), _v(5, "needs_review", 0.6)]
    uncertain = [v.anomaly for v in verdicts if v.status == "needs_review"]
    state, changes = track_alarms(None, "p1", verdicts, cfg)
    assert [a.status for a in changes] == ["open", "cleared"]
    assert [a.anomaly_id for a in reviews_needed(None, changes, uncertain)] == ["an0", "an5"]
    # the same windows one at a time (a live flow's batches) ask the same
    state, asked = None, []
    for v in verdicts:
        before = state
        state, changes = track_alarms(state, "p1", [v], cfg)
        asked += reviews_needed(before, changes, [v.anomaly] if v.status == "needs_review" else [])
    assert [a.anomaly_id for a in asked] == ["an0", "an5"]
