"""Per-asset anomaly detection on window features.

Detectors score every window in [0, 1]:

- `baseline`: robust z (median / MAD) of each feature against the asset's
  recent normal windows; learned during a warm-up and then updated only on
  windows that were running and scored normal;
- `iforest`: an IsolationForest fitted on the warm-up windows and refitted
  on recent normal windows every `refit_blocks` blocks (a fit costs tens of
  milliseconds; a day of 5-minute windows is 24 blocks), scored for a whole
  block of windows in one call (see `iforest.py`);
- `multivariate`: Hotelling's T² (and, with `mv_variance` < 1, PCA's residual
  Q) calibrated on the same normal windows (see `multivariate.py`): it sees
  sensors that stop moving together;
- `limits`: how far the window mean has gone from the registry's normal band
  toward the sensor's failure value (only for sensors the registry knows).

The learned detectors all see the same rows: each window's features, or with
`context_windows` > 1 the last few windows aggregated, plus with
`lag_windows` > 0 each sensor's change over that many windows (see
`context.py`). With `drift_ratio` set, a sensor whose level wandered during
the fit more than its noise explains is judged by its spread, slope and
change only, not by its level.

With `start_baseline`, each start (the first running window after a stop)
is also scored with the asset's own earlier starts (see `starts.py`), for
validation to judge a cycling asset's start instead of hiding it in the grace.

The fused score is the larger of `limits` and a soft maximum of the learned
detectors, `(1 - w) * max + w * mean(others)`: one detector alone can raise a
window most of the way, all together all of the way; validation then uses
their agreement to decide between confirmed and needs_review. Contributions
say which sensors, and which of their features, made the window anomalous.

Parameters change only at block boundaries (every `block` windows, counted
from the asset's first window), never in the middle of a block, so scores do
not depend on how the windows were batched: live and backfill agree. Every
fit increments `version`: `model_store.py` persists fitted models by it.

Fits are staggered per asset (`stagger`), so that assets which started
together do not all fit in the same window: an asset's blocks start at an
offset in [0, block) windows, and its first refit comes after an offset in
[1, refit_blocks] blocks, then every `refit_blocks`. Both offsets are a hash of
the asset id alone, so the same input gives the same scores on any number of
workers, live or replayed.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from smart_maintenance.operators.controls import Control, MaintenanceRecord
from smart_maintenance.operators.detect.context import (
    BASE,
    base_rows,
    context_rows,
    feature_names,
)
from smart_maintenance.operators.detect.cross_sensor import (
    CrossSensorConfig,
    CrossSensorModel,
    CrossSensorState,
    fit_cross_sensor,
    watch_drift,
)
from smart_maintenance.operators.detect.finite import nan_to_num
from smart_maintenance.operators.detect.iforest import CompactForest, fit_forest
from smart_maintenance.operators.detect.multivariate import MultivariateModel, drift_ratios, fit_multivariate
from smart_maintenance.operators.detect.new_normal import NewNormalConfig, NewNormalState, Rebaseline, watch_window
from smart_maintenance.operators.detect.robust import center_scale
from smart_maintenance.operators.detect.starts import StartBaseline, learn_start, start_windows, start_z
from smart_maintenance.operators.detect.states import OperatingStates, learned_running
from smart_maintenance.operators.detect.trend import TrendConfig, TrendState, trend_evidence, trend_scores
from smart_maintenance.operators.detect.univariate import UnivariateConfig, UnivariateState, score_windows
from smart_maintenance.operators.judge.sensor_health import sentinel_windows
from smart_maintenance.operators.judge.validation import ValidationConfig
from smart_maintenance.operators.profile import MAX, MEAN, MIN, SLOPE, STD, AssetProfile, SensorLimits
from smart_maintenance.operators.records import FeatureBatch, Scored, evolve, stable_id, window_length_ms

DETECT_FEATURES = (MEAN, STD, MIN, MAX, SLOPE)
LEARNED = ("baseline", "iforest", "multivariate")
_LEVELS = (0, 2, 3)  # mean, min, max: the per-sensor columns a drifting level spoils


@dataclass(frozen=True)
class DetectConfig:
    warmup_windows: int = 288
    baseline_size: int = 288
    block: int = 12
    refit_blocks: int = 24  # with 12-window blocks of 5-minute windows: once a day
    n_trees: int = 50
    max_samples: int = 64
    z_scale: float = 6.0  # robust z of a feature that maps to a baseline score of 0.5
    if_z_scale: float = 3.0  # robust z of the forest's score (against its own training scores) that maps to 0.5
    weaker_weight: float = 0.25  # weight of the mean of the other learned detectors in the fused score
    learn_below: float = 0.4  # windows scoring under this may update the baseline
    explain_above: float = 0.3  # windows scoring under this get no contributions (they are not anomalies)
    seed: int = 0
    detectors: tuple[str, ...] = LEARNED  # the learned detectors that run and fuse
    context_windows: int = 1  # windows aggregated into one detector row (1: the window alone)
    lag_windows: int = 0  # > 0: add each sensor's change of mean over this many windows
    drift_ratio: float | None = None  # sensors whose level wanders more than this in the fit: no level features
    slow_sensors: tuple[str, ...] = ()  # sensors known to wander (thermal): never judged by their level
    mv_variance: float = 1.0  # share of variance the T² components explain; the rest is Q (1.0: T² only)
    mv_ridge: float = 1e-3
    mv_quantile: float = 0.99  # fit-set quantile that calibrates T² and Q
    mv_half: float = 5.0  # calibrated statistic (1 = the fit set's quantile) that maps to a score of 0.5
    # durations (ms): when set, they replace the window counts above, per asset from its own window length
    warmup_ms: int | None = None
    baseline_ms: int | None = None
    refit_ms: int | None = None
    max_baseline_rows: int = 1024  # a longer baseline keeps every k-th normal window (memory per asset stays flat)
    new_normal: NewNormalConfig | None = NewNormalConfig()  # None: no re-baselining on a lasting step
    # the drift test of one sensor against the others. None in a bare DetectConfig (SKAB's bench, unit tests);
    # the product's settings turn it on (`detection.cross_sensor_drift`, chosen on tuning seeds: docs/quality.md)
    cross_sensor: CrossSensorConfig | None = None
    recording_ms: int | None = None  # a finite run's length for this asset: the warm-up is capped at a share of it
    warmup_share: float = 0.35
    # None: the first fit waits for `warmup_windows` normal running rows. A share: once the warm-up's span has
    # passed in event time (running or not), fit on what was learned if it is at least this share of the rows,
    # so an asset that runs a third of the time (cycling, nightly stops) is not blind for three warm-up spans
    warmup_min_share: float | None = None
    # the warm-up counted in event time: once its span has passed (running or not), fit provisionally on the rows
    # learned, if the multivariate model's limit for a new row is defined on them (more rows than columns + 1), and
    # fit again as soon as the full warm-up's rows are learned. An asset that runs a third of the time (cycling
    # with demand) is then judged after one span, as an always-running one, not after three
    warmup_in_event_time: bool = False
    stagger: bool = True  # spread fits and refits over assets by a hash of the id (see `stagger`)
    univariate: UnivariateConfig | None = UnivariateConfig()  # an asset with one sensor: see `univariate.py`
    # evidence that builds up over hours (trend.py). None in a bare DetectConfig and off by default in the
    # product's settings too (`detection.trend_evidence = true` turns it on: docs/quality.md)
    trend: TrendConfig | None = None
    # after a re-baselining repair, score with the fit from before it until the new baseline is warm (the
    # repaired machine is the healthy one its old fit learned); learning the new baseline is unchanged
    score_through_repair: bool = False
    # does the fit from before the repair describe the repaired machine? On the first running windows past the
    # start-up grace, if it scores `persistence_k` of `persistence_n` at the open threshold (a candidate from the
    # start: a machine that changed, not a fault that develops), it no longer scores (validation's own settings)
    repair_check: ValidationConfig | None = ValidationConfig()
    # score each start (the first running window after a stop) also against the asset's own earlier starts
    # (starts.py) once `min_starts` are kept: validation judges a cycling asset's start on that score instead of
    # hiding it in the start-up grace. 8: the fewest rows any fit of this module uses (`_warm`)
    start_baseline: bool = False
    min_starts: int = 8

    def __post_init__(self) -> None:
        if self.warmup_windows < 8:
            raise ValueError("warmup_windows must be at least 8")
        if self.baseline_size < self.warmup_windows:
            raise ValueError("baseline_size must be at least warmup_windows")
        if not 0.0 <= self.weaker_weight <= 0.5:
            raise ValueError("weaker_weight must be in [0, 0.5]")
        if not self.detectors or set(self.detectors) - set(LEARNED):
            raise ValueError(f"detectors must be a non-empty subset of {LEARNED}, got {self.detectors}")
        if self.context_windows < 1 or self.lag_windows < 0:
            raise ValueError("need context_windows >= 1 and lag_windows >= 0")
        if self.mv_half <= 0:
            raise ValueError("mv_half must be positive")
        if self.warmup_min_share is not None and not 0.0 < self.warmup_min_share <= 1.0:
            raise ValueError("warmup_min_share must be in (0, 1]")
        if any(v is not None and v <= 0 for v in (self.warmup_ms, self.baseline_ms, self.refit_ms)):
            raise ValueError("warmup_ms, baseline_ms and refit_ms must be positive")
        if self.min_starts < 2:
            raise ValueError("min_starts must be at least 2")

    def for_window(self, window_ms: int) -> tuple[DetectConfig, int]:
        """This config in an asset's own windows of `window_ms`, and the stride its baseline learns with.

        A duration becomes ceil(duration / window) windows. A baseline longer
        than `max_baseline_rows` windows learns from every stride-th normal
        window, so it still spans the whole duration.

        >>> cfg, stride = DetectConfig(warmup_ms=86_400_000, baseline_ms=86_400_000).for_window(30_000)
        >>> cfg.warmup_windows, cfg.baseline_size, stride
        (960, 960, 3)
        >>> DetectConfig(warmup_ms=86_400_000, baseline_ms=86_400_000).for_window(9_000_000)[0].warmup_windows
        10
        """
        if window_ms <= 0 or (self.warmup_ms is None and self.baseline_ms is None and self.refit_ms is None
                              and self.recording_ms is None):
            return self, 1
        return _for_window(self, window_ms)

    def _for_window(self, window_ms: int) -> tuple[DetectConfig, int]:

        def windows(ms: int | None, default: int) -> int:
            return default if ms is None else max(1, math.ceil(ms / window_ms))

        warm = windows(self.warmup_ms, self.warmup_windows)
        if self.recording_ms is not None:  # a finite recording: learn from at most its first share
            warm = min(warm, max(8, math.ceil(self.warmup_share * self.recording_ms / window_ms)))
        base = max(windows(self.baseline_ms, self.baseline_size), warm)
        stride = max(1, math.ceil(base / self.max_baseline_rows))
        warm_rows, base_rows = max(8, math.ceil(warm / stride)), max(8, math.ceil(base / stride))
        refit = self.refit_blocks if self.refit_ms is None else max(1, round(windows(self.refit_ms, 0) / self.block))
        return replace(self, warmup_windows=warm_rows, baseline_size=max(base_rows, warm_rows), refit_blocks=refit,
                       warmup_ms=None, baseline_ms=None, refit_ms=None, recording_ms=None), stride

    def warmup_capped(self, window_ms: int) -> bool:
        """Does this asset's recording cap its warm-up (see `for_window`)?"""
        if self.recording_ms is None or window_ms <= 0:
            return False
        uncapped = replace(self, recording_ms=None).for_window(window_ms)
        return self.for_window(window_ms)[0].warmup_windows < uncapped[0].warmup_windows


@functools.lru_cache(maxsize=1024)
def _for_window(cfg: DetectConfig, window_ms: int) -> tuple[DetectConfig, int]:
    """`DetectConfig.for_window`, remembered: every window of every asset asks (same config, same answer)."""
    return cfg._for_window(window_ms)


@dataclass(frozen=True)
class DetectorState:
    """An asset's detectors. Arrays are replaced, never mutated."""

    columns: tuple[str, ...] = ()  # sensors of the fitted model
    seen: int = 0  # windows scored so far (block position)
    ring: np.ndarray = field(default_factory=lambda: np.empty((0, 0), np.float32))  # recent normal rows
    history: np.ndarray = field(default_factory=lambda: np.empty((0, 0, len(BASE))))  # last windows, for context
    use: np.ndarray | None = None  # column indices the learned detectors use
    center: np.ndarray | None = None
    scale: np.ndarray | None = None
    forest: CompactForest | None = None
    if_center: float = 0.5
    if_scale: float = 0.05
    mv: MultivariateModel | None = None
    blocks_since_fit: int = 0
    version: int = 0  # fits so far
    window_ms: int = 0  # the asset's window length, from its first windows (durations are counted in it)
    states: OperatingStates | None = None  # operating states learned from the data (no registry state sensor)
    new_normal: NewNormalState | None = None  # steps to a new level being watched, and the audit of new normals
    univariate: UnivariateState | None = None  # an asset with one sensor: its metric-stream detector
    cross: CrossSensorModel | None = None  # each sensor's level predicted from the others' (cross_sensor.py)
    drift: CrossSensorState | None = None  # its CUSUM sums (None in states stored before it existed)
    trend: TrendState | None = None  # evidence summed over hours (trend.py; None before the first judged window)
    repaired: bool = False  # learning again after a repair: the first fit needs only `warmup_min_share` of the rows
    provisional: bool = False  # fitted at the warm-up's span on fewer rows than the warm-up's (`warmup_in_event_time`)
    prior: DetectorState | None = None  # the fit from before the last repair (no ring): see `score_through_repair`
    prior_seen: int = 0  # running windows the prior scored since the repair (`repair_check`)
    prior_hits: int = 0  # of them past the grace, those at the open threshold
    prior_dropped: bool = False  # the check found the prior does not describe the repaired machine
    starts: StartBaseline | None = None  # earlier start windows (`DetectConfig.start_baseline`; starts.py)

    @property
    def fitted(self) -> bool:
        return self.center is not None


def to_matrix(fb: FeatureBatch, columns: tuple[str, ...]) -> np.ndarray:
    """Rows of detector features for `columns` (NaN where a sensor is missing), without context."""
    out = np.full((len(fb), len(columns), len(DETECT_FEATURES)), np.nan)
    for j, name in enumerate(columns):
        if name in fb.sensors:
            out[:, j, :] = fb.values[:, fb.sensors.index(name), DETECT_FEATURES]
    return out.reshape(len(fb), -1)


def column_names(columns: tuple[str, ...], cfg: DetectConfig) -> tuple[str, ...]:
    """`sensor.feature` for every column of the detector rows."""
    return _column_names(columns, cfg.lag_windows)


@functools.lru_cache(maxsize=1024)  # assets of one kind share their sensors: built once, not per window
def _column_names(columns: tuple[str, ...], lag_windows: int) -> tuple[str, ...]:
    return tuple(f"{s}.{f}" for s in columns for f in feature_names(lag_windows))


def _to_unit(z: np.ndarray, z_scale: float) -> np.ndarray:
    """Map a non-negative deviation to [0, 1): z_scale maps to 0.5."""
    z2 = z * z
    unit: np.ndarray = z2 / (z2 + z_scale * z_scale)
    return unit


def limit_scores(fb: FeatureBatch, profile: AssetProfile) -> tuple[np.ndarray, np.ndarray]:
    """Per window: the limits score and the per-sensor distance fractions toward failure."""
    frac = np.zeros((len(fb), len(fb.sensors)))
    limited = _limit_bands(profile.limits, fb.sensors)
    if limited is not None:  # all sensors with limits at once: the same operations on each value as one by one
        cols, rising, hi, lo, span = limited
        mean = fb.values[:, cols, MEAN]
        f = np.where(rising, mean - hi, lo - mean) / span
        frac[:, cols] = np.clip(f, 0.0, None)
        frac = nan_to_num(frac)
    worst = frac.max(axis=1) if frac.shape[1] else np.zeros(len(fb))
    return worst / (worst + 0.125), frac


@functools.lru_cache(maxsize=1024)  # assets of one type share their limits and sensors: built once, not per window
def _limit_bands(
    limits: tuple[tuple[str, SensorLimits], ...], sensors: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """For the sensors of `sensors` with limits: their columns, whether failure lies above, the normal band's
    edges and the distance from the band's edge to failure (at least 1e-9), as arrays; None if none has limits."""
    by_name = dict(limits)
    cols = [s for s, name in enumerate(sensors) if name in by_name]
    if not cols:
        return None
    lims = [by_name[sensors[s]] for s in cols]
    span = [max(lim.failure - lim.normal_hi, 1e-9) if lim.rising else max(lim.normal_lo - lim.failure, 1e-9)
            for lim in lims]
    return (np.array(cols), np.array([lim.rising for lim in lims]), np.array([lim.normal_hi for lim in lims]),
            np.array([lim.normal_lo for lim in lims]), np.array(span))


def _usable_columns(rows: np.ndarray, columns: tuple[str, ...], cfg: DetectConfig) -> np.ndarray:
    """Columns the learned detectors use: all, less the level columns of slow sensors and of those that drifted.

    The context mean of `c` windows has sqrt(c) times less noise than one
    window's mean, so the drift ratio is divided by sqrt(c) to stay about 1
    for a steady noisy sensor whatever the context.
    """
    k = len(feature_names(cfg.lag_windows))
    use = np.ones(len(columns) * k, bool)
    drifting = np.array([c in cfg.slow_sensors for c in columns], bool)
    if cfg.drift_ratio is not None and columns:
        drifting |= drift_ratios(rows[:, 0::k]) / np.sqrt(cfg.context_windows) > cfg.drift_ratio
    if drifting.any():
        for lvl in _LEVELS:
            use[lvl::k] &= ~drifting
    use &= ~np.isnan(rows).all(axis=0)
    return np.flatnonzero(use).astype(np.int32)


def stagger(asset_id: str, cfg: DetectConfig) -> tuple[int, int]:
    """The asset's block phase in windows, in [0, block), and its first refit's head start in blocks, in
    [0, refit_blocks): a pure function of the asset id, so fits are spread over assets, never over runs.

    >>> cfg = DetectConfig(stagger=True)
    >>> stagger("pump-01", cfg) == stagger("pump-01", cfg), all(0 <= p < 12 for p in stagger("pump-02", cfg))
    (True, True)
    """
    if not cfg.stagger:
        return 0, 0
    h = int(stable_id("fit-stagger", asset_id), 16)
    return h % cfg.block, (h // cfg.block) % cfg.refit_blocks


def _fit(state: DetectorState, rows: np.ndarray, cfg: DetectConfig, asset_id: str) -> DetectorState:
    """Robust centre/scale, a forest and a T² model from the rows of the ring."""
    rows = rows.astype(np.float64)
    use = _usable_columns(rows, state.columns, cfg)
    x = rows[:, use]
    center, scale = center_scale(x)
    # the first fit starts the refit count at the asset's head start, so refits spread over the refit period (a
    # provisional fit's successor counts as the first: refits then fall when they would without a provisional fit)
    first = state.version == 0 or (state.provisional and len(rows) >= cfg.warmup_windows)
    since = stagger(asset_id, cfg)[1] if first else 0
    state = evolve(state, use=use, center=center, scale=scale, blocks_since_fit=since, version=state.version + 1)
    if "iforest" in cfg.detectors:
        filled = np.where(np.isnan(x), center, x)
        seed = (int(stable_id(asset_id), 16) + cfg.seed + state.seen) % (2**31)
        forest = fit_forest(filled, n_trees=cfg.n_trees, max_samples=cfg.max_samples, seed=seed)
        own = forest.score(filled)
        if_center = float(np.median(own))
        if_scale = max(float(np.median(np.abs(own - if_center)) * 1.4826), 0.01)
        state = evolve(state, forest=forest, if_center=if_center, if_scale=if_scale)
    if cfg.cross_sensor is not None:
        state = _fit_cross(state, rows, cfg)
    if "multivariate" in cfg.detectors:
        complete = ~np.isnan(x).any(axis=1)  # rows from before the context filled up would shrink the covariance
        fit_rows = rows[complete] if complete.sum() >= max(len(rows) // 2, 2) else rows
        mv = fit_multivariate(fit_rows, use, variance=cfg.mv_variance, ridge=cfg.mv_ridge, quantile=cfg.mv_quantile)
        state = evolve(state, mv=mv)
    return state


def _score_block(
    state: DetectorState, x: np.ndarray, cfg: DetectConfig
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Learned detector scores, and per-column parts of the deviation (z², T²), for rows with fixed parameters."""
    assert state.center is not None and state.scale is not None and state.use is not None  # noqa: S101 - invariant, narrows the type
    xu = x[:, state.use]
    z = nan_to_num(np.abs(xu - state.center) / state.scale)
    scores: dict[str, np.ndarray] = {}
    if "baseline" in cfg.detectors:
        scores["baseline"] = _to_unit(z.max(axis=1) if z.shape[1] else np.zeros(len(x)), cfg.z_scale)
    if "iforest" in cfg.detectors and state.forest is not None:
        raw = state.forest.score(np.where(np.isnan(xu), state.center, xu))
        scores["iforest"] = _to_unit(np.clip((raw - state.if_center) / state.if_scale, 0.0, None), cfg.if_z_scale)
    z2 = np.zeros_like(x)
    z2[:, state.use] = z * z
    mv_parts = np.zeros_like(x)
    if "multivariate" in cfg.detectors and state.mv is not None:
        stat, parts = state.mv.statistic(x)
        scores["multivariate"] = stat / (stat + cfg.mv_half)
        mv_parts[:, state.mv.use] = parts
    return scores, z2, mv_parts


def _fuse(s_lim: np.ndarray, learned: dict[str, np.ndarray], w: float) -> np.ndarray:
    if not learned:
        return s_lim.copy()
    s = np.array(list(learned.values()))  # (detectors, windows): as np.stack, without its per-call checks
    top = s.max(axis=0)
    others = (s.sum(axis=0) - top) / (len(s) - 1) if len(s) > 1 else top
    fused: np.ndarray = np.maximum(s_lim, (1 - w) * top + w * others)
    return fused


def _fuse_zeros(s_lim: np.ndarray) -> np.ndarray:
    """`_fuse` when every learned score is zero (no fitted model yet): the same array, without stacking zeros.

    `(1 - w) * 0 + w * 0` is exactly 0.0, so the fused score is `np.maximum(s_lim, 0.0)`, bit for bit.
    """
    fused: np.ndarray = np.maximum(s_lim, 0.0)
    return fused


def detect(
    state: DetectorState | None, fb: FeatureBatch, profile: AssetProfile, cfg: DetectConfig
) -> tuple[DetectorState, Scored]:
    """Score a batch of closed windows of one asset and learn from the normal ones."""
    start: dict[str, Any] = {}  # a new asset's first fields, set at once (every young asset pays each copy)
    if state is None or not state.columns:
        width = len(fb.sensors) * len(feature_names(cfg.lag_windows))
        start.update(columns=fb.sensors, ring=np.empty((0, width), np.float32),
                     history=np.empty((0, len(fb.sensors), len(BASE))))
    if (state is None or not state.window_ms) and len(fb):
        start["window_ms"] = window_length_ms(fb.window_start, fb.window_end)
    if state is None:
        state = DetectorState(**start)
    elif start:
        state = evolve(state, **start)
    prior = _prior(state, cfg)
    if prior is not None and state.states is None:  # a repair leaves how the machine starts and stops as it was
        state = evolve(state, states=prior.states)
    cfg, stride = cfg.for_window(state.window_ms)
    n = len(fb)
    history, x = context_rows(state.history, base_rows(fb, state.columns), cfg.context_windows, cfg.lag_windows)
    changes: dict[str, Any] = {"history": history}
    found: np.ndarray | None = None  # running, as learned from the data
    one_sensor = cfg.univariate is not None and len(state.columns) == 1
    if one_sensor:  # one signal cannot tell a stop from a failure: a drop to zero is judged, not excused
        found = np.ones(n, bool)
    elif profile.state_sensor is None or profile.state_sensor not in fb.sensors:
        changes["states"], found = learned_running(state.states, fb)
    if cfg.new_normal is not None and state.new_normal is None:
        changes["new_normal"] = NewNormalState()
    state = evolve(state, **changes)
    running = found if found is not None else profile.running(fb)
    s_lim, frac = limit_scores(fb, profile)
    learned = {d: np.zeros(n) for d in cfg.detectors}
    z2, mv_parts = np.zeros_like(x), np.zeros_like(x)
    warming = np.ones(n, bool)
    settling = np.zeros(n, bool)
    drifting: list[tuple[str, ...]] = [()] * n
    evidence = np.full(n, np.nan)  # the trend's excess per window (trend.py); NaN: no recent level, it starts again
    bound = np.zeros(n)  # the trend's score without sensor verdicts: which windows to explain
    sentinels = sentinel_windows(fb.values)
    found_normals: list[Rebaseline] = []
    start_score = np.full(n, np.nan)  # per start window: its score with the asset's earlier starts (NaN: none)
    judge_starts = cfg.start_baseline and not one_sensor

    phase = stagger(fb.asset_id, cfg)[0]
    scored_any = False  # did a fitted model score any window? If not, every learned score and part is zero
    i = 0
    while i < n:
        # a segment ends at the next block boundary, so parameters are fixed within it
        j = min(n, i + cfg.block - (state.seen + phase) % cfg.block)
        seg = slice(i, j)
        fitted = state.fitted
        model = state if fitted else prior
        if model is not None:
            scored_any = True
            scores, z2[seg], mv_parts[seg] = _score_block(model, x[seg], cfg)
            for d, s in scores.items():
                learned[d][seg] = s
            warming[seg] = False
            if not fitted and cfg.repair_check is not None:
                old = _fuse(np.zeros(j - i), {d: s[seg] for d, s in learned.items()}, cfg.weaker_weight)
                valid = running[seg] & ~np.isnan(x[seg]).all(axis=1)
                state, drop = _check_prior(state, old, valid, cfg.repair_check.for_window(state.window_ms))
                if drop is not None:  # from this window on, as without the prior: nothing until the new fit
                    gone = slice(i + drop, j)
                    for d in learned:
                        learned[d][gone] = 0.0
                    z2[gone], mv_parts[gone], warming[gone] = 0.0, 0.0, True
                    prior = None
        if fitted:
            watched: list[frozenset[str]] = [frozenset()] * (j - i)
            if state.new_normal is not None and cfg.new_normal is not None:
                settling[seg], normals, watched = _watch_levels(state, x[seg], fb.window_start[seg], running[seg],
                                                                cfg)
                found_normals += normals
            if state.cross is not None and cfg.cross_sensor is not None:
                state, drifting[i:j] = _watch_drift(state, x[seg], running[seg], watched, cfg)
            if cfg.trend is not None and "multivariate" in scores and not one_sensor:
                judged = ~sentinels[seg] & ~settling[seg] & ~np.isnan(x[seg]).all(axis=1)
                judged &= np.array([not d and not v for d, v in zip(drifting[i:j], watched, strict=True)], bool)
                state, evidence[seg], bound[seg] = _trend(state, scores["multivariate"], running[seg], judged, cfg)
        fused = _fuse(s_lim[seg], {d: s[seg] for d, s in learned.items()}, cfg.weaker_weight) if fitted else \
            _fuse_zeros(s_lim[seg])
        # a provisional fit judges, but does not choose what the warm-up learns: until its rows are all learned, the
        # baseline learns as if unfitted (a fit that never saw a restart would keep restarts out of every later fit)
        judge = s_lim[seg] if state.provisional else fused
        valid = running[seg] & ~np.isnan(x[seg]).all(axis=1)
        valid &= ~sentinels[seg]  # a sentinel code is no reading: never learn it as normal
        valid &= ~np.array([bool(d) for d in drifting[i:j]], bool)  # nor a sensor drifting off
        learn = valid & (judge < cfg.learn_below)
        if judge_starts:
            state, start_score[seg] = _judge_starts(state, x[seg], running[seg], valid, s_lim[seg], fused, cfg)
        if stride > 1:
            learn &= (state.seen + np.arange(j - i)) % stride == 0
        ring = np.concatenate([state.ring, x[seg][learn].astype(np.float32)])[-cfg.baseline_size:]
        state = evolve(state, ring=ring, seen=state.seen + (j - i))
        if (state.seen + phase) % cfg.block == 0:
            if state.fitted and state.new_normal is not None and state.new_normal.pending:
                state = _apply_new_normals(state, cfg, fb.asset_id)
            if not state.fitted and _warm(len(ring), state.seen, stride, cfg, state.repaired):
                state = _fit(evolve(state, prior=None), ring, cfg, fb.asset_id)
                prior = None
            elif not state.fitted and _provisional(ring, state.seen, stride, cfg):
                state = _fit(evolve(state, prior=None, provisional=True), ring, cfg, fb.asset_id)
                prior = None
            elif state.fitted:
                state = evolve(state, blocks_since_fit=state.blocks_since_fit + 1)
                full = state.provisional and len(ring) >= cfg.warmup_windows  # the warm-up's rows, at last
                if state.blocks_since_fit >= cfg.refit_blocks or full:
                    state = evolve(_fit(state, ring, cfg, fb.asset_id), provisional=len(ring) < cfg.warmup_windows)
        i = j

    fused = _fuse(s_lim, learned, cfg.weaker_weight) if scored_any else _fuse_zeros(s_lim)
    certain: np.ndarray | None = None
    if one_sensor:
        assert cfg.univariate is not None  # noqa: S101 - one_sensor says so, narrows the type
        values = fb.values[:, fb.sensors.index(state.columns[0]), :] if state.columns[0] in fb.sensors else \
            np.full((n, fb.values.shape[2]), np.nan)
        uni_state, z = score_windows(state.univariate, values, fb.window_start, state.window_ms,
                                     cfg.warmup_windows * stride, cfg.univariate)
        state = evolve(state, univariate=uni_state)
        ready = ~np.isnan(z)
        z = nan_to_num(z)
        learned["univariate"] = _to_unit(z, cfg.univariate.z_scale)
        fused = np.maximum(fused, learned["univariate"])
        warming &= ~ready
        certain = z >= cfg.univariate.certain_z
    detector_scores = {**learned, "limits": s_lim}
    summed = cfg.trend is not None and not one_sensor  # validation sums the trend evidence and fuses its score
    # the trend's score is at most `bound` (validation's sum restarts at faulty sensors): explain what it may lift
    shown = np.maximum(fused, bound) if summed else fused
    parts = _leading_parts(learned, z2, mv_parts) if scored_any else z2  # unscored: z2 and mv_parts are all zero
    explain = shown >= cfg.explain_above
    by_limits = s_lim >= shown
    contributions = _contributions(fb, state.columns, parts, frac, by_limits, explain)
    names = column_names(state.columns, cfg)
    feature_contributions = tuple(
        _top(names, parts[w]) if explain[w] and not by_limits[w] else () for w in range(n)
    )
    return state, Scored(
        features=fb,
        score=fused,
        detector_scores=detector_scores,
        contributions=contributions,
        warming_up=warming,
        feature_contributions=feature_contributions,
        running=found,
        settling=settling,
        rebaselines=tuple(found_normals),
        certain=certain,
        drifting=tuple(drifting),
        trend=evidence if summed else None,
        start_score=start_score if judge_starts else None,
        baseline_z=np.sqrt(z2) if "baseline" in learned else None,
    )


def _judge_starts(state: DetectorState, x: np.ndarray, running: np.ndarray, learnable: np.ndarray,
                  s_lim: np.ndarray, fused: np.ndarray, cfg: DetectConfig) -> tuple[DetectorState, np.ndarray]:
    """The start windows of a segment scored with the asset's earlier starts (starts.py), which learn them.

    A start's score is the lower of its fused score and its start baseline's
    (the baseline detector's mapping of the largest robust z), never under the
    registry limits' score: a start is anomalous when it stands out from
    steady running and from the asset's own starts, so a healthy start (out of
    steady running, like its earlier starts) scores low and a degrading one
    does not. NaN where the window is no start, or before the fit or
    `min_starts` starts. `learnable`: the windows the baseline may learn
    (running, a reading, no sentinel or drifting sensor).
    """
    starts = state.starts if state.starts is not None else StartBaseline(np.empty((0, x.shape[1]), np.float32))
    starts, is_start = start_windows(starts, running)
    out = np.full(len(x), np.nan)
    for w in np.flatnonzero(is_start):
        z = start_z(starts, x[w], state.use, cfg.min_starts) if state.fitted and state.use is not None else None
        if z is not None:
            s = float(_to_unit(np.array(z), cfg.z_scale))
            out[w] = max(float(s_lim[w]), min(float(fused[w]), s))
        if learnable[w] and (z is None or out[w] < cfg.learn_below):
            starts = learn_start(starts, x[w], cfg.baseline_size)
    return evolve(state, starts=starts), out


def _prior(state: DetectorState, cfg: DetectConfig) -> DetectorState | None:
    """The fit from before a repair that scores while the new baseline warms up (`score_through_repair`), if any."""
    if not cfg.score_through_repair or state.fitted or state.prior is None or state.prior.columns != state.columns:
        return None
    return state.prior


def _check_prior(state: DetectorState, old: np.ndarray, valid: np.ndarray,
                 check: ValidationConfig) -> tuple[DetectorState, int | None]:
    """Count the prior's scores `old` of a segment against `DetectConfig.repair_check`; the index of the window
    from which it no longer scores (it would make the candidate itself: the machine changed), or None."""
    seen, hits = state.prior_seen, state.prior_hits
    end = check.grace_windows + check.persistence_n
    for w in np.flatnonzero(valid):
        if seen >= end:
            break
        seen += 1
        if seen > check.grace_windows and old[w] >= check.open_threshold:
            hits += 1
            if hits >= check.persistence_k:
                return evolve(state, prior=None, prior_seen=seen, prior_hits=hits, prior_dropped=True), int(w)
    return evolve(state, prior_seen=seen, prior_hits=hits), None


def _warm(rows: int, seen: int, stride: int, cfg: DetectConfig, repaired: bool = False) -> bool:
    """May the first fit happen, with `rows` learned after `seen` windows? (see `DetectConfig.warmup_min_share`)

    After a repair (`repaired`) the share of the rows is enough at once: the
    machine is the one it was before its fault, so its daily cycle is known,
    and a second fault must not run to failure while its detectors relearn.

    >>> cfg = DetectConfig(warmup_windows=100, baseline_size=100, warmup_min_share=0.25)
    >>> _warm(100, 100, 1, cfg), _warm(30, 99, 1, cfg), _warm(30, 100, 1, cfg), _warm(24, 400, 1, cfg)
    (True, False, True, False)
    >>> _warm(25, 25, 1, cfg, repaired=True), _warm(25, 25, 1, DetectConfig(), repaired=True)
    (True, False)
    """
    if rows >= cfg.warmup_windows:
        return True
    if cfg.warmup_min_share is None:
        return False
    return (repaired or seen >= cfg.warmup_windows * stride) and \
        rows >= max(8, math.ceil(cfg.warmup_min_share * cfg.warmup_windows))


def _provisional(ring: np.ndarray, seen: int, stride: int, cfg: DetectConfig) -> bool:
    """May a provisional first fit happen on the rows of `ring` after `seen` windows? (`warmup_in_event_time`)

    Once the warm-up's span has passed in event time, running or not, if the
    rows are more than their columns + 1: with fewer, the multivariate model's
    limit for a new row (`phase2_limit`) is undefined and it would judge by
    its own rows' quantile, which new normal rows exceed.

    >>> cfg = DetectConfig(warmup_windows=100, baseline_size=100, warmup_in_event_time=True)
    >>> rows = np.zeros((30, 25), np.float32)
    >>> _provisional(rows, 99, 1, cfg), _provisional(rows, 100, 1, cfg), _provisional(rows[:26], 100, 1, cfg)
    (False, True, False)
    >>> _provisional(rows, 100, 1, DetectConfig(warmup_windows=100, baseline_size=100))
    False
    """
    return cfg.warmup_in_event_time and seen >= cfg.warmup_windows * stride and len(ring) > ring.shape[1] + 1


def _level_columns(state: DetectorState, cfg: DetectConfig) -> dict[str, tuple[int, int]]:
    """Per sensor of the fitted model: (its mean column in the rows, its position in `use`)."""
    assert state.use is not None  # noqa: S101 - invariant, narrows the type
    k = len(feature_names(cfg.lag_windows))
    pos = {int(c): i for i, c in enumerate(state.use)}
    return {name: (j * k, pos[j * k]) for j, name in enumerate(state.columns) if j * k in pos}


def _watch_levels(
    state: DetectorState, x: np.ndarray, starts: np.ndarray, running: np.ndarray, cfg: DetectConfig
) -> tuple[np.ndarray, list[Rebaseline], list[frozenset[str]]]:
    """Residuals of each sensor's level, window by window, into the new-normal watch; and the sensors
    watched after each window."""
    assert state.new_normal is not None and cfg.new_normal is not None  # noqa: S101 - invariant, narrows the type
    assert state.center is not None and state.scale is not None  # noqa: S101 - invariant, narrows the type
    cols = _level_columns(state, cfg)
    centers = {name: float(state.center[p]) for name, (_, p) in cols.items()}
    settling = np.zeros(len(x), bool)
    found: list[Rebaseline] = []
    watched: list[frozenset[str]] = []
    for w in range(len(x)):
        means = {name: float(x[w, c]) for name, (c, _) in cols.items()}
        residuals = {name: (means[name] - centers[name]) / float(state.scale[p]) for name, (_, p) in cols.items()}
        settling[w], new = watch_window(state.new_normal, residuals, means, centers, running=bool(running[w]),
                                        at_ms=int(starts[w]), window_ms=state.window_ms, cfg=cfg.new_normal,
                                        span=cfg.context_windows + 1)
        found += new
        watched.append(frozenset(state.new_normal.watches))
    return settling, found, watched


def _cross_columns(state: DetectorState, cfg: DetectConfig) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """The sensors whose level the learned detectors use, and their mean and std columns in the rows."""
    cols = _level_columns(state, cfg)
    names = tuple(cols)
    means = np.array([cols[s][0] for s in names], np.int64)
    return names, means, means + 1  # std follows mean in every sensor's columns (context.LEVEL)


def _fit_cross(state: DetectorState, rows: np.ndarray, cfg: DetectConfig) -> DetectorState:
    assert cfg.cross_sensor is not None  # noqa: S101 - invariant, narrows the type
    names, means, stds = _cross_columns(state, cfg)
    model = fit_cross_sensor(rows[:, means], rows[:, stds], names, cfg.cross_sensor)
    keep = state.cross is not None and model is not None and state.cross.sensors == model.sensors
    return evolve(state, cross=model, drift=state.drift if keep else None)


def _watch_drift(
    state: DetectorState, x: np.ndarray, running: np.ndarray, watched: list[frozenset[str]], cfg: DetectConfig
) -> tuple[DetectorState, list[tuple[str, ...]]]:
    """The drifting sensor of each window (cross_sensor.py), from the rows' means and stds; `watched`: per
    window, the sensors under the new-normal watch (per window, so batch sizes do not change the answer)."""
    assert state.cross is not None and cfg.cross_sensor is not None  # noqa: S101 - invariant, narrows the type
    k = len(feature_names(cfg.lag_windows))  # the model's sensors' mean columns (std follows: context.LEVEL)
    means = np.array([state.columns.index(name) * k for name in state.cross.sensors], np.int64)
    stds = means + 1
    drift, found = watch_drift(state.drift or CrossSensorState(), state.cross, x[:, means], x[:, stds], running,
                               watched, state.window_ms, cfg.cross_sensor)
    return evolve(state, drift=drift), list(found)


def _trend(
    state: DetectorState, mv_score: np.ndarray, running: np.ndarray, judged: np.ndarray, cfg: DetectConfig
) -> tuple[DetectorState, np.ndarray, np.ndarray]:
    """The trend evidence of each window and its score without sensor verdicts (trend.py), from the multivariate
    score turned back into calibrated T². A new recent level (first fit, repair, new normal) marks its first
    window NaN: validation's sum starts again there."""
    assert cfg.trend is not None  # noqa: S101 - invariant, narrows the type
    t2 = mv_score * cfg.mv_half / np.maximum(1.0 - mv_score, 1e-12)
    fresh = state.trend is None
    trend = state.trend if state.trend is not None else TrendState()  # folded in place, as the new-normal watch
    evidence = trend_evidence(trend, t2, running, judged, state.window_ms, cfg.trend)
    bound = trend_scores(trend, evidence, cfg.trend)
    if fresh and len(evidence):
        evidence[0] = np.nan
    return evolve(state, trend=trend), evidence, bound


def _apply_new_normals(state: DetectorState, cfg: DetectConfig, asset_id: str) -> DetectorState:
    """Move each sensor's level columns in the baseline by its lasting step, and refit on the moved rows."""
    assert state.new_normal is not None  # noqa: S101 - invariant, narrows the type
    k = len(feature_names(cfg.lag_windows))
    ring = state.ring.copy()
    for rb in state.new_normal.pending:
        if rb.sensor in state.columns:
            j = state.columns.index(rb.sensor)
            for lvl in _LEVELS:
                ring[:, j * k + lvl] += np.float32(rb.shift)
    recent = state.new_normal.recent  # `across`: the moved fit's centre is the level judged from
    for rb in state.new_normal.pending:
        if rb.sensor in recent:
            recent[rb.sensor] = [0.0]
    state.new_normal.pending = ()
    # the evidence was summed against the old level: it starts again with the new one
    return _fit(evolve(state, ring=ring, trend=None), ring, cfg, asset_id)


def _leading_parts(learned: dict[str, np.ndarray], z2: np.ndarray, mv_parts: np.ndarray) -> np.ndarray:
    """Per window, the per-column deviation of the detector that scored it highest (z² stands in for the forest)."""
    mv = learned.get("multivariate")
    if mv is None:
        return z2
    others = [s for d, s in learned.items() if d != "multivariate"]
    lead = mv >= (np.max(others, axis=0) if others else 0.0)
    return np.where(lead[:, None], mv_parts, z2)


def _top(names: tuple[str, ...], weights: np.ndarray, k: int = 5) -> tuple[tuple[str, float], ...]:
    total = float(weights.sum())
    if total <= 0:
        return ()
    order = np.argsort(-weights, kind="stable")[:k]
    return tuple((names[o], round(float(weights[o] / total), 4)) for o in order if weights[o] > 0)


def _contributions(
    fb: FeatureBatch,
    columns: tuple[str, ...],
    parts: np.ndarray,
    frac: np.ndarray,
    by_limits: np.ndarray,
    explain: np.ndarray,
) -> tuple[tuple[tuple[str, float], ...], ...]:
    """Per window worth explaining, the sensors' shares of the deviation, largest first (top 5)."""
    if not explain.any():  # the usual window: nothing to explain
        return ((),) * len(fb)
    per_sensor = parts.reshape(len(parts), len(columns), -1).sum(axis=2) if len(columns) else np.zeros((len(parts), 0))
    out: list[tuple[tuple[str, float], ...]] = []
    for w in range(len(fb)):
        if not explain[w]:
            out.append(())
        elif by_limits[w]:
            out.append(_top(fb.sensors, frac[w]))
        else:
            out.append(_top(columns, per_sensor[w]))
    return tuple(out)


def apply_control(state: DetectorState | None, control: Control) -> DetectorState | None:
    """Fold a control into the asset's detectors: maintenance that re-baselines (the machine changed) starts
    learning its normal again; anything else leaves them as they are."""
    if isinstance(control, MaintenanceRecord) and control.rebaseline:
        return DetectorState(repaired=True, prior=_without_learning(state))
    return state


def _without_learning(state: DetectorState | None) -> DetectorState | None:
    """What a repair keeps of an asset's detectors for `score_through_repair`: its last fit, without the rows it
    learned from or the evidence it summed (a second repair before the next fit keeps the first one's)."""
    if state is None or not state.fitted:
        return state.prior if state is not None else None
    return evolve(state, ring=np.empty((0, state.ring.shape[1]), np.float32), history=np.empty((0, 0, len(BASE))),
                  new_normal=None, drift=None, trend=None, prior=None)
