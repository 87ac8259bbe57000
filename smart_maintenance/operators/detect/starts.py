"""A baseline of an asset's start windows, apart from its steady running.

A start is the first running window after a stopped one (the operating
states or the registry's state sensor say which). It holds the start's
transient: a load sensor part of the window at rest, an inrush, a slope. A
baseline fitted on steady running scores a healthy start over the open
threshold, which is why validation's start-up grace hides starts; on an asset
that cycles in runs of 2-3 windows a degradation then often shows only in the
one window it never judges.

This keeps the asset's own earlier starts (their detector rows, the last
`keep` of them) and scores a start by the robust z of its columns against
them (median / MAD per column, as the baseline detector), the largest of the
columns the fit uses. Score before learning, and learn a start only while
fewer than `min_starts` are kept or when it scored under `learn_below`: a
degrading machine's starts do not teach the baseline that they are normal.

Guarantees: a pure function of the windows seen, one window at a time (the
same windows give the same scores however they are batched); the state
pickles (numpy rows and a flag).

>>> import numpy as np
>>> s = StartBaseline(rows=np.empty((0, 2), np.float32))
>>> s, starts = start_windows(s, np.array([True, False, True, True, False, True]))
>>> starts.tolist(), s.after_stop
([False, False, True, False, False, True], False)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from smart_maintenance.operators.detect.finite import nan_to_num
from smart_maintenance.operators.detect.robust import center_scale
from smart_maintenance.operators.records import evolve


@dataclass(frozen=True)
class StartBaseline:
    """An asset's earlier start windows, oldest first, and whether its last window was stopped."""

    rows: np.ndarray  # float32, (starts kept, detector columns)
    after_stop: bool = False  # the last window seen was stopped: the next running one is a start

    @property
    def starts(self) -> int:
        return len(self.rows)


def start_windows(state: StartBaseline, running: np.ndarray) -> tuple[StartBaseline, np.ndarray]:
    """Which windows of a batch are starts (running after a stopped window), and the state after the batch."""
    before = np.concatenate([[state.after_stop], ~running[:-1]]) if len(running) else np.zeros(0, bool)
    starts: np.ndarray = running & before
    return evolve(state, after_stop=bool(~running[-1]) if len(running) else state.after_stop), starts


def start_z(state: StartBaseline, row: np.ndarray, use: np.ndarray, min_starts: int) -> float | None:
    """The largest robust z of `row`'s columns `use` against the kept starts; None while fewer than `min_starts`.

    >>> rows = np.array([[1.0, 10.0], [2.0, 11.0], [3.0, 12.0], [2.0, 11.0]], np.float32)
    >>> s = StartBaseline(rows=rows)
    >>> start_z(s, np.array([2.0, 11.0]), np.array([0, 1]), 4), start_z(s, np.array([2.0, 11.0]), np.array([0]), 5)
    (0.0, None)
    >>> round(start_z(s, np.array([2.0, 20.0]), np.array([0, 1]), 4), 2)
    12.14
    """
    if state.starts < min_starts or not len(use):
        return None
    center, scale = center_scale(state.rows[:, use].astype(np.float64))
    return float(nan_to_num(np.abs(row[use] - center) / scale).max())


def learn_start(state: StartBaseline, row: np.ndarray, keep: int) -> StartBaseline:
    """Keep `row` as the latest start, and at most `keep` of them."""
    rows = np.concatenate([state.rows, row[None, :].astype(np.float32)])[-keep:]
    return evolve(state, rows=rows)
