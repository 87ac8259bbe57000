"""`smart-maintenance publish` sends readings on the configured topic template, which the flow parses back."""

from __future__ import annotations

import orjson

from smart_maintenance.config.registry import load_registry
from smart_maintenance.config.settings import MqttSettings
from smart_maintenance.connectors.mqtt.publish import MqttPublisher
from smart_maintenance.operators.ingest.parse import parse_messages
from smart_maintenance.operators.records import RawMessages, Readings

UNS = "{enterprise}/{site}/{area}/{line}/{asset_id}/{sensor}"


def test_publisher_follows_the_topic_template_and_the_flow_reads_it_back() -> None:
    registry = load_registry(None)
    site = registry.asset("pump-01").site  # type: ignore[union-attr]
    batch = Readings.of([("pump-01", "temperature", 1_767_571_200_000, 41.5), ("stray", "t", 1_767_571_200_000, 1.0)])
    topics, payloads, _ = MqttPublisher(MqttSettings(topic_template=UNS), registry=registry)._messages(batch)
    assert topics == [f"default/{site}/default/default/pump-01/temperature", "default/default/default/default/stray/t"]
    parsed = parse_messages(RawMessages(tuple(payloads), tuple(topics), ("m",) * 2, topic_template=UNS))
    assert parsed.rejects == () and list(parsed.readings.asset_id) == ["pump-01", "stray"]
    default_topics, _, _ = MqttPublisher(MqttSettings(), registry=registry)._messages(batch)
    assert default_topics[0] == f"plant/{site}/pump-01/temperature"


def test_sensor_level_anywhere_in_the_template() -> None:
    batch = Readings.of([("p-7", "vib", 1_767_571_200_000, 0.2)])
    topics, payloads, _ = MqttPublisher(MqttSettings(topic_template="acme/{sensor}/{asset_id}"))._messages(batch)
    assert topics == ["acme/vib/p-7"]
    parsed = parse_messages(RawMessages((b"0.2",), tuple(topics), ("m",), topic_template="acme/{sensor}/{asset_id}"),
                            receive_ms=(1_767_571_200_000,))
    assert list(parsed.readings.sensor) == ["vib"] and list(parsed.readings.asset_id) == ["p-7"]


def test_frames_carry_n_readings_of_one_asset_and_parse_back_to_the_same_readings() -> None:
    t0 = 1_767_571_200_000
    rows = [("a", "t", t0, 1.0), ("b", "t", t0, 2.0), ("a", "v", t0, 3.0), ("a", "t", t0 + 1, 4.0),
            ("a", "t", t0 + 1, 5.0), ("a", "v", t0 + 2, 6.0), ("b", "v", t0, 7.5)]  # a's t twice at t0 + 1
    batch = Readings.of(rows)
    topics, payloads, _ = MqttPublisher(MqttSettings())._frames(batch, 5)
    assert topics == ["plant/default/a/frame", "plant/default/b/frame"]
    assert [f["values"] for f in orjson.loads(payloads[0])] == [{"t": 1.0, "v": 3.0}, {"t": 4.0}, {"t": 5.0},
                                                               {"v": 6.0}]  # a sensor twice: a new frame
    assert orjson.loads(payloads[1]) == {"asset_id": "b", "ts": t0, "values": {"t": 2.0, "v": 7.5}}
    assert len(MqttPublisher(MqttSettings())._frames(batch, 2)[0]) == 3 + 1
    parsed = parse_messages(RawMessages(tuple(payloads), tuple(topics), ("m",) * len(topics)))
    assert parsed.rejects == ()
    r = parsed.readings
    assert sorted(zip(r.asset_id, r.sensor, r.ts.tolist(), r.value.tolist())) == sorted(rows)
