"""Integer codes for the distinct values of a column: `pandas.factorize`'s results, pandas imported only when
a column is large.

Every flow process imported pandas at start (~0.3-0.45 CPU-s) for `factorize` alone (issue #17 item 3:
each process of a cluster pays its imports). A column of up to `SMALL` values (a live poll's batch) is coded
here with a dict (object columns: asset ids, sensor names, units) or `numpy.unique` (integer columns): at
that size faster than pandas, whose call costs ~13 µs before the first element. A larger column (a backlog's
10,000-reading batches) goes to `pandas.factorize`, imported then: its hash table costs a third to a half of a dict's
time per element. So a flow process starts without pandas, and a flow that never sees a large batch never
loads it (a forest fit does: scikit-learn imports pandas).

Guarantees: `factorize(v, sort=s)` equals `pandas.factorize(v, sort=s)` for object columns (names, None for
missing) and integer or bool columns: the same codes, the same uniques (the first object seen of each, in
order of first appearance, or sorted), missing values (None, float NaN, NaT, Decimal NaN) coded -1 and left
out of the uniques; values that compare equal share a code, as in a dict (1, 1.0 and True are one value, as
pandas has them). `tests/unit/test_codes.py` compares the two on tricky columns.

Errors: unhashable values raise `TypeError` (as pandas does); `sort=True` needs mutually comparable values.

>>> codes, uniques = factorize(np.array(["b", "a", None, "b"], dtype=object))
>>> codes.tolist(), uniques.tolist()
([0, 1, -1, 0], ['b', 'a'])
>>> codes, uniques = factorize(np.array([30, 10, 30, 20]), sort=True)
>>> codes.tolist(), uniques.tolist()
([2, 0, 2, 1], [10, 20, 30])
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import numpy as np

__all__ = ["SMALL", "distinct", "factorize"]

SMALL = 200
"""Columns of up to this many values are coded without pandas (`bench/factorize.py`: the two cost the same at
100-300 fresh names; pandas costs ~13 µs more at 10, a third of a dict at 10,000)."""


def _missing(value: Any) -> bool:
    """pandas' notion of a missing value in an object column (pd.NA and pd.NaT are pandas' own types)."""
    if value is None:
        return True
    if isinstance(value, float):
        return value != value
    if isinstance(value, (np.datetime64, np.timedelta64)):
        return bool(np.isnat(value))
    if isinstance(value, Decimal):
        return value.is_nan()
    return type(value).__name__ in ("NAType", "NaTType")


def distinct(values: np.ndarray) -> list[Any]:
    """The distinct values of an object column in order of first appearance, missing values included.

    >>> distinct(np.array(["p2", "p1", "p2"], dtype=object))
    ['p2', 'p1']
    """
    return list(dict.fromkeys(values.tolist()))


def factorize(values: np.ndarray, *, sort: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """`(codes, uniques)` as `pandas.factorize(values, sort=sort)` gives them (see the module's Guarantees)."""
    if len(values) > SMALL:
        import pandas as pd  # a large batch: pandas' hash table is cheaper per value than a dict

        codes, uniques = pd.factorize(values, sort=sort)
        return codes, uniques
    if values.dtype != object:
        return _factorize_numbers(values, sort)
    items = values.tolist()
    lookup: dict[Any, int] = dict.fromkeys(items, -1)  # keeps the first object seen of each value
    if set(map(type, lookup)) == {str}:  # names: none is missing (a check per distinct value costs ~0.3 µs)
        uniques = list(lookup)
    else:
        uniques = [v for v in lookup if not _missing(v)]
    if sort:
        uniques.sort()
    for i, v in enumerate(uniques):
        lookup[v] = i
    codes = np.fromiter(map(lookup.__getitem__, items), dtype=np.intp, count=len(items))
    out = np.empty(len(uniques), dtype=object)
    out[:] = uniques
    return codes, out


def _factorize_numbers(values: np.ndarray, sort: bool) -> tuple[np.ndarray, np.ndarray]:
    if values.dtype.kind not in "biu":
        raise TypeError(f"factorize: object, integer or bool columns only, not {values.dtype}")
    uniques, first, inverse = np.unique(values, return_index=True, return_inverse=True)
    codes = inverse.reshape(-1).astype(np.intp, copy=False)
    if sort:
        return codes, uniques
    order = np.argsort(first, kind="stable")  # the uniques in order of first appearance
    rank = np.empty(len(order), dtype=np.intp)
    rank[order] = np.arange(len(order))
    return rank[codes], uniques[order]
