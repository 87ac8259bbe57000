"""The asset registry: assets, their sensors' physics, technicians.

A TOML file (see `default_registry.toml` for the built-in simulator plant)::

    [asset_types.pump]
    skills = ["mechanical", "pumps"]
    state_sensor = "current"      # the asset is stopped while this is under running_min
    running_min = 5.0
    [asset_types.pump.sensors.vibration]
    unit = "mm/s"
    range = [0.0, 50.0]           # physically possible: outside it the sensor is faulty
    normal = [0.5, 4.0]           # the usual band while running
    failure = 11.0                # the machine has failed at this value
    [asset_types.pump.failure_modes.bearing_wear]
    effects = { vibration = 1.0, temperature = 0.5 }  # share of the way to failure

    [[assets]]
    asset_id = "pump-01"
    type = "pump"
    site = "north"
    criticality = 4               # 1 (low) .. 5 (safety critical)

    [[technicians]]
    technician_id = "tech-01"
    name = "Ana Lima"
    skills = ["mechanical", "pumps"]
    shift = { start = "06:00", end = "14:00", days = [0, 1, 2, 3, 4] }

Assets and sensors the registry does not know are accepted (they learn their
own baselines) unless `strict_registry` is set.
"""

from __future__ import annotations

import tomllib
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SensorSpec(_Model):
    unit: str
    range: tuple[float, float]
    normal: tuple[float, float]
    failure: float
    failure_direction: Literal["above", "below"] = "above"

    @model_validator(mode="after")
    def _consistent(self) -> SensorSpec:
        lo, hi = self.range
        nlo, nhi = self.normal
        if not (lo < hi and lo <= nlo < nhi <= hi):
            raise ValueError(f"need range[0] <= normal[0] < normal[1] <= range[1], got {self.range} {self.normal}")
        if not lo <= self.failure <= hi:
            raise ValueError(f"failure {self.failure} outside range {self.range}")
        return self


class FailureMode(_Model):
    effects: dict[str, float] = Field(description="sensor -> share of the way to its failure value at failure")


class AssetType(_Model):
    skills: tuple[str, ...]
    sensors: dict[str, SensorSpec]
    state_sensor: str | None = None
    running_min: float | None = None
    repair_hours: float = Field(default=4.0, gt=0)
    failure_modes: dict[str, FailureMode] = {}

    @model_validator(mode="after")
    def _state_sensor_known(self) -> AssetType:
        if self.state_sensor is not None and self.state_sensor not in self.sensors:
            raise ValueError(f"state_sensor {self.state_sensor!r} is not one of the type's sensors")
        for name, mode in self.failure_modes.items():
            unknown = set(mode.effects) - set(self.sensors)
            if unknown:
                raise ValueError(f"failure mode {name!r} names unknown sensors {sorted(unknown)}")
        return self


class Asset(_Model):
    asset_id: str
    type: str
    site: str = "default"
    criticality: int = Field(default=3, ge=1, le=5)


class Shift(_Model):
    start: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    end: str = Field(pattern=r"^(([01]\d|2[0-3]):[0-5]\d|24:00)$")
    days: tuple[Annotated[int, Field(ge=0, le=6)], ...] = (0, 1, 2, 3, 4)  # 0 = Monday


class Technician(_Model):
    technician_id: str
    name: str
    skills: tuple[str, ...]
    shift: Shift


class Registry(_Model):
    asset_types: dict[str, AssetType] = {}
    assets: tuple[Asset, ...] = ()
    technicians: tuple[Technician, ...] = ()

    @model_validator(mode="after")
    def _references(self) -> Registry:
        seen: set[str] = set()
        for a in self.assets:
            if a.type not in self.asset_types:
                raise ValueError(f"asset {a.asset_id!r} has unknown type {a.type!r}")
            if a.asset_id in seen:
                raise ValueError(f"asset {a.asset_id!r} is listed twice")
            seen.add(a.asset_id)
        return self

    @cached_property
    def _by_id(self) -> dict[str, Asset]:
        return {a.asset_id: a for a in self.assets}

    def asset(self, asset_id: str) -> Asset | None:
        return self._by_id.get(asset_id)

    def asset_type(self, asset_id: str) -> AssetType | None:
        a = self._by_id.get(asset_id)
        return self.asset_types[a.type] if a is not None else None

    def sensor(self, asset_id: str, sensor: str) -> SensorSpec | None:
        t = self.asset_type(asset_id)
        return t.sensors.get(sensor) if t is not None else None

    def knows(self, asset_id: str) -> bool:
        return asset_id in self._by_id

    def with_simulated(self, n: int) -> Registry:
        """This registry's first `n` assets, plus generated ones (cycling types) when it has fewer."""
        if n <= len(self.assets):
            return self.model_copy(update={"assets": self.assets[:n]})
        types = sorted(self.asset_types)
        if not types:
            raise ValueError("a registry without asset types cannot generate a simulated plant")
        extra = list(self.assets)
        sites = sorted({a.site for a in self.assets}) or ["default"]
        i = 0
        while len(extra) < n:
            t = types[i % len(types)]
            k = sum(1 for a in extra if a.type == t) + 1
            asset_id = f"{t}-{k:02d}"
            while asset_id in {a.asset_id for a in extra}:
                k += 1
                asset_id = f"{t}-{k:02d}"
            extra.append(Asset(asset_id=asset_id, type=t, site=sites[i % len(sites)], criticality=1 + i % 5))
            i += 1
        return Registry(asset_types=self.asset_types, assets=tuple(extra), technicians=self.technicians)


class RegistryError(ValueError):
    """The registry file cannot be read or is inconsistent."""


def load_registry(path: Path | None = None) -> Registry:
    """Read a registry TOML file, or the built-in simulator plant when `path` is None."""
    try:
        if path is None:
            text = resources.files("smart_maintenance.config").joinpath("default_registry.toml").read_text()
        else:
            text = Path(path).read_text()
        return Registry.model_validate(tomllib.loads(text))
    except (OSError, tomllib.TOMLDecodeError, ValueError, RecursionError) as e:
        raise RegistryError(f"cannot load asset registry {path or '(built-in)'}: {e}") from e
