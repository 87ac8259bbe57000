"""The start windows of a cycling asset scored with its own earlier starts (detect/starts.py), and judged."""

import pickle

import numpy as np

from smart_maintenance.operators.detect.detectors import DetectConfig, column_names, detect
from smart_maintenance.operators.profile import AssetProfile
from smart_maintenance.operators.records import FeatureBatch

LEVELS = (40.0, 1500.0, 2.0)  # current, speed, vibration
CFG = DetectConfig(warmup_windows=36, baseline_size=96, start_baseline=True)


def _cycling(runs, *, worn_from=None, seed=0):
    """Runs of 3 windows, the first a start (at rest for part of it, then an inrush), and stops of 3; from run
    `worn_from` on, the start's vibration peaks at twice its usual height."""
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(runs):
        for k in range(6):
            v = np.zeros((3, 8))
            for j, lvl in enumerate(LEVELS):
                noise = 0.01 * lvl
                if k == 0:
                    peak = 1.0 if j == 1 else (3.0 if worn_from is not None and r >= worn_from and j == 2 else 1.5)
                    mean = rng.uniform(0.4, 0.8) * lvl + rng.normal(0, noise)
                    v[j] = [mean, 0.4 * lvl, 0.0, peak * lvl, lvl / 10, mean, lvl, 20]
                elif k < 3:
                    m = lvl + rng.normal(0, noise)
                    v[j] = [m, noise, m - 2 * noise, m + 2 * noise, rng.normal(0, noise / 10), m, m, 20]
                else:
                    v[j] = [0.001 * lvl, 0.0005 * lvl, 0, 0.002 * lvl, 0, 0.001 * lvl, 0.001 * lvl, 20]
            rows.append(v)
    n = len(rows)
    return FeatureBatch("fan-1", ("current", "speed", "vibration"), np.arange(n) * 900_000,
                        np.arange(1, n + 1) * 900_000, np.array(rows))


def _run(fb, cfg=CFG, size=1000):
    state, out = None, []
    for i in range(0, len(fb), size):
        part = FeatureBatch(fb.asset_id, fb.sensors, fb.window_start[i:i + size], fb.window_end[i:i + size],
                            fb.values[i:i + size])
        state, scored = detect(state, part, AssetProfile("fan-1"), cfg)
        out.append(scored)
    return state, out


def test_healthy_starts_score_low_against_earlier_starts_and_worn_ones_high():
    fb = _cycling(40, worn_from=30)
    state, (scored,) = _run(fb)
    starts = np.arange(0, len(fb), 6)
    ready = ~np.isnan(scored.start_score[starts])
    # scored with earlier starts once the fit exists and 8 starts are kept; nothing else is a start
    assert ready[11:].all() and not ready[:8].any()
    assert np.isnan(np.delete(scored.start_score, starts)).all()
    healthy, worn = starts[11:30], starts[30:]
    # a healthy start stands out from steady running (the fused score), not from the asset's own starts
    assert scored.score[healthy].min() > 0.45 and scored.start_score[healthy].max() < 0.3
    # a worn start stands out from both
    assert scored.start_score[worn].min() > 0.75
    # the worn starts were not learned: the baseline keeps the healthy ones
    peak = column_names(state.columns, CFG).index("vibration.max")
    assert state.starts is not None and state.starts.starts >= 20 and state.starts.rows[:, peak].max() < 4.0


def test_start_scores_do_not_depend_on_batching_and_the_state_pickles():
    fb = _cycling(30, worn_from=25)
    state, whole = _run(fb)
    again, parts = _run(fb, size=7)
    assert np.allclose(whole[0].start_score, np.concatenate([s.start_score for s in parts]), equal_nan=True)
    assert np.array_equal(pickle.loads(pickle.dumps(state)).starts.rows, again.starts.rows)
    # off, there is no start score
    _, (off,) = _run(fb, DetectConfig(warmup_windows=36, baseline_size=96))
    assert off.start_score is None
