"""The real plant flow survives hostile messages and keeps every good reading; idle assets leave memory."""

from __future__ import annotations

import time
from datetime import timedelta

import orjson
from bytewax.operators import StatefulLogic
from bytewax.testing import TestingSink, TestingSource, run_main

from smart_maintenance.config.registry import load_registry
from smart_maintenance.config.settings import load_settings
from smart_maintenance.dataflows.plant import STREAMS, build_flow
from smart_maintenance.dataflows.steps import Steps
from smart_maintenance.operators.ingest.limits import Evicted
from smart_maintenance.operators.records import AssetReadings, RawMessages
from tests.synthetic import T0, as_parsed, asset_day

SETTINGS = load_settings(console=False, detection={"warmup_windows": 36, "baseline_size": 96},
                         limits={"max_sensors_per_asset": 16})
HOUR = 3_600_000


def _hostile() -> RawMessages:
    deep = b"[" * 1000 + b"1" + b"]" * 1000
    flood = {"asset_id": "flood", "ts": T0 + 2 * HOUR, "values": {f"s{i:05d}": 1.0 for i in range(5000)}}
    payloads = (
        b'{"asset_id":"x","sensor":"a","ts":%d,"value":%s}' % (T0 + 2 * HOUR, deep),
        b'{"asset_id":"x","sensor":"a","ts":%s,"value":1}' % deep,
        b'{"asset_id":"x","ts":%d,"values":{"a":%s}}' % (T0 + 2 * HOUR, deep),
        orjson.dumps({"asset_id": "p" * 300, "sensor": "a", "ts": T0 + 2 * HOUR, "value": 1.0}),
        orjson.dumps({"asset_id": "x\r\nBcc: ops@example.com", "sensor": "a", "ts": T0 + 2 * HOUR, "value": 1.0}),
        orjson.dumps(flood),
        orjson.dumps({"asset_id": "x", "sensor": "a", "ts": T0 + 23 * HOUR, "value": 1e9}),  # 21 h ahead of x
    )
    return RawMessages(payloads, (None,) * len(payloads), tuple(f"evil:{i}" for i in range(len(payloads))))


def _run(items: list) -> dict[str, list]:
    out: dict[str, list] = {s: [] for s in STREAMS}
    flow = build_flow(SETTINGS, source=TestingSource(items), sinks={s: [TestingSink(out[s])] for s in STREAMS})
    run_main(flow, epoch_interval=timedelta(0))
    return out


def _stored(out: dict[str, list], asset: str) -> int:
    return sum(int((r.asset_id == asset).sum()) for r in out["readings"])


def test_hostile_messages_are_dead_letters_and_every_good_reading_counts() -> None:
    good = as_parsed([asset_day("x", seed=1, drift_last_h=4), asset_day("y", seed=2)], rows=1800)
    clean = _run(good)
    out = _run(good[:10] + [_hostile()] + good[10:])  # mid-stream: genuine readings follow the future one
    reasons = sorted(d.reason for d in out["dead_letters"])
    [flood] = [d for d in out["dead_letters"] if d.reason == "too_many_sensors"]
    assert orjson.loads(flood.raw)["readings"] == 5000 - 16
    assert [r for r in reasons if r != "too_many_sensors"] == [
        "bad_name", "bad_name", "bad_timestamp", "bad_value", "bad_value", "future_outlier"]
    assert not any(d.reason == "late" for d in out["dead_letters"])  # the future reading moved no watermark
    # `readings` stores what passed the edge checks, before windowing: the reading at +23 h is there too
    assert (_stored(out, "x"), _stored(out, "y")) == (_stored(clean, "x") + 1, _stored(clean, "y"))
    n_x = sum(int((p.readings.asset_id == "x").sum()) for p in good)
    assert sum(int(f.values[:, :, 7].sum()) for f in out["features"] if f.asset_id == "x") == n_x
    assert {a.alarm_id for a in out["alarms"]} == {a.alarm_id for a in clean["alarms"]}


def test_an_idle_live_asset_leaves_memory_and_its_stages_forget_it() -> None:
    settings = load_settings(console=False, limits={"evict_after_s": 0.05})
    steps = Steps(settings, load_registry(), live=True)
    logic = steps.window_logic(None)
    batch = AssetReadings("p1", *(arr for arr in _one_reading()))
    logic.on_item(batch)
    assert len(steps.admission) == 1 and logic.notify_at() is not None
    time.sleep(0.1)
    out, keep = logic.on_notify()
    assert keep is StatefulLogic.DISCARD
    assert [o.control for o in out if o.control is not None] == [Evicted("p1", 50)]
    assert len(steps.admission) == 0
    state, item = steps.detect(object(), Evicted("p1", 50))  # type: ignore[arg-type]
    assert state is None and item == Evicted("p1", 50)
    state, judged = steps.validate(None, Evicted("p1", 50))
    assert state is None and judged.control == Evicted("p1", 50)


def test_invented_asset_ids_leave_no_profile_behind() -> None:
    steps = Steps(load_settings(console=False), load_registry(), live=True)
    known = load_registry().assets[0].asset_id
    assert steps.profile(known) is steps.profile(known)  # the registry's own are kept
    for i in range(1000):
        assert steps.profile(f"invented-{i}").asset_type is None
    assert set(steps._profiles) == {known}


def test_new_assets_over_the_limit_are_dead_letters() -> None:
    settings = load_settings(console=False, limits={"max_assets": 1})
    steps = Steps(settings, load_registry(), live=False)
    first, second = steps.window_logic(None), steps.window_logic(None)
    first.on_item(AssetReadings("p1", *_one_reading()))
    out, keep = second.on_item(AssetReadings("p2", *_one_reading()))
    assert keep is StatefulLogic.DISCARD and [d.reason for o in out for d in o.late] == ["too_many_assets"]


def _one_reading() -> tuple:
    import numpy as np

    return np.array(["t"], dtype=object), np.array([T0], np.int64), np.array([1.0])
