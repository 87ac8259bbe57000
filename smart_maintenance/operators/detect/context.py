"""Detector features of a window in the context of the windows before it.

A window's own statistics see only its own samples. Short windows react fast
but are noisy; collective anomalies (a valve left half closed, a rotor out of
balance) show in how the last few windows behave together. So each window's
detector row aggregates the last `context` windows (itself included) and,
with `lag` > 0, adds a *change* feature per sensor: the context mean now
minus the context mean `lag` windows earlier. A change feature sees slow
sensors (temperatures) move without being fooled by where they started.

Everything is causal: a row uses only its own window and earlier ones. The
last `context - 1 + lag` windows are kept in a small history array, so the
rows do not depend on how the windows were batched.
"""

from __future__ import annotations

import numpy as np

from smart_maintenance.operators.profile import COUNT, MAX, MEAN, MIN, SLOPE, STD
from smart_maintenance.operators.records import FeatureBatch

BASE = (MEAN, STD, MIN, MAX, SLOPE, COUNT)
"""The window features kept per sensor, in this order, in the history."""
assert BASE[:5] == (0, 1, 2, 3, 4)  # noqa: S101 - `base_rows` copies them as one slice
_BASE = np.array(BASE)
LEVEL = ("mean", "std", "min", "max", "slope")
CHANGE = "change"


def feature_names(lag: int) -> tuple[str, ...]:
    """Per-sensor detector feature names, in column order."""
    return LEVEL + ((CHANGE,) if lag > 0 else ())


def base_rows(fb: FeatureBatch, columns: tuple[str, ...]) -> np.ndarray:
    """(windows, sensors, 6): mean, std, min, max, slope, count of `columns` (NaN / 0 where missing)."""
    if columns == fb.sensors:  # the usual case: the batch has the model's sensors, in its order
        # a copy in float64 (the loop below writes it), by two slices: BASE is the first five features and count
        out = np.empty((len(fb), len(columns), len(BASE)))
        out[:, :, :5] = fb.values[:, :, :5]
        out[:, :, 5] = fb.values[:, :, COUNT]
        counts = out[:, :, -1]
        if not np.isfinite(counts).all():
            out[:, :, -1] = np.nan_to_num(counts)
        return out
    out = np.full((len(fb), len(columns), len(BASE)), np.nan)
    out[:, :, -1] = 0.0
    for j, name in enumerate(columns):
        if name in fb.sensors:
            out[:, j, :] = fb.values[:, fb.sensors.index(name), BASE]
    out[:, :, -1] = np.nan_to_num(out[:, :, -1])
    return out


def history_length(context: int, lag: int) -> int:
    return context - 1 + lag


def _aggregate(x: np.ndarray, context: int) -> np.ndarray:
    """Roll `context` windows over axis 0 of x (m, s, 6); returns (m - context + 1, s, 5)."""
    if context == 1:
        return x[:, :, :5].copy()
    win = np.lib.stride_tricks.sliding_window_view(x, context, axis=0)  # (m', s, 6, c)
    mean, std, lo, hi, slope, n = (win[:, :, k, :] for k in range(6))
    have = n > 0
    total = n.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = np.where(have, mean * n, 0.0).sum(axis=-1) / total
        ss = np.where(have, n * (std * std + mean * mean), 0.0).sum(axis=-1) / total
        sd = np.sqrt(np.maximum(ss - m * m, 0.0))
        sl = np.where(have, slope, 0.0).sum(axis=-1) / have.sum(axis=-1)
    lo = np.where(have, lo, np.inf).min(axis=-1)
    hi = np.where(have, hi, -np.inf).max(axis=-1)
    out = np.stack([m, sd, lo, hi, sl], axis=-1)
    out[total == 0] = np.nan
    return out


def context_rows(history: np.ndarray, base: np.ndarray, context: int, lag: int) -> tuple[np.ndarray, np.ndarray]:
    """Detector rows (windows, sensors * features) for `base`, and the history to keep.

    `history` holds the base rows of the windows before `base` (at most
    `history_length(context, lag)`; an empty array at the start of a stream).
    """
    n, s = base.shape[0], base.shape[1]
    h = history_length(context, lag)
    if len(history) and history.shape[1] != s:
        raise ValueError(f"history has {history.shape[1]} sensors, batch has {s}")
    width = s * len(feature_names(lag))
    if n == 0:
        return history, np.empty((0, width))
    if h:
        pad = np.full((h - len(history), s, len(BASE)), np.nan)
        pad[:, :, -1] = 0.0
        full = np.concatenate([pad, history, base])
    else:  # each window alone (the default): nothing to pad
        full = base
    agg = _aggregate(full, context)  # rows of the last lag + n windows
    rows = agg[lag:]
    if lag > 0:
        change = agg[lag:, :, 0] - agg[:n, :, 0]
        rows = np.concatenate([rows, change[:, :, None]], axis=2)
    keep = full[len(full) - h:] if h else full[:0]
    return keep, rows.reshape(n, -1)
