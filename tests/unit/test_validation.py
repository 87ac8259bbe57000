import pickle
from dataclasses import replace

import numpy as np

from smart_maintenance.operators.judge.validation import (
    STRETCH_KEEP,
    ValidationConfig,
    apply_review,
    open_threshold,
    validate,
)
from smart_maintenance.operators.profile import AssetProfile, SensorLimits
from smart_maintenance.operators.records import FeatureBatch, Scored

SENSORS = ("speed", "temp")


def _scored(scores, *, speed=1500.0, temp_std=1.0, count=30, temp_max=60.0, warming=False):
    n = len(scores)
    v = np.zeros((n, 2, 8))
    v[:, 0] = [speed, 5.0, speed - 5, speed + 5, 0.0, speed, speed, count]
    lo, hi = (45.0, temp_max) if temp_std else (50.0, 50.0)  # flat: every reading the same, min == max
    v[:, 1] = [50.0, temp_std, lo, hi, 0.0, 50.0, 50.0, count]
    fb = FeatureBatch("m1", SENSORS, np.arange(n) * 60_000, np.arange(1, n + 1) * 60_000, v)
    s = np.array(scores, float)
    return Scored(fb, s, {"baseline": s, "iforest": s}, tuple((("temp", 1.0),) for _ in range(n)), np.full(n, warming))


PROFILE = AssetProfile(
    "m1", criticality=4, state_sensor="speed", running_min=300.0,
    limits=(("temp", SensorLimits(-20, 150, 40, 60, 95, True)),),
)
CFG = ValidationConfig()


def _statuses(scored, state=None):
    state, verdicts = validate(state, scored, PROFILE, CFG)
    return state, [v.status for v in verdicts]


def test_a_single_glitch_is_rejected_a_persistent_one_confirmed():
    _, st = _statuses(_scored([0.1, 0.9, 0.1, 0.1, 0.1, 0.9, 0.9, 0.9, 0.9]))
    assert st == ["normal", "rejected", "normal", "normal", "normal", "rejected", "rejected", "confirmed", "confirmed"]


def test_uncertain_scores_need_review():
    _, st = _statuses(_scored([0.65] * 4))
    assert st == ["rejected", "rejected", "needs_review", "needs_review"]


def test_a_stopped_asset_is_not_anomalous():
    _, st = _statuses(_scored([0.95] * 4, speed=0.0))
    assert st == ["rejected"] * 4
    state, verdicts = validate(None, _scored([0.95] * 4, speed=0.0), PROFILE, CFG)
    assert verdicts[0].anomaly.reasons == ("asset_stopped",)


def test_stuck_sensor_is_a_sensor_fault():
    state, _ = _statuses(_scored([0.1] * 5))
    _, st = _statuses(_scored([0.9] * 4, temp_std=0.0), state)
    assert st == ["rejected", "rejected", "sensor_fault", "sensor_fault"]


def test_out_of_range_and_dropout_are_sensor_faults():
    state, _ = _statuses(_scored([0.1] * 5))
    state2, verdicts = validate(state, _scored([0.9], temp_max=400.0), PROFILE, CFG)
    assert verdicts[0].status == "sensor_fault" and verdicts[0].anomaly.reasons == ("temp: out_of_range",)
    short = _scored([0.2])
    short.features.values[:, 1, 7] = 5  # temp sends 5 readings where speed sends its usual 30
    _, verdicts = validate(state, short, PROFILE, CFG)
    assert verdicts[0].status == "sensor_fault" and "dropout" in verdicts[0].anomaly.reasons[0]
    _, verdicts = validate(state, _scored([0.2], count=5), PROFILE, CFG)
    assert verdicts[0].status == "normal"  # every sensor short at once: a gateway gap, stale data, not a fault
    assert pickle.loads(pickle.dumps(state2)) == state2


def test_reviews_move_the_assets_threshold_with_an_audit_trail():
    state = None
    for i in range(2):  # two false positives
        state = apply_review(state, approved=False, anomaly_id=f"a{i}", at_ms=i, cfg=CFG)
    assert [(c.before, c.after) for c in state.threshold_log] == [(0.6, 0.65), (0.65, 0.7)]
    _, st = _statuses(_scored([0.68] * 4), state)
    assert st == ["normal"] * 4  # 0.68 no longer opens on this asset
    state = apply_review(state, approved=True, anomaly_id="a2", at_ms=2, cfg=CFG)
    assert round(open_threshold(state, CFG), 3) == 0.675
    for i in range(20):
        state = apply_review(state, approved=True, anomaly_id=f"b{i}", at_ms=3 + i, cfg=CFG)
    assert open_threshold(state, CFG) == 0.6 and len(state.threshold_log) == 16
    assert pickle.loads(pickle.dumps(state)) == state


def test_a_changed_mind_leaves_the_threshold_as_if_only_the_last_decision_was_made():
    state = apply_review(None, approved=False, anomaly_id="a0", at_ms=0, cfg=CFG)
    state = apply_review(state, approved=False, anomaly_id="a1", at_ms=1, cfg=CFG)
    assert round(open_threshold(state, CFG), 6) == 0.7
    state = apply_review(state, approved=True, anomaly_id="a1", at_ms=2, cfg=CFG)  # a1 was real after all
    assert round(open_threshold(state, CFG), 6) == 0.625  # a0's reject stays, a1 counts as one approval
    state = apply_review(state, approved=True, anomaly_id="a1", at_ms=3, cfg=CFG)  # the same decision again
    assert round(open_threshold(state, CFG), 6) == 0.625
    state = apply_review(state, approved=None, anomaly_id="a1", at_ms=4, cfg=CFG)  # withdrawn
    assert round(open_threshold(state, CFG), 6) == 0.65
    assert [c.approved for c in state.threshold_log] == [False, False, True, True, None]
    assert pickle.loads(pickle.dumps(state)) == state


def test_anomalies_name_their_top_features():
    base = _scored([0.95] * 3)
    top = (("temp.mean", 0.7), ("temp.max", 0.2), ("speed.std", 0.06), ("x", 0.04))
    scored = Scored(base.features, base.score, base.detector_scores, base.contributions, base.warming_up,
                    (top,) * 3)
    _, verdicts = validate(None, scored, PROFILE, CFG)
    assert verdicts[2].status == "confirmed"
    assert verdicts[2].anomaly.features == (("temp.mean", 0.7), ("temp.max", 0.2), ("speed.std", 0.06))
    assert verdicts[2].anomaly.to_dict()["features"][0] == {"feature": "temp.mean", "share": 0.7}
    assert verdicts[0].status == "rejected" and verdicts[0].anomaly.features == ()


def test_a_stuck_sensor_on_a_failing_machine_is_reported_too():
    state, _ = _statuses(_scored([0.1] * 5))
    scored = _scored([0.95] * 6, temp_std=0.0)  # temp stuck while speed carries the machine's deviation
    scored = Scored(scored.features, scored.score, scored.detector_scores,
                    tuple((("speed", 0.8), ("temp", 0.2)) for _ in range(6)), scored.warming_up)
    _, verdicts = validate(state, scored, PROFILE, CFG)
    assert [v.status for v in verdicts] == ["rejected", "rejected"] + ["confirmed"] * 4
    # stuck from the 3rd flat window (it had varied in only 5 windows before): certain at once, the alarm opens
    assert [v.fault_persistent for v in verdicts] == [False] * 2 + [True] * 4
    assert verdicts[-1].anomaly.sensors == ("temp",)


def _cycling(runs, *, stop=4, after=0):
    """An asset that runs and stops `stop` windows, once per entry of `runs` (the scores of its run), from window
    `after` on."""
    speeds, scores = [], []
    for run_scores in runs:
        speeds += [1500.0] * len(run_scores) + [0.0] * stop
        scores += list(run_scores) + [0.1] * stop
    scored = _scored(scores)
    scored.features.values[:, 0, [0, 2, 3, 5, 6]] = np.array(speeds)[:, None]
    scored.features.window_start[:] += after * 60_000
    scored.features.window_end[:] += after * 60_000
    return scored


ACROSS = ValidationConfig(persist_across_stops=True)


def test_a_cycling_asset_whose_short_runs_each_hold_strong_candidates_reaches_an_anomaly():
    # 5 healthy runs teach the cycle (grace: a quarter of a 4-window run, 1); then two candidates in each run's
    # 3 judged windows, to its end: never 3 of the last 5 windows when the stops count, 3 or 4 of the last 5
    # judged ones
    scored = _cycling([[0.1] * 4] * 5 + [[0.1, 0.1, 0.9, 0.9]] * 3)
    _, verdicts = validate(None, scored, PROFILE, CFG)
    assert {v.status for v in verdicts} <= {"normal", "rejected"}
    state, verdicts = validate(None, scored, PROFILE, ACROSS)
    assert [v.status for v in verdicts[40:]] == ["normal", "normal", "rejected", "rejected"] + ["normal"] * 6 + [
        "confirmed", "confirmed"] + ["normal"] * 6 + ["confirmed", "confirmed"] + ["normal"] * 4
    assert (state.typical_run, state.typical_stop) == (4.0, 4.0)
    assert pickle.loads(pickle.dumps(state)) == state


def test_a_candidate_long_ago_does_not_combine_with_one_now():
    state, _ = validate(None, _cycling([[0.1] * 4] * 5 + [[0.1, 0.1, 0.9, 0.9]], stop=4), PROFILE, ACROSS)
    _, verdicts = validate(state, _cycling([[0.1, 0.9, 0.9, 0.1]], after=48), PROFILE, ACROSS)
    assert [v.status for v in verdicts[:4]] == ["normal", "confirmed", "confirmed", "normal"]  # after a usual stop
    # a stop of 9 windows, longer than the cycle (4 + 4): the last run's two candidates are forgotten
    longer, _ = validate(state, _cycling([[]], stop=5, after=48), PROFILE, ACROSS)
    _, verdicts = validate(longer, _cycling([[0.1, 0.9, 0.9, 0.1]], after=53), PROFILE, ACROSS)
    assert [v.status for v in verdicts[:4]] == ["normal", "rejected", "rejected", "normal"]
    # candidates that did not last to the end of their run (a start-up transient) are forgotten at its stop
    state, _ = validate(None, _cycling([[0.1] * 4] * 5 + [[0.1, 0.9, 0.9, 0.1]], stop=4), PROFILE, ACROSS)
    _, verdicts = validate(state, _cycling([[0.1, 0.9, 0.9, 0.1]], after=48), PROFILE, ACROSS)
    assert [v.status for v in verdicts[:4]] == ["normal", "rejected", "rejected", "normal"]
    # before the asset has completed 3 runs (its cycle unknown), any stop forgets, however short
    short_grace = ValidationConfig(persist_across_stops=True, grace_windows=1)
    _, verdicts = validate(None, _cycling([[0.1, 0.1, 0.9, 0.9]] * 2, stop=1), PROFILE, short_grace)
    assert [v.status for v in verdicts] == ["normal", "normal", "rejected", "rejected", "normal"] * 2


def test_a_cycling_asset_whose_runs_last_one_window_has_them_judged():
    # 5 healthy one-window runs teach the cycle (typical run 1 window); then three runs that score 0.9. The grace
    # of one window (a quarter of the run, at least one) covers each whole run: nothing is ever judged
    scored = _cycling([[0.1]] * 5 + [[0.9]] * 3)
    _, verdicts = validate(None, scored, PROFILE, ACROSS)
    assert [v.status for v in verdicts[25:]] == ["rejected", "normal", "normal", "normal", "normal"] * 3
    assert all(v.anomaly.reasons == ("start_up",) for v in verdicts[25:] if v.status == "rejected")
    # with the grace under the typical run, each run's window is judged and the evidence adds up from run to run
    within = ValidationConfig(persist_across_stops=True, grace_within_run=True)
    state, verdicts = validate(None, scored, PROFILE, within)
    assert [v.status for v in verdicts[25::5]] == ["rejected", "rejected", "confirmed"]
    assert [v.anomaly.reasons[0] for v in verdicts[25:35:5]] == ["not_persistent (1 of last 5)",
                                                                  "not_persistent (2 of last 5)"]
    assert pickle.loads(pickle.dumps(state)) == state
    # runs of two windows keep their one-window grace: the start's window is not judged, the next one is
    _, verdicts = validate(None, _cycling([[0.1, 0.1]] * 5 + [[0.9, 0.1]] * 3), PROFILE, within)
    assert [v.status for v in verdicts[30::6]] == ["rejected"] * 3
    assert {v.anomaly.reasons for v in verdicts[30::6]} == {("start_up",)}


def _with_starts(scored, runs, start_scores, *, stop=4):
    """`scored` with each run's start window scored `start_scores[r]` with the asset's earlier starts (NaN: none)."""
    out = np.full(len(scored.score), np.nan)
    at = 0
    for run_scores, s in zip(runs, start_scores, strict=True):
        out[at] = s
        at += len(run_scores) + stop
    return replace(scored, start_score=out)


def test_a_cycling_asset_has_its_starts_judged_with_its_earlier_starts():
    # 5 healthy 2-window runs teach the cycle (grace: one window, the start's); 3 runs whose start scores 0.9 against
    # steady running but 0.1 against earlier starts (healthy); then 3 worn runs, high on both
    runs = [[0.1, 0.1]] * 5 + [[0.9, 0.1]] * 3 + [[0.9, 0.9]] * 3
    scored = _cycling(runs)
    starts = [float("nan")] * 5 + [0.1] * 3 + [0.9] * 3
    within = ValidationConfig(persist_across_stops=True, grace_within_run=True)
    _, before = validate(None, scored, PROFILE, within)
    state, verdicts = validate(None, _with_starts(scored, runs, starts), PROFILE, within)
    first = list(range(30, 66, 6))  # the start windows of the last six runs
    # without the start score the grace hides every start; with it a healthy start is normal
    assert [before[w].anomaly.reasons for w in first] == [("start_up",)] * 6
    assert [verdicts[w].status for w in first[:3]] == ["normal"] * 3
    # a worn start is judged, so the evidence reaches an anomaly one run sooner than on the second windows alone
    assert [v.status for v in before[48:66] if v.running] == ["rejected", "rejected"] * 2 + ["rejected", "confirmed"]
    assert [v.status for v in verdicts[48:66] if v.running] == ["rejected", "rejected"] + ["confirmed"] * 4
    assert verdicts[48].anomaly.reasons == ("not_persistent (1 of last 5)",)
    assert verdicts[48].score == 0.9 and verdicts[30].score == 0.1
    assert pickle.loads(pickle.dumps(state)) == state
    # runs of one window have no grace to lift: judged on their own score, as before
    one = [[0.1]] * 5 + [[0.9]] * 3
    _, plain = validate(None, _cycling(one), PROFILE, within)
    _, lifted = validate(None, _with_starts(_cycling(one), one, [0.1] * 8), PROFILE, within)
    assert [v.status for v in lifted] == [v.status for v in plain]


def _baseline_led(scores, z):
    """Windows led by the per-feature baseline (the joint model under it), with its robust z on the first column."""
    scores = np.array(scores, float)
    led = replace(_scored(scores), detector_scores={"baseline": scores, "multivariate": np.full(len(scores), 0.3)})
    return replace(led, baseline_z=np.column_stack([z, np.ones(len(scores))]))


TREND = ValidationConfig(confirm_trend=True)


def test_a_baseline_led_candidate_whose_deviation_trends_up_is_confirmed_with_the_setting():
    wear = _baseline_led([0.65] * 6, [3.0, 3.5, 4.0, 4.5, 5.0, 5.5])
    # by default one detector over the open threshold, the fused score under the confirm one: a person decides
    assert [v.status for v in validate(None, wear, PROFILE, CFG)[1]] == ["rejected"] * 2 + ["needs_review"] * 4
    state, verdicts = validate(None, wear, PROFILE, TREND)
    # three rising windows cannot reach 0.05 one-sided (1/6), four can (1/24)
    assert [v.status for v in verdicts] == ["rejected"] * 2 + ["needs_review"] + ["confirmed"] * 3
    trending = "baseline deviation trending (p=0.042, 4 windows)"
    assert verdicts[3].anomaly.reasons == ("persistent (4 of last 5)", trending)
    assert pickle.loads(pickle.dumps(state)) == state and len(state.stretch_z) == 6
    # led by the joint model (a load or operating-point change looks so), a rising deviation still needs review
    joint = replace(wear, detector_scores={"baseline": np.full(6, 0.3), "multivariate": np.full(6, 0.65)})
    assert [v.status for v in validate(None, joint, PROFILE, TREND)[1]][2:] == ["needs_review"] * 4
    # and so does a sensor settling at a new level
    settling = replace(wear, settling=np.ones(6, bool))
    assert [v.status for v in validate(None, settling, PROFILE, TREND)[1]][2:] == ["needs_review"] * 4


def test_a_held_step_has_no_trend_and_stays_with_a_person():
    # a step to a new level, its z wobbling around it: above its first value every other window, never a trend
    step = _baseline_led([0.65] * 8, [4.0, 4.3, 3.8, 4.1, 3.9, 4.2, 3.7, 4.0])
    assert [v.status for v in validate(None, step, PROFILE, TREND)[1]] == ["rejected"] * 2 + ["needs_review"] * 6
    # held for days, the stretch keeps only its latest windows: the state stays bounded
    state, _ = validate(None, _baseline_led([0.65] * 150, 4.0 + 0.1 * np.sin(np.arange(150))), PROFILE, TREND)
    assert len(state.stretch_z) == STRETCH_KEEP


def test_the_trend_is_taken_over_the_stretch_since_the_last_normal_window():
    # a falling stretch, one normal window, then a rising one: its trend is its own, not the two together
    back = _baseline_led([0.65] * 3 + [0.1] + [0.65] * 4, [6.0, 6.2, 5.9, 0.0, 4.0, 4.5, 5.0, 5.5])
    statuses = [v.status for v in validate(None, back, PROFILE, TREND)[1]]
    assert statuses == ["rejected", "rejected", "needs_review", "normal"] + ["needs_review"] * 3 + ["confirmed"]
    # a stretch carries over a batch boundary as in one batch
    state, first = validate(None, _baseline_led([0.65] * 2, [3.0, 3.5]), PROFILE, TREND)
    _, rest = validate(pickle.loads(pickle.dumps(state)), _baseline_led([0.65] * 4, [4.0, 4.5, 5.0, 5.5]), PROFILE,
                       TREND)
    assert [v.status for v in first + rest] == ["rejected"] * 2 + ["needs_review"] + ["confirmed"] * 3
