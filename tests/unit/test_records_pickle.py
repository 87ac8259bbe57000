"""AssetReadings cross processes pickled: the numeric columns as raw bytes, the text columns as lists, the same
values back."""

from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np

from smart_maintenance.operators.ingest.parse import split_by_asset
from smart_maintenance.operators.records import AssetReadings, Readings


def _builds(payload: bytes) -> int:
    """How many ndarrays numpy rebuilds (its `_reconstruct`) when the payload is unpickled."""
    calls = [0]

    class Counting(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            found = super().find_class(module, name)
            if name != "_reconstruct":
                return found

            def counted(*args: Any) -> Any:
                calls[0] += 1
                return found(*args)
            return counted

    Counting(io.BytesIO(payload)).load()
    return calls[0]


def test_an_asset_batch_round_trips_with_no_column_pickled_as_an_array():
    batch = Readings.of([("b", "t", 1, 0.5), ("a", "t", 2, np.nan), ("b", "u", 3, -1.0)])
    batch = Readings(batch.asset_id, batch.sensor, batch.ts, batch.value, np.array([0, 192, -1], np.int16),
                     np.array(["bar", None, "bar"], dtype=object))
    for part in split_by_asset(batch):  # views of sorted copies, as the flow sends them
        payload = pickle.dumps(part)
        back = pickle.loads(payload)
        assert _builds(payload) == 0  # sensor and unit as lists; ts, value, quality as raw bytes
        assert back.asset_id == part.asset_id
        for name in ("sensor", "ts", "value", "quality", "unit"):
            got, want = getattr(back, name), getattr(part, name)
            assert got.dtype == want.dtype and np.array_equal(got, want, equal_nan=want.dtype.kind == "f"), name
        back.value[0] = 7.0  # writable, as an unpickled array was before


def test_missing_columns_stay_missing():
    a = AssetReadings("p", np.array(["t", "t"], dtype=object), np.array([1, 2], np.int64), np.array([1.0, 2.0]))
    back = pickle.loads(pickle.dumps(a))
    assert back.quality is None and back.unit is None
    assert _builds(pickle.dumps(a)) == 0
