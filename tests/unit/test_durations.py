"""Settings in time: durations turn into windows per asset from its own window length."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from smart_maintenance.config.durations import duration_ms, parse_duration
from smart_maintenance.config.settings import load_settings
from smart_maintenance.operators.detect.detectors import DetectConfig, detect
from smart_maintenance.operators.profile import AssetProfile
from smart_maintenance.operators.records import FeatureBatch


def test_parse_duration_accepts_units_and_rejects_counts() -> None:
    assert parse_duration("2h") == parse_duration("120min") == 7_200_000
    assert parse_duration("1w") == 7 * 86_400_000
    for bad in ("288", "-1d", "1 fortnight", ""):
        with pytest.raises(ValueError):
            parse_duration(bad)
    with pytest.raises(ValueError):
        load_settings(detection={"warmup": "288"})


def test_legacy_window_counts_still_win_with_a_warning() -> None:
    s = load_settings(detection={"warmup_windows": 40})
    with pytest.warns(FutureWarning, match="warmup_windows"):
        assert duration_ms(s.detection, "warmup", "warmup_windows") is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert duration_ms(load_settings().detection, "warmup", "warmup_windows") == 86_400_000


def _batch(n: int, window_ms: int, start: int = 0) -> FeatureBatch:
    rng = np.random.default_rng(0)
    ws = start + np.arange(n, dtype=np.int64) * window_ms
    values = rng.normal(10.0, 1.0, size=(n, 1, 8))
    values[:, :, 7] = 30  # count
    return FeatureBatch("a", ("x",), ws, ws + window_ms, values)


@pytest.mark.parametrize("window_ms", [30_000, 300_000, 3_600_000])
def test_the_warm_up_lasts_the_same_time_whatever_the_window(window_ms: int) -> None:
    cfg = DetectConfig(warmup_ms=12 * 3_600_000, baseline_ms=12 * 3_600_000, detectors=("baseline",))
    n = int(24 * 3_600_000 / window_ms)
    _, scored = detect(None, _batch(n, window_ms), AssetProfile("a"), cfg)
    first_scored_h = np.flatnonzero(~scored.warming_up)[0] * window_ms / 3_600_000
    # fitted at the first block boundary after 12 h of windows (a block is 12 windows), and at least 8 windows
    assert 12 <= first_scored_h <= 12 + max(12 * window_ms / 3_600_000, 8 * window_ms / 3_600_000)


def test_a_finite_recording_caps_the_warm_up_at_its_share() -> None:
    cfg = DetectConfig(warmup_ms=86_400_000, baseline_ms=86_400_000, recording_ms=2 * 86_400_000)
    assert cfg.for_window(300_000)[0].warmup_windows == 202  # 35 % of a two-day recording (16.8 h), not a day
    assert cfg.warmup_capped(300_000)
    long = DetectConfig(warmup_ms=86_400_000, baseline_ms=86_400_000, recording_ms=30 * 86_400_000)
    assert long.for_window(300_000)[0].warmup_windows == 288 and not long.warmup_capped(300_000)


def test_recording_lengths_of_a_replay_and_a_simulator_run(tmp_path) -> None:
    from smart_maintenance.sources.recording import recording_lengths

    path = tmp_path / "plant.csv"
    path.write_text("ts,asset_id,sensor,value\n2026-01-01T00:00:00Z,a,x,1\n2026-01-01T06:00:00Z,a,x,2\n"
                    "2026-01-01T01:00:00Z,b,x,1\n2026-01-01T02:00:00Z,b,x,1\n")
    lengths = recording_lengths(load_settings(source="replay", replay={"paths": [str(path)]}))
    assert lengths is not None and lengths("a") == 6 * 3_600_000 and lengths("b") == 3_600_000
    sim = recording_lengths(load_settings(source="simulator", simulator={"duration_s": 86_400}))
    assert sim is not None and sim("pump-01") == 86_400_000
    assert recording_lengths(load_settings(source="simulator", simulator={"duration_s": None})) is None
