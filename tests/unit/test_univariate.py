"""The one-sensor detector (operators/detect/univariate.py), its wiring in detect/validate, and the
metric-stream generator (sources/metric_family.py)."""

import copy
import pickle

import numpy as np

from smart_maintenance.operators.detect.detectors import DetectConfig, detect
from smart_maintenance.operators.detect.univariate import UnivariateConfig, score_windows
from smart_maintenance.operators.judge.validation import ValidationConfig, validate
from smart_maintenance.operators.profile import COUNT, MAX, MEAN, MIN, STD, AssetProfile
from smart_maintenance.operators.records import FeatureBatch
from smart_maintenance.sources.metric_family import TEST_SEEDS, TUNING_SEEDS, draw_stream

WINDOW_MS = 3_600_000


def _rows(n, rng, level=50.0):
    x = np.zeros((n, 8))
    x[:, MEAN] = level + rng.normal(0, 0.2, n)
    x[:, STD] = 1.0 + rng.normal(0, 0.05, n)
    x[:, MAX] = x[:, MEAN] + 2.5 + rng.normal(0, 0.2, n)
    x[:, MIN] = x[:, MEAN] - 2.5 + rng.normal(0, 0.2, n)
    x[:, COUNT] = 12
    return x


def test_spike_dip_level_and_variance_each_stand_out():
    rng = np.random.default_rng(1)
    x = _rows(200, rng)
    x[100, MAX] += 10  # one reading jumps
    x[120, MIN] -= 10  # one reading drops
    x[140:150, MEAN] += 5  # the level shifts
    x[170, STD] *= 6  # a burst of noise
    _, z = score_windows(None, x, np.arange(200) * WINDOW_MS, WINDOW_MS, 24, UnivariateConfig())
    # the shift's end is a change of level too: the trend sum sees the level fall back for a few windows
    normal = np.delete(np.arange(24, 200), [100 - 24, 120 - 24] + list(range(140 - 24, 180 - 24)))
    assert z[normal].max() < 6  # under the open threshold (score 0.6 is z 6.1)
    assert z[100] > 9 and z[120] > 9 and z[140] > 9 and z[170] > 4


def test_a_lasting_change_becomes_normal():
    rng = np.random.default_rng(2)
    x = _rows(400, rng)
    x[100:, MEAN] += 5
    _, z = score_windows(None, x, np.arange(400) * WINDOW_MS, WINDOW_MS, 24, UnivariateConfig())
    assert z[100] > 9 and z[380:].max() < 4


def test_the_state_pickles_and_scores_the_same_after_a_copy():
    rng = np.random.default_rng(3)
    x = _rows(80, rng)
    starts = np.arange(80) * WINDOW_MS
    s, _ = score_windows(None, x[:40], starts[:40], WINDOW_MS, 24, UnivariateConfig())
    s2 = pickle.loads(pickle.dumps(s))
    s3 = copy.deepcopy(s)
    _, a = score_windows(s, x[40:], starts[40:], WINDOW_MS, 24, UnivariateConfig())
    _, b = score_windows(s2, x[40:], starts[40:], WINDOW_MS, 24, UnivariateConfig())
    _, c = score_windows(s3, x[40:], starts[40:], WINDOW_MS, 24, UnivariateConfig())
    assert np.array_equal(a, b) and np.array_equal(a, c)


def _batch(x, start=0):
    n = len(x)
    starts = (start + np.arange(n)) * WINDOW_MS
    return FeatureBatch("stream", ("cpu",), starts, starts + WINDOW_MS, x[:, None, :])


def test_a_one_window_spike_on_a_one_sensor_asset_opens_at_once():
    rng = np.random.default_rng(4)
    x = _rows(120, rng)
    x[100, MAX] += 12
    cfg = DetectConfig(warmup_windows=24, baseline_size=48)
    profile = AssetProfile("stream")
    d, scored = detect(None, _batch(x), profile, cfg)
    assert scored.certain is not None and scored.certain[100] and scored.certain.sum() == 1
    assert "univariate" in scored.detector_scores
    _, verdicts = validate(None, scored, profile, ValidationConfig())
    statuses = [v.status for v in verdicts]
    assert statuses[100] == "confirmed" and statuses.count("confirmed") == 1
    # without the one-sensor detector the same spike is a lone window: never confirmed
    _, plain = detect(None, _batch(x), profile, DetectConfig(warmup_windows=24, baseline_size=48, univariate=None))
    assert plain.certain is None
    _, verdicts = validate(None, plain, profile, ValidationConfig())
    assert "confirmed" not in [v.status for v in verdicts]


def test_a_one_sensor_drop_to_zero_is_judged_not_taken_for_a_stop():
    rng = np.random.default_rng(5)
    x = _rows(120, rng)
    x[100:106, [MEAN, MIN, MAX]] = 0.0
    x[100:106, STD] = 0.0
    _, scored = detect(None, _batch(x), AssetProfile("stream"), DetectConfig(warmup_windows=24, baseline_size=48))
    assert scored.running is not None and scored.running.all()
    assert scored.certain is not None and scored.certain[100]


def test_streams_are_a_pure_function_of_the_seed_and_the_splits_are_apart():
    a, b = draw_stream(TUNING_SEEDS[0]), draw_stream(TUNING_SEEDS[0])
    assert np.array_equal(a.ts, b.ts) and np.array_equal(a.value, b.value) and a.incidents == b.incidents
    assert not set(TUNING_SEEDS) & set(TEST_SEEDS)
    for seed in TUNING_SEEDS[:8]:
        s = draw_stream(seed)
        assert 1 <= len(s.incidents) <= 4 and np.all(np.diff(s.ts) > 0)
        first = s.ts[0] + 0.2 * (s.ts[-1] - s.ts[0])
        starts = sorted(i.start_ms for i in s.incidents)
        assert starts[0] >= first - s.interval_s * 1000
        assert all(i.start_ms in set(s.ts.tolist()) for i in s.incidents)  # the label is a row of the file


def test_auto_windows_of_a_one_sensor_asset_are_shorter():
    from smart_maintenance.operators.ingest.windows import WindowConfig, window_readings
    from smart_maintenance.operators.records import AssetReadings

    cfg = WindowConfig(length_ms=None, auto_samples=30, auto_samples_one_sensor=6, auto_max_ms=None)  # no cap here
    ts = np.arange(40, dtype=np.int64) * 300_000  # 5-minute readings
    one, _ = window_readings(None, AssetReadings("a", np.full(40, "cpu", object), ts, np.ones(40)), cfg)
    two, _ = window_readings(None, AssetReadings("b", np.tile(np.array(["cpu", "mem"], object), 20),
                                                 np.repeat(ts[:20], 2), np.ones(40)), cfg)
    assert one.length_ms == 1_800_000 and two.length_ms == 10_800_000


def _ramp(rng, n=400, at=200, slope=0.08):
    x = _rows(n, rng)
    x[at:, [MEAN, MIN, MAX]] += (slope * np.arange(n - at))[:, None]
    return x


def test_a_slow_ramp_adds_up_to_a_certain_window_no_single_window_would_show():
    x = _ramp(np.random.default_rng(6))
    starts = np.arange(400) * WINDOW_MS
    _, z = score_windows(None, x, starts, WINDOW_MS, 24, UnivariateConfig())
    assert z[24:200].max() < 6  # before it: nothing near the open threshold
    first = int(np.argmax(z >= 9))
    assert 200 < first < 225  # certain within 25 windows (each window the level lags by about 0.4 sd more)
    # each window on its own: the level follows the ramp and never strays far enough to open
    _, alone = score_windows(None, x, starts, WINDOW_MS, 24, UnivariateConfig(trend_h=1e9))
    assert alone[200:240].max() < 6


def test_the_trend_sum_falls_back_after_a_step_becomes_normal():
    rng = np.random.default_rng(7)
    x = _rows(400, rng)
    x[100:, MEAN] += 5
    s, z = score_windows(None, x, np.arange(400) * WINDOW_MS, WINDOW_MS, 24, UnivariateConfig())
    assert z[100] > 9 and z[300:].max() < 4 and s.rise.value < 1


def test_the_config_rejects_a_trend_or_noise_setting_out_of_range():
    import pytest

    for bad in ({"trend_h": 0.0}, {"trend_k": -1.0}, {"noise_share": 0.0}, {"noise_share": 1.5}):
        with pytest.raises(ValueError):
            UnivariateConfig(**bad)


def test_a_spike_far_out_in_a_calm_streams_own_tail_is_certain():
    # a calm gaussian stream: its excursions' tail is short, so a jump of 6 usual deviations is already far
    # beyond what it does once in 10,000 windows; a fixed certain_z (9) would leave it to persistence
    rng = np.random.default_rng(21)
    x = _rows(1500, rng)
    for at in (800, 1000, 1200):
        x[at, MAX] += 1.6
    starts = np.arange(1500) * WINDOW_MS
    _, z = score_windows(None, x, starts, WINDOW_MS, 24, UnivariateConfig())
    _, fixed = score_windows(None, x, starts, WINDOW_MS, 24, UnivariateConfig(tail_risk=None))
    assert (z[[800, 1000, 1200]] >= 9).all() and (fixed[[800, 1000, 1200]] < 9).all()
    assert np.flatnonzero(z[500:] >= 9).tolist() == [300, 500, 700]  # nothing else is certain


def test_a_heavy_tailed_stream_needs_a_larger_excursion_to_be_certain():
    # the same excursion, in the same usual deviations, on a stream whose excursions are heavy-tailed
    rng = np.random.default_rng(22)
    calm, heavy = _rows(1200, rng), _rows(1200, rng)
    heavy[:, MAX] = heavy[:, MEAN] + 2.5 + 0.1 * rng.standard_t(2, 1200)
    starts = np.arange(1200) * WINDOW_MS
    s_calm, _ = score_windows(None, calm, starts, WINDOW_MS, 24, UnivariateConfig())
    s_heavy, _ = score_windows(None, heavy, starts, WINDOW_MS, 24, UnivariateConfig())
    assert s_heavy.tails["up"].threshold() > 1.5 * s_calm.tails["up"].threshold()


def test_a_stuck_value_is_seen_by_its_collapsed_spread():
    rng = np.random.default_rng(23)
    x = _rows(600, rng)
    x[500:510, [MIN, MAX]] = x[500:510, MEAN][:, None]  # the value stuck: no spread inside the windows
    x[500:510, STD] = 0.0
    starts = np.arange(600) * WINDOW_MS
    _, z = score_windows(None, x, starts, WINDOW_MS, 24, UnivariateConfig())
    _, without = score_windows(None, x, starts, WINDOW_MS, 24, UnivariateConfig(quiet=False))
    assert z[500] >= 9 and without[500] < 6  # a flatline at its usual level: only the spread says it
