"""A cross-sensor model: one sensor drifting off while the others stay consistent is a sensor fault.

A calibration drift moves one reading slowly and smoothly: no sentinel, no
jump, no flat line, nothing the sensor's own health checks can see, and the
machine detectors take it for a developing fault. What gives it away is the
other sensors: they still agree with each other and with the load, and only
the drifting one no longer fits them.

Per asset, over its normal running windows, each sensor's window mean is
predicted from all the others by linear regression. With P the inverse
covariance of the standardised means u, all those regressions come from one
matrix product: sensor i's residual is `(P u)_i / P_ii` with standard
deviation `1 / sqrt(P_ii)`, so `z_i = (P u)_i / sqrt(P_ii)` is its
standardised residual. The same is done once more without each sensor in
turn (`z_j` of every other sensor j predicted from the rest but i): if i
alone went wrong, those still fit. Each `z_i` is divided by its own spread
on the fit windows, so a sensor that wanders by itself is judged against its
own wander.

A two-sided CUSUM on every residual (slack `slack_z`, decision `alarm_z`,
both in that spread) accumulates a lasting offset and forgets noise. A
sensor is *drifting* when, in a running window,

- its CUSUM is at or over `alarm_z`, and it is `min_offset` or more of
  its own normal spread (of window means) off what the others predict: the
  residuals of a sensor's own wander and of a load change the regression
  does not capture (a temperature lagging the load) stay inside its normal
  range, a calibration drift leaves it;
- the others stay consistent without it: every CUSUM of the model without
  it stays under `consistent_share` of `alarm_z` (a degrading machine moves
  several sensors at once, a miscalibrated sensor only itself); of several
  such sensors, the one whose others are the most consistent;
- its own spread has not grown past `noise_factor` times its normal window
  std (a calibration offset moves the level, a failing part gets noisier);
- it is not under the new-normal watch (a step to a new level is a setpoint
  change until proved otherwise, see `new_normal.py`);
- its offset is also `fit_margin` times the largest it showed on the fit
  windows (a sensor the others predict poorly needs more), and, when
  `min_explained` is set, the others explain that share of its variance;
- all of this has held for `sustain_ms` of running time in a row (a
  calibration drift lasts hours; a misread excursion does not), each
  window counting `offset / needed offset` times, up to `fast_factor`
  (1, off, by default): at 3, an offset three times the one needed is
  reported after an hour, not three.

Stopped windows, and the first `after_start_ms` of each run, hold the
sums: the relation between the sensors of a stopped or starting machine is
not the running one (temperatures lag the load after a start). An asset
that cycles (three runs seen) is held for at most a quarter of its typical
run, as validation's start-up grace is: its starts are part of the normal
its model learned, and a chiller that runs 40 minutes at a time is still
judged. A drift already reported stays reported through a stop and the
hold after it (`through_stops`): a stop says nothing about a calibration,
and a cycling asset's drift is then one alarm, not one per run. Assets with
fewer than three sensors with a
level get no model: with two, either one could be the one that moved.

River's Page-Hinkley (`river.drift.PageHinkley`) was the first candidate; it
reports a change once and resets, while validation needs to know, window by
window, whether the offset is still there (and when the sensor is fixed),
which the CUSUM's sums say directly, for all sensors of a window in one
vector step.

Guarantees: deterministic; the state pickles (numpy arrays and floats).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> load = rng.normal(size=(400, 1))
>>> levels = load @ np.ones((1, 3)) + 0.1 * rng.normal(size=(400, 3))
>>> model = fit_cross_sensor(levels, np.full((400, 3), 0.1), ("a", "b", "c"))
>>> later = np.ones((30, 1)) @ np.ones((1, 3)) + 0.1 * rng.normal(size=(30, 3))
>>> later[:, 1] += np.linspace(0.0, 6.0, 30)  # b walks off (6 of its normal stds), a and c still agree
>>> state, drifting = watch_drift(CrossSensorState(), model, later, np.full((30, 3), 0.1),
...                               np.ones(30, bool), [frozenset()] * 30, 60_000,
...                               CrossSensorConfig(after_start_ms=0, sustain_ms=0, fit_margin=0.0))
>>> drifting[0], drifting[-1]
((), ('b',))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from smart_maintenance.operators.detect.finite import nan_to_num


@dataclass(frozen=True)
class CrossSensorConfig:
    slack_z: float = 4.0  # CUSUM slack, in the residual's own fit spread: offsets under it are forgotten
    alarm_z: float = 12.0  # CUSUM decision: e.g. 7 spreads for 4 windows, 10 spreads for 2
    min_offset: float = 4.0  # ... and it is this many of its own normal stds (of window means) off its prediction
    consistent_share: float = 0.5  # the others' sums without the drifting sensor stay under this share of alarm_z
    noise_factor: float = 2.0  # a drifting sensor's window std stays under this many times its normal one
    ridge: float = 1e-4  # added to the standardised covariance before inverting it (sensors can be near copies)
    min_rows: int = 20  # fit windows needed for a model
    after_start_ms: int = 2 * 3_600_000  # a start-up is not a drift: temperatures lag the load for a while
    fit_margin: float = 2.0  # ... and twice the largest offset it showed on its own fit windows
    sustain_ms: int = 3 * 3_600_000  # reported once it has held this long in a row (running time): a drift lasts
    min_explained: float = 0.0  # only a sensor the others explain this share of (R², on the fit windows) is judged
    through_stops: bool = True  # a drift reported when the asset stops stays reported until it runs and is judged
    # an offset k times the needed one counts min(k, this) times as fast toward sustain_ms. 1.0 (off) by default:
    # 3.0 found 4 more of 62 drifts on the drift-stressed tuning seeds, but on the test seeds it cost median lead
    # 0.42 -> 0.39 (a one-sensor equipment ramp named a drift sooner clears its machine alarm) (docs/quality.md)
    fast_factor: float = 1.0

    def __post_init__(self) -> None:
        if self.slack_z < 0 or self.alarm_z <= 0 or not 0 < self.consistent_share <= 1 or self.noise_factor <= 1:
            raise ValueError("need slack_z >= 0, alarm_z > 0, 0 < consistent_share <= 1 and noise_factor > 1")
        if self.ridge < 0 or self.min_rows < 3 or self.after_start_ms < 0:
            raise ValueError("need ridge >= 0, min_rows >= 3 and after_start_ms >= 0")
        if self.fit_margin < 0 or self.sustain_ms < 0 or not 0 <= self.min_explained < 1:
            raise ValueError("need fit_margin >= 0, sustain_ms >= 0 and 0 <= min_explained < 1")
        if self.fast_factor < 1:
            raise ValueError("need fast_factor >= 1")


@dataclass(frozen=True)
class CrossSensorModel:
    """Each sensor's mean predicted from the others', over an asset's normal running windows."""

    sensors: tuple[str, ...]
    center: np.ndarray  # per sensor: mean of its window means
    scale: np.ndarray  # per sensor: their std
    projection: np.ndarray  # (p + 1, p, p): [0] the full model, [1 + i] the one without sensor i (zeros)
    offset: np.ndarray  # (p, p): P / diag P, so u @ offset is every sensor's residual in its own std
    noise_ref: np.ndarray  # per sensor: median window std on the fit windows
    fit_offset: np.ndarray | None = None  # per sensor: the largest |offset| (in its own std) on the fit windows
    explained: np.ndarray | None = None  # per sensor: the share of its variance the others explain (R²) on them

    def residuals(self, levels: np.ndarray, stds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per window: z (p + 1, p) of the full model and of each model without one sensor, in their fit
        spreads; per sensor its residual in its own std; and std / normal std. A missing mean sits at its
        centre: it moves nothing."""
        u = nan_to_num((levels - self.center) / self.scale)
        z: np.ndarray = np.einsum("ni,mij->nmj", u, self.projection)
        with np.errstate(invalid="ignore"):
            noisy = nan_to_num(stds / self.noise_ref, nan=1.0)
        return z, np.einsum("ij,jk->ik", u, self.offset), noisy


def fit_cross_sensor(
    levels: np.ndarray, stds: np.ndarray, sensors: tuple[str, ...], cfg: CrossSensorConfig | None = None
) -> CrossSensorModel | None:
    """Fit on normal running windows' sensor means (n, p) and stds; None when there is too little to fit."""
    cfg = cfg or CrossSensorConfig()
    dense = np.isfinite(levels).mean(axis=0) >= 0.5 if len(levels) else np.zeros(len(sensors), bool)
    if not dense.all():  # a sensor with a level in few windows (sampled slowly) would leave no complete row
        levels, stds, sensors = levels[:, dense], stds[:, dense], tuple(np.array(sensors, object)[dense])
    complete = np.isfinite(levels).all(axis=1)
    x = levels[complete].astype(np.float64)
    p = x.shape[1]
    if p < 3 or len(x) < max(cfg.min_rows, 2 * p):
        return None
    center = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 1e-9 * np.maximum(1.0, np.abs(center)), scale, 1.0)
    u = (x - center) / scale
    cov = np.cov(u, rowvar=False) + cfg.ridge * np.eye(p)
    projection = np.zeros((p + 1, p, p))
    full = np.linalg.inv(cov)
    offset = full / np.diag(full)
    for m, keep in enumerate([np.arange(p)] + [np.delete(np.arange(p), i) for i in range(p)]):
        precision = np.linalg.inv(cov[np.ix_(keep, keep)])
        projection[m][np.ix_(keep, keep)] = precision / np.sqrt(np.diag(precision))
    z = np.einsum("ni,mij->nmj", u, projection)
    spread = z.std(axis=0)
    projection /= np.where(spread > 1e-9, spread, 1.0)[:, None, :]  # each residual in its own fit spread
    with np.errstate(invalid="ignore"):
        noise_ref = np.nan_to_num(np.nanmedian(stds[complete], axis=0), nan=np.inf)
    noise_ref = np.where(noise_ref > 0, noise_ref, np.inf)  # a sensor flat in the fit: no noise test
    fit_offset = np.abs(u @ offset).max(axis=0)
    explained = 1.0 - 1.0 / np.diag(full)  # u is standardised: P_ii = 1 / (1 - R²_i)
    return CrossSensorModel(sensors, center, scale, projection, offset, noise_ref, fit_offset, explained)


@dataclass
class CrossSensorState:
    """The CUSUM sums (p + 1, p) of the asset's current models (up: reading too high, down: too low)."""

    up: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    down: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    run_ms: int = 0  # running time since the last start
    runs: int = 0  # completed runs seen
    typical_run_ms: float = 0.0  # their average length (recent runs weigh more)
    held_ms: np.ndarray = field(default_factory=lambda: np.zeros(0))  # per sensor: running time it has met the test
    last: int = -1  # the sensor reported drifting in the last judged window (-1: none)


def watch_drift(
    state: CrossSensorState,
    model: CrossSensorModel,
    levels: np.ndarray,
    stds: np.ndarray,
    running: np.ndarray,
    watched: Sequence[frozenset[str]],
    window_ms: int,
    cfg: CrossSensorConfig,
) -> tuple[CrossSensorState, tuple[tuple[str, ...], ...]]:
    """Fold windows (levels, stds: (n, p) in the model's sensor order) into the sums; the drifting sensor of each.

    `watched`: per window, the sensors under the new-normal watch then, never called drifting. The state is
    not changed.
    """
    p = len(model.sensors)
    up = state.up.copy() if state.up.shape == (p + 1, p) else np.zeros((p + 1, p))
    down = state.down.copy() if state.down.shape == (p + 1, p) else np.zeros((p + 1, p))
    z, off, noisy = model.residuals(levels, stds)
    cap = 2 * cfg.alarm_z  # a sensor put right clears within a few windows, however long it drifted
    out: list[tuple[str, ...]] = []
    run_ms, runs, typical = state.run_ms, state.runs, state.typical_run_ms
    last = getattr(state, "last", -1)
    held_ms = getattr(state, "held_ms", None)  # a state pickled before streaks were kept has none
    held = held_ms.copy() if held_ms is not None and held_ms.shape == (p,) else np.zeros(p)
    fit_offset = model.fit_offset if model.fit_offset is not None else np.zeros(p)
    need = np.maximum(cfg.min_offset, cfg.fit_margin * fit_offset)
    if model.explained is not None:
        need = np.where(model.explained >= cfg.min_explained, need, np.inf)  # nothing predicts it: not judged
    hold = cfg.after_start_ms if runs < 3 else min(cfg.after_start_ms, typical / 4)
    for w in range(len(z)):
        if not running[w] and run_ms:  # a run just ended
            runs += 1
            typical = run_ms if runs == 1 else 0.8 * typical + 0.2 * run_ms
            hold = cfg.after_start_ms if runs < 3 else min(cfg.after_start_ms, typical / 4)
        run_ms = run_ms + window_ms if running[w] else 0
        if run_ms <= hold:  # a stop or a start-up neither extends nor breaks a streak, nor clears a drift
            out.append((model.sensors[last],) if last >= 0 and cfg.through_stops else ())
            continue
        up = np.minimum(np.maximum(up + z[w] - cfg.slack_z, 0.0), cap)
        down = np.minimum(np.maximum(down - z[w] - cfg.slack_z, 0.0), cap)
        sums = np.maximum(up, down)
        over = sums[0] >= cfg.alarm_z
        if not over.any():
            held[:] = 0.0
            last = -1
            out.append(())
            continue
        others = np.where(over, sums[1:].max(axis=1), np.inf)  # how far the rest moved, without each sensor
        s = int(np.argmin(others))
        quiet = others[s] < cfg.consistent_share * cfg.alarm_z and abs(off[w, s]) >= need[s]
        met = quiet and noisy[w, s] <= cfg.noise_factor and model.sensors[s] not in watched[w]
        speed = min(max(abs(off[w, s]) / need[s], 1.0), cfg.fast_factor) if np.isfinite(need[s]) else 1.0
        kept = held[s] + window_ms * speed if met else 0.0  # a larger offset is stronger evidence: sooner reported
        held[:] = 0.0
        held[s] = kept
        last = s if met and kept >= cfg.sustain_ms else -1
        out.append((model.sensors[s],) if last >= 0 else ())
    return CrossSensorState(up, down, run_ms, runs, typical, held, last), tuple(out)
