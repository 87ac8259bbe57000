"""The real plant flow on testing sources and sinks."""

from datetime import timedelta

import pytest
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main

from smart_maintenance.config.settings import load_settings
from smart_maintenance.dataflows.plant import STREAMS, build_flow
from smart_maintenance.operators.ingest.windows import asset_phase_ms
from smart_maintenance.operators.records import RawMessages
from tests.synthetic import as_parsed, asset_day

# the synthetic plant has no load cycle: a 3-hour warm-up covers its normal range
SETTINGS = load_settings(console=False, detection={"warmup_windows": 36, "baseline_size": 96})


def _inputs():
    """Two assets for a day; x drifts on sensor a over its last 4 hours."""
    return as_parsed([asset_day("x", seed=1, drift_last_h=4), asset_day("y", seed=2)], rows=1800)


def _run(items, *, workers=1, recovery=None, out=None, timed=None, settings=SETTINGS):
    out = {s: [] for s in STREAMS} if out is None else out
    flow = build_flow(settings, source=TestingSource(items), sinks={s: [TestingSink(out[s])] for s in STREAMS},
                      timed=timed)
    if workers == 1:
        run_main(flow, epoch_interval=timedelta(0), recovery_config=recovery)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    return out


def test_drift_opens_one_alarm_and_every_reading_is_stored():
    items = _inputs()
    out = _run(items)
    assert sum(len(r) for r in out["readings"]) == sum(len(p.readings) for p in items)
    machine = [a for a in out["alarms"] if a.kind == "machine"]
    assert {a.asset_id for a in machine} == {"x"}
    assert len({a.alarm_id for a in machine}) == 1
    assert machine[0].opened_at.hour >= 20  # inside the last 4 hours of the day
    assert all(a.asset_id == "x" for a in out["anomalies"] if a.status == "confirmed")
    assert {r.status for r in out["reviews"]} <= {"needs_review"}
    assert sum(len(f) for f in out["features"]) == 2 * 288


def test_bad_input_goes_to_dead_letters_and_the_flow_goes_on():
    bad = RawMessages((b"{not json", b'{"asset_id": "x", "sensor": "a", "ts": "yesterday", "value": 1}'),
                      (None, None), ("test:1", "test:2"))
    out = _run([bad] + _inputs())
    assert sorted(d.reason for d in out["dead_letters"]) == ["bad_json", "bad_timestamp"]
    assert {a.asset_id for a in out["alarms"]} == {"x"}


def test_two_workers_give_the_same_ids_as_one():
    one, two = _run(_inputs()), _run(_inputs(), workers=2)
    for stream, key in (("alarms", "alarm_id"), ("anomalies", "anomaly_id")):
        assert sorted((getattr(x, key), x.status) for x in one[stream]) == sorted(
            (getattr(x, key), x.status) for x in two[stream]
        )


def test_windows_at_each_asset_s_phase_give_the_same_results_on_two_workers_as_on_one():
    settings = SETTINGS.model_copy(update={"windows": SETTINGS.windows.model_copy(update={"phase_by_asset": True})})
    one, two = _run(_inputs(), settings=settings), _run(_inputs(), workers=2, settings=settings)
    length = 300_000  # the synthetic plant's auto windows: 30 samples of 10 s
    for asset in ("x", "y"):
        starts = {s for f in one["features"] if f.asset_id == asset for s in f.window_start.tolist()}
        assert {s % length for s in starts} == {asset_phase_ms(asset, length)} != {0}
    assert len({asset_phase_ms(a, length) for a in ("x", "y")}) == 2
    for stream, key in (("alarms", "alarm_id"), ("anomalies", "anomaly_id")):
        assert sorted((getattr(x, key), x.status) for x in one[stream]) == sorted(
            (getattr(x, key), x.status) for x in two[stream]
        )
    assert len(one["anomalies"]) > 0

    def features(out):
        return sorted((f.asset_id, s, v.tobytes()) for f in out["features"]
                      for s, v in zip(f.window_start.tolist(), f.values))

    assert features(one) == features(two)


def _reading_keys(out):
    return {(a, s, t) for r in out["readings"] for a, s, t in zip(r.asset_id, r.sensor, r.ts.tolist())}


def test_resume_after_abort_loses_nothing_and_repeats_ids(tmp_path):
    init_db_dir(tmp_path, 1)
    items = _inputs()
    straight = _run(items)
    aborted = items[:20] + [TestingSource.ABORT()] + items[20:]
    recovery = RecoveryConfig(str(tmp_path))
    out = {s: [] for s in STREAMS}
    _run(aborted, recovery=recovery, out=out)  # stops at the abort, as a crash would
    before = len(out["readings"])
    assert 0 < before < len(straight["readings"])
    _run(aborted, recovery=recovery, out=out)
    assert _reading_keys(out) == _reading_keys(straight)
    assert {a.alarm_id for a in out["alarms"]} == {a.alarm_id for a in straight["alarms"]}
    assert {(a.anomaly_id, a.status) for a in out["anomalies"]} == {
        (a.anomaly_id, a.status) for a in straight["anomalies"]
    }


def test_live_sized_batches_give_the_same_results_as_a_backfill():
    days = [asset_day("x", seed=1, drift_last_h=4), asset_day("y", seed=2)]
    backfill, live = _run(as_parsed(days, rows=20_000)), _run(as_parsed(days, rows=25))
    for stream, key in (("alarms", "alarm_id"), ("anomalies", "anomaly_id")):
        assert sorted((getattr(x, key), x.status) for x in backfill[stream]) == sorted(
            (getattr(x, key), x.status) for x in live[stream]
        )
    assert backfill["alarms"]


def test_a_channel_is_rate_limited_across_all_assets():
    """Every asset opens one alarm at about the same hour: the per-asset limit lets each through, the channel's not."""
    items = as_parsed([asset_day(f"m{i}", seed=i, drift_last_h=4) for i in range(4)], rows=1800)
    counts = {}
    for limit in (2, None):
        settings = SETTINGS.model_copy(update={"quarantine_unknown_assets": False, "notify": SETTINGS.notify.model_copy(
            update={"channel_rate_limit_per_hour": limit})})
        out = {s: [] for s in STREAMS}
        run_main(build_flow(settings, source=TestingSource(items), sinks={s: [TestingSink(out[s])] for s in STREAMS}),
                 epoch_interval=timedelta(0))
        opened = [n for n in out["notifications"] if n.kind == "alarm_opened"]
        assert len({n.asset_id for n in opened}) == 4  # every asset's alarm was planned
        counts[limit] = sorted(n.status for n in opened)
        if limit is not None:
            pending = sorted(n.created_at for n in out["notifications"] if n.status == "pending")
            assert all(b - a >= timedelta(hours=1) for a, b in zip(pending, pending[limit:]))  # <= 2 in any hour
            assert any("across all assets" in n.reason for n in out["notifications"])
    assert counts[None] == ["pending"] * 4
    assert counts[2].count("suppressed") >= 1



def test_an_unknown_asset_raises_alarms_but_makes_no_work_order_and_pages_nobody_until_admitted():
    items = _inputs()  # x drifts; neither x nor y is in the registry
    quarantined = _run(items)
    assert [a.asset_id for a in quarantined["alarms"] if a.kind == "machine"][:1] == ["x"]  # alarms are raised
    assert quarantined["work_orders"] == [] and quarantined["assignments"] == []
    assert quarantined["notifications"] and all(
        n.status == "suppressed" and n.reason.startswith("quarantine: asset 'x'") for n in quarantined["notifications"])
    trusting = SETTINGS.model_copy(update={"quarantine_unknown_assets": False})
    out = {s: [] for s in STREAMS}
    run_main(build_flow(trusting, source=TestingSource(items), sinks={s: [TestingSink(out[s])] for s in STREAMS}),
             epoch_interval=timedelta(0))
    assert {w.asset_id for w in out["work_orders"]} == {"x"}
    assert any(n.status == "pending" for n in out["notifications"])
    # a registry that lists x admits it; y stays quarantined
    from smart_maintenance.config.registry import load_registry

    registry = load_registry().with_simulated(1)
    listed = registry.model_copy(update={"assets": (*registry.assets, registry.assets[0].model_copy(
        update={"asset_id": "x"}))})
    out = {s: [] for s in STREAMS}
    run_main(build_flow(SETTINGS, source=TestingSource(items), registry=listed,
                        sinks={s: [TestingSink(out[s])] for s in STREAMS}), epoch_interval=timedelta(0))
    assert {w.asset_id for w in out["work_orders"]} == {"x"}


@pytest.mark.parametrize("epoch", [timedelta(0), timedelta(hours=1)])  # a snapshot per batch; none before the abort
def test_jsonl_files_hold_each_line_once_after_an_abort_and_resume(tmp_path, epoch):
    from smart_maintenance.sinks.files import JsonlSink

    def run(items, out_dir, recovery=None):
        sinks = {s: [TestingSink([]), JsonlSink(out_dir, s)] for s in STREAMS}
        run_main(build_flow(SETTINGS, source=TestingSource(items), sinks=sinks), epoch_interval=epoch,
                 recovery_config=recovery)

    def lines(out_dir, stream):
        return (out_dir / f"{stream}.jsonl").read_text().splitlines()

    items = _inputs()
    run(items, tmp_path / "straight")
    (tmp_path / "rec").mkdir()
    init_db_dir(tmp_path / "rec", 1)
    recovery = RecoveryConfig(str(tmp_path / "rec"), backup_interval=timedelta(0))
    aborted = items[:20] + [TestingSource.ABORT()] + items[20:]
    run(aborted, tmp_path / "resumed", recovery)  # stops at the abort, as a crash would
    partial = len(lines(tmp_path / "resumed", "readings"))
    run(aborted, tmp_path / "resumed", recovery)
    for stream in ("readings", "features", "anomalies", "alarms"):
        got, want = lines(tmp_path / "resumed", stream), lines(tmp_path / "straight", stream)
        assert len(got) == len(set(got)), stream  # no line twice
        assert sorted(got) == sorted(want), stream
    assert 0 < partial < len(lines(tmp_path / "straight", "readings"))


def test_every_closed_window_is_timed_at_its_close_and_at_detection():
    from smart_maintenance.latency import observed

    before = {s: observed(s) for s in ("due_to_close", "close_to_detect")}
    _run(_inputs(), timed=True)  # as live: a replay is not timed (below)
    assert observed("due_to_close") - before["due_to_close"] == 2 * 288  # the features test's windows
    assert observed("close_to_detect") - before["close_to_detect"] == 2 * 288


def test_a_replay_leaves_the_live_latency_histograms_alone():
    """Windows of a replay close at event times long past: timing them would fill the live histograms."""
    from smart_maintenance.latency import observed

    before = {s: observed(s) for s in ("due_to_close", "close_to_detect")}
    _run(_inputs())  # a testing source is not live
    assert {s: observed(s) - n for s, n in before.items()} == {"due_to_close": 0, "close_to_detect": 0}


class _Recorded(list):
    """A testing sink's list that also notes, in `events`, when each item reached the sink."""

    def __init__(self, events, kind):
        super().__init__()
        self._events, self._kind = events, kind

    def append(self, item):
        self._events.append((self._kind, item.asset_id, round(item.window_end.timestamp() * 1000)))
        super().append(item)

    def __iadd__(self, items):  # how the testing sink writes a batch
        for item in items:
            self.append(item)
        return self


@pytest.mark.parametrize("live", [True, False])
def test_live_anomalies_reach_their_sink_before_the_loop_steps_run_on_their_windows(monkeypatch, live):
    """Live, every asset's windows close on the same boundaries, and the loop steps (time to failure, work
    orders, notifications) then run on the whole burst: the anomalies an operator waits for must not wait for
    them too (docs/performance.md, branch `commit`). A replay keeps its sinks last."""
    from smart_maintenance.dataflows import loop_steps

    events = []
    on_item = loop_steps.PredictLogic.on_item

    def predict(self, value):
        if value.features is not None:
            events.extend(("predict", value.asset_id, int(end)) for end in value.features.window_end)
        return on_item(self, value)

    monkeypatch.setattr(loop_steps.PredictLogic, "on_item", predict)
    out = {s: [] for s in STREAMS}
    out["anomalies"] = _Recorded(events, "anomaly")
    flow = build_flow(SETTINGS, source=TestingSource(_inputs()), sinks={s: [TestingSink(out[s])] for s in STREAMS},
                      live=live, timed=False)
    run_main(flow, epoch_interval=timedelta(0))
    order = {}
    for i, (kind, asset_id, end) in enumerate(events):
        order.setdefault((kind, asset_id, end), i)
    anomalies = [(a, end) for kind, a, end in order if kind == "anomaly"]
    assert anomalies and all(("predict", a, end) in order for a, end in anomalies)
    first = [order[("anomaly", a, end)] < order[("predict", a, end)] for a, end in anomalies]
    assert all(first) if live else not any(first)
