"""The window step per shard of assets does what the per-asset step did, asset by asset, in any grouping."""

from __future__ import annotations

import pickle
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bytewax.operators import StatefulLogic

from smart_maintenance.config.registry import load_registry
from smart_maintenance.config.settings import load_settings
from smart_maintenance.dataflows.steps import Steps, _ShardLogic
from smart_maintenance.operators.controls import MaintenanceRecord
from smart_maintenance.operators.ingest.shards import shard_of, split_by_shard
from smart_maintenance.operators.ingest.windows import WindowOutput
from smart_maintenance.operators.records import AssetReadings, Readings

T0 = 1_767_600_000_000
ASSETS = [f"a{i}" for i in range(7)]


def _events(seed: int) -> list[tuple[str, Any]]:
    """A random stream of (asset_id, AssetReadings | MaintenanceRecord): uneven rates, late and far-ahead
    readings, a new sensor now and then, controls at past and future event times."""
    rng = random.Random(seed)
    clock = {a: T0 + rng.randrange(0, 60_000) for a in ASSETS}
    out: list[tuple[str, Any]] = []
    for i in range(400):
        a = rng.choice(ASSETS)
        if rng.random() < 0.05:
            out.append((a, MaintenanceRecord(f"m{i}", a, clock[a] + rng.randrange(-90_000, 90_000))))
            continue
        n = rng.randrange(1, 12)
        ts = [clock[a] + rng.randrange(-40_000, 8_000) for _ in range(n)]  # some late (30 s lateness)
        if rng.random() < 0.02:
            ts[-1] += 5 * 3_600_000  # far ahead: held as a suspect
        clock[a] += rng.randrange(0, 9_000)
        sensors = np.array([rng.choice(["t", "v", "p", f"x{rng.randrange(3)}"]) for _ in ts], dtype=object)
        out.append((a, AssetReadings(a, sensors, np.array(ts, np.int64), np.array([rng.random() for _ in ts]))))
    return out


def _norm(w: WindowOutput) -> tuple:
    closed = None if w.closed is None else (w.closed.sensors, w.closed.window_end.tolist(),
                                            np.nan_to_num(w.closed.values, nan=-1.0).tolist())
    return closed, tuple((d.reason, d.raw) for d in w.late), w.control


def _steps(shards: int = 64, **limits: Any) -> Steps:
    windows = {"length_s": 10, "allowed_lateness_s": 30, "shards": shards}
    return Steps(load_settings(console=False, windows=windows, limits=limits), load_registry())


def _per_asset(events: list[tuple[str, Any]], steps: Steps) -> dict[str, list[tuple]]:
    """What the per-asset step gave (one logic per key, as Bytewax ran it before the shards)."""
    logics: dict[str, Any] = {}
    out: dict[str, list[tuple]] = {a: [] for a in ASSETS}
    for a, item in events:
        logic = logics.get(a) or logics.setdefault(a, steps.window_logic(None))
        items, keep = logic.on_item(item)
        out[a] += [_norm(w) for w in items]
        if keep is StatefulLogic.DISCARD:
            del logics[a]
    for a in sorted(logics):
        out[a] += [_norm(w) for w in logics[a].on_eof()[0]]
    return out


def _sharded(events: list[tuple[str, Any]], steps: Steps, shards: int, seed: int,
             resume_at: int | None = None) -> dict[str, list[tuple]]:
    """The shard step on the same events, grouped into shard items at random batch cuts (each asset's own order
    kept); with `resume_at`, every shard is rebuilt from its pickled snapshot at that point."""
    rng = random.Random(seed)
    logics: dict[str, _ShardLogic] = {}
    out: dict[str, list[tuple]] = {a: [] for a in ASSETS}

    def feed(key: str, item: Any) -> None:
        logic = logics.get(key) or logics.setdefault(key, steps.shard_logic(None))
        items, keep = logic.on_item(item)
        for a, w in items:
            out[a].append(_norm(w))
        if keep is StatefulLogic.DISCARD:
            del logics[key]

    i = 0
    while i < len(events):
        if resume_at is not None and i >= resume_at:
            logics = {k: steps.shard_logic(pickle.loads(pickle.dumps(lg.snapshot()))) for k, lg in logics.items()}
            resume_at = None
        batch: dict[str, AssetReadings] = {}
        while i < len(events) and isinstance(events[i][1], AssetReadings) and events[i][0] not in batch \
                and len(batch) < rng.randrange(1, 6):
            batch[events[i][0]] = events[i][1]
            i += 1
        if not batch:  # a control, alone, keyed to its asset's shard
            a, control = events[i]
            feed(*steps.control_shard((a, control)))
            i += 1
            continue
        by_shard: dict[str, list[AssetReadings]] = {}
        for a in sorted(batch):
            by_shard.setdefault(shard_of(a, shards), []).append(batch[a])
        for key, parts in by_shard.items():
            feed(key, tuple(parts))
    for key in sorted(logics):
        for a, w in logics[key].on_eof()[0]:
            out[a].append(_norm(w))
    return out


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
@pytest.mark.parametrize("shards", [1, 3, 64])
def test_shards_give_what_the_per_asset_step_gave(seed: int, shards: int) -> None:
    events = _events(seed)
    want = _per_asset(events, _steps())
    assert sum(len(v) for v in want.values()) > 50  # windows closed, late readings, controls released
    assert _sharded(events, _steps(shards), shards, seed) == want
    assert _sharded(events, _steps(shards), shards, seed, resume_at=len(events) // 2) == want


def test_an_asset_refused_by_admission_leaves_its_shard() -> None:
    shard = _steps(1, max_assets=1).shard_logic(None)
    one = np.array(["t"], dtype=object), np.array([T0], np.int64), np.array([1.0])
    out, keep = shard.on_item((AssetReadings("a", *one),))
    assert out == [] and keep is StatefulLogic.RETAIN
    out, keep = shard.on_item((AssetReadings("a", *one), AssetReadings("b", *one)))
    assert [(a, d.reason) for a, w in out for d in w.late] == [("b", "too_many_assets")]
    assert keep is StatefulLogic.RETAIN and set(shard.snapshot()) == {"a"}  # type: ignore[arg-type]


def test_idle_assets_are_woken_each_at_its_own_time() -> None:
    settings = load_settings(console=False, windows={"length_s": 10, "idle_close_s": 0.05},
                             limits={"evict_after_s": 1.6})
    steps = Steps(settings, load_registry(), live=True)
    shard = steps.shard_logic(None)
    now_ms = int(time.time() * 1000) - 60_000
    reading = np.array(["t"], dtype=object), np.array([now_ms], np.int64), np.array([1.0])
    shard.on_item((AssetReadings("a", *reading),))
    time.sleep(0.15)
    shard.on_item((AssetReadings("b", *reading),))
    first = shard.notify_at()
    assert first is not None
    time.sleep(max(0.0, (first - _now()).total_seconds()) + 0.01)
    out, _ = shard.on_notify()  # a's idle close is due (after the 1 s poll); b's is not yet (0.15 s later)
    assert [a for a, w in out if w.closed is not None] == ["a"] and all(w.control is None for _, w in out)
    deadline = time.time() + 5
    evicted: list[str] = []  # then each leaves memory evict_after_s after its own item
    while len(evicted) < 2 and time.time() < deadline:
        at = shard.notify_at()
        assert at is not None
        time.sleep(max(0.0, (at - _now()).total_seconds()) + 0.01)
        out, keep = shard.on_notify()
        evicted += [a for a, w in out if w.control is not None]
    assert evicted == ["a", "b"] and keep is StatefulLogic.DISCARD and shard.notify_at() is None


def _now() -> Any:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc)


def test_split_by_shard_keeps_every_reading_in_asset_order() -> None:
    rows = [(f"a{i % 9}", "t", T0 + i, float(i)) for i in range(100)]
    items = split_by_shard(Readings.of(rows), 4)
    assert sorted(k for k, _ in items) == sorted({shard_of(f"a{i}", 4) for i in range(9)})
    for key, parts in items:
        assert [p.asset_id for p in parts] == sorted(p.asset_id for p in parts)
        assert all(shard_of(p.asset_id, 4) == key for p in parts)
        for p in parts:
            assert p.ts.tolist() == [t for a, _, t, _ in rows if a == p.asset_id]


def test_shard_of_is_the_same_in_every_process() -> None:
    ids = ["pump-01", "compressor-7", "ü-名前", "x" * 300]
    here = [shard_of(a, 64) for a in ids]
    code = f"from smart_maintenance.operators.ingest.shards import shard_of; print([shard_of(a, 64) for a in {ids!r}])"
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={"PYTHONHASHSEED": seed, "PATH": ""}, cwd=Path(__file__).parents[2])
        assert out.stdout.strip() == repr(here)
    assert here[0] == "61"  # crc32: fixed for good, snapshots are keyed by it
