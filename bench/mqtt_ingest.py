"""MQTT into the plant flow on loopback: a real Mosquitto (no-loss config), QoS 1, persistent session.

    python bench/mqtt_ingest.py [--readings 100000] [--frame 20] [--profile out.prof]

Publishes N simulator readings (one JSON reading per message, or with `--frame F` frames of F readings
of one asset per message) while the flow's subscriber is offline, so the broker queues them for its
persistent session, then times the whole plant flow draining them (TestingSinks, no database).
Beside it, in the same run, `plain_parse_per_s`: the same messages through the flow's parse and check
steps in a plain loop (no broker, no Bytewax), so that figures from different days can be compared.
`--profile FILE` runs the drain under cProfile (the flow runs on this thread) and prints the top.
Last line: `mqtt_drain_per_s=<readings/s> messages_per_s=<n> publish_per_s=<messages/s>
plain_parse_per_s=<readings/s> frame=<F>`.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bytewax.testing import TestingSink, run_main

from smart_maintenance.config.registry import Registry, load_registry
from smart_maintenance.config.settings import SimulatorSettings, load_settings
from smart_maintenance.connectors.mqtt.publish import MqttPublisher, publish_readings
from smart_maintenance.connectors.mqtt.source import MqttSource
from smart_maintenance.dataflows.plant import STREAMS, build_flow
from smart_maintenance.dataflows.steps import Steps
from smart_maintenance.operators.records import RawMessages
from smart_maintenance.sources.plant_model import PlantModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the test suite's broker fixture
from tests.integration.mqtt_broker import Broker  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--readings", type=int, default=100_000)
    ap.add_argument("--frame", type=int, default=1, help="readings per message (one asset)")
    ap.add_argument("--profile", type=Path, default=None, help="cProfile the drain into this file")
    args = ap.parse_args()
    n, frame = args.readings, args.frame
    plant = load_registry().with_simulated(20)
    model = PlantModel(plant, SimulatorSettings(assets=20, duration_s=None))
    readings = model.generate(range(20), 0, n // 100 + 1)
    readings = readings.take(np.arange(min(n, len(readings))))
    broker = Broker(Path(tempfile.mkdtemp()) / "mosquitto")
    broker.start()
    try:
        pub = MqttPublisher(broker.settings(), registry=plant)
        topics, payloads, _ = pub._messages(readings) if frame == 1 else pub._frames(readings, frame)
        messages = len(payloads)
        plain = plain_parse_rate(topics, payloads, plant)
        settings = broker.settings().model_copy(update={"client_id": "bench-drain"})
        source = MqttSource(settings, stop_after=messages)
        source.build("read", 0, 1).close()  # create the persistent session before publishing
        t = time.perf_counter()
        stats = publish_readings(broker.settings(), readings, registry=plant, frame=frame)
        publish_rate = stats.messages / (time.perf_counter() - t)
        assert stats.messages == messages, (stats.messages, messages)
        out: dict[str, list] = {s: [] for s in STREAMS}
        flow = build_flow(load_settings(console=False), source=source,
                          sinks={s: [TestingSink(out[s])] for s in STREAMS})
        prof = cProfile.Profile() if args.profile else None
        t = time.perf_counter()
        if prof:
            prof.enable()
        run_main(flow)
        elapsed = time.perf_counter() - t
        if prof:
            prof.disable()
            prof.dump_stats(args.profile)
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    finally:
        broker.stop()
    got = sum(len(r) for r in out["readings"])
    dead = len(out["dead_letters"])
    print(f"{got:,} of {len(readings):,} readings ({dead} dead letters) in {messages:,} messages "
          f"of {frame} through the plant flow in {elapsed:.2f} s")
    print(f"mqtt_drain_per_s={got / elapsed:.0f} messages_per_s={messages / elapsed:.0f} "
          f"publish_per_s={publish_rate:.0f} plain_parse_per_s={plain:.0f} frame={frame}")


def plain_parse_rate(topics: list[str], payloads: list[bytes], plant: Registry) -> float:
    """Readings/s of the flow's parse and check steps over these messages in batches of 10,000, no broker."""
    steps = Steps(load_settings(console=False), plant, live=True)
    now = int(time.time() * 1000)
    best = 0.0
    for _ in range(3):  # best of three: the machine is shared
        t = time.perf_counter()
        got = 0
        for i in range(0, len(payloads), 10_000):
            k = len(payloads[i:i + 10_000])
            msgs = RawMessages(tuple(payloads[i:i + 10_000]), tuple(topics[i:i + 10_000]), ("bench",) * k,
                               receive_ms=(now,) * k)
            got += len(steps.check(steps.parse(msgs)).readings)
        best = max(best, got / (time.perf_counter() - t))
    return best


if __name__ == "__main__":
    main()
