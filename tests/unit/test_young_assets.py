"""Fast paths for many young assets (a few readings, one window each) give what the general paths give.

Each fast path is compared with the general code it short-cuts, on the inputs where they could differ.
"""

import pickle

import numpy as np
import pytest

from smart_maintenance import latency
from smart_maintenance.operators.detect.context import base_rows
from smart_maintenance.operators.ingest.parse import split_by_asset
from smart_maintenance.operators.judge.sensor_health import SENTINEL_CODES, SensorHealth, is_sentinel
from smart_maintenance.operators.records import FeatureBatch, Readings


def test_split_by_asset_slices_every_column_of_every_asset():
    rng = np.random.default_rng(3)
    n = 500
    asset = rng.choice(np.array(["c", "a", "b", "d"], dtype=object), n)
    r = Readings(asset, rng.choice(np.array(["t", "v"], dtype=object), n), np.arange(n, dtype=np.int64),
                 rng.standard_normal(n), rng.random(n), rng.choice(np.array(["C", "bar"], dtype=object), n))
    parts = split_by_asset(r)
    assert [p.asset_id for p in parts] == ["a", "b", "c", "d"]
    for p in parts:
        mask = asset == p.asset_id  # arrival order kept within each asset
        for col in ("sensor", "ts", "value", "quality", "unit"):
            assert getattr(p, col).tolist() == getattr(r, col)[mask].tolist(), col
    assert sum(len(p) for p in parts) == n


def _fb(values: np.ndarray, sensors: tuple[str, ...]) -> FeatureBatch:
    w = len(values)
    return FeatureBatch("pump-1", sensors, np.arange(w, dtype=np.int64) * 1000, np.arange(1, w + 1) * 1000, values)


def test_base_rows_of_the_batch_order_equal_those_built_sensor_by_sensor():
    rng = np.random.default_rng(5)
    values = rng.standard_normal((3, 3, 8))
    values[1, 2, :] = np.nan  # a sensor without readings in one window: NaN features, NaN count
    values[0, 0, 7] = np.inf
    fb = _fb(values, ("a", "b", "c"))
    fast = base_rows(fb, ("a", "b", "c"))
    # the general path: the model's columns in another order, then put back in the batch's order
    general = base_rows(fb, ("c", "a", "b"))[:, [1, 2, 0], :]
    np.testing.assert_array_equal(fast, general)
    assert fast.dtype == np.float64 and not np.shares_memory(fast, values)
    assert fast[1, 2, -1] == 0.0 and np.isfinite(fast[:, :, -1]).all()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_is_sentinel_on_a_few_values_equals_the_vectorised_check(dtype):
    codes = sorted(SENTINEL_CODES)
    few = np.array([*codes, 0.0, -0.0, np.nan, np.inf, -999.0001, 65535.5][:16], dtype=dtype).reshape(4, 4)
    many = np.tile(few, (20, 1))  # over the small-array limit: the vectorised comparisons
    assert few.size <= 64 < many.size
    assert is_sentinel(few).tolist() == is_sentinel(many)[:4].tolist()
    assert is_sentinel(few).sum() == 10


def _counts(stage: str) -> list[float]:
    child = latency.STAGE_SECONDS.labels(stage)
    return [b.get() for b in child._buckets] + [child._sum.get()]  # noqa: SLF001


def test_one_value_lands_in_the_bucket_the_bulk_observation_picks():
    values = [0.0, 0.001, 0.0010001, 0.5, 7.5, 60.0, 61.0, float("nan")]
    for v in values:
        latency.observe_many("test_single", [v])
    latency.observe_many("test_bulk", np.array(values))
    assert _counts("test_single") == _counts("test_bulk")


# a SensorHealth pickled by main at 81e969c (before `__reduce__`): slots by name, as recovery snapshots hold them
_OLDER_HEALTH = bytes.fromhex(
    "800595ec000000000000008c2f736d6172745f6d61696e74656e616e63652e6f70657261746f72732e6a756467652e73656e736f72"
    "5f6865616c7468948c0c53656e736f724865616c74689493942981944e7d94288c0866697273745f6d73948a0600a8da769b018c02"
    "6c6f94473ff00000000000008c026869944740040000000000008c096c6173745f6d65616e94473ffc0000000000008c0b757375"
    "616c5f636f756e74944740240000000000008c0777696e646f7773944b038c04666c6174944b018c08666c61745f72756e944b01"
    "8c0c6c6f6e676573745f666c6174944b028c0a73696c656e745f72756e944b00758694622e"
)


def test_sensor_health_pickles_positionally_and_reads_the_older_form():
    h = SensorHealth(first_ms=1_767_225_600_000, lo=1.0, hi=2.5, last_mean=1.75, usual_count=10.0, windows=3,
                     flat=1, flat_run=1, longest_flat=2, silent_run=0)
    new = pickle.dumps(h, protocol=5)
    assert pickle.loads(new) == h
    assert pickle.loads(_OLDER_HEALTH) == h  # snapshots taken before still resume (zero_seen: its default)
    seen = SensorHealth(first_ms=1, last_mean=2.0, zero_seen=True)
    assert pickle.loads(pickle.dumps(seen, protocol=5)) == seen  # every field survives, the last added too
    assert b"longest_flat" not in new and b"silent_run" not in new  # positional: no slot names in every snapshot
    assert len(new) < len(_OLDER_HEALTH) - 60  # 19 fields positionally still beat the older form's 10 by name


def test_median_gap_equals_numpys_median_of_the_positive_gaps():
    from smart_maintenance.operators.ingest.windows import _median_gap

    rng = np.random.default_rng(11)
    cases = [[], [5], [3, 3, 3], [0, 10, 30, 30, 60], [7, 1, 4], [0, 1, 3], [0, 1, 2, 4]]
    cases += [rng.integers(0, 50, size=k).tolist() for k in range(2, 40)]  # repeats, unsorted, odd and even
    cases += [(1_767_225_600_000 + rng.integers(0, 10**7, size=9)).tolist()]  # epoch milliseconds
    for times in cases:
        gaps = np.diff(np.sort(np.array(times, dtype=np.int64)))
        gaps = gaps[gaps > 0]
        expected = float(np.median(gaps)) if len(gaps) else 1000.0
        assert _median_gap(times) == expected, times


def test_sentinel_windows_of_a_few_windows_equal_the_vectorised_check():
    from smart_maintenance.operators.judge.sensor_health import _sentinel_windows_vectorised, sentinel_windows

    rng = np.random.default_rng(12)
    for trial in range(60):
        values = rng.standard_normal((int(rng.integers(0, 4)), int(rng.integers(1, 7)), 8))
        pick = rng.random(values.shape) < 0.1
        values[pick] = rng.choice(np.array([*sorted(SENTINEL_CODES), np.nan, np.inf, 0.0, -0.0]), int(pick.sum()))
        assert values.shape[0] * values.shape[1] <= 32
        assert sentinel_windows(values).tolist() == _sentinel_windows_vectorised(values).tolist(), trial
        assert sentinel_windows(values).dtype == bool


def test_fuse_of_zero_learned_scores_is_the_limits_score_bit_for_bit():
    from smart_maintenance.operators.detect.detectors import LEARNED, _fuse, _fuse_zeros

    s_lim = np.array([0.0, -0.0, 0.3, 1.0, np.nan, 5e-324, 0.999999])
    for w in (0.0, 0.25, 0.5):
        for k in range(1, len(LEARNED) + 1):
            general = _fuse(s_lim, {d: np.zeros(len(s_lim)) for d in LEARNED[:k]}, w)
            fast = _fuse_zeros(s_lim)
            assert general.tobytes() == fast.tobytes() and fast.dtype == general.dtype


def test_a_flush_closes_what_the_general_masks_close():
    from smart_maintenance.operators.ingest import windows as W

    rng = np.random.default_rng(13)
    ts = np.sort(rng.integers(0, 10 * 60_000, 40)).astype(np.int64)
    state = W.buffered(W.WindowState(asset_id="p", length_ms=60_000, sensors=("a", "b", "c"), max_ts=int(ts[-1]),
                          closed_until=-60_000), rng.integers(0, 3, 40).astype(np.int32), ts,
                          rng.standard_normal(40))
    flushed, fb = W._close(state, "p", W._ALL_CLOSED)
    general, fb2 = W._close(state, "p", W._ALL_CLOSED - 1)  # not the flush's bound: the masks' path
    assert fb is not None and fb2 is not None
    for name in ("window_start", "window_end", "values"):
        assert getattr(fb, name).tobytes() == getattr(fb2, name).tobytes()
    assert flushed.closed_until == general.closed_until
    for name in ("buf_code", "buf_ts", "buf_value"):
        a, b = getattr(flushed, name), getattr(general, name)
        assert len(a) == 0 and a.dtype == b.dtype and len(b) == 0


def test_a_young_assets_detection_equals_the_general_fuse_and_explanation():
    """detect() before a fit skips fusing and explaining zero scores: the same Scored as with them."""
    from smart_maintenance.operators.detect import detectors as D
    from smart_maintenance.operators.profile import AssetProfile, SensorLimits

    rng = np.random.default_rng(14)
    values = np.abs(rng.standard_normal((6, 3, 8))) + 1.0
    values[:, :, 7] = 30
    fb = _fb(values, ("a", "b", "c"))
    cfg = D.DetectConfig(warmup_windows=8, baseline_size=8, block=4)
    values[3:, 1, 0] = 3.0  # sensor b's mean over its normal band (1 to 2, failing at 4): explained by the limits
    profile = AssetProfile("pump-1", limits=(("b", SensorLimits(0.0, 10.0, 1.0, 2.0, 4.0, True)),))
    fast_state, fast = D.detect(None, fb, profile, cfg)
    assert any(fast.contributions) and not all(fast.contributions)  # some windows explained, some not
    orig = D._fuse_zeros
    try:  # the general path: fusing the zero scores as for a fitted model
        D._fuse_zeros = lambda s_lim: D._fuse(s_lim, {d: np.zeros(len(s_lim)) for d in cfg.detectors},
                                               cfg.weaker_weight)
        general_state, general = D.detect(None, fb, profile, cfg)
    finally:
        D._fuse_zeros = orig
    assert fast.score.tobytes() == general.score.tobytes()
    assert fast.contributions == general.contributions and fast.feature_contributions == general.feature_contributions
    assert fast_state.ring.tobytes() == general_state.ring.tobytes() and fast_state.seen == general_state.seen == 6


def test_features_of_one_window_equal_those_computed_beside_another_window():
    """window_features of one window skips the window bookkeeping: the same features as the general path, which
    a second window (far away, its own sensors) forces."""
    from smart_maintenance.operators.ingest.features import window_features

    rng = np.random.default_rng(15)
    length = 60_000
    for trial in range(40):
        k = int(rng.integers(1, 50))
        ts = rng.integers(5 * length, 6 * length, k).astype(np.int64)  # arrival order, not sorted
        code = rng.integers(0, 4, k).astype(np.int32)
        value = rng.standard_normal(k) * 10 ** float(rng.integers(-3, 4))
        if trial % 3 == 0:
            ts[:] = ts[0]  # every reading at one time: no slope
        one = window_features("p", ("a", "b", "c", "d"), code, ts, value, length)
        other = window_features("p", ("a", "b", "c", "d"), np.r_[code, 0], np.r_[ts, 9 * length],
                                np.r_[value, 1.0], length)
        assert len(one) == 1 and len(other) == 2
        assert one.values.tobytes() == other.values[:1].tobytes(), trial
        assert one.window_start.tolist() == other.window_start[:1].tolist() == [5 * length]
        assert one.window_end.tolist() == [6 * length] and one.window_start.dtype == other.window_start.dtype
