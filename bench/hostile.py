"""The hostile-input target of `bench/fuzz.py`: messages built to stop the flow or blind an asset.

Each payload is one message from a seeded generator of tricks: a field (value, ts, a frame value,
asset_id, sensor) nested up to 1,200 levels; ids of 129 to 5,000 characters or with control
characters, CR/LF, zero-width or bidi marks, path and markup text; frames of 300 to 5,000 sensor
names; floods of new asset ids; times ahead of the stream (hours, years, 1e300) or before 1990;
control characters in values. Good readings of a few assets run in between, in time order.

Each batch goes through the ingest edge as the flow runs it: `parse_messages` -> `check_readings`
-> `split_by_asset` -> asset admission -> `window_readings` (flushed at the end). The audit:
- crash: anything raised;
- unexplained: a reject without a documented reason, or with a detail or raw over its cap; a
  reading that neither reached a closed window nor became a dead letter; an asset with more
  sensors than the limit, or more assets held than the limit; a good reading of a good asset
  that did not reach its window (blinded).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from random import Random

import numpy as np
import orjson

from smart_maintenance.operators.ingest.limits import AssetAdmission, refused
from smart_maintenance.operators.ingest.parse import check_readings, parse_messages, split_by_asset
from smart_maintenance.operators.ingest.windows import (
    WindowConfig,
    WindowState,
    drop_held,
    flush_windows,
    window_readings,
)
from smart_maintenance.operators.records import DETAIL_LIMIT, RAW_CHARS, Invalid, RawMessages

REASONS = frozenset({
    "bad_json", "bad_shape", "missing_field", "bad_value", "bad_timestamp", "bad_topic", "too_large", "unparseable",
    "bad_name", "non_finite", "absurd_timestamp", "unknown_asset", "unknown_sensor",
    "late", "future_outlier", "too_many_sensors", "too_many_assets", "new_asset_rate",
})
T0 = 1_767_225_600_000  # 2026-01-01T00:00Z
NOW = T0 + 10 * 86_400_000
SKEW = 86_400_000
MAX_SENSORS, MAX_ASSETS = 256, 500
CFG = WindowConfig(length_ms=60_000, lateness_ms=30_000, max_sensors=MAX_SENSORS)
GOOD = ("pump-01", "pump-02", "fan-07")
ODD = ("\r\nBcc: x@example.com", "a\x00b", "\u202eevil", "zero\u200bwidth", "../../etc/passwd", "[/]",
       "[link=https://example.com]x[/link]", "\x1b[31mred", "tab\tname", "\u2028")
TIMES = (23 * 3_600_000, 400 * 86_400_000, -40 * 365 * 86_400_000)


@dataclass
class Stream:
    """The good assets' clocks: good readings arrive in time order, 10 s apart."""

    t: int = T0
    good_sent: dict[str, int] = field(default_factory=dict)


def deep(depth: int, leaf: bytes = b"1") -> bytes:
    return b"[" * depth + leaf + b"]" * depth


def _reading(asset: object, sensor: object, ts: object, value: object) -> bytes:
    return orjson.dumps({"asset_id": asset, "sensor": sensor, "ts": ts, "value": value})


def trick(rng: Random, s: Stream) -> tuple[bytes, str]:
    """One hostile message and the name of its trick."""
    k = rng.randrange(9)
    t = s.t
    if k == 0:  # nesting inside one field
        d = deep(rng.choice((2, 255, 1000, 1200)))
        where = rng.choice(("value", "ts", "frame", "asset_id", "sensor"))
        text = {
            "value": b'{"asset_id":"pump-01","sensor":"t","ts":%d,"value":%s}' % (t, d),
            "ts": b'{"asset_id":"pump-01","sensor":"t","ts":%s,"value":1}' % d,
            "frame": b'{"asset_id":"pump-01","ts":%d,"values":{"t":%s}}' % (t, d),
            "asset_id": b'{"asset_id":%s,"sensor":"t","ts":%d,"value":1}' % (d, t),
            "sensor": b'{"asset_id":"pump-01","sensor":%s,"ts":%d,"value":1}' % (d, t),
        }[where]
        return text, f"nested {where}"
    if k == 1:  # long names
        n = rng.choice((129, 249, 300, 2_800, 5_000))
        name = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(n))
        return (_reading(name, "t", t, 1.0) if rng.random() < 0.5 else _reading("pump-01", name, t, 1.0)), "long name"
    if k == 2:  # odd names
        name = rng.choice(ODD)
        return (_reading(name, "t", t, 1.0) if rng.random() < 0.5 else _reading("pump-02", name, t, 1.0)), "odd name"
    if k == 3:  # sensor cardinality
        n = rng.choice((300, 1_000, 5_000))
        asset = rng.choice(("wide-1", "wide-2"))
        frame = {"asset_id": asset, "ts": t, "values": {f"s{i:05d}": 1.0 for i in range(n)}}
        return orjson.dumps(frame), "many sensors"
    if k == 4:  # asset cardinality
        return _reading(f"stray-{rng.randrange(10**9):09d}", "t", t, 1.0), "new asset"
    if k == 5:  # future and absurd times
        ts = rng.choice((t + rng.choice(TIMES), 1e300, -1, "9999-12-31T23:59:59Z", "1970-01-01T00:00:00Z"))
        return _reading(rng.choice(GOOD), "t", ts, 1e9), "future or absurd time"
    if k == 6:  # control characters and huge text in values
        v = rng.choice(("\x00\x01\x02", "1\r\n2", "x" * 100_000, "NaN"))
        return _reading("pump-01", "t", t, v), "odd value"
    if k == 7:  # a big message
        return orjson.dumps([{"asset_id": "pump-01", "sensor": "t", "ts": t, "value": "x" * 1_000}] * 1_200), "big"
    return b"\x00" * rng.randrange(1, 64), "binary"


def good(rng: Random, s: Stream) -> bytes:
    s.t += 10_000
    asset = rng.choice(GOOD)
    s.good_sent[asset] = s.good_sent.get(asset, 0) + 1
    return _reading(asset, "t", s.t, rng.gauss(20.0, 1.0))


@dataclass
class HostileResult:
    payloads: int = 0
    crashed: int = 0
    unexplained: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    tricks: dict[str, int] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)  # kind -> example
    crashes: dict[str, str] = field(default_factory=dict)


def run_hostile(n: int, seed: int, batch: int = 64) -> HostileResult:
    """`n` messages, about a third of them tricks, through the ingest edge; the audit as in the module doc."""
    rng, stream, out = Random(seed), Stream(), HostileResult()
    admission = AssetAdmission(MAX_ASSETS, None)
    windows: dict[str, WindowState] = {}
    kept_good: dict[str, int] = {}
    dead: list[Invalid] = []
    entered = 0  # readings that passed check_readings
    while out.payloads < n:
        k = min(batch, n - out.payloads)
        payloads = []
        for _ in range(k):
            if rng.random() < 0.35:
                p, name = trick(rng, stream)
                out.tricks[name] = out.tricks.get(name, 0) + 1
            else:
                p = good(rng, stream)
            payloads.append(p)
        out.payloads += k
        msgs = RawMessages(tuple(payloads), (None,) * k, tuple(f"hostile:{out.payloads + i}" for i in range(k)))
        try:
            parsed = check_readings(parse_messages(msgs, max_bytes=1024 * 1024), now_ms=NOW, max_skew_ms=SKEW,
                                    max_name_len=128)
            dead += parsed.rejects
            entered += len(parsed.readings)
            for ar in split_by_asset(parsed.readings) if len(parsed.readings) else []:
                if ar.asset_id not in windows and admission.admit(ar.asset_id, 0) is not None:
                    dead += refused(ar, "too_many_assets", MAX_ASSETS)
                    continue
                windows[ar.asset_id], wo = window_readings(windows.get(ar.asset_id), ar, CFG)
                dead += wo.late
                if wo.closed is not None:
                    _count(kept_good, wo.closed)
        except Exception as e:  # noqa: BLE001 - the audit counts it
            out.crashed += k
            out.crashes.setdefault(type(e).__name__, repr(e)[:200])
    for state in windows.values():
        state, held = drop_held(state, CFG)
        dead += held
        state, fb = flush_windows(state, CFG)
        if fb is not None:
            _count(kept_good, fb)
    windowed = sum(kept_good.values())
    for inv in dead:
        out.reasons[inv.reason] = out.reasons.get(inv.reason, 0) + 1
    problems = []
    if any(inv.reason not in REASONS for inv in dead):
        problems.append(("undocumented_reason", next(i.reason for i in dead if i.reason not in REASONS)))
    if any(len(i.detail) > DETAIL_LIMIT + 3 or len(i.raw) > RAW_CHARS for i in dead):
        problems.append(("uncapped_dead_letter", "a detail or raw over its cap"))
    window_dead = sum(out.reasons.get(r, 0) for r in ("late", "future_outlier", "too_many_assets"))
    window_dead += sum(orjson.loads(i.raw)["readings"] for i in dead if i.reason == "too_many_sensors")
    if windowed + window_dead != entered:
        problems.append(("lost_readings", f"{entered} entered, {windowed} windowed + {window_dead} dead"))
    if any(len(s.sensors) > MAX_SENSORS for s in windows.values()) or len(windows) > MAX_ASSETS:
        widest = max(len(s.sensors) for s in windows.values())
        problems.append(("unbounded", f"{len(windows)} assets, max sensors {widest}"))
    for asset, sent in stream.good_sent.items():
        if kept_good.get(asset, 0) < sent:
            problems.append(("blinded", f"{asset}: {sent} good readings sent, {kept_good.get(asset, 0)} windowed"))
    for kind, example in problems:
        out.problems.setdefault(kind, example)
    out.unexplained = len(problems)
    return out


def _count(kept: dict[str, int], fb: object) -> None:
    kept[fb.asset_id] = kept.get(fb.asset_id, 0) + int(np.asarray(fb.values)[:, :, 7].sum())
