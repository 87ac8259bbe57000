"""Windows at a per-asset phase (`windows.phase_by_asset`): boundaries, features, batching, snapshots."""

import pickle

import numpy as np

from smart_maintenance.operators.ingest.windows import (
    WindowConfig,
    WindowState,
    asset_phase_ms,
    flush_windows,
    window_readings,
)
from smart_maintenance.operators.records import AssetReadings

T0 = 1_765_000_000_000  # on a 2 s boundary
PHASED = WindowConfig(length_ms=2_000, lateness_ms=1_000, phase_by_asset=True)
ALIGNED = WindowConfig(length_ms=2_000, lateness_ms=1_000)


def _readings(asset_id: str, ts: np.ndarray) -> AssetReadings:
    sensors = np.tile(np.array(["a", "b"], dtype=object), len(ts) // 2 + 1)[: len(ts)]
    return AssetReadings(asset_id, sensors, ts, np.sin(ts / 700.0) + (sensors == "b"))


def _windows(cfg: WindowConfig, batches: list[AssetReadings]) -> tuple[list[int], list[int], np.ndarray, int]:
    state, starts, ends, values, late = None, [], [], [], 0
    for batch in batches:
        state, out = window_readings(state, batch, cfg)
        late += sum(1 for i in out.late if i.reason == "late")
        if out.closed is not None:
            starts += out.closed.window_start.tolist()
            ends += out.closed.window_end.tolist()
            values.append(out.closed.values)
    state, closed = flush_windows(state, cfg)
    starts += closed.window_start.tolist()
    ends += closed.window_end.tolist()
    values.append(closed.values)
    return starts, ends, np.concatenate(values), late


def test_an_asset_s_windows_start_at_its_phase_with_the_features_of_its_readings_there():
    ts = np.repeat(np.arange(T0, T0 + 20_000, 100), 2)
    phase = asset_phase_ms("pump-01", 2_000)
    assert 0 < phase < 2_000 and phase != asset_phase_ms("pump-02", 2_000)  # two assets: two closing instants
    starts, ends, values, _ = _windows(PHASED, [_readings("pump-01", ts)])
    assert starts[:2] == [T0 - 2_000 + phase, T0 + phase] and all(e - s == 2_000 for s, e in zip(starts, ends))
    # the same readings at times shifted back by the phase, in aligned windows: the same features, bit for bit
    shifted = _readings("pump-01", ts - phase)
    shifted = AssetReadings("pump-01", shifted.sensor, shifted.ts, _readings("pump-01", ts).value)
    a_starts, _, a_values, _ = _windows(ALIGNED, [shifted])
    assert starts == [s + phase for s in a_starts]
    assert np.array_equal(values, a_values, equal_nan=True)


def test_phased_windows_do_not_depend_on_how_the_stream_is_cut():
    rng = np.random.default_rng(5)
    ts = np.sort(np.repeat(np.arange(T0, T0 + 30_000, 100), 2) + rng.integers(-40, 40, 600))
    ts = np.r_[ts[:400], ts[400] - 2_900, ts[400:]]  # one reading later than the lateness: late in every cut
    # and one late only because of the phase, 2.2 s back: its phased window [T0+2.461 s, T0+4.461 s) closed once
    # the stream passed T0+5.461 s, its aligned one [T0+4 s, T0+6 s) would close at T0+7 s
    assert asset_phase_ms("pump-01", 2_000) == 461
    at = int(np.searchsorted(ts, T0 + 6_500))
    ts = np.r_[ts[:at], T0 + 4_300, ts[at:]]
    r = _readings("pump-01", ts)

    def cut(idx: list[np.ndarray]) -> list[AssetReadings]:
        return [AssetReadings("pump-01", r.sensor[i], r.ts[i], r.value[i]) for i in idx]

    whole = _windows(PHASED, [r])
    cuts = np.sort(rng.choice(np.arange(1, len(ts)), 80, replace=False))
    pieces = _windows(PHASED, cut(np.split(np.arange(len(ts)), cuts)))
    one_by_one = _windows(PHASED, cut([np.array([i]) for i in range(len(ts))]))
    assert whole[3] == 2
    for other in (pieces, one_by_one):
        assert other[:2] == whole[:2] and other[3] == whole[3]
        assert np.array_equal(other[2], whole[2], equal_nan=True)


def test_the_phase_is_kept_in_the_snapshot_and_an_older_snapshot_has_aligned_windows():
    state, _ = window_readings(None, _readings("pump-01", np.arange(T0, T0 + 1_000, 100)), PHASED)
    assert pickle.loads(pickle.dumps(state)).phase_ms == state.phase_ms == asset_phase_ms("pump-01", 2_000)
    old = pickle.loads(pickle.dumps(state))
    del old.__dict__["phase_ms"]  # as a snapshot pickled before the field existed
    assert old.phase_ms == 0
    # a resumed asset keeps its boundaries when the setting is switched on: its first window opened before
    resumed, _ = window_readings(WindowState(**{**state.__dict__, "phase_ms": 0}),
                                 _readings("pump-01", np.arange(T0 + 1_000, T0 + 5_000, 100)), PHASED)
    assert resumed.phase_ms == 0
