import pickle
from dataclasses import replace

import numpy as np

from smart_maintenance.operators.detect.detectors import DetectConfig, detect
from smart_maintenance.operators.ingest.windows import WindowConfig, flush_windows, window_readings
from smart_maintenance.operators.profile import AssetProfile, SensorLimits
from tests.synthetic import asset_day, cut


def _features(day, size):
    state, out = None, []
    for b in cut(day, size):
        state, o = window_readings(state, b, WindowConfig(length_ms=300_000))
        if o.closed is not None:
            out.append(o.closed)
    _, last = flush_windows(state, WindowConfig(length_ms=300_000))
    return out + ([last] if last is not None else [])


def _scores(batches, profile=AssetProfile("x"), cfg=DetectConfig(warmup_windows=36, baseline_size=96)):
    state, scored = None, []
    for fb in batches:
        state, s = detect(state, fb, profile, cfg)
        scored.append(s)
    return state, scored


def test_drift_scores_high_and_names_the_sensor():
    _, scored = _scores(_features(asset_day(drift_last_h=4), 5000))
    score = np.concatenate([s.score for s in scored])
    warming = np.concatenate([s.warming_up for s in scored])
    assert warming[:36].all() and not warming[48:].any()
    assert score[48:240].max() < 0.6  # the normal day stays under the open threshold
    assert score[-6:].min() > 0.6 and np.median(score[-6:]) > 0.75  # the end of the drift is clearly anomalous
    last = scored[-1].contributions[-1]
    assert last[0][0] == "a" and last[0][1] > 0.8


def test_scores_do_not_depend_on_batching():
    day = asset_day(drift_last_h=4)
    _, a = _scores(_features(day, 100_000))
    _, b = _scores(_features(day, 333))
    assert np.allclose(np.concatenate([s.score for s in a]), np.concatenate([s.score for s in b]))


def test_limits_detector_uses_the_registry_band():
    lim = SensorLimits(range_lo=0, range_hi=100, normal_lo=0.5, normal_hi=1.5, failure=3.0, rising=True)
    profile = AssetProfile("x", limits=(("a", lim),))
    _, scored = _scores(_features(asset_day(drift_last_h=4), 5000), profile)
    limits = np.concatenate([s.detector_scores["limits"] for s in scored])
    assert limits[:200].max() == 0.0 and limits[-1] > 0.9


def test_state_pickles_and_stays_small():
    state, _ = _scores(_features(asset_day(hours=8), 5000))
    blob = pickle.dumps(state)
    assert pickle.loads(blob).forest is not None
    assert len(blob) < 256 * 1024


def test_multivariate_explains_with_features_and_slow_sensors_lose_their_level():
    cfg = DetectConfig(warmup_windows=36, baseline_size=96, context_windows=3, lag_windows=6,
                       slow_sensors=("b",), detectors=("multivariate",))
    state, scored = _scores(_features(asset_day(drift_last_h=4), 5000), cfg=cfg)
    names = [f"{s}.{f}" for s in state.columns for f in ("mean", "std", "min", "max", "slope", "change")]
    used = {names[i] for i in state.use}
    assert {"b.mean", "b.min", "b.max"}.isdisjoint(used) and {"b.std", "b.change", "a.mean"} <= used
    last = scored[-1]
    assert last.score[-1] > 0.75 and last.contributions[-1][0][0] == "a"
    assert last.feature_contributions[-1][0][0].startswith("a.")
    # the warm-up fit, and at most the first refit, which the per-asset stagger may bring within the day
    assert state.version in (1, 2) and len(pickle.dumps(state)) < 256 * 1024


def test_a_skab_sized_state_stays_under_256_kb():
    cfg = DetectConfig(warmup_windows=400, baseline_size=400, block=20, context_windows=5, lag_windows=30)
    state, fb = None, []
    for b in cut(asset_day(hours=500 / 3600, interval_s=1), 1000):  # 1 s windows, as for SKAB
        state, out = window_readings(state, b, WindowConfig(length_ms=1000, lateness_ms=0))
        fb += [out.closed] if out.closed is not None else []
    wide = [type(b)(b.asset_id, b.sensors + tuple(s + "2" for s in b.sensors[:3]), b.window_start, b.window_end,
                    np.concatenate([b.values, b.values[:, :3]], axis=1)) for b in fb]
    state, _ = _scores(wide, cfg=cfg)
    assert state.forest is not None and state.mv is not None
    assert len(pickle.dumps(state)) < 256 * 1024


def _cycling(hours: float) -> list:
    """An asset that runs one 5-minute window in three: sensor "e" (its state sensor) is 0 in the other two."""
    day = asset_day(hours=hours)
    stopped = ((day.ts - day.ts[0]) // 300_000) % 3 != 0
    value = np.where(stopped & (day.sensor == "e"), 0.0, day.value)
    return _features(type(day)(day.asset_id, day.sensor, day.ts, value), 5000)


def test_an_asset_that_runs_a_third_of_the_time_fits_once_its_warm_up_span_has_passed():
    """warmup_min_share: the warm-up is a span of event time; without it the first fit waits for as many
    running windows, three spans for an asset that runs a third of the time."""
    profile = AssetProfile("x", state_sensor="e", running_min=1.0)
    batches = _cycling(hours=9)  # 108 windows, 36 of them running
    cfg = DetectConfig(warmup_windows=48, baseline_size=96, block=12)
    state, _ = _scores(batches, profile, cfg)
    assert not state.fitted  # 36 running windows < 48
    state, scored = _scores(batches, profile, DetectConfig(warmup_windows=48, baseline_size=96, block=12,
                                                           warmup_min_share=0.25))
    assert state.fitted
    warming = np.concatenate([s.warming_up for s in scored])
    assert warming[:48].all() and not warming[-12:].any()  # not before the span, and soon after it
    state, _ = _scores(batches[:1], profile, DetectConfig(warmup_windows=48, baseline_size=96, block=12,
                                                          warmup_min_share=0.9))
    assert not state.fitted  # too few rows for the share asked


def test_with_the_warm_up_in_event_time_a_cycling_asset_is_judged_after_one_span_then_fitted_again():
    """warmup_in_event_time: a provisional fit once the span has passed, a full one at the warm-up's rows."""
    profile = AssetProfile("x", state_sensor="e", running_min=1.0)
    batches = _cycling(hours=16)  # 192 windows, 64 of them running
    cfg = DetectConfig(warmup_windows=48, baseline_size=96, block=12, refit_blocks=100)
    _, scored = _scores(batches, profile, cfg)
    assert np.concatenate([s.warming_up for s in scored])[:144].all()  # 48 running windows: three spans
    state, _ = _scores(batches[:2], profile, replace(cfg, warmup_in_event_time=True))
    assert not state.fitted  # past the span (66 windows), but 22 rows: no more than their 25 columns + 1
    state, scored = _scores(batches, profile, replace(cfg, warmup_in_event_time=True))
    warming = np.concatenate([s.warming_up for s in scored])
    first = int(np.flatnonzero(~warming)[0])
    assert 48 <= first <= 96  # after the span, once 27 rows are learned (window 84), not three spans later
    assert state.version == 2 and not state.provisional  # fitted again at 48 rows, long before the refit period
    assert pickle.loads(pickle.dumps(state)).version == 2


def test_a_provisional_fit_stays_provisional_until_the_warm_up_rows_are_learned():
    profile = AssetProfile("x", state_sensor="e", running_min=1.0)
    cfg = DetectConfig(warmup_windows=48, baseline_size=96, block=12, refit_blocks=100, warmup_in_event_time=True)
    state, _ = _scores(_cycling(hours=10), profile, cfg)  # 120 windows, 40 running: fitted, not yet on 48 rows
    assert state.fitted and state.provisional and state.version == 1 and len(state.ring) < 48
    # refits while provisional keep the refit period ("x" has a head start of 2 of 3 blocks: only the first fit has it)
    state, _ = _scores(_cycling(hours=10), profile, replace(cfg, refit_blocks=3))
    assert state.provisional and state.version == 2  # fitted at window 84, refitted at 96 only


def test_a_provisional_fit_leaves_the_warm_up_and_the_fits_after_it_as_they_would_be_without_it():
    """It judges; it does not choose what the warm-up learns, nor when the refits fall."""
    profile = AssetProfile("x", state_sensor="e", running_min=1.0)
    day = asset_day(hours=20, drift_last_h=12)  # a drift from hour 8: the provisional fit (hour 7) scores it high
    stopped = ((day.ts - day.ts[0]) // 300_000) % 3 != 0
    value = np.where(stopped & (day.sensor == "e"), 0.0, day.value)
    batches = _features(type(day)(day.asset_id, day.sensor, day.ts, value), 5000)
    cfg = DetectConfig(warmup_windows=48, baseline_size=96, block=12, refit_blocks=3)  # "x": a head start of 2
    plain, _ = _scores(batches, profile, cfg)
    event, scored = _scores(batches, profile, replace(cfg, warmup_in_event_time=True))
    assert np.concatenate([s.score for s in scored])[-12:].max() > 0.6  # judged: the drift scores high
    assert plain.version >= 2 and event.version > plain.version  # provisional fits, then the same fits
    assert np.array_equal(event.ring, plain.ring) and np.array_equal(event.center, plain.center)
    assert event.blocks_since_fit == plain.blocks_since_fit


def test_after_a_repair_the_detectors_fit_again_on_a_share_of_the_warm_up():
    """A repaired machine is the machine it was: its detectors must not stay blind for a whole warm-up span."""
    from smart_maintenance.operators.controls import MaintenanceRecord
    from smart_maintenance.operators.detect.detectors import apply_control

    batches = _features(asset_day(hours=12), 5000)  # 144 windows
    cfg = DetectConfig(warmup_windows=96, baseline_size=96, block=12, warmup_min_share=0.25)
    state, _ = _scores(batches[:2], cfg=cfg)
    repair = MaintenanceRecord(maintenance_id="m1", asset_id="x", at_ms=0, outcome="repaired", action="fixed")
    state = apply_control(state, repair)
    assert state is not None and not state.fitted
    fits_after = None
    for i, fb in enumerate(batches[2:]):
        state, s = detect(state, fb, AssetProfile("x"), cfg)
        if state.fitted and fits_after is None:
            fits_after = sum(len(b) for b in batches[2:i + 3])
    assert fits_after is not None and fits_after <= 48  # a quarter of the 96-window warm-up, to the next block


def _repaired(cfg: DetectConfig):
    """An asset fitted on 6 healthy hours, then repaired (a re-baselining maintenance record)."""
    from smart_maintenance.operators.controls import MaintenanceRecord
    from smart_maintenance.operators.detect.detectors import apply_control

    state, _ = _scores(_features(asset_day(hours=6), 5000), cfg=cfg)
    assert state.fitted
    repair = MaintenanceRecord(maintenance_id="m1", asset_id="x", at_ms=0, outcome="repaired", action="fixed")
    after = apply_control(state, repair)
    assert after is not None and not after.fitted
    return after


def _after_repair(hours: float, drift_last_h: float = 0.0) -> list:
    day = asset_day(hours=hours, seed=2, drift_last_h=drift_last_h)
    later = type(day)(day.asset_id, day.sensor, day.ts + 7 * 3_600_000, day.value)  # after the 6 fitted hours
    return _features(later, 5000)


def test_score_through_repair_scores_a_fault_right_after_a_repair_with_the_fit_from_before():
    """A fault that begins while the new baseline warms up: the repaired machine is the healthy one the old fit
    learned, so the old fit scores it (and the healthy hours stay under the open threshold). The fault begins
    after the prior's check (`repair_check`: 18 windows of grace, then 5), which the healthy start passes."""
    cfg = DetectConfig(warmup_windows=48, baseline_size=96, block=12, score_through_repair=True)
    state, scored = _repaired(cfg), []
    for fb in _after_repair(hours=3.5, drift_last_h=1.5):  # 42 windows < 48: no new fit yet; the fault from 24
        state, s = detect(state, fb, AssetProfile("x"), cfg)
        scored.append(s)
    score = np.concatenate([s.score for s in scored])
    warming = np.concatenate([s.warming_up for s in scored])
    assert not state.fitted and state.prior is not None and not warming.any()
    assert state.prior_seen == 23 and state.prior_hits < 3 and not state.prior_dropped
    assert score[:10].max() < 0.6 and score[-3:].min() >= 0.6
    assert pickle.loads(pickle.dumps(state)).prior is not None
    # off (the default): blind until the new baseline is warm, as before
    off = DetectConfig(warmup_windows=36, baseline_size=96, block=12)
    state = _repaired(off)
    for fb in _after_repair(hours=2.5, drift_last_h=1.5):
        state, s = detect(state, fb, AssetProfile("x"), off)
        assert s.warming_up.all() and s.score.max() < 0.6


def _changed_after_repair(hours: float) -> list:
    """The repaired machine runs at other levels: three of its five sensors 20% higher from the start, lasting."""
    day = asset_day(hours=hours, seed=2)
    value = np.where(np.isin(day.sensor, ["a", "b", "c"]), day.value * 1.2, day.value)
    return _features(type(day)(day.asset_id, day.sensor, day.ts + 7 * 3_600_000, value), 5000)


def test_score_through_repair_drops_the_old_fit_when_the_repair_changed_the_machine():
    """A lasting level shift right after the repair: the old fit would flag every window. Past the start-up grace
    (18 windows), it reaches the open threshold on 3 of the first 5: it no longer scores from the 3rd on, so it
    cannot make a candidate of its own (3 of 5) beyond the first windows; nothing is judged until the new fit."""
    cfg = DetectConfig(warmup_windows=36, baseline_size=96, block=12, score_through_repair=True)
    state, scored = _repaired(cfg), []
    for fb in _changed_after_repair(hours=5):  # 60 windows: the new baseline's first fit after 36
        state, s = detect(state, fb, AssetProfile("x"), cfg)
        scored.append(s)
    score = np.concatenate([s.score for s in scored])
    warming = np.concatenate([s.warming_up for s in scored])
    assert score[18:20].min() >= 0.6  # the old fit flags the changed machine: two hits past the grace
    assert warming[20:36].all() and not warming[:20].any() and not warming[-12:].any()
    assert score[20:].max() < 0.6  # then nothing until the new fit, which learned the new levels as normal
    assert state.fitted and state.version == 1 and state.prior is None and state.prior_dropped
    assert (state.prior_seen, state.prior_hits) == (21, 3)
    # validation, the machine just started after its repair (the grace runs): no window becomes an anomaly
    from smart_maintenance.operators.judge.validation import ValidationConfig, ValidationState, validate

    judged, statuses = ValidationState(since_stop=0), []
    for s in scored:
        judged, verdicts = validate(judged, s, AssetProfile("x"), ValidationConfig())
        statuses += [v.status for v in verdicts]
    assert set(statuses) <= {"normal", "rejected"}


def test_the_new_baseline_replaces_the_fit_from_before_the_repair():
    cfg = DetectConfig(warmup_windows=36, baseline_size=96, block=12, score_through_repair=True)
    state = _repaired(cfg)
    from smart_maintenance.operators.controls import MaintenanceRecord
    from smart_maintenance.operators.detect.detectors import apply_control

    prior = state.prior
    again = MaintenanceRecord(maintenance_id="m2", asset_id="x", at_ms=1, outcome="repaired", action="fixed")
    state = apply_control(state, again)  # a second repair before the next fit keeps the last fit
    assert state is not None and state.prior is prior
    for fb in _after_repair(hours=5):  # 60 healthy windows: a warm-up's worth
        state, _ = detect(state, fb, AssetProfile("x"), cfg)
    assert state.fitted and state.prior is None and state.version == 1


def test_the_detect_step_logs_when_it_drops_the_fit_from_before_a_repair(monkeypatch):
    from dataclasses import replace

    import smart_maintenance.dataflows.steps as steps_module
    from smart_maintenance.config.registry import load_registry
    from smart_maintenance.config.settings import load_settings
    from smart_maintenance.dataflows.steps import Steps
    from smart_maintenance.operators.controls import MaintenanceRecord

    class Log:  # the module's logger, recorded (structlog caches its loggers once configured by other tests)
        def __init__(self):
            self.events = []

        def info(self, event, **kw):
            self.events.append({"event": event, **kw})

        warning = info

    steps = Steps(load_settings(console=False), load_registry())
    steps.detect_cfg = replace(steps.detect_cfg, warmup_ms=None, baseline_ms=None, refit_ms=None, warmup_windows=36,
                               baseline_size=96, block=12)  # the product's check (90 min grace, 3 of 5 in 25 min)
    state = None
    for fb in _features(asset_day(hours=6), 5000):
        state, _ = steps.detect(state, fb)
    repair = MaintenanceRecord(maintenance_id="m1", asset_id="x", at_ms=0, outcome="repaired", action="fixed")
    state, _ = steps.detect(state, repair)
    log = Log()
    monkeypatch.setattr(steps_module, "log", log)
    for fb in _changed_after_repair(hours=2.5):
        state, _ = steps.detect(state, fb)
    dropped = [e for e in log.events if e["event"] == "repair_prior_dropped"]
    assert len(dropped) == 1 and dropped[0]["asset_id"] == "x" and dropped[0]["windows"] == 21


def test_the_baseline_z_is_the_one_its_score_maps_and_does_not_depend_on_batching():
    from smart_maintenance.operators.detect.detectors import _to_unit

    day = asset_day(drift_last_h=4)
    _, a = _scores(_features(day, 100_000))
    _, b = _scores(_features(day, 333))
    z = np.concatenate([s.baseline_z for s in a])
    baseline = np.concatenate([s.detector_scores["baseline"] for s in a])
    assert z.shape[0] == len(baseline) and z[-6:].max(axis=1).min() > 6.0  # the drift's end: far out of its range
    assert np.allclose(_to_unit(z.max(axis=1), DetectConfig().z_scale), baseline)
    assert np.allclose(z, np.concatenate([s.baseline_z for s in b]))
