"""The window buffer's in-place append: a state stays a value (folded twice, pickled, loaded from old snapshots)."""

import copyreg
import pickle

import numpy as np

from smart_maintenance.operators.ingest.windows import WindowConfig, WindowState, flush_windows, window_readings
from smart_maintenance.operators.records import AssetReadings
from tests.synthetic import T0

CFG = WindowConfig(length_ms=2_000, lateness_ms=1_000)
SENSORS = np.array([f"s{i}" for i in range(5)], dtype=object)


def _items(seed: int, n: int, start_tick: int = 0) -> list[AssetReadings]:
    """Items of 5 readings (10 ms ticks, one sensor each), some late, some batches larger."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(start_tick, start_tick + n):
        m = 5 if rng.random() > 0.05 else 80  # now and then a large batch (the vectorised path)
        ts = T0 + k * 10 + rng.integers(-5, 5, m)
        ts[rng.random(m) < 0.02] -= 3_500  # late
        out.append(AssetReadings("a", SENSORS[rng.integers(0, 5, m)], ts.astype(np.int64), rng.standard_normal(m)))
    return out


def _fold(state, items):
    closed = []
    for b in items:
        state, out = window_readings(state, b, CFG)
        closed.append(out)
    return state, closed


def _windows(outs, state):
    last, fb = flush_windows(state, CFG)
    fbs = [o.closed for o in outs if o.closed is not None] + ([fb] if fb is not None else [])
    late = [x.raw for o in outs for x in o.late]
    return (np.concatenate([f.window_start for f in fbs]).tolist(), np.concatenate([f.values for f in fbs]).tobytes(),
            late, last.closed_until)


def test_a_state_folded_twice_gives_two_independent_results():
    prefix, a, b = _items(1, 250), _items(2, 300, 250), _items(3, 300, 250)
    parent, outs = _fold(None, prefix)
    before = (parent.buf_ts.copy(), parent.buf_value.copy(), parent.buf_code.copy())
    sa, sb, oa, ob = parent, parent, [], []
    for x, y in zip(a, b, strict=True):  # the two branches alternate, each extending the same parent's buffer
        sa, out = window_readings(sa, x, CFG)
        oa.append(out)
        sb, out = window_readings(sb, y, CFG)
        ob.append(out)
    ref_a, ref_b = _fold(None, prefix + a), _fold(None, prefix + b)
    assert _windows(outs + oa, sa) == _windows(*ref_a[::-1])
    assert _windows(outs + ob, sb) == _windows(*ref_b[::-1])
    again, oc = _fold(parent, a)  # the parent a third time, after both
    assert _windows(outs + oc, again) == _windows(*ref_a[::-1])
    for x, y in zip(before, (parent.buf_ts, parent.buf_value, parent.buf_code), strict=True):
        assert x.tobytes() == y.tobytes()


def test_a_pickled_state_gives_the_same_windows_and_holds_only_its_readings():
    items = _items(4, 700)
    ref = _fold(None, items)
    state, outs, spare_seen = None, [], False
    for b in items:
        state, out = window_readings(state, b, CFG)
        outs.append(out)
        raw = pickle.dumps(state)
        if len(state.cols.ts) - state.n >= 400:  # much room left: the room must not be written
            spare_seen = True
            assert len(raw) < 20 * state.n + 4_000 < 20 * len(state.cols.ts)
        state = pickle.loads(raw)  # noqa: S301 our own bytes
    assert spare_seen
    assert _windows(outs, state) == _windows(*ref[::-1])


class _OldSnapshot:
    """Pickles as a `WindowState` did before the buffer had room: its fields, with the three buffer arrays."""

    def __init__(self, fields: dict) -> None:
        self.fields = fields

    def __reduce__(self):
        return copyreg._reconstructor, (WindowState, object, None), self.fields


def test_a_snapshot_from_before_the_room_loads_and_goes_on_alike():
    items = _items(5, 500)
    ref = _fold(None, items)
    state, outs = _fold(None, items[:260])
    old = {k: v for k, v in state.__dict__.items() if k not in ("cols", "n", "buf_min")}
    old.update(buf_code=state.buf_code.copy(), buf_ts=state.buf_ts.copy(), buf_value=state.buf_value.copy())
    loaded = pickle.loads(pickle.dumps(_OldSnapshot(old)))  # noqa: S301 our own bytes
    assert isinstance(loaded, WindowState) and loaded.n == state.n and loaded.buf_min == state.buf_min
    rest, more = _fold(loaded, items[260:])
    assert _windows(outs + more, rest) == _windows(*ref[::-1])
