"""The Numenta Anomaly Benchmark's scoring rule, as NAB publishes it (numenta/NAB, `nab/sweeper.py`).

Per file of `n` rows with labelled anomalies (row indices):

- each label gets a window of `int(0.10 * n / labels)` rows centred on it
  (half on each side, clipped to the file); overlapping windows merge;
- the first `min(floor(0.15 * n), 0.15 * 5000)` rows are probationary:
  detections there are ignored;
- a detection inside a window scores `A_TP * sigma(p) / sigma(-1)`, `p` its
  relative position (-1 at the window's left edge, 0 past its right edge)
  and `sigma(x) = 2 / (1 + exp(5 x)) - 1`; only the best (the first)
  detection of a window counts; a window without one costs `A_FN`;
- a detection outside every window is a false positive worth
  `|A_FP| * sigma(d)` (negative), `d` its distance past the preceding
  window's right edge over that window's width; `sigma` is -1 (the full
  cost `A_FP`) when no window precedes it or `d > 3`;
- the corpus score is normalised: `100 * (raw - null) / (perfect - null)`,
  the null detector (never fires) scoring `A_FN` per window, the perfect one
  `A_TP` per window.

NAB also sweeps a score threshold per detector; a detector that only says
yes or no (an alarm opening) has none to sweep, and is scored as is.

SKAB's variant (`bench/skab.py`: right-hand 60 s windows, tanh scaling)
shares the cost profiles and the normalisation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# name -> (A_TP, A_FP, A_FN), NAB's config/profiles.json
PROFILES: dict[str, tuple[float, float, float]] = {
    "Standard": (1.0, -0.11, -1.0),
    "LowFP": (1.0, -0.22, -1.0),
    "LowFN": (1.0, -0.11, -2.0),
}
WINDOW_SHARE = 0.10
PROBATION_SHARE = 0.15


def normalised(raw: float, null: float, perfect: float) -> float:
    """NAB's 0 (never fires) to 100 (perfect) scale."""
    return 100.0 * (raw - null) / (perfect - null)


def scaled_sigmoid(x: float) -> float:
    """NAB's `scaledSigmoid`: 1 far before, 0 at the right edge, -1 from 3 widths after.

    >>> round(scaled_sigmoid(-1.0), 4), scaled_sigmoid(0.0), scaled_sigmoid(3.5)
    (0.9866, 0.0, -1.0)
    """
    if x > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * x)) - 1.0


def probation_rows(n: int) -> int:
    """NAB's probationary period: 15 % of the file, at most 750 rows.

    >>> probation_rows(1000), probation_rows(20000)
    (150, 750)
    """
    return int(min(math.floor(PROBATION_SHARE * n), PROBATION_SHARE * 5000))


def windows(n: int, labels: Sequence[int]) -> list[tuple[int, int]]:
    """Anomaly windows (first row, last row, inclusive) centred on each labelled row; overlaps merge.

    >>> windows(1000, [500])
    [(450, 550)]
    >>> windows(1000, [10, 990])
    [(0, 35), (965, 999)]
    """
    if not len(labels):
        return []
    width = int(WINDOW_SHARE * n / len(labels))
    out: list[list[int]] = []
    for i in sorted(labels):
        a, b = max(0, int(i - width / 2)), min(n - 1, int(i + width / 2))
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


@dataclass(frozen=True)
class FileScore:
    """One file's raw score per profile and what made it."""

    raw: dict[str, float]
    windows: int
    tp: int
    fp: int
    fn: int
    first_hits: tuple[int | None, ...]  # per window, the row of its first detection (None: missed)


def score_file(n: int, labels: Sequence[int], detections: Sequence[int]) -> FileScore:
    """NAB's raw score of one file per profile, from the rows of the detections.

    >>> score_file(1000, [500], [450]).raw["Standard"]
    1.0
    >>> score_file(1000, [500], []).raw["Standard"], score_file(1000, [500], [10]).raw["Standard"]
    (-1.0, -1.0)
    """
    wins = windows(n, labels)
    probation = probation_rows(n)
    hits: list[float | None] = [None] * len(wins)
    first: list[int | None] = [None] * len(wins)
    fp_unweighted: list[float] = []
    tp_norm = scaled_sigmoid(-1.0)
    for row in sorted(set(int(d) for d in detections)):
        if row < probation or not 0 <= row < n:
            continue
        inside = next((k for k, (a, b) in enumerate(wins) if a <= row <= b), None)
        if inside is not None:
            if hits[inside] is None:  # only the first detection in a window counts (it scores highest)
                a, b = wins[inside]
                width = b - a + 1
                hits[inside] = scaled_sigmoid(-(b - row + 1) / width) / tp_norm
                first[inside] = row
            continue
        before = [(a, b) for a, b in wins if b < row]
        if not before:
            fp_unweighted.append(-1.0)
        else:
            a, b = before[-1]
            fp_unweighted.append(scaled_sigmoid(abs(b - row) / max(b - a, 1)))
    raw = {}
    for name, (a_tp, a_fp, a_fn) in PROFILES.items():
        tp = sum(a_tp * h for h in hits if h is not None)
        fn = a_fn * sum(h is None for h in hits)
        fp = -a_fp * sum(fp_unweighted)  # the unweighted FP scores are negative; A_FP is too
        raw[name] = tp + fn + fp
    found = sum(h is not None for h in hits)
    return FileScore(raw, len(wins), found, len(fp_unweighted), len(wins) - found, tuple(first))


def corpus_scores(files: Sequence[FileScore]) -> dict[str, float]:
    """Normalised NAB per profile over files: null = 0, perfect = 100."""
    out = {}
    n_windows = sum(f.windows for f in files)
    for name, (a_tp, _, a_fn) in PROFILES.items():
        raw = float(np.sum([f.raw[name] for f in files]))
        out[name] = normalised(raw, a_fn * n_windows, a_tp * n_windows)
    return out
