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
    assert len(new) < len(_OLDER_HEALTH) - 80  # positional: no slot names in every snapshot
