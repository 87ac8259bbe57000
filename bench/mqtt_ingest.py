"""MQTT into the plant flow on loopback: a real Mosquitto (no-loss config), QoS 1, persistent session.

    python bench/mqtt_ingest.py [--readings 100000]

Publishes N simulator readings (one JSON reading per message) while the flow's subscriber is offline,
so the broker queues them for its persistent session, then times the whole plant flow draining them
(TestingSinks, no database). Last line: `mqtt_drain_per_s=<n> publish_per_s=<n>`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bytewax.testing import TestingSink, run_main

from smart_maintenance.config.registry import load_registry
from smart_maintenance.config.settings import SimulatorSettings, load_settings
from smart_maintenance.connectors.mqtt.publish import publish_readings
from smart_maintenance.connectors.mqtt.source import MqttSource
from smart_maintenance.dataflows.plant import STREAMS, build_flow
from smart_maintenance.sources.plant_model import PlantModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the test suite's broker fixture
from tests.integration.mqtt_broker import Broker  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--readings", type=int, default=100_000)
    n = ap.parse_args().readings
    plant = load_registry().with_simulated(20)
    model = PlantModel(plant, SimulatorSettings(assets=20, duration_s=None))
    readings = model.generate(range(20), 0, n // 100 + 1)
    readings = readings.take(np.arange(min(n, len(readings))))
    broker = Broker(Path(tempfile.mkdtemp()) / "mosquitto")
    broker.start()
    try:
        settings = broker.settings().model_copy(update={"client_id": "bench-drain"})
        source = MqttSource(settings, stop_after=len(readings))
        source.build("read", 0, 1).close()  # create the persistent session before publishing
        t = time.perf_counter()
        stats = publish_readings(broker.settings(), readings, registry=plant)
        publish_rate = stats.messages / (time.perf_counter() - t)
        out = {s: [] for s in STREAMS}
        flow = build_flow(load_settings(console=False), source=source,
                          sinks={s: [TestingSink(out[s])] for s in STREAMS})
        t = time.perf_counter()
        run_main(flow)
        elapsed = time.perf_counter() - t
    finally:
        broker.stop()
    got = sum(len(r) for r in out["readings"]) + len(out["dead_letters"])
    print(f"{got:,} of {len(readings):,} messages through the plant flow in {elapsed:.2f} s")
    print(f"mqtt_drain_per_s={got / elapsed:.0f} publish_per_s={publish_rate:.0f}")


if __name__ == "__main__":
    main()
