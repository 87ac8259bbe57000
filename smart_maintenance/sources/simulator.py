"""The plant simulator as a Bytewax source, and the ground truth of what it injects.

`SimulatorSource(settings.simulator, registry)` has partitions `sim-0` ..
`sim-{partitions-1}`; partition p owns the assets whose index i in
`registry.with_simulated(settings.assets).assets` has i % partitions == p.
Each batch is `[Parsed(readings)]` for a block of ticks, ordered by time, then
asset, then sensor. The snapshot is the next tick to emit (an int), so a resume
continues exactly there, even at another speed (block sizes depend on the
speed; readings do not).

Speed 0 emits blocks as fast as the flow takes them; speed k > 0 paces them so
that k simulated seconds pass per wall second, with blocks of at most
`MAX_LAG_S` wall seconds so live latency stays low. The wall clock is read
only for pacing, never for the data.

`ground_truth(registry, settings)` returns every injected event as frozen
dataclasses: the labels that benchmarks score detections against.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from smart_maintenance.config.registry import Registry
from smart_maintenance.config.settings import SimulatorSettings
from smart_maintenance.operators.controls import MaintenanceRecord
from smart_maintenance.operators.records import Parsed, stable_id
from smart_maintenance.sources.plant_model import (
    CHUNK_TICKS,
    DRIFT,
    DROPOUT,
    OOR,
    PLANNED,
    SENTINEL,
    SPIKE,
    STUCK,
    FaultRates,
    PlantModel,
)

MAX_BATCH_READINGS = 100_000
"""A fast-mode batch holds at most about this many readings (memory stays flat for big plants)."""
MAX_LAG_S = 1.0
"""Paced modes: a block spans at most this many wall seconds."""

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


# --- ground truth: what was injected, as data -------------------------------
# Times are epoch ms on the tick grid; spans are [start_ms, end_ms).


@dataclass(frozen=True, slots=True)
class Degradation:
    """A failure mode that drives `sensors` (largest share first) to failure at `failure_ms`."""

    asset_id: str
    mode: str
    start_ms: int
    failure_ms: int
    repair_end_ms: int
    sensors: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Stop:
    """The asset is stopped: `planned`, or the `repair` that follows a failure."""

    asset_id: str
    kind: str
    start_ms: int
    end_ms: int


@dataclass(frozen=True, slots=True)
class SensorFault:
    """A faulty sensor, by `kind`.

    `stuck` (sends exactly `value`), `out_of_range` (`value` beyond the
    physical range, a little noisy), `sentinel` (sends the code `value`, such
    as -999), `drift` (the reading walks off linearly, `value` away at the
    end) or `dead` (sends nothing from `start_ms` to the end of the run).
    """

    asset_id: str
    sensor: str
    kind: str
    start_ms: int
    end_ms: int
    value: float


@dataclass(frozen=True, slots=True)
class SetpointChange:
    """The operating point of `sensor` moves by `step` at `at_ms`, for good: a new normal, not a fault."""

    asset_id: str
    sensor: str
    at_ms: int
    step: float


@dataclass(frozen=True, slots=True)
class Dropout:
    """The sensor sends nothing."""

    asset_id: str
    sensor: str
    start_ms: int
    end_ms: int


@dataclass(frozen=True, slots=True)
class Glitch:
    """One bad sample: a `spike` (clipped to the physical range) or a `nan`.

    A glitch inside a dropout or a sensor fault of the same sensor is hidden by it.
    """

    asset_id: str
    sensor: str
    ts_ms: int
    kind: str


@dataclass(frozen=True, slots=True)
class GroundTruth:
    """Every event that starts in [start_ms, end_ms), each tuple sorted by time, then asset."""

    start_ms: int
    end_ms: int
    degradations: tuple[Degradation, ...]
    stops: tuple[Stop, ...]
    sensor_faults: tuple[SensorFault, ...]
    dropouts: tuple[Dropout, ...]
    glitches: tuple[Glitch, ...]
    setpoints: tuple[SetpointChange, ...] = ()

    def counts(self) -> dict[str, int]:
        return {
            "degradations": len(self.degradations),
            "failures": sum(d.failure_ms < self.end_ms for d in self.degradations),
            "planned_stops": sum(s.kind == "planned" for s in self.stops),
            "sensor_faults": len(self.sensor_faults),
            "dropouts": len(self.dropouts),
            "spikes": sum(g.kind == "spike" for g in self.glitches),
            "nans": sum(g.kind == "nan" for g in self.glitches),
            "setpoint_changes": len(self.setpoints),
        }


def ground_truth(
    registry: Registry,
    settings: SimulatorSettings,
    *,
    until_ms: int | None = None,
    rates: FaultRates | None = None,
) -> GroundTruth:
    """Everything the simulator injects before `until_ms` (default: the end of the run).

    A pure function of its arguments, drawn from the same seeded streams as the
    readings (not recorded while generating them).
    """
    model = PlantModel(registry, settings, rates)
    end_ms = until_ms if until_ms is not None else model.end_ms
    if end_ms is None:
        raise ValueError("a run without duration_s needs until_ms for its ground truth")
    end = max(0, -(-(end_ms - model.start_ms) // model.interval_ms))

    def ms(tick: int) -> int:
        return model.start_ms + tick * model.interval_ms

    degs: list[Degradation] = []
    stops: list[Stop] = []
    faults: list[SensorFault] = []
    drops: list[Dropout] = []
    glitches: list[Glitch] = []
    setpoints: list[SetpointChange] = []
    names = {STUCK: "stuck", OOR: "out_of_range", SENTINEL: "sentinel", DRIFT: "drift"}
    for a, aid in enumerate(model.asset_ids):
        tm = model.type_of[a]
        a_stops, a_degs, short = model.asset_events(a, end)
        stops += [Stop(aid, "planned" if k == PLANNED else "repair", ms(s), ms(e)) for s, e, k in a_stops]
        degs += [Degradation(aid, tm.modes[m], ms(s), ms(f), ms(r), tm.affected[m]) for s, f, r, m in a_degs]
        for kind, s, start, stop, value in short:
            sensor = tm.sensors[s]
            if kind in names:
                faults.append(SensorFault(aid, sensor, names[kind], ms(start), ms(stop), value))
            elif kind == DROPOUT:
                drops.append(Dropout(aid, sensor, ms(start), ms(stop)))
            else:
                glitches.append(Glitch(aid, sensor, ms(start), "spike" if kind == SPIKE else "nan"))
        dead = model.dead_sensor(a)
        if dead is not None and dead[1] < end:
            faults.append(SensorFault(aid, tm.sensors[dead[0]], "dead", ms(dead[1]), max(ms(end), end_ms), 0.0))
        sp = model.setpoint(a)
        if sp is not None and sp[1] < end:
            setpoints.append(SetpointChange(aid, tm.sensors[sp[0]], ms(sp[1]), sp[2]))
    return GroundTruth(
        model.start_ms, end_ms, tuple(sorted(degs, key=_by_time)), tuple(sorted(stops, key=_by_time)),
        tuple(sorted(faults, key=_by_time)), tuple(sorted(drops, key=_by_time)), tuple(sorted(glitches, key=_by_time)),
        setpoints=tuple(sorted(setpoints, key=lambda c: (c.at_ms, c.asset_id))),
    )


def _by_time(e: Degradation | Stop | SensorFault | Dropout | Glitch) -> tuple[int, str, str]:
    return (e.ts_ms if isinstance(e, Glitch) else e.start_ms, e.asset_id, getattr(e, "sensor", ""))


# --- the Bytewax source ---------------------------------------------------------


def block_ticks(speed: float, interval_s: float, readings_per_tick: int) -> int:
    """Ticks per batch: a divisor of CHUNK_TICKS, bounded by batch size and, when paced, by latency."""
    cap = max(1, MAX_BATCH_READINGS // max(1, readings_per_tick))
    if speed > 0:
        cap = min(cap, max(1, int(speed * MAX_LAG_S / interval_s)))
    return max(d for d in range(1, CHUNK_TICKS + 1) if CHUNK_TICKS % d == 0 and d <= cap)


class SimulatorSource(FixedPartitionedSource[Parsed, int]):
    """A simulated plant: `settings.assets` assets from `registry`, seeded and resumable."""

    def __init__(
        self,
        settings: SimulatorSettings,
        registry: Registry,
        *,
        rates: FaultRates | None = None,
        clock: Clock = _utcnow,
    ) -> None:
        PlantModel(registry, settings, rates)  # validates start, interval, types: fail at build, not at run
        self.settings = settings
        self.registry = registry
        self.rates = rates
        self.clock = clock

    @property
    def live(self) -> bool:
        """Paced in wall time (speed > 0): downstream windows may close on idle time."""
        return self.settings.speed > 0

    def list_parts(self) -> list[str]:
        return [f"sim-{p}" for p in range(self.settings.partitions)]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _SimulatorPartition:
        if for_part not in self.list_parts():
            raise ValueError(f"unknown simulator partition {for_part!r}")
        p = int(for_part.removeprefix("sim-"))
        model = PlantModel(self.registry, self.settings, self.rates)
        assets = tuple(range(p, len(model.asset_ids), self.settings.partitions))
        return _SimulatorPartition(model, assets, resume_state or 0, self.settings.speed, self.clock)


class _SimulatorPartition(StatefulSourcePartition[Parsed, int]):
    def __init__(self, model: PlantModel, assets: tuple[int, ...], tick: int, speed: float, clock: Clock) -> None:
        self._model = model
        self._assets = assets
        self._tick = tick
        self._speed = speed
        self._clock = clock
        per_tick = sum(len(model.type_of[a].sensors) for a in assets)
        self._block = block_ticks(speed, model.interval_ms / 1000, per_tick)
        # pacing anchor: the first tick to emit is due now
        self._anchor_wall = clock()
        self._anchor_ms = model.tick_ms(tick)

    def _next_n(self) -> int:
        """Ticks in the next block: up to the next multiple of the block size, and the end of the run."""
        n = self._block - self._tick % self._block
        if self._model.n_ticks is not None:
            n = min(n, self._model.n_ticks - self._tick)
        return n

    def _due(self) -> datetime:
        last_ms = self._model.tick_ms(self._tick + self._next_n() - 1)
        return self._anchor_wall + timedelta(seconds=(last_ms - self._anchor_ms) / 1000 / self._speed)

    def next_batch(self) -> list[Parsed]:
        n = self._next_n()
        if not self._assets or n <= 0:
            raise StopIteration
        if self._speed > 0 and self._clock() < self._due():
            return []
        readings = self._model.generate(self._assets, self._tick, n)
        self._tick += n
        self._model.forget_before(self._tick)
        return [Parsed(readings)] if len(readings) else []

    def next_awake(self) -> datetime | None:
        if self._speed <= 0 or self._next_n() <= 0:
            return None
        return self._due()

    def snapshot(self) -> int:
        return self._tick


def simulated_maintenance(truth: GroundTruth) -> list[MaintenanceRecord]:
    """The maintenance log the simulated plant's technicians would write: one record per repaired failure.

    A repair completes when its repair stop ends; only repairs completed
    within the run are logged. (Sensor replacements are not simulated: the
    instrumentation work orders they would close stay open.)
    """
    return [
        MaintenanceRecord(
            maintenance_id=stable_id("sim-maintenance", d.asset_id, d.repair_end_ms),
            asset_id=d.asset_id, at_ms=d.repair_end_ms, outcome="repaired",
            action=f"repaired {d.mode.replace('_', ' ')}",
            notes=f"{d.mode.replace('_', ' ')} found; {', '.join(d.sensors)} back in band after the repair",
            source="simulator",
        )
        for d in truth.degradations if d.repair_end_ms < truth.end_ms
    ]
