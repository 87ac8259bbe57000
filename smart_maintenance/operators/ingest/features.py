"""Per-sensor window features, computed for many windows at once.

All work is vectorised over the readings of the closed windows: one sort, then
`reduceat` per statistic, so the cost per reading is a few numpy element
operations and there is no Python loop over readings or windows.
"""

from __future__ import annotations

import numpy as np

from smart_maintenance.operators.records import FEATURES, FeatureBatch

N_FEATURES = len(FEATURES)


def window_features(
    asset_id: str,
    sensors: tuple[str, ...],
    sensor_code: np.ndarray,
    ts: np.ndarray,
    value: np.ndarray,
    length_ms: int,
    phase_ms: int = 0,
) -> FeatureBatch:
    """Features of every window touched by these readings (which belong to closed windows).

    `sensor_code[i]` indexes `sensors`; windows are [phase_ms + k * length_ms, phase_ms + (k + 1) * length_ms).
    Slope is in units per second (least
    squares over the window); std is the population standard deviation.

    >>> fb = window_features("p1", ("t",), np.array([0, 0, 0]), np.array([0, 1000, 2000]),
    ...                      np.array([1.0, 2.0, 3.0]), 60_000)
    >>> fb.values[0, 0].round(3).tolist()
    [2.0, 0.816, 1.0, 3.0, 1.0, 2.16, 3.0, 3.0]
    """
    n_sensors = len(sensors)
    if len(ts) == 0:
        return FeatureBatch(
            asset_id,
            sensors,
            np.empty(0, np.int64),
            np.empty(0, np.int64),
            np.empty((0, n_sensors, N_FEATURES)),
        )
    if phase_ms:  # times from the asset's first window boundary; the window starts shifted back below
        ts = ts - phase_ms
    win = ts // length_ms
    order = np.lexsort((ts, sensor_code, win))
    win, code, t, v = win[order], sensor_code[order], ts[order], value[order]

    # one window (sorted by window first: the first and last agree), the usual close of a young asset: the
    # groups are the sensors and the window bookkeeping below is skipped; the arithmetic is the same
    one = bool(win[0] == win[-1])
    # np.concatenate, not np.r_: the same arrays at a fraction of the fixed cost (many assets: many small calls)
    changes = code[1:] != code[:-1] if one else (win[1:] != win[:-1]) | (code[1:] != code[:-1])
    group_start = np.flatnonzero(np.concatenate(([True], changes)))
    group_end = np.concatenate((group_start[1:], [len(t)]))
    n = (group_end - group_start).astype(np.float64)
    g_code = code[group_start]

    # time within the window in seconds keeps the slope sums well conditioned
    ts_s = (t - (win[0] * length_ms if one else win * length_ms)) / 1000.0
    s_v = np.add.reduceat(v, group_start)
    s_vv = np.add.reduceat(v * v, group_start)
    s_t = np.add.reduceat(ts_s, group_start)
    s_tt = np.add.reduceat(ts_s * ts_s, group_start)
    s_tv = np.add.reduceat(ts_s * v, group_start)

    mean = s_v / n
    var = np.maximum(s_vv / n - mean * mean, 0.0)
    denom = n * s_tt - s_t * s_t
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = np.where(denom > 1e-12, (n * s_tv - s_t * s_v) / np.where(denom > 1e-12, denom, 1.0), 0.0)
    stats = np.empty((len(n), N_FEATURES))  # filled column by column: np.column_stack's fixed cost is high
    stats[:, 0] = mean
    stats[:, 1] = np.sqrt(var)
    stats[:, 2] = np.minimum.reduceat(v, group_start)
    stats[:, 3] = np.maximum.reduceat(v, group_start)
    stats[:, 4] = slope
    stats[:, 5] = np.sqrt(s_vv / n)
    stats[:, 6] = v[group_end - 1]
    stats[:, 7] = n

    if one:
        values = np.full((1, n_sensors, N_FEATURES), np.nan)
        values[:, :, 7] = 0.0
        values[0, g_code] = stats
        start = win[:1] * length_ms + phase_ms
        return FeatureBatch(asset_id, sensors, start, start + length_ms, values)
    # g_win is sorted (win is the sort's first key): its distinct values without np.unique's sort
    g_win = win[group_start]
    w_idx = np.cumsum(np.concatenate(([False], g_win[1:] != g_win[:-1])))
    windows = g_win[np.concatenate(([True], g_win[1:] != g_win[:-1]))]
    values = np.full((len(windows), n_sensors, N_FEATURES), np.nan)
    values[:, :, 7] = 0.0
    values[w_idx, g_code] = stats
    start = windows * length_ms + phase_ms
    return FeatureBatch(asset_id, sensors, start, start + length_ms, values)
