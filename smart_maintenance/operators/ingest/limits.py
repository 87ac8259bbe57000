"""Bounds on what senders can make the flow hold: assets admitted, and what an evicted asset leaves behind.

A plant's senders are not all trusted: one message per invented asset id would
otherwise grow every per-asset state for ever. `AssetAdmission` admits a new
asset only while the assets held in memory stay under `max_assets` and, in live
runs, while fewer than `max_new_per_min` new ones arrived in the last minute of
wall time. Refused readings are dead letters (`too_many_assets`,
`new_asset_rate`), one per reading, never dropped silently.

An asset idle for `limits.evict_after_s` leaves memory: the flow then sends an
`Evicted` marker down the asset's stages, and each stage keeps only what cannot
be learned again from data (`after_eviction_*`).

Errors: constructors raise `ValueError` on limits below 1.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson

from smart_maintenance.operators.judge.alarms import AlarmState
from smart_maintenance.operators.judge.validation import ValidationState
from smart_maintenance.operators.records import AssetReadings, Invalid, iso

_MINUTE_MS = 60_000


@dataclass(frozen=True, slots=True)
class Evicted:
    """An asset left memory after `idle_ms` of silence; its stages drop what they can learn again."""

    asset_id: str
    idle_ms: int


class AssetAdmission:
    """Which new assets the flow takes on; one per process, called from the window step.

    >>> adm = AssetAdmission(max_assets=2, max_new_per_min=None)
    >>> adm.admit("a", 0), adm.admit("b", 0), adm.admit("c", 0)
    (None, None, 'too_many_assets')
    >>> adm.forget("a"); adm.admit("c", 0)
    """

    def __init__(self, max_assets: int, max_new_per_min: int | None) -> None:
        if max_assets < 1 or (max_new_per_min is not None and max_new_per_min < 1):
            raise ValueError("asset limits must be at least 1")
        self.max_assets = max_assets
        self.max_new_per_min = max_new_per_min
        self._held: set[str] = set()
        self._recent: deque[int] = deque()  # wall times (ms) of admissions in the last minute

    def __len__(self) -> int:
        return len(self._held)

    def held(self, asset_id: str) -> None:
        """An asset resumed from a snapshot: it is in memory, admitted before."""
        self._held.add(asset_id)

    def admit(self, asset_id: str, now_ms: int) -> str | None:
        """None when `asset_id` may enter (and is now held), else the dead-letter reason."""
        if asset_id in self._held:
            return None
        if len(self._held) >= self.max_assets:
            return "too_many_assets"
        if self.max_new_per_min is not None:
            while self._recent and self._recent[0] <= now_ms - _MINUTE_MS:
                self._recent.popleft()
            if len(self._recent) >= self.max_new_per_min:
                return "new_asset_rate"
            self._recent.append(now_ms)
        self._held.add(asset_id)
        return None

    def forget(self, asset_id: str) -> None:
        self._held.discard(asset_id)


_DETAILS = {
    "too_many_assets": "{n} assets are held in memory (limits.max_assets); a new asset waits until one is evicted",
    "new_asset_rate": "more than {n} new assets in the last minute (limits.max_new_assets_per_min)",
}


def refused(batch: AssetReadings, reason: str, limit: int) -> tuple[Invalid, ...]:
    """Every reading of a batch as a dead letter with `reason` (an asset the flow did not admit)."""
    detail = _DETAILS.get(reason, reason).format(n=limit)
    origin = f"admission:{batch.asset_id}"
    return tuple(
        Invalid(reason, detail, orjson.dumps({"asset_id": batch.asset_id, "sensor": s, "ts": iso(int(t)),
                                              "value": float(v)}).decode(), origin)
        for s, t, v in zip(batch.sensor, batch.ts, batch.value, strict=True)
    )


def known_sensors(registry: Any) -> dict[str, frozenset[str]]:
    """Strict registry: the sensors each listed asset may report (its type's sensors)."""
    return {a.asset_id: frozenset(registry.asset_types[a.type].sensors) for a in registry.assets}


def after_eviction_validation(state: ValidationState | None) -> ValidationState | None:
    """Thresholds learned from reviews outlive eviction; the rest is learned again from the next windows."""
    if state is None or (state.open_offset == 0.0 and not state.threshold_log):
        return None
    return ValidationState(open_offset=state.open_offset, threshold_log=state.threshold_log)


def after_eviction_alarms(state: AlarmState | None) -> AlarmState | None:
    """An open alarm stays (it is cleared by data or by maintenance, never by forgetting); else nothing."""
    return state if state is not None and state.open else None


__all__ = ["AssetAdmission", "Evicted", "after_eviction_alarms", "after_eviction_validation", "known_sensors",
           "refused"]
