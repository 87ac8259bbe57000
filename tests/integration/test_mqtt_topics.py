# ruff: noqa: F811 - pytest fixtures imported from mqtt_broker
"""A Unified Namespace topic template against a real Mosquitto, through the real plant flow."""

from __future__ import annotations

import time

import paho.mqtt.client as mqtt
import pytest
from bytewax.testing import TestingSink, run_main
from paho.mqtt.enums import CallbackAPIVersion

from smart_maintenance.config.settings import load_settings
from smart_maintenance.connectors.mqtt.source import MqttSource
from smart_maintenance.dataflows.plant import STREAMS, build_flow
from tests.integration.mqtt_broker import Broker, mosquitto  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

UNS = "{enterprise}/{site}/{area}/{line}/{asset_id}/{sensor}"


def test_uns_topics_name_the_readings(mosquitto: Broker):
    broker = mosquitto.settings(topics=("acme/#",), topic_template=UNS)
    settings = load_settings(console=False, mqtt=broker.model_dump())
    source = MqttSource(settings.mqtt, stop_after=4, batch_wait_ms=20)
    source.build("read", 0, 1).close()  # the persistent session queues what follows
    t = int(time.time() * 1000) - 60_000
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="uns-edge")
    pub.connect(mosquitto.host, mosquitto.port)
    pub.loop_start()
    for topic, payload in [("acme/lyon/press/l2/p-7/temp", b'{"ts": %d, "value": 21.5}' % t),
                           ("acme/lyon/press/l2/p-7/vib", b'{"ts": %d, "value": 0.25}' % t),
                           ("acme/lyon/press/l2/p-8/temp", b'{"ts": %d, "value": 19.0}' % t),
                           ("acme/lyon/press/p-8/temp", b"19.0")]:  # a level short: not a reading
        pub.publish(topic, payload, qos=1).wait_for_publish(5)
    pub.loop_stop()
    pub.disconnect()
    out: dict[str, list] = {s: [] for s in STREAMS}
    run_main(build_flow(settings, source=source, sinks={s: [TestingSink(out[s])] for s in STREAMS}))
    rows = sorted((a, s, ts, v) for r in out["readings"]
                  for a, s, ts, v in zip(r.asset_id, r.sensor, r.ts.tolist(), r.value.tolist()))
    assert rows == [("p-7", "temp", t, 21.5), ("p-7", "vib", t, 0.25), ("p-8", "temp", t, 19.0)]
    assert [(d.reason, d.origin) for d in out["dead_letters"]] == [("bad_topic", "mqtt:acme/lyon/press/p-8/temp")]
