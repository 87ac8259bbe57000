"""Stage latency probes (smart_maintenance/latency.py) and the bench's histogram arithmetic (bench/live.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from smart_maintenance import latency


def _counts(stage: str) -> tuple[list[float], float]:
    child = latency.STAGE_SECONDS.labels(stage)
    return [b.get() for b in child._buckets], child._sum.get()


def _delta(stage: str, before: tuple[list[float], float]) -> tuple[list[float], float]:
    after = _counts(stage)
    return [a - b for a, b in zip(after[0], before[0])], after[1] - before[1]


def test_observe_many_counts_as_observe_one_by_one():
    values = [0.0005, 0.001, 0.0015, 0.2, 100.0, -0.3, math.nan]
    before_many, before_one = _counts("test_many"), _counts("test_one")
    latency.observe_many("test_many", values)
    for v in values:
        if not math.isnan(v):
            latency.STAGE_SECONDS.labels("test_one").observe(v)
    many, one = _delta("test_many", before_many), _delta("test_one", before_one)
    assert many[0] == one[0]
    assert many[1] == pytest.approx(one[1])
    assert sum(many[0]) == 6  # NaN is not observed


def test_a_window_is_timed_from_due_to_close_to_detection_to_commit():
    latency.forget()
    stages = ("due_to_close", "close_to_detect", "detect_to_stored", "due_to_stored")
    before = {s: _counts(s) for s in stages}
    end_ms, lateness_ms = 1_800_000_000_000, 1_000
    due = (end_ms + lateness_ms) / 1000
    latency.closed("pump-1", np.array([end_ms]), lateness_ms, now=due + 0.5)
    latency.detected("pump-1", np.array([end_ms]), now=due + 0.53)
    latency.stored([("pump-1", end_ms), ("pump-2", end_ms)], now=due + 0.58)  # pump-2: never closed here
    sums = {s: _delta(s, before[s])[1] for s in stages}
    counts = {s: sum(_delta(s, before[s])[0]) for s in stages}
    assert counts == {s: 1 for s in stages}
    # the histograms are the process's: earlier tests' replays may have summed large latencies into them, and a
    # difference of two large float sums is exact only to their magnitude
    tol = {s: 1e-6 + 1e-12 * abs(before[s][1]) for s in stages}
    assert sums["due_to_close"] == pytest.approx(0.5, abs=tol["due_to_close"])
    assert sums["close_to_detect"] == pytest.approx(0.03, abs=tol["close_to_detect"])
    assert sums["detect_to_stored"] == pytest.approx(0.05, abs=tol["detect_to_stored"])
    assert sums["due_to_stored"] == pytest.approx(0.58, abs=tol["due_to_stored"])
    latency.stored([("pump-1", end_ms)], now=due + 1)  # stored twice (a replay): counted once
    assert sum(_delta("due_to_stored", before["due_to_stored"])[0]) == 1


def test_a_message_s_wait_since_its_partition_s_last_poll_is_the_part_of_broker_to_source_after_that_poll():
    stages = ("broker_to_source", "source_poll_gap")
    before = {s: _counts(s) for s in stages}
    now = 1_800_000_000.0
    # sent 300 ms and 20 ms ago; the partition was last polled 250 ms ago: the first was sent before that poll
    # and missed it (it reached the consumer later), so 250 ms of its wait is since the poll; the second, 20 ms
    latency.received([int((now - 0.3) * 1000), int((now - 0.02) * 1000)], now, polled=now - 0.25)
    delta = {s: _delta(s, before[s]) for s in stages}
    tol = {s: 1e-6 + 1e-12 * abs(before[s][1]) for s in stages}
    assert sum(delta["broker_to_source"][0]) == sum(delta["source_poll_gap"][0]) == 2
    assert delta["broker_to_source"][1] == pytest.approx(0.32, abs=tol["broker_to_source"] + 2e-3)
    assert delta["source_poll_gap"][1] == pytest.approx(0.27, abs=tol["source_poll_gap"] + 2e-3)
    latency.received([int(now * 1000)], now)  # no previous poll given: only broker -> source
    assert sum(_delta("source_poll_gap", before["source_poll_gap"])[0]) == 2


def test_remembered_windows_are_bounded(monkeypatch):
    latency.forget()
    monkeypatch.setattr(latency, "_KEEP", 3)
    latency.closed("pump-1", np.arange(5) * 1000, 0, now=10.0)
    assert list(latency._windows) == [("pump-1", 2000), ("pump-1", 3000), ("pump-1", 4000)]
    latency.forget()


def test_epoch_clock_times_the_interval_between_snapshots_and_the_wait():
    before_i, before_w = _counts("epoch_interval"), _counts("snapshot_wait")
    clock = latency.EpochClock()
    clock.snapshot_done(clock.snapshot_started())
    clock.snapshot_done(clock.snapshot_started())
    assert sum(_delta("epoch_interval", before_i)[0]) == 1  # the first snapshot has no interval before it
    assert sum(_delta("snapshot_wait", before_w)[0]) == 2
    assert latency.observed("snapshot_wait") == sum(_counts("snapshot_wait")[0])


def test_bench_histogram_quantiles_of_the_difference_of_two_scrapes():
    from bench.live import hist_delta, hist_quantile, stage_figures

    before = {"due_to_stored": [(0.1, 10.0), (0.2, 10.0), (math.inf, 10.0)]}
    after = {"due_to_stored": [(0.1, 10.0), (0.2, 110.0), (math.inf, 110.0)],
             "snapshot_wait": [(0.1, 0.0), (math.inf, 0.0)]}
    delta = hist_delta(after, before)
    assert delta["due_to_stored"] == [(0.1, 0.0), (0.2, 100.0), (math.inf, 100.0)]
    assert hist_quantile(delta["due_to_stored"], 0.5) == pytest.approx(0.15)
    assert hist_quantile(delta["due_to_stored"], 0.99) == pytest.approx(0.199)
    assert math.isnan(hist_quantile(delta["snapshot_wait"], 0.5))
    assert hist_quantile([(0.1, 1.0), (math.inf, 100.0)], 0.99) == 0.1  # beyond the last bound: that bound
    figures = stage_figures(delta)
    assert figures["due_to_stored"].count == 100
    assert figures["due_to_stored"].p50_ms == pytest.approx(150)


def test_a_live_flow_hands_the_gil_over_within_a_millisecond_and_a_replay_leaves_it():
    import sys

    from bytewax.testing import TestingSink, TestingSource

    from smart_maintenance.config.settings import load_settings
    from smart_maintenance.dataflows.plant import STREAMS, build_flow

    before = sys.getswitchinterval()
    settings = load_settings(console=False)
    sinks = {s: [TestingSink([])] for s in STREAMS}
    try:
        sys.setswitchinterval(0.005)
        build_flow(settings, source=TestingSource([]), sinks=sinks, live=False)
        assert sys.getswitchinterval() == pytest.approx(0.005)
        build_flow(settings, source=TestingSource([]), sinks=sinks, live=True)
        assert sys.getswitchinterval() <= latency.LIVE_SWITCH_INTERVAL_S <= 0.001
    finally:
        sys.setswitchinterval(before)


@pytest.mark.parametrize("rate", [20_000.0, 50_000.0, 137_000.0])
def test_the_closing_reading_is_the_first_tick_of_the_retimed_plant_at_or_after_the_due_time(rate):
    from bench.live import SIM_START_TICK, closing_wait_ms, plant_model, retimed, streams_of

    model = plant_model(2, 7)
    tick_ms = streams_of(model) * 100 / rate * 1000  # as if the plant had 100x the streams: ticks of ms or less
    t0_ms = 1_800_000_000_123
    readings, _ = retimed(model, SIM_START_TICK, 400, t0_ms, tick_ms)
    ticks = np.unique(readings.ts)
    rng = np.random.default_rng(3)
    for due in (t0_ms + rng.integers(0, int(ticks[-1] - t0_ms), 200)).tolist():
        first = int(ticks[np.searchsorted(ticks, due)])
        assert closing_wait_ms(due, t0_ms, tick_ms) == first - due
