"""Where the flow's controls (review decisions, maintenance records) come from: polled live from PostgreSQL
(and the Kafka maintenance topic), or loaded once up front by a finite run so each applies at its event time."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from bytewax.inputs import Source

from smart_maintenance.config.registry import Registry
from smart_maintenance.config.settings import Settings
from smart_maintenance.operators.controls import Control
from smart_maintenance.stores.admission import Admission


class StaticControls:
    """Controls known when a finite run starts, by asset: loaded once per process, on first use (not at build)."""

    def __init__(self, *loaders: Callable[[], Sequence[Control]]) -> None:
        self._loaders = loaders
        self._by_asset: dict[str, list[Control]] | None = None
        self._lock = threading.Lock()

    def __call__(self, asset_id: str) -> list[Control]:
        with self._lock:
            if self._by_asset is None:
                by_asset: dict[str, list[Control]] = {}
                for load in self._loaders:
                    for c in load():
                        by_asset.setdefault(c.asset_id, []).append(c)
                self._by_asset = by_asset
            return list(self._by_asset.get(asset_id, ()))


def default_controls(settings: Settings, registry: Registry, *, live: bool,
                     stored: bool) -> tuple[Source[Any] | None, StaticControls | None]:
    """Where review decisions and maintenance records come from.

    Live: the control input polls PostgreSQL while the flow runs. A finite
    run (replay, simulator) reads them once, up front, so that each applies
    at its event time and a replay is repeatable: those stored in PostgreSQL
    (`stored`) and, for the simulator, its own maintenance log.
    """
    if live and stored:
        from smart_maintenance.sources.controls import ControlSource

        topic = settings.kafka.maintenance_topic if settings.source == "kafka" else None
        # a new live job takes what is decided and logged from now on (with --recovery it resumes from its
        # snapshot): re-applying last month's repairs would re-baseline detectors restored from data_dir/models
        return ControlSource(settings, live=True, kafka_topic=topic, from_start=False,
                             until=paced_run_end(settings)), None
    loaders: list[Callable[[], Sequence[Control]]] = []
    if stored:
        loaders.append(lambda: _stored_controls(settings))
    if settings.source == "simulator" and settings.simulator.maintenance_log and settings.simulator.duration_s:
        from smart_maintenance.sources.simulator import (
            ground_truth,
            simulated_maintenance,
        )

        plant = registry
        loaders.append(lambda: simulated_maintenance(ground_truth(plant, settings.simulator)))
    return None, (StaticControls(*loaders) if loaders else None)


def paced_run_end(settings: Settings, now: datetime | None = None) -> datetime | None:
    """When a paced simulator run of finite length should be over (None: no end).

    Its control input stops polling then, so that the job ends: the planned
    wall time (duration / speed) plus a grace of a tenth of it, at least a
    minute, for a flow that falls behind its pace. Controls logged later are
    not applied by this run.

    >>> from smart_maintenance.config.settings import load_settings
    >>> t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    >>> paced_run_end(load_settings(simulator={"duration_s": 86_400, "speed": 360}), t0) - t0
    datetime.timedelta(seconds=300)
    """
    sim = settings.simulator
    if settings.source != "simulator" or not sim.duration_s or not sim.speed > 0:
        return None
    planned = sim.duration_s / sim.speed
    return (now or datetime.now(timezone.utc)) + timedelta(seconds=planned + max(60.0, planned / 10))


def _stored_controls(settings: Settings) -> list[Control]:
    from smart_maintenance.connectors.postgres.server import resolve_dsn
    from smart_maintenance.connectors.postgres.store import LoopStore

    with LoopStore(resolve_dsn(settings), settings.postgres.schema_name) as store:
        if settings.cmms.enabled and settings.cmms.completions.path is not None:
            from smart_maintenance.sources.controls import sync_cmms

            sync_cmms(settings, store)  # completed work in the CMMS joins the log first
        return [c for _, _, c in store.controls_since(0, 0, limit=1_000_000)]


def default_admission(settings: Settings, registry: Registry, *, stored: bool, live: bool) -> Admission:
    """Registry assets are admitted; so are those admitted in PostgreSQL (`stored`), re-read live."""
    load = None
    if stored and settings.quarantine_unknown_assets:
        dsn: list[str] = []  # resolved at the first read (resolving checks that the server answers: a connection)

        def load() -> set[str]:
            from smart_maintenance.connectors.postgres.admission import AdmissionStore
            from smart_maintenance.connectors.postgres.server import resolve_dsn

            if not dsn:
                dsn.append(resolve_dsn(settings))
            with AdmissionStore(dsn[0], settings.postgres.schema_name) as store:
                return store.admitted_ids()
    return Admission((a.asset_id for a in registry.assets), quarantine=settings.quarantine_unknown_assets,
                     load=load, refresh_s=settings.admission_refresh_s if live else None)
