"""What crosses between cluster processes: an asset's readings (split_by_asset -> window) are pickled by Bytewax
for every item routed to the other process (#17 item 3). Their object columns go as lists, not through numpy's
object-array pickling (~10x slower for a few names), and come back as the same arrays."""

from __future__ import annotations

import pickle

import numpy as np

from smart_maintenance.operators.records import AssetReadings, _asset_readings


def _readings(unit: bool, quality: bool) -> AssetReadings:
    return AssetReadings(
        "pump-1",
        np.array(["temp", "vib", "temp"], dtype=object),
        np.array([1, 2, 3], dtype=np.int64),
        np.array([1.5, np.nan, 2.5]),
        np.array([0, 1, 0], dtype=np.int16) if quality else None,
        np.array(["degC", None, "degC"], dtype=object) if unit else None,
    )


def _same(a: AssetReadings, b: AssetReadings) -> None:
    assert b.asset_id == a.asset_id
    for col in ("sensor", "ts", "value", "quality", "unit"):
        x, y = getattr(a, col), getattr(b, col)
        if x is None:
            assert y is None
            continue
        assert y.dtype == x.dtype and y.shape == x.shape and y.flags.writeable
        np.testing.assert_array_equal(y, x)


def test_an_assets_readings_round_trip_through_pickle_unchanged() -> None:
    for unit in (False, True):
        for quality in (False, True):
            a = _readings(unit, quality)
            _same(a, pickle.loads(pickle.dumps(a, protocol=5)))
    empty = AssetReadings("p", np.empty(0, dtype=object), np.empty(0, dtype=np.int64), np.empty(0))
    _same(empty, pickle.loads(pickle.dumps(empty)))


def test_object_columns_are_pickled_as_lists_not_as_numpy_object_arrays() -> None:
    data = pickle.dumps(_readings(unit=True, quality=True), protocol=5)
    assert b"numpy" not in data  # no numpy object in the pickle: numeric columns as bytes, names as lists


def test_pickles_of_the_earlier_form_still_load() -> None:
    """Recovery snapshots written before this change hold the object columns as arrays."""
    a = _readings(unit=True, quality=True)
    old = _asset_readings(a.asset_id, a.sensor, a.ts.tobytes(), a.ts.dtype.str, a.value.tobytes(), a.value.dtype.str,
                          a.quality.tobytes(), a.quality.dtype.str, a.unit)  # type: ignore[union-attr]
    _same(a, old)
