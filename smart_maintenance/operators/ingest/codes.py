"""Integer codes for the distinct values of a column: `pandas.factorize`'s results without importing pandas.

Every flow process paid ~0.3-0.45 CPU-s at start to import pandas, and the flow used nothing of it but
`factorize` (issue #17 item 3: each process of a cluster pays its imports). Here the same codes and uniques
come from a dict (object columns: asset ids, sensor names, units) or from `numpy.unique` (integer codes).

Guarantees: for the inputs the flow gives (object arrays of names, None for missing; integer or bool
arrays) `factorize(v, sort=s)` equals `pandas.factorize(v, sort=s)`: the same codes, the same uniques (the
first object seen of each, in order of first appearance, or sorted), missing values (None, float NaN, NaT,
Decimal NaN) coded -1 and left out of the uniques. Values that compare equal share a code, as in a dict
(1, 1.0 and True are one value, as pandas has them). `tests/unit/test_codes.py` compares the two on tricky
columns. A dict costs about pandas' time per element on a whole column (both hash each name once) and less
per call on small batches (pandas' call overhead is ~15 µs).

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

__all__ = ["distinct", "factorize"]


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
    if values.dtype != object:
        return _factorize_numbers(values, sort)
    items = values.tolist()
    lookup: dict[Any, int] = dict.fromkeys(items, -1)  # keeps the first object seen of each value
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
