import pickle

import numpy as np

from smart_maintenance.operators.ingest.windows import WindowConfig, flush_windows, window_readings
from smart_maintenance.operators.records import AssetReadings
from tests.synthetic import T0, asset_day, cut


def _run(batches, cfg):
    state, closed, late = None, [], []
    for b in batches:
        state, out = window_readings(state, b, cfg)
        late += out.late
        if out.closed is not None:
            closed.append(out.closed)
    state, last = flush_windows(state, cfg)
    if last is not None:
        closed.append(last)
    starts = np.concatenate([c.window_start for c in closed])
    values = np.concatenate([c.values for c in closed])
    return state, starts, values, late


def test_batching_does_not_change_windows():
    day = asset_day(hours=3)
    cfg = WindowConfig(length_ms=None)
    _, s1, v1, _ = _run([day], cfg)
    _, s2, v2, _ = _run(cut(day, 7), cfg)
    assert np.array_equal(s1, s2)
    assert np.allclose(v1, v2, equal_nan=True)
    assert len(s1) == 36  # 3 h of 5-minute windows: 30 samples at 10 s


def test_auto_length_follows_the_asset_rate():
    cfg = WindowConfig(length_ms=None, auto_samples=30)
    state, starts, _, _ = _run([asset_day(hours=2, interval_s=1)], cfg)
    assert state.length_ms == 30_000
    assert np.all(np.diff(starts) == 30_000)


def test_a_slowly_sampled_asset_gets_windows_no_longer_than_the_cap_and_a_metric_stream_keeps_its_own():
    cfg = WindowConfig(length_ms=None)  # the defaults: 30 samples, at most 15 minutes
    five_min = asset_day(hours=12, interval_s=300)
    state, starts, _, _ = _run([five_min], cfg)
    assert state.length_ms == 900_000  # not 30 x 5 min = 2.5 h
    assert np.all(np.diff(starts) == 900_000)
    ten_min = asset_day(hours=24, interval_s=600)
    assert _run([ten_min], cfg)[0].length_ms == 1_800_000  # the cap would leave 1.5 samples: 3 samples instead
    one = five_min.sensor == five_min.sensor[0]
    metric = AssetReadings("m1", five_min.sensor[one], five_min.ts[one], five_min.value[one])
    assert _run([metric], cfg)[0].length_ms == 1_800_000  # one sensor: 6 samples, its own rule
    assert _run([five_min], WindowConfig(length_ms=None, auto_max_ms=None))[0].length_ms == 10_800_000  # 3 h (nice)


def test_late_readings_are_dead_lettered_not_dropped():
    cfg = WindowConfig(length_ms=60_000, lateness_ms=5_000)
    on_time = AssetReadings("p1", np.array(["t", "t"], dtype=object), np.array([T0, T0 + 120_000]),
                            np.array([1.0, 2.0]))
    state, out = window_readings(None, on_time, cfg)
    assert out.closed is not None and out.closed.values[0, 0, 0] == 1.0
    straggler = AssetReadings("p1", np.array(["t"], dtype=object), np.array([T0 + 30_000]), np.array([9.0]))
    state, out = window_readings(state, straggler, cfg)
    assert [i.reason for i in out.late] == ["late"]
    assert '"value":9.0' in out.late[0].raw
    assert state.late == 1


def test_within_lateness_is_accepted():
    cfg = WindowConfig(length_ms=60_000, lateness_ms=30_000)
    b = AssetReadings("p1", np.array(["t"] * 3, dtype=object), np.array([T0, T0 + 70_000, T0 + 59_000]),
                      np.array([1.0, 5.0, 3.0]))
    state, out = window_readings(None, b, cfg)
    assert out.late == () and out.closed is None
    state, fb = flush_windows(state, cfg)
    assert fb.values[0, 0, 7] == 2  # both readings of the first window counted


def test_state_pickles():
    state, *_ = _run([asset_day(hours=1)], WindowConfig(length_ms=None))
    again = pickle.loads(pickle.dumps(state))
    assert again.length_ms == state.length_ms and np.array_equal(again.buf_ts, state.buf_ts)


def _hostile_batches(seed: int) -> list[AssetReadings]:
    """One asset's readings in small batches: new sensor names past the limit, late, duplicate and far-ahead times."""
    rng = np.random.default_rng(seed)
    n = 400
    ts = T0 + np.cumsum(rng.integers(0, 20_000, n))
    ts[rng.random(n) < 0.05] -= 120_000  # late
    ahead = rng.random(n) < 0.03
    ts[ahead] += rng.choice([2, 30], ahead.sum()) * 3_600_000  # far ahead: some confirmed, some refuted
    names = np.array([f"s{k}" for k in rng.integers(0, 7, n)], dtype=object)
    values = rng.normal(size=n)
    out, i = [], 0
    while i < n:
        k = int(rng.integers(1, 12))
        out.append(AssetReadings("p1", names[i:i + k], ts[i:i + k], values[i:i + k]))
        i += k
    return out


def _everything(batches, cfg):
    state, outs = None, []
    for b in batches:
        state, out = window_readings(state, b, cfg)
        outs.append(pickle.dumps((state, out)))  # one by one: pickle's memo must not see objects shared across
    outs.append(pickle.dumps(flush_windows(state, cfg)))
    return outs


def test_small_batches_take_the_plain_loop_and_give_the_same_result(monkeypatch):
    """Batches of a few readings (many assets each sending little) skip numpy's fixed costs in plain loops
    (`_SMALL`); every output and the state must be what the vectorised path gives."""
    from smart_maintenance.operators.ingest import windows

    for seed in range(6):
        batches = _hostile_batches(seed)
        for cfg in (WindowConfig(length_ms=None, max_sensors=4, lateness_ms=30_000),
                    WindowConfig(length_ms=60_000, max_sensors=3)):
            monkeypatch.setattr(windows, "_SMALL", 64)
            fast = _everything(batches, cfg)
            monkeypatch.setattr(windows, "_SMALL", 0)  # every batch through numpy
            assert _everything(batches, cfg) == fast, (seed, cfg)


def test_a_window_closes_when_the_watermark_reaches_its_end_not_before():
    """The small-batch path decides whether anything closes from the earliest buffered reading and from
    `closed_until`; a window must still close on the reading that brings the watermark to its end exactly."""
    cfg = WindowConfig(length_ms=60_000, lateness_ms=0)

    def one(t: int) -> AssetReadings:
        return AssetReadings("p1", np.array(["t"], dtype=object), np.array([T0 + t]), np.array([float(t)]))

    state, out = window_readings(None, one(30_000), cfg)
    for t, closes in ((59_999, None), (60_000, T0), (119_999, None), (60_001, None), (120_000, T0 + 60_000)):
        state, out = window_readings(state, one(t), cfg)
        assert (None if out.closed is None else int(out.closed.window_start[0])) == closes, t
    assert out.closed is not None and out.closed.values[0, 0, 7] == 3  # 60_000, 119_999 and 60_001


def test_the_small_batch_checks_agree_with_reading_by_reading_ones_at_their_edges():
    """`_late_few` and `_jumps` answer the usual case (nothing late, nothing ahead) from the batch's min and max;
    at and around every edge they must agree with the plain reading-by-reading definitions."""
    from smart_maintenance.operators.ingest.windows import _NO_TIME, _jumps, _late_few

    def late_ref(ts, max_ts, closed_until, length_ms, lateness_ms):
        late = []
        for i, t in enumerate(ts):
            max_ts = max(max_ts, t)
            if (t // length_ms + 1) * length_ms <= max(max_ts - lateness_ms, closed_until):
                late.append(i)
        return max_ts, late

    def jumps_ref(max_ts, ts, jump):
        latest = max_ts
        for t in ts:
            if latest != _NO_TIME and t > latest + jump:
                return True
            latest = max(latest, t)
        return False

    rng = np.random.default_rng(11)
    length, lateness, jump = 60_000, 30_000, 3_600_000
    edges = np.array([-length - lateness, -length, -lateness - 1, -lateness, -1, 0, 1, lateness, length,
                      jump - 1, jump, jump + 1, 2 * jump])
    for _ in range(3000):
        max_ts = _NO_TIME if rng.random() < 0.1 else T0 + int(rng.choice(edges))
        closed_until = _NO_TIME if rng.random() < 0.3 else (T0 // length + int(rng.integers(-2, 2))) * length
        ts = T0 + rng.choice(edges, size=int(rng.integers(1, 8))) + rng.integers(-2, 3, size=1)
        assert _late_few(ts.tolist(), max_ts, closed_until, length, lateness) == \
            late_ref(ts.tolist(), max_ts, closed_until, length, lateness)
        assert _jumps(max_ts, ts, jump) == jumps_ref(max_ts, ts.tolist(), jump)
