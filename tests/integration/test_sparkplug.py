# ruff: noqa: F811 - pytest fixtures imported from mqtt_broker
"""SparkplugSource against a real Mosquitto, with a Sparkplug B edge node played by the test.

The edge node answers NCMD `Node Control/Rebirth` by publishing its births
again, as a real one does, and leaves an NDEATH will with the broker.
"""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as mqtt
import pytest
from bytewax.testing import TestingSink, run_main
from paho.mqtt.enums import CallbackAPIVersion

from smart_maintenance.config.settings import SparkplugSettings, load_settings
from smart_maintenance.connectors.sparkplug.codec import DOUBLE, UINT64, Metric, Payload, decode_payload, encode_payload
from smart_maintenance.connectors.sparkplug.source import SparkplugSource
from smart_maintenance.dataflows.plant import STREAMS, build_flow
from smart_maintenance.operators.records import Invalid, Parsed
from tests.integration.mqtt_broker import Broker, mosquitto  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

GROUP, NODE, DEVICE = "plantA", "edge1", "pump-01"


class EdgeNode:
    """A Sparkplug edge node with one device (`temp`, `vibration` by aliases 10 and 11)."""

    def __init__(self, broker: Broker, bd_seq: int = 1) -> None:
        self.seq = 0
        self.bd_seq = bd_seq
        self.rebirths = 0
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"edge-{NODE}")
        bd = Metric(name="bdSeq", datatype=UINT64, value=bd_seq)
        will = Payload(timestamp=int(time.time() * 1000), metrics=(bd,))
        self.client.will_set(f"spBv1.0/{GROUP}/NDEATH/{NODE}", encode_payload(will), qos=1)
        self.client.on_message = self._on_command
        self.client.connect(broker.host, broker.port)
        self.client.subscribe(f"spBv1.0/{GROUP}/NCMD/{NODE}", qos=1)
        self.client.loop_start()

    def _on_command(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        names = [m.name for m in decode_payload(msg.payload).metrics if m.value is True]
        if "Node Control/Rebirth" in names:
            self.rebirths += 1
            self.births()

    def _send(self, kind: str, metrics: tuple[Metric, ...], ts: int, device: str | None = DEVICE,
              seq: int | None = None) -> None:
        with self.lock:
            if seq is None:
                seq, self.seq = self.seq, (self.seq + 1) % 256
            topic = f"spBv1.0/{GROUP}/{kind}/{NODE}" + (f"/{device}" if device else "")
            self.client.publish(topic, encode_payload(Payload(timestamp=ts, seq=seq, metrics=metrics)), qos=1)

    def births(self, ts: int | None = None) -> None:
        ts = ts or int(time.time() * 1000)
        with self.lock:
            self.seq = 0
        self._send("NBIRTH", (Metric(name="bdSeq", datatype=UINT64, value=self.bd_seq),
                              Metric(name="Node Control/Rebirth", datatype=11, value=False)), ts, device=None)
        self._send("DBIRTH", (Metric(name="temp", alias=10, datatype=DOUBLE, value=None, is_null=True),
                              Metric(name="vibration", alias=11, datatype=DOUBLE, value=None, is_null=True)), ts)

    def data(self, ts: int, temp: float, vibration: float, quality: int | None = None) -> None:
        self._send("DDATA", (Metric(alias=10, timestamp=ts, value=temp, quality=quality),
                             Metric(alias=11, timestamp=ts, value=vibration)), ts)

    def skip_seq(self) -> None:
        with self.lock:
            self.seq = (self.seq + 3) % 256

    def die(self) -> None:
        """Lose the connection without DISCONNECT: the broker publishes the NDEATH will."""
        sock = self.client.socket()
        self.client.loop_stop()
        if sock is not None:
            sock.close()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _drain(part: object, until: object, timeout_s: float = 10) -> tuple[list[tuple], list[Invalid]]:
    rows: list[tuple] = []
    rejects: list[Invalid] = []
    deadline = time.monotonic() + timeout_s
    while not until(rows, rejects) and time.monotonic() < deadline:  # type: ignore[operator]
        for p in part.next_batch():  # type: ignore[attr-defined]
            assert isinstance(p, Parsed)
            r = p.readings
            rows += list(zip(r.asset_id, r.sensor, r.ts.tolist(), r.value.tolist()))
            rejects += p.rejects
        time.sleep(0.02)
    return rows, rejects


def _settings() -> SparkplugSettings:
    return SparkplugSettings(group_id=GROUP, batch_wait_ms=20, rebirth_min_interval_s=0.5)


def test_births_data_gap_rebirth_and_death(mosquitto: Broker):
    part = SparkplugSource(mosquitto.settings(), _settings()).build("read", 0, 1)
    edge = EdgeNode(mosquitto)
    try:
        t = 1_767_571_200_000
        edge.births(t)
        edge.data(t + 1000, 20.5, 0.1)
        edge.data(t + 2000, 99.0, 0.2, quality=0)  # bad quality: temp is a dead letter, vibration a reading
        rows, rejects = _drain(part, lambda r, d: len(r) >= 3)
        assert rows == [(DEVICE, "temp", t + 1000, 20.5), (DEVICE, "vibration", t + 1000, 0.1),
                        (DEVICE, "vibration", t + 2000, 0.2)]
        assert [(d.reason, d.origin) for d in rejects] == [
            ("null_value", f"sparkplug:spBv1.0/{GROUP}/DBIRTH/{NODE}/{DEVICE}"),
            ("null_value", f"sparkplug:spBv1.0/{GROUP}/DBIRTH/{NODE}/{DEVICE}"),
            ("bad_quality", f"sparkplug:spBv1.0/{GROUP}/DDATA/{NODE}/{DEVICE}")]
        edge.skip_seq()  # three messages lost on the way
        edge.data(t + 3000, 21.0, 0.3)
        rows, rejects = _drain(part, lambda r, d: edge.rebirths >= 1 and len(d) >= 3)
        assert edge.rebirths == 1  # the host asked, the edge node answered with its births
        assert [d.reason for d in rejects] == ["sequence_gap", "null_value", "null_value"]
        edge.data(t + 4000, 22.0, 0.4)
        rows, rejects = _drain(part, lambda r, d: len(r) >= 4)
        assert rows[-2:] == [(DEVICE, "temp", t + 4000, 22.0), (DEVICE, "vibration", t + 4000, 0.4)] and not rejects
        edge.die()
        rows, rejects = _drain(part, lambda r, d: len(d) >= 2)
        assert rows == [] and [(d.reason, d.raw.split('"')[3]) for d in rejects] == [("stale", NODE), ("stale", DEVICE)]
    finally:
        part.close()
        edge.close()


def test_plant_flow_joins_late_asks_for_births_and_makes_features(mosquitto: Broker):
    settings = load_settings(console=False, source="sparkplug", mqtt=mosquitto.settings().model_dump(),
                             sparkplug=_settings().model_dump(), windows={"length_s": 10, "idle_close_s": 1})
    out: dict[str, list] = {s: [] for s in STREAMS}
    source = SparkplugSource(settings.mqtt, settings.sparkplug, idle_stop_s=2)
    flow = build_flow(settings, source=source, sinks={s: [TestingSink(out[s])] for s in STREAMS})
    edge = EdgeNode(mosquitto)
    start = int(time.time() * 1000) - 120_000
    n = 40

    def play() -> None:
        deadline = time.monotonic() + 20
        while edge.rebirths == 0 and time.monotonic() < deadline:  # the host is not up yet, or has not asked
            edge._send("NDATA", (Metric(name="uptime", datatype=DOUBLE, value=1.0),), start, device=None)
            time.sleep(0.1)
        time.sleep(0.2)
        for i in range(n):
            edge.data(start + 2000 * i, 20.0 + i % 3, 0.1 * (i % 4))

    player = threading.Thread(target=play, daemon=True)
    player.start()
    try:
        run_main(flow)
    finally:
        edge.close()
    player.join(5)
    rows = sorted((a, s, t) for r in out["readings"] for a, s, t in zip(r.asset_id, r.sensor, r.ts.tolist()))
    assert rows == sorted((DEVICE, s, start + 2000 * i) for i in range(n) for s in ("temp", "vibration"))
    features = {(f["asset_id"], f["sensor"]) for batch in out["features"] for f in batch.rows()}
    assert features == {(DEVICE, "temp"), (DEVICE, "vibration")}
    assert {d.reason for d in out["dead_letters"]} == {"not_born", "null_value"}
