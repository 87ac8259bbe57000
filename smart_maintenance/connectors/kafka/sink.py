"""Kafka sinks: alarms, dead letters, predictions, work orders, plans and notifications as JSON messages;
a readings publisher.

Each record is one message: the value is `orjson.dumps(record.to_dict())`, the
key is its `asset_id` (dead letters: their `origin`), so one asset's records
stay in order on one partition. The producer is idempotent (no duplicates
from its own retries); recovery still replays output since the last snapshot
(at-least-once), so consumers dedupe by the record's id (`alarm_id` + status,
`dead_letter_id`, ...). A plan (`assignments`) is keyed by its `plan_id`. Each
topic's messages follow the JSON Schema in `schemas/<stream>.schema.json`.

Every `write_batch` waits until the broker has acknowledged the batch, and a
delivery error raises `KafkaSinkError` on the flow's path: the delivery
callback only records errors, it never swallows them.

`publish_readings` writes readings as the wire format, one JSON reading per
message (`ts` as epoch ms), for the CLI's `publish`, demos and benchmarks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from smart_maintenance.config.settings import KafkaSettings, Settings
from smart_maintenance.connectors.kafka.admin import KafkaTopicError, ensure_topics
from smart_maintenance.connectors.kafka.config import kafka_config, kafka_section
from smart_maintenance.operators.ingest.codes import factorize
from smart_maintenance.operators.ingest.encode import readings_jsonl
from smart_maintenance.operators.records import Readings

__all__ = ["KafkaRecordsSink", "KafkaSinkError", "publish_readings", "record_message"]

log = logging.getLogger(__name__)

_KEY_FIELDS = {"dead_letters": "origin", "assignments": "plan_id"}  # every other stream is keyed by asset_id
_TOPIC_FIELDS = {"alarms": "alarms_topic", "work_orders": "work_orders_topic", "dead_letters": "dead_letters_topic",
                 "readings": "readings_topic", "predictions": "predictions_topic",
                 "assignments": "assignments_topic", "notifications": "notifications_topic"}
SCHEMAS = Path(__file__).parent / "schemas"  # one JSON Schema document per published stream
_READING_KEYS = ("asset_id", "sensor")


class KafkaSinkError(RuntimeError):
    """Messages could not be delivered to Kafka."""


def record_message(record: Any, key_field: str) -> tuple[bytes | None, bytes]:
    """`(key, value)` of a record with `to_dict()` (or a plain dict): JSON value, key from a field."""
    d = record if isinstance(record, dict) else record.to_dict()
    key = d.get(key_field)
    return (None if key is None else str(key).encode()), orjson.dumps(d)


class _Delivery:
    """Collects delivery and fatal errors from librdkafka's callbacks, which run inside poll/flush."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.failed = 0

    def on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.failed += 1
            if len(self.errors) < 5:
                self.errors.append(f"{msg.topic()}[{msg.partition()}] key={msg.key()!r}: {err.name()}: {err.str()}")

    def on_error(self, err: KafkaError) -> None:
        if err.fatal():  # other errors are transient: librdkafka retries and the message times out if not
            self.errors.append(f"fatal producer error: {err.name()}: {err.str()}")
            self.failed += 1

    def raise_if_failed(self, what: str) -> None:
        if self.failed:
            detail = "; ".join(self.errors)
            n, self.failed, self.errors = self.failed, 0, []
            raise KafkaSinkError(f"{what}: {n} message(s) not delivered: {detail}")


def _producer(settings: KafkaSettings, delivery: _Delivery, **tuning: str) -> Producer:
    config: dict[str, Any] = {
        "client.id": "smart-maintenance",
        "enable.idempotence": "true",  # the producer's retries never duplicate or reorder
        "linger.ms": "5",
        "delivery.report.only.error": True,  # the callback costs a Python call per message
        **tuning,
        **kafka_config(settings),
        "on_delivery": delivery.on_delivery,
        "error_cb": delivery.on_error,
    }
    return Producer(config)


def _produce(producer: Producer, topic: str, value: bytes, key: bytes | None) -> None:
    """Produce one message, waiting for room when the local queue is full."""
    while True:
        try:
            producer.produce(topic, value, key)
            return
        except BufferError:
            producer.poll(0.05)
        except KafkaException as e:  # refused before sending: too large, bad topic name, fatal state
            raise KafkaSinkError(f"cannot produce to Kafka topic {topic!r} (key={key!r}): {e}") from e


class KafkaRecordsSink(DynamicSink[Any]):
    """One stream of records (alarms, dead_letters, work_orders, ...) into one Kafka topic.

    The topic defaults to the stream's `<stream>_topic` setting; the key
    field to `asset_id` (`origin` for dead letters). Connects when the flow starts.
    """

    def __init__(self, settings: Settings | KafkaSettings, stream: str, *, topic: str | None = None,
                 key_field: str | None = None) -> None:
        k = kafka_section(settings)
        if topic is None:
            if stream not in _TOPIC_FIELDS:
                raise ValueError(f"no topic setting for stream {stream!r}: pass topic=")
            topic = getattr(k, _TOPIC_FIELDS[stream])
        if not topic:
            raise ValueError("topic must not be empty")
        kafka_config(k)  # bad settings fail here, not when the flow starts
        self._settings = k
        self.stream = stream
        self.topic = topic
        self.key_field = key_field or _KEY_FIELDS.get(stream, "asset_id")

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _KafkaRecordsPartition:
        if self._settings.create_topics:
            try:
                ensure_topics(self._settings, [self.topic], timeout_s=5.0)
            except KafkaTopicError as e:  # writing says why, and the broker may create topics itself
                log.warning("%s; writing to it anyway", e)
        delivery = _Delivery()
        return _KafkaRecordsPartition(_producer(self._settings, delivery), delivery, self.topic, self.key_field)


class _KafkaRecordsPartition(StatelessSinkPartition[Any]):
    def __init__(self, producer: Producer, delivery: _Delivery, topic: str, key_field: str) -> None:
        self._producer = producer
        self._delivery = delivery
        self._topic = topic
        self._key_field = key_field

    def write_batch(self, items: list[Any]) -> None:
        for item in items:
            key, value = record_message(item, self._key_field)
            _produce(self._producer, self._topic, value, key)
        self._flush()

    def _flush(self) -> None:
        # bounded by message.timeout.ms: an undeliverable message fails its delivery, it does not hang
        self._producer.flush()
        self._delivery.raise_if_failed(f"writing to Kafka topic {self._topic!r}")

    def close(self) -> None:
        self._flush()


def _reading_messages(readings: Readings, key: str | None) -> tuple[list[bytes], list[bytes | None]]:
    """One JSON reading per row, as the JSONL sink writes them (RFC 3339 ts; non-finite value -> null)."""
    n = len(readings)
    if n == 0:
        return [], []
    values = readings_jsonl(readings).split(b"\n")[:n]
    if key is None:
        return values, [None] * n
    codes, names = factorize(readings.asset_id if key == "asset_id" else readings.sensor)
    encoded = [str(x).encode() for x in names]
    return values, [encoded[c] for c in codes.tolist()]


def publish_readings(
    settings: Settings | KafkaSettings,
    readings: Readings,
    *,
    rate: float = 0,
    key: str | None = "asset_id",
    topic: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Produce one JSON message per reading to the readings topic; returns how many were delivered.

    `rate` is messages per second (0 = as fast as the broker takes them);
    `key` is the column that keys the messages (`asset_id` keeps one asset's
    readings in order on one partition, `sensor`, or None for round-robin);
    `progress(n)` is called now and then with the number produced so far.
    Raises KafkaSinkError if any message was not delivered.
    """
    if rate < 0:
        raise ValueError(f"rate must not be negative, got {rate}")
    if key is not None and key not in _READING_KEYS:
        raise ValueError(f"key must be one of {_READING_KEYS} or None, got {key!r}")
    k = kafka_section(settings)
    topic = topic or k.readings_topic
    values, keys = _reading_messages(readings, key)
    delivery = _Delivery()
    producer = _producer(k, delivery, **{"linger.ms": "20", "batch.size": "1000000"})
    _send(producer, topic, values, keys, rate, progress)
    producer.flush()
    delivery.raise_if_failed(f"publishing readings to {topic!r}")
    return len(values)


def _send(producer: Producer, topic: str, values: Sequence[bytes], keys: Sequence[bytes | None], rate: float,
          progress: Callable[[int], None] | None) -> None:
    start = time.monotonic()
    step = max(1, min(10_000, int(rate / 50))) if rate else 10_000  # pace in chunks of ~20 ms
    for i in range(0, len(values), step):
        for value, key in zip(values[i:i + step], keys[i:i + step]):
            _produce(producer, topic, value, key)
        producer.poll(0)
        if progress is not None:
            progress(min(i + step, len(values)))
        if rate:
            ahead = start + (i + step) / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
