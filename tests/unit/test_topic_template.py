"""MQTT topic templates: the layout that names a reading's asset and sensor."""

from __future__ import annotations

import pytest

from smart_maintenance.config.settings import load_settings
from smart_maintenance.operators.ingest.parse import parse_messages, topic_pattern
from smart_maintenance.operators.records import RawMessages

UNS = "{enterprise}/{site}/{area}/{line}/{asset_id}/{sensor}"


def _parse(template: str | None, *messages: tuple[str, bytes]) -> tuple[list[tuple], list[str]]:
    topics = tuple(t for t, _ in messages)
    msgs = RawMessages(tuple(p for _, p in messages), topics, tuple("mqtt:" + t for t in topics),
                       receive_ms=(1_767_571_200_000,) * len(messages), topic_template=template)
    parsed = parse_messages(msgs, receive_ms=msgs.receive_ms)
    r = parsed.readings
    return list(zip(r.asset_id, r.sensor, r.ts.tolist(), r.value.tolist())), [d.reason for d in parsed.rejects]


def test_unified_namespace_topics_name_asset_and_sensor():
    rows, rejects = _parse(UNS, ("acme/lyon/press/l2/p-7/temp", b"21.5"),
                           ("acme/lyon/press/l2/p-7/vib", b'{"ts": 1767571201000, "value": 0.3}'),
                           ("plant/south/pump-01/temp", b"20"))  # the old layout is not this plant's
    assert rows == [("p-7", "temp", 1_767_571_200_000, 21.5), ("p-7", "vib", 1_767_571_201_000, 0.3)]
    assert rejects == ["bad_topic"]


def test_no_template_is_the_default_layout():
    rows, rejects = _parse(None, ("plant/south/pump-01/temp", b"20"), ("acme/lyon/press/l2/p-7/temp", b"1"))
    assert rows == [("pump-01", "temp", 1_767_571_200_000, 20.0)] and rejects == ["bad_topic"]


@pytest.mark.parametrize("bad", ["plant/{site}/{asset_id}", "plant/#/{asset_id}/{sensor}",
                                 "{asset_id}/{asset_id}/{sensor}", "plant//{asset_id}/{sensor}", "a/{x/{sensor}"])
def test_templates_that_cannot_name_a_reading_are_refused(bad: str):
    with pytest.raises(ValueError, match="topic template"):
        topic_pattern(bad)
    with pytest.raises(ValueError, match="topic_template"):
        load_settings(mqtt={"topic_template": bad})
