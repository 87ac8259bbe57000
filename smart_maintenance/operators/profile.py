"""What the operators know about one asset from the registry, as plain values.

The dataflow builds a profile per asset once; operators never see the
registry itself. An asset the registry does not know gets an empty profile
and learns everything from its own data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from smart_maintenance.config.registry import Registry
from smart_maintenance.operators.records import FeatureBatch

MEAN, STD, MIN, MAX, SLOPE, RMS, LAST, COUNT = range(8)


@dataclass(frozen=True)
class SensorLimits:
    range_lo: float
    range_hi: float
    normal_lo: float
    normal_hi: float
    failure: float
    rising: bool  # failure lies above the normal band


@dataclass(frozen=True)
class AssetProfile:
    asset_id: str
    asset_type: str | None = None
    site: str | None = None
    criticality: int = 3
    limits: tuple[tuple[str, SensorLimits], ...] = ()
    state_sensor: str | None = None
    running_min: float | None = None

    def limit(self, sensor: str) -> SensorLimits | None:
        for name, lim in self.limits:
            if name == sensor:
                return lim
        return None

    def running(self, fb: FeatureBatch) -> np.ndarray:
        """Per window: was the asset running throughout? (True where the registry cannot tell.)"""
        if self.state_sensor is None or self.running_min is None or self.state_sensor not in fb.sensors:
            return np.ones(len(fb), bool)
        s = fb.sensors.index(self.state_sensor)
        low = fb.values[:, s, MIN]
        # no reading of the state sensor: trust the other sensors, call it running
        return ~(low < self.running_min)


def profile_for(registry: Registry, asset_id: str) -> AssetProfile:
    asset = registry.asset(asset_id)
    if asset is None:
        return AssetProfile(asset_id)
    t = registry.asset_types[asset.type]
    limits = tuple(
        (
            name,
            SensorLimits(
                range_lo=s.range[0],
                range_hi=s.range[1],
                normal_lo=s.normal[0],
                normal_hi=s.normal[1],
                failure=s.failure,
                rising=s.failure_direction == "above",
            ),
        )
        for name, s in sorted(t.sensors.items())
    )
    return AssetProfile(
        asset_id=asset_id,
        asset_type=asset.type,
        site=asset.site,
        criticality=asset.criticality,
        limits=limits,
        state_sensor=t.state_sensor,
        running_min=t.running_min,
    )
