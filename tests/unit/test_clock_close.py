"""Live windows closing on the wall clock (issue #17 item 2): the estimate, the pure close, the window step."""

import pickle
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from smart_maintenance.dataflows import steps
from smart_maintenance.dataflows.steps import _WindowLogic
from smart_maintenance.operators.ingest.arrivals import SPREAD_SHARE, ArrivalClock, observe
from smart_maintenance.operators.ingest.windows import WindowConfig, asset_phase_ms, close_due, window_readings
from smart_maintenance.operators.records import AssetReadings

T0 = 1_765_000_000_000  # a wall time (ms), on a window boundary
CFG = WindowConfig(length_ms=2_000, lateness_ms=1_000)
PHASED = WindowConfig(length_ms=2_000, lateness_ms=1_000, phase_by_asset=True)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MS = timedelta(milliseconds=1)


def _readings(ts: list[int], sensor: str = "t") -> AssetReadings:
    ts_a = np.array(ts, np.int64)
    return AssetReadings("pump-01", np.array([sensor] * len(ts), dtype=object), ts_a, np.sin(ts_a / 1000.0))


class _Live:
    """One asset's window step on a fake wall clock, notified as Bytewax does: when `notify_at` has passed.

    The step reads the clock of the run that called it last (`active`), so two runs can be compared side by side.
    """

    active: "_Live"

    def __init__(self, monkeypatch: pytest.MonkeyPatch, clock_close: bool = True, now_ms: int = T0,
                 cfg: WindowConfig = CFG) -> None:
        self.now_ms = now_ms
        monkeypatch.setattr(steps, "_now", lambda: EPOCH + _Live.active.now_ms * MS)
        _Live.active = self
        self.logic = _WindowLogic(cfg, None, idle_s=60, clock_close=clock_close)
        self.windows: list[tuple[int, tuple[float, ...]]] = []  # (window start, features) in closing order
        self.closed_at: list[int] = []  # the wall time each window closed
        self.late = 0
        self.on_clock = 0  # windows closed by a notification

    def _take(self, out: list, notified: bool = False) -> None:
        for o in out:
            self.late += sum(1 for i in o.late if i.reason == "late")
            if o.closed is not None:
                self.on_clock += len(o.closed) if notified else 0
                for w in range(len(o.closed)):
                    features = tuple(np.nan_to_num(o.closed.values[w]).ravel())
                    self.windows.append((int(o.closed.window_start[w]), features))
                    self.closed_at.append(self.now_ms)

    def wait(self, until_ms: int) -> None:
        """Let wall time pass to `until_ms`, running every notification due on the way."""
        _Live.active = self
        last = None
        while (at := self.logic.notify_at()) is not None and (at_ms := (at - EPOCH) // MS) <= until_ms:
            # a notification that leaves its time where it was would run again at once, forever (Bytewax too)
            assert at_ms != last, f"notify_at stays at {at_ms} after on_notify ran at that time"
            last = at_ms
            self.now_ms = max(self.now_ms, at_ms)
            self._take(self.logic.on_notify()[0], notified=True)
        self.now_ms = max(self.now_ms, until_ms)

    def arrive(self, at_ms: int, batch: AssetReadings) -> None:
        self.wait(at_ms)
        _Live.active = self
        self._take(self.logic.on_item(batch)[0])


# the estimate ---------------------------------------------------------------------------------------------------
def test_the_offset_follows_a_skewed_clock_and_the_fastest_batch():
    slow = observe(None, T0 + 5_080, T0, T0)  # a gateway 5 s slow, 80 ms on the way
    slow = observe(slow, T0 + 6_030, T0 + 1_000, T0 + 1_000)  # a faster batch: the offset follows it down
    assert slow.offset_ms == 5_030 and slow.event_time(T0 + 7_030) == T0 + 2_000 - 1  # 1 ms crept up in 1 s
    fast = observe(None, T0, T0 + 5_000, T0 + 5_000)  # 5 s ahead of our clock
    assert fast.offset_ms == -5_000 and fast.event_time(T0 + 100) == T0 + 5_100
    assert pickle.loads(pickle.dumps(slow)) == slow


def test_the_offset_creeps_up_so_a_clock_drifting_slow_is_followed():
    clock = observe(None, T0, T0, T0)
    for k in range(1, 601):  # ten minutes of a clock losing 500 ppm (NTP's slew limit): 300 ms in all
        t = T0 + k * 1_000
        clock = observe(clock, t, t - k // 2, t - k // 2)
    assert 300 - 10 <= clock.offset_ms <= 300  # follows, within 1 ms a second


def test_the_wall_time_is_the_first_at_which_the_estimate_reaches_an_event_time():
    rng = np.random.default_rng(3)
    for _ in range(2_000):  # against the definition, at every ms around the answer
        clock = ArrivalClock(int(rng.integers(-9_000, 9_000)), T0 + int(rng.integers(0, 10**6)), 0.0)
        event = clock.at_ms + int(rng.integers(-20_000, 5_000_000))
        t = clock.wall_time(event)
        assert clock.event_time(t) >= event > clock.event_time(t - 1)


def test_a_store_and_forward_gateway_is_not_steady():
    clock = None
    for k in range(1, 5):  # the last 30 s of readings, once every 30 s
        t = T0 + k * 30_000
        clock = observe(clock, t, t - 30_000, t - 100)
    assert clock is not None and not clock.steady(30_000 // 2)  # spread 30 s: beyond any share of 15 s lateness
    steady = None
    for k in range(1, 200):  # the same asset sending as it measures, some batches 300 ms slower
        t = T0 + k * 1_000
        steady = observe(steady, t + (300 if k % 7 == 0 else 20), t, t)
    assert steady is not None and steady.steady(1_000) and 200 <= steady.spread_ms <= 280


# the pure close -------------------------------------------------------------------------------------------------
def test_close_due_closes_the_due_windows_the_stream_has_reached_and_later_readings_are_late():
    state, out = window_readings(None, _readings([T0, T0 + 500, T0 + 2_100, T0 + 2_900]), CFG)
    assert out.closed is None  # in event time [T0, T0+2 s) waits for a reading at T0+3 s
    state, fb = close_due(state, CFG, T0 + 3_000)
    assert fb is not None and fb.window_start.tolist() == [T0] and state.closed_until == T0 + 2_000
    state, fb = close_due(state, CFG, T0 + 60_000)  # due, but the stream has not reached T0+4 s: stays open
    assert fb is None and state.n == 2
    state, out = window_readings(state, _readings([T0 + 1_900, T0 + 4_200]), CFG)
    assert [i.reason for i in out.late] == ["late"] and out.closed is None and state.n == 3
    state, fb = close_due(state, CFG, T0 + 4_999)  # [T0+2 s, T0+4 s) is due at T0+5 s
    assert fb is None
    state, fb = close_due(state, CFG, T0 + 5_000)  # due and reached: closes; the window at T0+4 s stays open
    assert fb is not None and fb.window_start.tolist() == [T0 + 2_000] and fb.values[0, 0, -1] == 2 and state.n == 1
    state, out = window_readings(state, _readings([T0 + 3_000]), CFG)
    assert [i.reason for i in out.late] == ["late"]


# the window step on a fake clock --------------------------------------------------------------------------------
def test_a_window_closes_on_the_clock_with_no_further_reading_not_before_due_plus_offset(monkeypatch):
    live = _Live(monkeypatch)
    for t in range(T0, T0 + 2_600, 100):  # readings every 100 ms, each 200 ms on the way; they stop at T0+2.5 s
        live.arrive(t + 200, _readings([t]))
    assert live.windows == []
    due_wall = T0 + 2_000 + 1_000 + 200  # window end + lateness + offset
    assert live.logic.notify_at() == EPOCH + timedelta(milliseconds=due_wall)
    live.now_ms = due_wall - 1
    live._take(live.logic.on_notify()[0], notified=True)  # early (a spurious wake-up): nothing closes
    assert live.windows == []
    live.wait(due_wall)
    assert [w for w, _ in live.windows] == [T0] and live.on_clock == 1
    live.wait(due_wall + 30_000)  # the stream has not reached T0+4 s: that window waits (idle close at 60 s)
    assert len(live.windows) == 1


@pytest.mark.parametrize("cfg", [CFG, PHASED], ids=["aligned", "phased"])
@pytest.mark.parametrize("skew_ms", [-5_000, 5_000])
def test_a_gateway_clock_5_s_off_closes_on_time_and_nothing_is_late(monkeypatch, skew_ms, cfg):
    live = _Live(monkeypatch, cfg=cfg)
    for wall in range(T0, T0 + 6_100, 100):  # stamped by a clock skew_ms ahead of ours, 50 ms on the way
        live.arrive(wall + 50, _readings([wall + skew_ms]))
    live.wait(T0 + 6_050 + 1_000)  # a second of silence after the last reading (stamped wall + skew at 6 s)
    # the three windows the stream reached, each closed when due on the gateway's clock: end + 1 s - skew + 50 ms ours
    assert live.late == 0 and live.on_clock == len(live.windows) == 3
    assert live.closed_at == [w + 2_000 + 1_000 - skew_ms + 50 for w, _ in live.windows]
    assert {w % 2_000 for w, _ in live.windows} == {(T0 + asset_phase_ms("pump-01", 2_000) * (cfg is PHASED)) % 2_000}


def test_a_store_and_forward_asset_stays_in_event_time(monkeypatch):
    live, event_time = _Live(monkeypatch), _Live(monkeypatch, clock_close=False)
    for k in range(1, 6):  # every 30 s, the last 30 s of 10 Hz readings in one batch (cut inside a window)
        batch = _readings(list(range(T0 + (k - 1) * 30_000 + 1_000, T0 + k * 30_000 + 1_000, 100)))
        for run in (live, event_time):
            run.arrive(T0 + k * 30_000 + 1_040, batch)
    live.wait(T0 + 5 * 30_000 + 20_000)
    event_time.wait(T0 + 5 * 30_000 + 20_000)
    assert live.on_clock == 0 and live.late == 0 and live.windows == event_time.windows


@pytest.mark.parametrize("cfg", [CFG, PHASED], ids=["aligned", "phased"])
@pytest.mark.parametrize("jitter", [SPREAD_SHARE * 0.8, 0.99])
def test_live_and_replay_give_the_same_windows_when_no_reading_is_later_than_the_lateness(monkeypatch, jitter, cfg):
    """Readings reach the step between 120 ms and 120 ms + jitter x lateness after their time, in the order they
    arrive, in batches of what arrived within 50 ms: the clock closes no window a later reading belongs to."""
    rng = np.random.default_rng(7)
    ts = np.repeat(np.arange(T0, T0 + 40_000, 100), 2)  # two sensors, 10 Hz, 40 s
    sensors = np.tile(np.array(["a", "b"], dtype=object), len(ts) // 2)
    arrival = ts + 120 + (rng.random(len(ts)) * jitter * CFG.lateness_ms).astype(np.int64)
    order = np.argsort(arrival, kind="stable")
    live, replay = _Live(monkeypatch, cfg=cfg), _Live(monkeypatch, clock_close=False, cfg=cfg)
    cut = np.flatnonzero(np.diff(arrival[order] // 50)) + 1  # one batch per 50 ms of arrivals
    for idx in np.split(order, cut):
        batch = AssetReadings("pump-01", sensors[idx], ts[idx], np.sin(ts[idx] / 1000.0) + (sensors[idx] == "b"))
        for run in (live, replay):
            run.arrive(int(arrival[idx].max()), batch)
    for run in (live, replay):
        run._take(run.logic.on_eof()[0])
    assert live.late == replay.late == 0
    assert sorted(live.windows) == sorted(replay.windows) and len(live.windows) == (20 if cfg is CFG else 21)
    if jitter < SPREAD_SHARE:
        assert live.on_clock >= 15  # not vacuous: most windows closed on the clock


def test_no_clock_close_after_a_restart_until_the_arrivals_are_current(monkeypatch):
    live = _Live(monkeypatch)
    for t in range(T0, T0 + 2_600, 100):
        live.arrive(t + 200, _readings([t]))
    resumed = _Live(monkeypatch, now_ms=T0 + 120_000)  # the process was down for two minutes
    resumed.logic = _WindowLogic(CFG, live.logic.snapshot(), idle_s=60, clock_close=True)
    assert resumed.logic.notify_at() == EPOCH + timedelta(milliseconds=T0 + 180_000)  # the idle close only
    resumed.arrive(T0 + 120_010, _readings(list(range(T0 + 2_600, T0 + 60_000, 100))))  # the backlog, in one batch
    assert resumed.on_clock == 0 and resumed.late == 0  # the backlog closed its windows in event time


def test_a_process_that_stood_still_does_not_close_on_waking(monkeypatch):
    live = _Live(monkeypatch)
    for t in range(T0, T0 + 2_600, 100):
        live.arrive(t + 200, _readings([t]))
    live.now_ms = T0 + 10_000  # the notification for T0+3.2 s runs 7 s late: readings sent meanwhile are on the way
    live._take(live.logic.on_notify()[0], notified=True)
    assert live.windows == [] and live.logic.notify_at() == EPOCH + timedelta(milliseconds=T0 + 2_700 + 60_000)


def test_the_setting_switches_it_off():
    from smart_maintenance.config.registry import Registry
    from smart_maintenance.config.settings import load_settings

    on = steps.Steps(load_settings(console=False), Registry(), live=True).window_logic(None)
    off = steps.Steps(load_settings(console=False, windows={"clock_close": False}), Registry(), live=True)
    replay = steps.Steps(load_settings(console=False), Registry(), live=False).window_logic(None)
    assert on._clock_close and not off.window_logic(None)._clock_close and not replay._clock_close


@pytest.mark.parametrize("clock_close", [True, False])
def test_a_silent_asset_has_its_open_windows_closed_at_the_idle_close(monkeypatch, clock_close):
    live = _Live(monkeypatch, clock_close=clock_close)
    for t in range(T0, T0 + 2_600, 100):  # readings into [T0, T0+2 s) and [T0+2 s, T0+4 s), then silence
        live.arrive(t + 200, _readings([t]))
    last = T0 + 2_500 + 200
    live.wait(last + 59_000)  # the clock may close the first window, never the one the stream did not reach
    assert [w for w, _ in live.windows] == ([T0] if clock_close else [])
    live.wait(last + 61_000)  # idle for `idle_s` (60 s; notified no sooner than 1 s after it last looked): all close
    assert [w for w, _ in live.windows] == [T0, T0 + 2_000] and live.late == 0
