"""`operators/ingest/codes.factorize` gives pandas.factorize's codes and uniques, without importing pandas."""

from __future__ import annotations

import math
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from smart_maintenance.operators.ingest.codes import distinct, factorize


def _objects(values: list[object]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


TRICKY_OBJECTS = [
    [],
    ["p1"],
    ["b", "a", "b", "c", "a"],
    ["p1", None, "p2", None, "p1"],  # missing: -1, not a unique
    [None, None],
    ["t", float("nan"), "t", math.nan, np.float64("nan")],  # distinct NaN objects: all missing
    [1, 1.0, True, "1", 2, False, 0],  # equal values share a code, as in a dict
    ["é", "e\u0301", "\x00", "", " ", "Z", "a"],  # unicode forms are different names
    [np.str_("x"), "x", "y", np.str_("y")],  # the first object seen is the unique
    [Decimal("NaN"), "a", np.datetime64("NaT"), "a"],
    [("a", 1), ("a", 1), ("b", 2)],
    [f"asset-{i % 7}" for i in range(200)],
]


@pytest.mark.parametrize("values", TRICKY_OBJECTS, ids=range(len(TRICKY_OBJECTS)))
def test_object_columns_code_as_pandas_does(values: list[object]) -> None:
    col = _objects(values)
    codes, uniques = factorize(col)
    want_codes, want_uniques = pd.factorize(col)
    assert codes.dtype == want_codes.dtype and codes.tolist() == want_codes.tolist()
    assert uniques.dtype == object and len(uniques) == len(want_uniques)
    assert all(a is b for a, b in zip(uniques, want_uniques))  # the very objects pandas keeps


@pytest.mark.parametrize("values", [[], ["b", "a", None, "c", "a", "b"], ["p10", "p2", "p1", "P1", "p2"],
                                    [f"asset-{(i * 37) % 11}" for i in range(100)]])
def test_sorted_object_columns_code_as_pandas_does(values: list[object]) -> None:
    col = _objects(values)
    codes, uniques = factorize(col, sort=True)
    want_codes, want_uniques = pd.factorize(col, sort=True)
    assert codes.tolist() == want_codes.tolist() and uniques.tolist() == want_uniques.tolist()


@pytest.mark.parametrize("dtype", [np.int64, np.int16, np.uint8, np.bool_])
@pytest.mark.parametrize("sort", [False, True])
def test_integer_columns_code_as_pandas_does(dtype: type, sort: bool) -> None:
    rng = np.random.default_rng(3)
    for n in (0, 1, 7, 150):
        col = rng.integers(0, 2 if dtype is np.bool_ else 40, n).astype(dtype)
        if dtype is np.int16:
            col[::3] = -1  # QUALITY_UNKNOWN is a value here, not missing
        codes, uniques = factorize(col, sort=sort)
        want_codes, want_uniques = pd.factorize(col, sort=sort)
        assert codes.dtype == want_codes.dtype and codes.tolist() == want_codes.tolist()
        assert uniques.dtype == want_uniques.dtype and uniques.tolist() == want_uniques.tolist()


def test_float_columns_and_unhashable_values_are_refused() -> None:
    with pytest.raises(TypeError):
        factorize(np.array([1.0, 2.0]))
    with pytest.raises(TypeError):
        factorize(_objects([["a"], ["a"]]))


def test_distinct_keeps_the_order_of_first_appearance() -> None:
    assert distinct(_objects(["b", "a", None, "b"])) == ["b", "a", None]


def test_a_small_column_is_coded_without_pandas_and_a_large_one_by_pandas() -> None:
    import subprocess
    import sys

    code = ("import sys, numpy as np\n"
            "from smart_maintenance.operators.ingest.codes import SMALL, factorize\n"
            "factorize(np.array(['p%d' % (i % 9) for i in range(SMALL)], dtype=object), sort=True)\n"
            "print('pandas' in sys.modules)\n"
            "factorize(np.array(['p%d' % (i % 9) for i in range(SMALL + 1)], dtype=object))\n"
            "print('pandas' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


@pytest.mark.parametrize("names", [("p0", "p1", "p2"), ("p0", "p1\r\n", "")], ids=["good", "bad"])
def test_check_readings_gives_one_batch_the_verdicts_of_its_small_parts(names: tuple[str, ...]) -> None:
    """Batches of up to SMALL readings skip coding each reading when every name is good; larger ones code."""
    from smart_maintenance.operators.ingest.codes import SMALL
    from smart_maintenance.operators.ingest.parse import MIN_TS_MS, check_readings
    from smart_maintenance.operators.records import Parsed, Readings

    now = MIN_TS_MS + 10_000_000
    rows = [(names[i % 3], ("t", "v")[i % 2], now + 9_999_999 if i % 7 == 0 else now - i,
             math.nan if i % 5 == 0 else float(i)) for i in range(3 * SMALL)]
    whole = check_readings(Parsed(Readings.of(rows)), now_ms=now, max_skew_ms=60_000)
    parts = [check_readings(Parsed(Readings.of(rows[i:i + SMALL // 2])), now_ms=now, max_skew_ms=60_000)
             for i in range(0, len(rows), SMALL // 2)]
    assert [(x.reason, x.detail, x.raw) for x in whole.rejects] == [
        (x.reason, x.detail, x.raw) for p in parts for x in p.rejects]
    assert whole.readings.ts.tolist() == [t for p in parts for t in p.readings.ts.tolist()]
    assert len(whole.rejects) > 3 * SMALL // 7
