"""A fitted IsolationForest, stored compactly and scored for many rows in one pass.

scikit-learn fits the forest; we keep only the arrays that scoring needs
(per node: feature, threshold, children, and the path length credited at a
leaf) and walk all trees for all rows at once with numpy. That gives the same
scores as `IsolationForest.score_samples` (a test checks it) at a fraction of
the cost: about 0.1 ms per call instead of ~12 ms, and ~100 KB per model
instead of ~300 KB pickled, which matters with thousands of assets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sklearn.ensemble import IsolationForest

_EULER = 0.5772156649015329


def average_path_length(n: np.ndarray) -> np.ndarray:
    """Expected path length of an unsuccessful BST search among n points (Liu et al. 2008)."""
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(n)
    out[n == 2] = 1.0
    big = n > 2
    out[big] = 2.0 * (np.log(n[big] - 1.0) + _EULER) - 2.0 * (n[big] - 1.0) / n[big]
    return out


@dataclass(frozen=True)
class CompactForest:
    """All trees flattened into shared node arrays (leaves point to themselves)."""

    feature: np.ndarray  # int16, feature tested at the node (0 at leaves)
    threshold: np.ndarray  # float64, go left when x <= threshold (+inf at leaves)
    left: np.ndarray  # int32, global index of the left child (self at leaves)
    right: np.ndarray  # int32, global index of the right child (self at leaves)
    leaf_depth: np.ndarray  # float32, depth + c(n_node_samples): path length credited at a leaf
    roots: np.ndarray  # int32, global index of each tree's root
    depth: int  # deepest leaf: number of steps that reach every leaf
    norm: float  # c(max_samples), the score's normaliser
    n_features: int

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.feature, self.threshold, self.left, self.right, self.leaf_depth, self.roots))

    def score(self, x: np.ndarray) -> np.ndarray:
        """Anomaly score in (0, 1] per row, as scikit-learn's `-score_samples`: ~0.5 normal, near 1 isolated."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected rows of {self.n_features} features, got shape {x.shape}")
        rows = np.arange(len(x))[:, None]
        node = np.broadcast_to(self.roots, (len(x), len(self.roots)))
        for _ in range(self.depth):
            go_left = x[rows, self.feature[node]] <= self.threshold[node]
            node = np.where(go_left, self.left[node], self.right[node])
        mean_path = self.leaf_depth[node].mean(axis=1, dtype=np.float64)
        scores: np.ndarray = np.power(2.0, -mean_path / self.norm)
        return scores


def fit_forest(x: np.ndarray, *, n_trees: int, max_samples: int, seed: int) -> CompactForest:
    """Fit scikit-learn's IsolationForest on `x` and keep its compact form."""
    from sklearn.ensemble import IsolationForest

    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"need at least 2 rows to fit, got shape {x.shape}")
    model = IsolationForest(
        n_estimators=n_trees, max_samples=min(max_samples, len(x)), random_state=seed, n_jobs=1
    ).fit(x)
    return compact(model)


def compact(model: IsolationForest) -> CompactForest:
    """Flatten a fitted IsolationForest."""
    feats, thrs, lefts, rights, leafd, roots = [], [], [], [], [], []
    offset, deepest = 0, 0
    for est, cols in zip(model.estimators_, model.estimators_features_):
        t = est.tree_
        n = t.node_count
        is_leaf = t.children_left == -1
        depth = np.zeros(n, np.int64)
        for i in range(n):  # parents come before children in sklearn's node order
            if not is_leaf[i]:
                depth[t.children_left[i]] = depth[i] + 1
                depth[t.children_right[i]] = depth[i] + 1
        idx = np.arange(n) + offset
        feats.append(np.where(is_leaf, 0, np.asarray(cols)[np.maximum(t.feature, 0)]).astype(np.int16))
        thrs.append(np.where(is_leaf, np.inf, t.threshold))
        lefts.append(np.where(is_leaf, idx, t.children_left + offset).astype(np.int32))
        rights.append(np.where(is_leaf, idx, t.children_right + offset).astype(np.int32))
        leafd.append((depth + average_path_length(t.n_node_samples)).astype(np.float32))
        roots.append(offset)
        deepest = max(deepest, int(depth.max()))
        offset += n
    return CompactForest(
        feature=np.concatenate(feats),
        threshold=np.concatenate(thrs),
        left=np.concatenate(lefts),
        right=np.concatenate(rights),
        leaf_depth=np.concatenate(leafd),
        roots=np.array(roots, np.int32),
        depth=deepest,
        norm=float(average_path_length(np.array([model.max_samples_]))[0]),
        n_features=int(model.n_features_in_),
    )
