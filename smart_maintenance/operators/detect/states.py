"""Operating states learned from the sensors themselves, for assets without a state sensor.

A stopped machine's load-carrying sensors fall toward zero: current, speed,
flow, pressure, vibration. Each sensor keeps its running level, the 90th
percentile of its window means (river's streaming P² quantile,
`river.stats.Quantile`), and the spread of its readings inside a window. A
sensor whose level is clearly away from zero (more than `min_level_spreads`
times its typical in-window spread) votes *stopped* when a window's mean
or its last reading falls under `stop_share` of that level, else *running*:
the window a stop falls in (the asset ended it stopped) is a stop, not judged
as running (a last reading that is a sentinel code is a sensor fault, not a
stop); sensors that sit near
zero anyway (or go negative) do not vote. The asset is stopped when at least
`quorum` of the voting sensors (and `min_votes`) say so: temperatures lag
and supply voltages hold through a stop, so a stop never gets every vote,
while a degradation or a faulty sensor rarely takes a load-carrying sensor
under a fifth of its level, let alone several. Until `learn_windows` windows were seen, the
asset counts as running, as it did before.

A start is the first running window after a stop: validation counts the
start-up grace from it. Load levels are not told apart here; the detectors'
baseline covers the load range they saw.

Guarantees: a pure function of the windows seen (same windows, same states);
the state pickles.

>>> import numpy as np
>>> from smart_maintenance.operators.records import FeatureBatch
>>> v = np.zeros((40, 2, 8)); v[:, :, 1] = 1.0; v[:, :, 7] = 30
>>> v[:, 0, 0] = 40.0; v[:, 1, 0] = 1500.0; v[30:, 0, 0] = 0.5; v[30:, 1, 0] = 20.0
>>> v[:, :, 6] = v[:, :, 0]  # each window's last reading at its mean
>>> fb = FeatureBatch("m", ("current", "speed"), np.arange(40) * 60_000, np.arange(1, 41) * 60_000, v)
>>> state, running = learned_running(None, fb)
>>> bool(running[:30].all()), bool(running[30:].any())
(True, False)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from river import stats

from smart_maintenance.operators.judge.sensor_health import SENTINEL_CODES
from smart_maintenance.operators.profile import COUNT, LAST, MEAN, STD
from smart_maintenance.operators.records import FeatureBatch


@dataclass(frozen=True)
class StateConfig:
    stop_share: float = 0.2
    min_level_spreads: float = 5.0
    min_votes: int = 1
    quorum: float = 0.4
    learn_windows: int = 12
    quantile: float = 0.9

    def __post_init__(self) -> None:
        if not 0 < self.stop_share < 1 or not 0 < self.quantile < 1 or self.min_votes < 1 or not 0 < self.quorum <= 1:
            raise ValueError("need 0 < stop_share < 1, 0 < quantile < 1, min_votes >= 1 and 0 < quorum <= 1")


@dataclass
class OperatingStates:
    """Per sensor: its running level (streaming quantile) and typical in-window spread (streaming median)."""

    levels: dict[str, stats.Quantile] = field(default_factory=dict)
    spreads: dict[str, stats.Quantile] = field(default_factory=dict)
    windows: int = 0


def learned_running(
    state: OperatingStates | None, fb: FeatureBatch, cfg: StateConfig = StateConfig()
) -> tuple[OperatingStates, np.ndarray]:
    """Per window: was the asset running? Learns each sensor's level as it goes (score, then learn)."""
    state = state if state is not None else OperatingStates()
    out = np.ones(len(fb), bool)
    # Python floats, read once: numpy scalar indexing per sensor and window was most of this step's cost
    rows = fb.values.tolist()  # all features: cheaper than numpy's fancy indexing of three on a few windows
    for w in range(len(fb)):
        stop_votes = run_votes = 0
        for name, row in zip(fb.sensors, rows[w]):
            mean, std, count, last = row[MEAN], row[STD], row[COUNT], row[LAST]
            if count < 2 or not math.isfinite(mean):
                continue
            level, spread = state.levels.get(name), state.spreads.get(name)
            if level is not None and spread is not None and state.windows >= cfg.learn_windows:
                top, noise = level.get(), spread.get()
                if top is not None and noise is not None and top > cfg.min_level_spreads * max(noise, 1e-12):
                    ended = math.isfinite(last) and last not in SENTINEL_CODES and last < cfg.stop_share * top
                    if mean < cfg.stop_share * top or ended:
                        stop_votes += 1
                    else:
                        run_votes += 1
            if level is None:
                level = state.levels[name] = stats.Quantile(cfg.quantile)
                spread = state.spreads[name] = stats.Quantile(0.5)
            level.update(float(mean))
            if math.isfinite(std):
                spread.update(float(std))  # type: ignore[union-attr]
        voters = stop_votes + run_votes
        out[w] = not (stop_votes >= cfg.min_votes and stop_votes >= cfg.quorum * voters)
        state.windows += 1
    return state, out
