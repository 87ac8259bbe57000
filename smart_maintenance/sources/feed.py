"""Readings to publish to a broker: the simulator plant or recorded files, as paced batches.

Used by `smart-maintenance publish` for demos and load tests. The simulator's
blocks are paced by simulated time at `speed` (0 = as fast as possible).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from smart_maintenance.config.registry import Registry, load_registry
from smart_maintenance.config.settings import Settings
from smart_maintenance.operators.records import Readings
from smart_maintenance.sources.formats import plan_file
from smart_maintenance.sources.plant_model import PlantModel
from smart_maintenance.sources.replay import read_chunks
from smart_maintenance.sources.simulator import block_ticks


def simulator_batches(settings: Settings) -> tuple[Iterator[Readings], Registry]:
    """The simulated plant's readings, block by block, and the registry that names its sites."""
    sim = settings.simulator
    plant = load_registry(settings.registry).with_simulated(sim.assets)
    model = PlantModel(plant, sim)
    per_tick = sum(len(plant.asset_types[a.type].sensors) for a in plant.assets)
    step = block_ticks(sim.speed, sim.interval_s, per_tick)

    def blocks() -> Iterator[Readings]:
        started = time.monotonic()
        tick = 0
        while model.n_ticks is None or tick < model.n_ticks:
            n = step if model.n_ticks is None else min(step, model.n_ticks - tick)
            if sim.speed > 0:  # wait until the block's simulated time has come
                due = started + tick * sim.interval_s / sim.speed
                time.sleep(max(0.0, due - time.monotonic()))
            yield model.generate(range(sim.assets), tick, n)
            tick += n
            model.forget_before(tick)

    return blocks(), plant


def file_batches(paths: Sequence[Path], **plan_options: object) -> Iterator[Readings]:
    """The readings of recorded files, chunk by chunk (rejected rows are skipped)."""
    for path in paths:
        for chunk in read_chunks(plan_file(path, **plan_options)):  # type: ignore[arg-type]
            if len(chunk.readings):
                yield chunk.readings
