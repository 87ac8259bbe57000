"""Per-asset anomaly detection on window features.

Three detectors score every window in [0, 1]:

- `baseline`: robust z (median / MAD) of each feature against the asset's
  recent normal windows; learned during a warm-up and then updated only on
  windows that were running and scored normal;
- `iforest`: an IsolationForest fitted on the warm-up windows and refitted
  on recent normal windows every `refit_blocks` blocks (a fit costs tens of
  milliseconds; a day of 5-minute windows is 24 blocks), scored for a whole
  block of windows in one call (see `iforest.py`);
- `limits`: how far the window mean has gone from the registry's normal band
  toward the sensor's failure value (only for sensors the registry knows).

The fused score is the larger of `limits` and a soft maximum of the other
two, `(1 - w) * max + w * min`: one learned detector alone can raise a window
most of the way, both together all of the way; validation then uses their
agreement to decide between confirmed and needs_review. Contributions say
which sensors made the window anomalous.

Parameters change only at block boundaries (every `block` windows, counted
from the asset's first window), never in the middle of a block, so scores do
not depend on how the windows were batched: live and backfill agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from smart_maintenance.operators.iforest import CompactForest, fit_forest
from smart_maintenance.operators.profile import MAX, MEAN, MIN, SLOPE, STD, AssetProfile
from smart_maintenance.operators.records import FeatureBatch, Scored, stable_id

DETECT_FEATURES = (MEAN, STD, MIN, MAX, SLOPE)


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
    weaker_weight: float = 0.25  # weight of the weaker of baseline and forest in the fused score
    learn_below: float = 0.4  # windows scoring under this may update the baseline
    explain_above: float = 0.3  # windows scoring under this get no contributions (they are not anomalies)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.warmup_windows < 8:
            raise ValueError("warmup_windows must be at least 8")
        if self.baseline_size < self.warmup_windows:
            raise ValueError("baseline_size must be at least warmup_windows")
        if not 0.0 <= self.weaker_weight <= 0.5:
            raise ValueError("weaker_weight must be in [0, 0.5]")


@dataclass(frozen=True)
class DetectorState:
    """An asset's detectors. Arrays are replaced, never mutated."""

    columns: tuple[str, ...] = ()  # sensors of the fitted model
    seen: int = 0  # windows scored so far (block position)
    ring: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))  # recent normal feature rows
    center: np.ndarray | None = None
    scale: np.ndarray | None = None
    forest: CompactForest | None = None
    if_center: float = 0.5
    if_scale: float = 0.05
    blocks_since_fit: int = 0

    @property
    def fitted(self) -> bool:
        return self.center is not None


def to_matrix(fb: FeatureBatch, columns: tuple[str, ...]) -> np.ndarray:
    """Rows of detector features for `columns` (NaN where a sensor is missing)."""
    out = np.full((len(fb), len(columns), len(DETECT_FEATURES)), np.nan)
    for j, name in enumerate(columns):
        if name in fb.sensors:
            out[:, j, :] = fb.values[:, fb.sensors.index(name), DETECT_FEATURES]
    return out.reshape(len(fb), -1)


def _to_unit(z: np.ndarray, z_scale: float) -> np.ndarray:
    """Map a non-negative deviation to [0, 1): z_scale maps to 0.5."""
    z2 = z * z
    return z2 / (z2 + z_scale * z_scale)


def limit_scores(fb: FeatureBatch, profile: AssetProfile) -> tuple[np.ndarray, np.ndarray]:
    """Per window: the limits score and the per-sensor distance fractions toward failure."""
    frac = np.zeros((len(fb), len(fb.sensors)))
    for s, name in enumerate(fb.sensors):
        lim = profile.limit(name)
        if lim is None:
            continue
        mean = fb.values[:, s, MEAN]
        if lim.rising:
            f = (mean - lim.normal_hi) / max(lim.failure - lim.normal_hi, 1e-9)
        else:
            f = (lim.normal_lo - mean) / max(lim.normal_lo - lim.failure, 1e-9)
        frac[:, s] = np.nan_to_num(np.clip(f, 0.0, None))
    worst = frac.max(axis=1) if frac.shape[1] else np.zeros(len(fb))
    return worst / (worst + 0.125), frac


def _fit(state: DetectorState, rows: np.ndarray, cfg: DetectConfig, asset_id: str) -> DetectorState:
    """Robust centre/scale and a forest from the rows of the ring."""
    center = np.nanmedian(rows, axis=0)
    mad = np.nanmedian(np.abs(rows - center), axis=0) * 1.4826
    spread = np.nanstd(rows, axis=0)
    scale = np.maximum.reduce([mad, 0.25 * spread, 1e-3 * np.abs(center), np.full_like(mad, 1e-6)])
    center = np.nan_to_num(center)
    filled = np.where(np.isnan(rows), center, rows)
    seed = (int(stable_id(asset_id), 16) + cfg.seed + state.seen) % (2**31)
    forest = fit_forest(filled, n_trees=cfg.n_trees, max_samples=cfg.max_samples, seed=seed)
    own = forest.score(filled)
    if_center = float(np.median(own))
    if_scale = max(float(np.median(np.abs(own - if_center)) * 1.4826), 0.01)
    return replace(state, center=center, scale=scale, forest=forest, if_center=if_center, if_scale=if_scale,
                   blocks_since_fit=0)


def _score_block(state: DetectorState, x: np.ndarray, cfg: DetectConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Baseline score, forest score and per-column z² for rows scored with fixed parameters."""
    assert state.center is not None and state.scale is not None and state.forest is not None
    z = np.nan_to_num(np.abs(x - state.center) / state.scale)
    s_base = _to_unit(z.max(axis=1), cfg.z_scale)
    filled = np.where(np.isnan(x), state.center, x)
    raw = state.forest.score(filled)
    s_if = _to_unit(np.clip((raw - state.if_center) / state.if_scale, 0.0, None), cfg.if_z_scale)
    return s_base, s_if, z * z


def _fuse(s_lim: np.ndarray, s_base: np.ndarray, s_if: np.ndarray, w: float) -> np.ndarray:
    learned = (1 - w) * np.maximum(s_base, s_if) + w * np.minimum(s_base, s_if)
    return np.maximum(s_lim, learned)


def detect(
    state: DetectorState | None, fb: FeatureBatch, profile: AssetProfile, cfg: DetectConfig
) -> tuple[DetectorState, Scored]:
    """Score a batch of closed windows of one asset and learn from the normal ones."""
    if state is None:
        state = DetectorState()
    if not state.columns:
        state = replace(state, columns=fb.sensors, ring=np.empty((0, len(fb.sensors) * len(DETECT_FEATURES))))
    n = len(fb)
    x = to_matrix(fb, state.columns)
    running = profile.running(fb)
    s_lim, frac = limit_scores(fb, profile)
    s_base, s_if = np.zeros(n), np.zeros(n)
    z2 = np.zeros_like(x)
    warming = np.ones(n, bool)

    i = 0
    while i < n:
        # a segment ends at the next block boundary, so parameters are fixed within it
        j = min(n, i + cfg.block - state.seen % cfg.block)
        seg = slice(i, j)
        if state.fitted:
            s_base[seg], s_if[seg], z2[seg] = _score_block(state, x[seg], cfg)
            warming[seg] = False
        fused = _fuse(s_lim[seg], s_base[seg], s_if[seg], cfg.weaker_weight)
        learn = running[seg] & (fused < cfg.learn_below) & ~np.isnan(x[seg]).all(axis=1)
        ring = np.concatenate([state.ring, x[seg][learn]])[-cfg.baseline_size:]
        state = replace(state, ring=ring, seen=state.seen + (j - i))
        if state.seen % cfg.block == 0:
            if not state.fitted and len(ring) >= cfg.warmup_windows:
                state = _fit(state, ring, cfg, fb.asset_id)
            elif state.fitted:
                state = replace(state, blocks_since_fit=state.blocks_since_fit + 1)
                if state.blocks_since_fit >= cfg.refit_blocks:
                    state = _fit(state, ring, cfg, fb.asset_id)
        i = j

    fused = _fuse(s_lim, s_base, s_if, cfg.weaker_weight)
    contributions = _contributions(fb, state.columns, z2, frac, s_lim >= fused, fused >= cfg.explain_above)
    return state, Scored(
        features=fb,
        score=fused,
        detector_scores={"baseline": s_base, "iforest": s_if, "limits": s_lim},
        contributions=contributions,
        warming_up=warming,
    )


def _contributions(
    fb: FeatureBatch,
    columns: tuple[str, ...],
    z2: np.ndarray,
    frac: np.ndarray,
    by_limits: np.ndarray,
    explain: np.ndarray,
) -> tuple[tuple[tuple[str, float], ...], ...]:
    """Per window worth explaining, the sensors' shares of the deviation, largest first (top 5)."""
    k = len(DETECT_FEATURES)
    per_sensor = z2.reshape(len(z2), len(columns), k).sum(axis=2) if len(columns) else np.zeros((len(z2), 0))
    out: list[tuple[tuple[str, float], ...]] = []
    for w in range(len(fb)):
        if not explain[w]:
            out.append(())
            continue
        names, weights = (fb.sensors, frac[w]) if by_limits[w] else (columns, per_sensor[w])
        total = float(weights.sum())
        if total <= 0:
            out.append(())
            continue
        order = np.argsort(-weights, kind="stable")[:5]
        out.append(tuple((names[o], round(float(weights[o] / total), 4)) for o in order if weights[o] > 0))
    return tuple(out)
