"""Robust centre and scale of detector rows: the baseline detector's median / MAD, with floors.

The scale is the largest of the MAD (as a standard deviation), a quarter of
the standard deviation (a column whose MAD is 0 but which still moves), a
thousandth of the level and 1e-6, so no column divides by zero.

>>> import numpy as np
>>> center, scale = center_scale(np.array([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0], [np.nan, 5.0]]))
>>> center.tolist(), [round(float(s), 4) for s in scale]
([2.0, 5.0], [1.4826, 0.005])
"""

from __future__ import annotations

import numpy as np


def center_scale(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column of `x` (rows by columns, NaN ignored): the median (0 where a column is all NaN) and the scale."""
    center = np.nanmedian(x, axis=0)
    mad = np.nanmedian(np.abs(x - center), axis=0) * 1.4826
    spread = np.nanstd(x, axis=0)
    scale = np.maximum.reduce([mad, 0.25 * spread, 1e-3 * np.abs(center), np.full_like(mad, 1e-6)])
    return np.nan_to_num(center), scale
