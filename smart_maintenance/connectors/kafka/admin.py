"""Topics the flow reads and writes, created when missing (partitions and replication from `[kafka]`).

A fresh broker (the compose stack's first start) has no topics: the readings
source and each output sink make theirs before they start, unless
`kafka.create_topics` is off (then a missing topic is an error naming it).
An existing topic is left as it is, whatever its partitions.
"""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic  # what confluent_kafka.admin re-exports, without an explicit export

from smart_maintenance.config.settings import KafkaSettings
from smart_maintenance.connectors.kafka.config import kafka_config


class KafkaTopicError(RuntimeError):
    """A topic could not be created or looked up."""


def ensure_topics(k: KafkaSettings, topics: Iterable[str], *, timeout_s: float = 30.0) -> list[str]:
    """Create the topics that do not exist; the names of those created (empty when all existed)."""
    wanted = sorted(set(topics))
    admin = AdminClient(kafka_config(k))  # type: ignore[arg-type]  # read only: the stubs should take a Mapping
    try:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException as e:
        raise KafkaTopicError(f"cannot list topics on {','.join(k.brokers)}: {e}") from e
    missing = [t for t in wanted if t not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=k.topic_partitions, replication_factor=k.topic_replication) for t in missing],
        operation_timeout=timeout_s, request_timeout=timeout_s,
    )
    created = []
    for topic, future in futures.items():
        try:
            future.result(timeout=timeout_s)
            created.append(topic)
        except KafkaException as e:
            if e.args and e.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:  # another worker was first
                continue
            raise KafkaTopicError(f"cannot create Kafka topic {topic!r}: {e}") from e
    return sorted(created)
