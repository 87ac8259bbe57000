"""The real flow on a plant its registry does not list: sentinel bursts are sensor faults within one window,
nightly stops raise no machine alarm."""

from __future__ import annotations

from bytewax.testing import TestingSink, run_main

from smart_maintenance.config.registry import Asset, Registry
from smart_maintenance.config.settings import SimulatorSettings, load_settings
from smart_maintenance.dataflows.plant import STREAMS, build_flow
from smart_maintenance.operators.records import dt_to_ms
from smart_maintenance.sources.plant_family import family_registry
from smart_maintenance.sources.plant_model import FaultRates
from smart_maintenance.sources.simulator import SimulatorSource, ground_truth

RATES = FaultRates(stops_per_day=0, degradations_per_day=0, dropouts_per_day=0, spikes_per_day=0, nans_per_day=0,
                   sensor_faults_per_day=0, sentinel_faults_per_day=1.5, sentinel_minutes=(10.0, 20.0),
                   schedules=(("gearbox", "nightly"),))
SIM = SimulatorSettings(assets=2, seed=11, interval_s=20.0, duration_s=3 * 86_400, partitions=1)


def test_sentinels_are_sensor_faults_at_once_and_stops_are_not_alarms() -> None:
    full = family_registry()
    plant = Registry(asset_types=full.asset_types,
                     assets=(Asset(asset_id="gb-1", type="gearbox"), Asset(asset_id="gb-2", type="gearbox")))
    truth = ground_truth(plant, SIM, rates=RATES)
    sentinels = [f for f in truth.sensor_faults if f.kind == "sentinel" and f.value != 0.0]
    assert sentinels
    out: dict[str, list] = {s: [] for s in STREAMS}
    settings = load_settings(console=False, progress=False, log_level="WARNING", simulator=SIM.model_dump(),
                             prediction={"enabled": False}, work={"enabled": False})
    run_main(build_flow(settings, source=SimulatorSource(SIM, plant, rates=RATES), registry=Registry(),
                        sinks={s: [TestingSink(out[s])] for s in STREAMS}, static_controls=lambda _: []))
    alarms = out["alarms"]
    window_ms = 30 * 20_000
    zeros = [f for f in truth.sensor_faults if f.kind == "sentinel" and f.value == 0.0]
    machine = [a for a in alarms if a.kind == "machine"]
    # nights stopped and restarted raise no machine alarm; a burst of 0.0 inside a running window is neither
    # flat nor a code, and is a known gap (docs/quality.md): it may show as a machine alarm, nothing else may
    assert all(any(z.asset_id == a.asset_id and z.start_ms <= dt_to_ms(a.opened_at) <= z.end_ms + 2 * window_ms
                   for z in zeros) for a in machine), machine
    for f in sentinels:
        opened = [dt_to_ms(a.opened_at) for a in alarms
                  if a.kind == "sensor_fault" and a.asset_id == f.asset_id and f.sensor in a.sensors]
        assert any(f.start_ms <= t <= f.start_ms + 2 * window_ms for t in opened), f  # the window it starts in
