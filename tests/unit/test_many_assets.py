"""Per-asset costs that must stay flat with many assets: staggered fits, cheap snapshots, cheap state updates."""

import pickle
from dataclasses import dataclass, replace

import numpy as np
import pytest

from smart_maintenance.dataflows.steps import _FoldLogic
from smart_maintenance.operators.detect.detectors import DetectConfig, detect, stagger
from smart_maintenance.operators.ingest.windows import WindowConfig, flush_windows, window_readings
from smart_maintenance.operators.profile import AssetProfile
from smart_maintenance.operators.records import evolve
from tests.synthetic import asset_day

CFG = DetectConfig(warmup_windows=24, baseline_size=48, refit_blocks=4, stagger=True)


def _windows(asset_id: str):
    state, o = window_readings(None, asset_day(asset_id, hours=8), WindowConfig(length_ms=300_000))
    _, last = flush_windows(state, WindowConfig(length_ms=300_000))
    return [fb for fb in (o.closed, last) if fb is not None]


def _fit_windows(asset_id: str, cfg: DetectConfig) -> list[int]:
    """Window indices after which the asset's detectors were (re)fitted, fed one window at a time."""
    state, fits, k = None, [], 0
    for fb in _windows(asset_id):
        for w in range(len(fb)):
            one = replace(fb, window_start=fb.window_start[w:w + 1], window_end=fb.window_end[w:w + 1],
                          values=fb.values[w:w + 1])
            before = state.version if state is not None else 0
            state, _ = detect(state, one, AssetProfile(asset_id), cfg)
            k += 1
            if state.version != before:
                fits.append(k)
    return fits


def _ids_with_distinct_phases() -> tuple[str, str]:
    by_phase: dict[int, str] = {}
    for i in range(100):
        by_phase.setdefault(stagger(f"pump-{i}", CFG)[0], f"pump-{i}")
    assert len(by_phase) == CFG.block  # the hash reaches every phase of a block
    return by_phase[0], by_phase[CFG.block // 2]


def test_stagger_is_a_pure_function_of_the_id_and_off_without_the_setting():
    assert stagger("pump-7", CFG) == stagger("pump-7", replace(CFG))
    heads = {stagger(f"pump-{i}", CFG)[1] for i in range(200)}
    assert heads == set(range(CFG.refit_blocks))
    assert stagger("pump-7", replace(CFG, stagger=False)) == (0, 0)


def test_assets_that_start_together_fit_and_refit_at_different_windows():
    a, b = _ids_with_distinct_phases()
    fits_a, fits_b = _fit_windows(a, CFG), _fit_windows(b, CFG)
    assert len(fits_a) >= 2 and len(fits_b) >= 2
    assert fits_a[0] != fits_b[0]  # warm-up fits in different windows
    # without staggering, the same data fit in the same windows (what made every asset stall at once)
    plain = replace(CFG, stagger=False)
    assert _fit_windows(a, plain) == _fit_windows(b, plain)


def test_staggered_scores_do_not_depend_on_batching():
    a, _ = _ids_with_distinct_phases()
    batches = _windows(a)
    _, whole = detect(None, batches[0], AssetProfile(a), CFG)
    state, parts = None, []
    fb = batches[0]
    for lo in range(0, len(fb), 7):
        piece = replace(fb, window_start=fb.window_start[lo:lo + 7], window_end=fb.window_end[lo:lo + 7],
                        values=fb.values[lo:lo + 7])
        state, s = detect(state, piece, AssetProfile(a), CFG)
        parts.append(s.score)
    np.testing.assert_array_equal(whole.score, np.concatenate(parts))


@dataclass
class _Mutable:
    items: list[int]


def _append(state, value):
    state = state or _Mutable([])
    state.items.append(value)  # mutates in place, as river sketches and the new-normal watch do
    return state, len(state.items)


def test_fold_snapshot_is_a_copy_that_later_mutation_cannot_reach():
    logic = _FoldLogic(_append, None)
    assert logic.on_item(1) == ([1], False)
    snap = logic.snapshot()
    logic.on_item(2)
    assert pickle.loads(snap).items == [1]
    resumed = _FoldLogic(_append, logic.snapshot())  # resume from this logic's snapshot
    assert resumed.on_item(3) == ([3], False)
    old = _FoldLogic(_append, _Mutable([9]))  # resume from a snapshot of `op.stateful_map` (the state itself)
    assert old.on_item(1) == ([2], False)


def test_without_recovery_a_fold_snapshot_pickles_nothing():
    from smart_maintenance.recovery import set_recovery

    def unpicklable(state, value):  # a state pickle refuses: only a snapshot that pickles would notice
        return (lambda: value), value

    try:
        set_recovery(False)
        logic = _FoldLogic(unpicklable, None)
        logic.on_item(1)
        assert logic.snapshot() == b""
        set_recovery(True)
        logic = _FoldLogic(unpicklable, None)
        logic.on_item(1)
        with pytest.raises((pickle.PicklingError, AttributeError)):
            logic.snapshot()
    finally:
        set_recovery(None)


def test_fold_discards_a_key_whose_state_is_none():
    logic = _FoldLogic(lambda s, v: (None, v), None)
    assert logic.on_item("x") == (["x"], True)


def test_evolve_is_replace_and_refuses_unknown_fields():
    @dataclass(frozen=True)
    class P:
        x: int = 0
        y: tuple[int, ...] = ()

    p = P(1, (2,))
    assert evolve(p, y=(3,)) == replace(p, y=(3,)) and p == P(1, (2,))
    with pytest.raises(TypeError):
        evolve(p, z=1)
