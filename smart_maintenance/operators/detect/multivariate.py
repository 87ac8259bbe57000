"""Multivariate statistical process control on window features: Hotelling's T² and PCA's Q.

A robust z per feature misses what only shows in how sensors move together
(current up while flow stays put); an IsolationForest sees it but ranks
coarsely. T² measures a row's distance from the normal rows in the metric of
their own covariance, so correlated features count once; with
`variance` < 1 the principal components that explain that share of the
normal variance carry T², and the rest, the residual Q (squared prediction
error), catches rows that break the normal correlation structure.

Both are calibrated against their own fit rows: the statistic is
`T²/T²_ref (+ Q/Q_ref) / (1 or 2)`, where `_ref` is the `quantile` of the fit
rows' values, so 1.0 means "as far out as the fit set's 99th percentile".
Contributions split the statistic over the features exactly:
`z_i (P z)_i` for T² (P the inverse covariance) and `e_i²` for Q.

Sensors whose level wanders during the fit (a temperature warming up over a
short fit set: `drift_ratio`) can be left out by the caller through `use`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from smart_maintenance.operators.detect.finite import nan_to_num


@dataclass(frozen=True)
class MultivariateModel:
    """A fitted T²/Q model over the columns `use` of the detector rows (float32 to stay small)."""

    use: np.ndarray  # int32 indices of the columns it models
    center: np.ndarray  # per used column
    scale: np.ndarray
    precision: np.ndarray  # (d, d): inverse covariance on the retained components
    residual: np.ndarray | None  # (d, d): projector onto the discarded components (None: no Q)
    t2_ref: float
    q_ref: float

    @property
    def nbytes(self) -> int:
        arrays = [self.use, self.center, self.scale, self.precision]
        if self.residual is not None:
            arrays.append(self.residual)
        return sum(a.nbytes for a in arrays)

    def standardise(self, x: np.ndarray) -> np.ndarray:
        z = (x[:, self.use] - self.center) / self.scale
        filled = nan_to_num(z)  # a missing feature sits at the centre
        return filled

    def statistic(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per row the calibrated statistic, and per (row, used column) its share of it (non-negative)."""
        z = self.standardise(x).astype(np.float64)
        # einsum, not `@`: BLAS blocks a product by its number of rows, so a row's last bit would depend on
        # how many windows were scored together (a live batch against a backfill's); einsum sums each row
        # in one fixed order
        pz = np.einsum("ij,jk->ik", z, self.precision)
        t2_parts = z * pz
        t2 = t2_parts.sum(axis=1)
        if self.residual is None:
            stat = t2 / self.t2_ref
            parts = np.clip(t2_parts, 0.0, None) / self.t2_ref
        else:
            e = np.einsum("ij,jk->ik", z, self.residual)
            q_parts = e * e
            stat = 0.5 * (t2 / self.t2_ref + q_parts.sum(axis=1) / self.q_ref)
            parts = 0.5 * (np.clip(t2_parts, 0.0, None) / self.t2_ref + q_parts / self.q_ref)
        return np.maximum(stat, 0.0), parts


def drift_ratios(levels: np.ndarray, block: int = 20) -> np.ndarray:
    """Per column: spread of `block`-row means relative to what the within-block noise explains.

    About 1 for a stationary noisy signal; much more for a level that wanders
    (a temperature warming up) over the rows. NaN rows are ignored; 1.0 when
    there are too few rows to tell.
    """
    m = len(levels) // block * block
    if m < 2 * block:
        return np.ones(levels.shape[1])
    b = levels[len(levels) - m:].reshape(-1, block, levels.shape[1])
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        within = np.nanmean(np.nanstd(b, axis=1), axis=0)
        between = np.nanstd(np.nanmean(b, axis=1), axis=0)
        ratio = between / (within / np.sqrt(block))
    return np.where(np.isfinite(ratio), ratio, np.where(between > 0, np.inf, 1.0))


def phase2_limit(n: int, d: int, quantile: float) -> float:
    """Hotelling's T² limit for a *new* row, given a mean and covariance estimated from n rows of d features.

    The fit rows' own T² is bounded by (n-1)²/n and underestimates how far new
    normal rows fall when d is not small against n; the F-based limit
    `d(n+1)(n-1) / (n(n-d)) F_q(d, n-d)` does not. With n <= d + 1 it is
    undefined and 0 is returned (the empirical quantile then decides).
    """
    if n <= d + 1 or d < 1:
        return 0.0
    # here, not at the top: SciPy's special functions (with the numpy.ma and f2py they pull in) are ~0.15 CPU-s
    # of every flow process's start, and only a fit needs them (issue #17 item 3)
    from scipy.special import fdtri

    return float(d * (n + 1) * (n - 1) / (n * (n - d)) * fdtri(d, n - d, quantile))


def fit_multivariate(
    rows: np.ndarray, use: np.ndarray, *, variance: float = 1.0, ridge: float = 1e-3, quantile: float = 0.99
) -> MultivariateModel:
    """Fit on normal rows (n, columns); `use` selects the columns to model."""
    if not 0.0 < variance <= 1.0:
        raise ValueError(f"variance must be in (0, 1], got {variance}")
    if not 0.5 <= quantile < 1.0:
        raise ValueError(f"quantile must be in [0.5, 1), got {quantile}")
    use = np.asarray(use, np.int32)
    x = rows[:, use]
    if len(x) < 2 or x.shape[1] == 0:
        raise ValueError(f"need at least 2 rows and 1 column to fit, got shape {x.shape}")
    center = np.nanmean(x, axis=0)
    center = np.nan_to_num(center)
    scale = np.nanstd(x, axis=0)
    scale = np.where(np.isfinite(scale) & (scale > 1e-9 * np.maximum(1.0, np.abs(center))), scale, 1.0)
    z = np.nan_to_num((x - center) / scale)
    cov = np.cov(z, rowvar=False).reshape(z.shape[1], z.shape[1])
    lam, vec = np.linalg.eigh(cov)
    lam, vec = np.maximum(lam[::-1], 0.0), vec[:, ::-1]
    keep = len(lam)
    if variance < 1.0 and lam.sum() > 0:
        keep = int(np.searchsorted(np.cumsum(lam) / lam.sum(), variance) + 1)
    kept = vec[:, :keep]
    precision = (kept / (lam[:keep] + ridge)) @ kept.T
    residual = None if keep >= len(lam) else np.eye(len(lam)) - kept @ kept.T
    t2 = np.einsum("ij,jk,ik->i", z, precision, z)
    t2_ref = max(float(np.quantile(t2, quantile)), phase2_limit(len(x), keep, quantile), 1e-9)
    q_ref = 1.0
    if residual is not None:
        e = z @ residual
        q_ref = max(float(np.quantile((e * e).sum(axis=1), quantile)), 1e-9)
    f32 = np.float32
    return MultivariateModel(
        use=use, center=center.astype(f32), scale=scale.astype(f32), precision=precision.astype(f32),
        residual=None if residual is None else residual.astype(f32), t2_ref=t2_ref, q_ref=q_ref,
    )
