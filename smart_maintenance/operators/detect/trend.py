"""Evidence that builds up: a developing fault alarms before any one window is far out.

A wear fault grows slowly; while it is small, each window's multivariate
statistic (T², calibrated so 1.0 is the fit windows' 99th percentile) sits a
few times above its usual level, well under what opens a candidate (the
fused score's 0.6 is T² at 7.5 times that percentile). No window is
remarkable; their sum over hours is. This is a one-sided CUSUM in event time
on the window's T² relative to the asset's own recent level:

    r = T² / median(T² of the judged windows of the last `span_ms`)
    S = min(cap, max(0, S + (min(r, clip) - allowance) * hours))

with `hours` the window's length, so the same evidence takes the same time
whatever the asset's window length. The score is `1 - 0.1 ** (S / decision)`:
0.9 (decisive for validation) when the sum reaches `decision` hour-units.

Relative, not absolute: an asset whose fit is a little tight (its T² sits at
10 for days) has that as its usual level, and a fault is a rise above what
the asset has been doing lately; a day-long median follows a new normal
within half a day but a fault only once it has lasted that long. The
rolling median is river's `stats.RollingQuantile`.

The sum only moves on running, scored windows that carry no sentinel code,
no drifting sensor and no sensor under the new-normal watch (a step is a
setpoint change until it is known to last); it holds through stops (wear
does not heal while the machine stands) and through the first
`after_start_ms` of a run (start-up transients are not wear), and starts
again from zero when the detectors re-baseline on a new normal. `clip`
bounds what one window can add, so a spike does not open an alarm on its
own; `cap` makes the sum fall back within hours once the deviation is over.

river's `drift.PageHinkley` runs the same test but resets on detection and
answers yes/no; validation needs the graded, held sum, so the sum is kept
here.

Two halves, in two stages. Detection knows the window's T² and the asset's
recent level: `trend_evidence` gives each window's excess (its term of the
sum). Validation knows which sensors are faulty (`judge/sensor_health.py`,
judged after detection, and the cross-sensor drift): it keeps the sum
(`judged_sum`), which does not count a window with a faulty sensor and
starts again from zero after it. A faulty sensor's windows (an impossible
jump, a dropout, a drift before it was known) are far from the asset's
level; summed and held at the cap, they outlived the fault as a machine
alarm. Detection keeps the sum without the verdicts too (`trend_scores`),
only to know which windows to explain: the judged sum is never above it.

>>> cfg = TrendConfig(allowance=2.0, decision=1.0, clip=4.0, cap=2.0, after_start_ms=0, min_reference=2)
>>> s = TrendState()
>>> [round(s.update(t2, window_ms=1_800_000, cfg=cfg), 2) for t2 in (1.0, 1.0, 1.0, 3.0, 4.0, 9.0, 1.0)]
[0.0, 0.0, -0.5, 0.5, 1.0, 1.0, -0.75]
>>> value, scores = 0.0, []
>>> for excess, faulty in ((0.5, False), (0.5, False), (1.0, True), (0.5, False)):
...     value = judged_sum(value, excess, faulty, cfg)
...     scores.append(round(trend_score(value, cfg), 2))
>>> scores  # the third window has a faulty sensor: the sum starts again after it
[0.68, 0.9, 0.0, 0.68]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from river import stats


@dataclass(frozen=True)
class TrendConfig:
    allowance: float = 4.0  # T² this many times its recent median adds nothing; less takes evidence away
    decision: float = 4.0  # hour-units of excess that make a decisive score (0.9)
    clip: float = 8.0  # one window counts as at most this many times the recent median
    cap: float = 6.0  # the sum never exceeds this (hour-units): it falls back once the deviation ends
    span_ms: int = 24 * 3_600_000  # the recent level: the median of the judged windows of this long
    min_reference: int = 8  # judged windows needed before the median is trusted
    after_start_ms: int = 2 * 3_600_000  # the first two hours of each run neither add nor take evidence

    def __post_init__(self) -> None:
        if self.allowance <= 0 or self.decision <= 0 or self.clip <= self.allowance or self.cap < self.decision:
            raise ValueError("need allowance > 0, decision > 0, clip > allowance and cap >= decision")
        if self.after_start_ms < 0 or self.span_ms <= 0 or self.min_reference < 1:
            raise ValueError("need after_start_ms >= 0, span_ms > 0 and min_reference >= 1")


@dataclass
class TrendState:
    """Detection's half: the asset's recent level, its run clock, and the sum without sensor verdicts."""

    value: float = 0.0  # the sum, in hour-units of excess, not knowing which sensors are faulty (see the module)
    run_ms: int = 0  # running time since the last start
    recent: stats.RollingQuantile | None = None  # the median of the last span's judged T² (river)
    count: int = 0  # judged windows seen (the median is trusted from `min_reference`)

    def update(self, t2: float, *, window_ms: int, cfg: TrendConfig) -> float:
        """Fold one judged running window's calibrated T² into the recent level; the window's excess."""
        if self.recent is None:
            self.recent = stats.RollingQuantile(q=0.5, window_size=max(cfg.min_reference,
                                                                       math.ceil(cfg.span_ms / window_ms)))
        excess = 0.0
        if self.count >= cfg.min_reference:
            median = self.recent.get()
            ratio = t2 / max(float(median if median is not None else t2), 1e-9)
            excess = (min(ratio, cfg.clip) - cfg.allowance) * window_ms / 3_600_000
        self.recent.update(t2)
        self.count += 1
        return excess

    def score(self, cfg: TrendConfig) -> float:
        return trend_score(self.value, cfg)


def add_evidence(value: float, excess: float, cfg: TrendConfig) -> float:
    """The sum after one window's excess: never under zero, never over `cap`."""
    return min(cfg.cap, max(0.0, value + excess))


def judged_sum(value: float, excess: float, faulty: bool, cfg: TrendConfig) -> float:
    """Validation's half: the sum after one window, knowing whether a sensor of the window is faulty.

    A window with a faulty sensor does not count, and the sum starts again from zero after it. A NaN
    excess (no recent level: before the detectors' first fit, after a repair or a new normal) starts it
    again too.
    """
    if faulty or math.isnan(excess):
        return 0.0
    return add_evidence(value, excess, cfg)


def trend_score(value: float, cfg: TrendConfig) -> float:
    """The score of a sum: 0.9 (decisive for validation) at `decision` hour-units."""
    return float(1.0 - 0.1 ** (value / cfg.decision))


def trend_evidence(
    state: TrendState, t2: np.ndarray, running: np.ndarray, judged: np.ndarray, window_ms: int, cfg: TrendConfig
) -> np.ndarray:
    """Per window, in order: its excess in hour-units (0 where the window does not move the sum). `judged`:
    windows whose T² may move the sum (see the module)."""
    out = np.zeros(len(t2))
    for w in range(len(t2)):
        if not running[w]:
            state.run_ms = 0
        else:
            state.run_ms += window_ms
            if judged[w] and state.run_ms > cfg.after_start_ms:
                out[w] = state.update(float(t2[w]), window_ms=window_ms, cfg=cfg)
    return out


def trend_scores(state: TrendState, excess: np.ndarray, cfg: TrendConfig) -> np.ndarray:
    """Per window, in order: the score of the sum of `excess` (from `trend_evidence`) without sensor verdicts."""
    out = np.zeros(len(excess))
    for w in range(len(excess)):
        state.value = add_evidence(state.value, float(excess[w]), cfg)
        out[w] = state.score(cfg)
    return out
