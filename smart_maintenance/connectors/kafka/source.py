"""Kafka source: the readings topic as batches of raw messages, offsets in Bytewax snapshots.

Built on Bytewax's `KafkaSource`: one source partition per topic partition,
consumed with `assign()` (no consumer group), and the next offset to read is
the partition's snapshot, so a resumed flow reads on from the last snapshot
(at-least-once: what came after it is read again).

Unlike the stock source, a partition emits ONE `RawMessages` per poll (up to
`batch_size` messages), not one item per message: every Bytewax step costs
microseconds per item, which is more than parsing a reading costs.

    payloads[i]    the message value (a tombstone becomes b"", a `bad_json` dead letter)
    topics[i]      the message key as text (producers key by asset_id), or None
    origins[i]     "kafka:<topic>/<partition>/<offset>"
    receive_ms[i]  the message's Kafka timestamp (epoch ms)

A consume error other than end-of-partition raises `KafkaSourceError`: there is
no payload to dead-letter, and skipping would lose readings silently. The
flow stops; run it again with recovery and it resumes from its snapshot.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone
from typing import Any, cast

from bytewax.connectors.kafka import KafkaSource, _KafkaSourcePartition
from confluent_kafka import OFFSET_BEGINNING, KafkaException
from confluent_kafka import KafkaError as ConfluentKafkaError
from confluent_kafka.admin import AdminClient

from smart_maintenance import latency
from smart_maintenance.config.settings import KafkaSettings, Settings
from smart_maintenance.connectors.kafka.admin import KafkaTopicError, ensure_topics
from smart_maintenance.connectors.kafka.config import (
    kafka_config,
    kafka_section,
    redacted,
)
from smart_maintenance.operators.records import RawMessages

log = logging.getLogger(__name__)

__all__ = ["KafkaReadingsSource", "KafkaSourceError", "kafka_config", "kafka_section", "redacted"]



LIVE_FETCH_WAIT_MS = 50  # a tailing source's fetch.wait.max.ms (kafka.extra overrides it)
# How often a partition that is not behind looks for new messages. Bytewax runs every step of a worker on
# one thread: a partition that blocks in `consume` to wait for data holds up all of them, and one that is
# polled again at once (Bytewax's 1 ms for an empty batch) wakes the whole dataflow hundreds of times a
# second for a few messages each. 10 ms is a tenth of the 100 ms budget beyond window close.
POLL_INTERVAL_S = 0.01


class KafkaSourceError(RuntimeError):
    """The readings topic cannot be read: unreachable brokers, a missing topic, a consume error."""








class KafkaReadingsSource(KafkaSource):
    """The readings topic as `RawMessages` batches, one source partition per Kafka partition.

    `tail=True` waits for new messages forever (a live plant); `tail=False`
    stops at the end of every partition (tests, a backfill from Kafka).
    The connection is only made when the flow starts.
    """

    def __init__(
        self,
        settings: Settings | KafkaSettings,
        *,
        batch_size: int = 10_000,
        tail: bool = True,
        topic: str | None = None,
        starting_offset: int = OFFSET_BEGINNING,
        poll_interval_s: float = POLL_INTERVAL_S,
        metadata_timeout_s: float = 30.0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if poll_interval_s < 0:
            raise ValueError(f"poll_interval_s must not be negative, got {poll_interval_s}")
        if metadata_timeout_s <= 0:
            raise ValueError(f"metadata_timeout_s must be positive, got {metadata_timeout_s}")
        k = kafka_section(settings)
        config = kafka_config(k)
        config.setdefault("client.id", "smart-maintenance")
        self.topic = topic or k.readings_topic
        super().__init__(
            k.brokers,
            [self.topic],
            tail=tail,
            starting_offset=starting_offset,
            add_config=config,
            batch_size=batch_size,
            raise_on_errors=True,
        )
        self._poll_interval_s = poll_interval_s
        self._metadata_timeout_s = metadata_timeout_s
        self._k = k
        self._create_topics = k.create_topics

    @property
    def live(self) -> bool:
        """A tailing source is live (windows of idle assets close on wall time); a backfill is not."""
        return self._tail

    def list_parts(self) -> list[str]:
        """One part per partition of the topic, `"<partition>-<topic>"` as Bytewax's KafkaSource names them."""
        if self._create_topics:
            try:
                ensure_topics(self._k, [self.topic], timeout_s=self._metadata_timeout_s)
            except KafkaTopicError as e:
                raise KafkaSourceError(
                    f"cannot list topic {self.topic!r} on {self._add_config['bootstrap.servers']}: {e}") from e
        admin = AdminClient(dict(self._add_config))
        try:
            meta = admin.list_topics(self.topic, timeout=self._metadata_timeout_s)
        except KafkaException as e:
            raise KafkaSourceError(
                f"cannot list topic {self.topic!r} on {self._add_config['bootstrap.servers']}: {e}"
            ) from e
        topic = meta.topics.get(self.topic)
        if topic is None or topic.error is not None:
            why = topic.error.str() if topic is not None and topic.error is not None else "not in metadata"
            raise KafkaSourceError(f"Kafka topic {self.topic!r} cannot be read ({why}): create it first "
                                   "(or set kafka.create_topics)")
        return [f"{i}-{self.topic}" for i in sorted(topic.partitions)]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _KafkaReadingsPartition:
        idx, topic = for_part.split("-", 1)
        if topic != self.topic:
            raise KafkaSourceError(f"recovery state is for topic {topic!r}, this source reads {self.topic!r}")
        config: dict[str, Any] = {
            "group.id": "BYTEWAX_IGNORED",  # no group: offsets live in the snapshots
            "enable.auto.commit": "false",
            "enable.partition.eof": str(not self._tail).lower(),
            "statistics.interval.ms": 1000,  # Bytewax's consumer-lag gauge
            # librdkafka pauses a partition's prefetch for 1 s (the default) once its local queue
            # holds queued.min.messages: a catching-up flow then idles most of the time
            "fetch.queue.backoff.ms": 50,
            # a fetch waits up to fetch.wait.max.ms (librdkafka: 500) for data; a broker that does not answer
            # as soon as a message arrives (Tansu) then holds each reading that long. On Tansu, 4 partitions,
            # a message per 10 ms: 500 ms -> p50/p99 134/261 ms at 0.04 broker cores; 50 -> 22/37 ms at 0.13;
            # 10 -> 11/19 ms at 0.22 (2026-12-06, load 9). 50 ms keeps a reading's wait well inside the
            # 100 ms budget for less than a tenth of a core (Kafka itself answers when data arrives)
            "fetch.wait.max.ms": LIVE_FETCH_WAIT_MS if self._tail else 500,
            **self._add_config,
        }
        return _KafkaReadingsPartition(
            step_id, config, topic, int(idx), self._starting_offset, resume_state, self._batch_size,
            self._poll_interval_s, timed=self._tail,
        )


class _KafkaReadingsPartition(_KafkaSourcePartition):
    """Bytewax's partition (assign, offset snapshot, lag gauge) with a batching, never blocking `next_batch`.

    `consume` only takes what librdkafka has already fetched (its fetcher runs on its own threads). A
    full batch means the partition is behind: it is polled again at once. Otherwise it is polled again
    `poll_interval_s` later, while the worker runs the other steps or sleeps.
    """

    def __init__(self, step_id: str, config: dict[str, Any], topic: str, part_idx: int, starting_offset: int,
                 resume_state: int | None, batch_size: int, poll_interval_s: float, *, timed: bool = True) -> None:
        super().__init__(step_id, config, topic, part_idx, starting_offset, resume_state, batch_size, True)
        self._timed = timed  # broker -> source is a live figure: a backfill reads messages sent long ago
        self._poll_interval = timedelta(seconds=poll_interval_s)
        self._awake: datetime | None = None
        self._polled = time.time()  # when the previous poll ended (wall s): `latency.source_poll_gap`
        self._origin = f"kafka:{topic}/{part_idx}/"
        if resume_state is not None:  # a resumed run: what a crash costs is the distance to here
            log.info("kafka %s/%d resumes at offset %d", topic, part_idx, self._offset)

    def next_batch(self) -> list[RawMessages]:  # type: ignore[override]  # batches, not the base's messages
        if self._eof:
            raise StopIteration()
        msgs = self._consumer.consume(self._batch_size, 0)
        polled, self._polled = self._polled, time.time()
        behind = len(msgs) >= self._batch_size
        self._awake = None if behind else datetime.now(timezone.utc) + self._poll_interval
        payloads: list[bytes] = []
        keys: list[str | None] = []
        origins: list[str] = []
        stamps: list[int] = []
        now = int(self._polled * 1000)  # the messages' wall time of arrival: they are emitted now
        origin = self._origin
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() == ConfluentKafkaError._PARTITION_EOF:
                    self._eof = True  # emit this batch; stop at the next call
                    break
                raise KafkaSourceError(
                    f"consuming {self._topic}/{self._part_idx} near offset {self._offset}: "
                    f"{err.name()}: {err.str()} (fatal={err.fatal()}, retriable={err.retriable()})"
                )
            payloads.append(m.value() or b"")
            key = m.key()
            keys.append(None if key is None else key.decode("utf-8", "replace"))
            offset = cast(int, m.offset())  # a consumed message has one
            origins.append(origin + str(offset))
            kind, ts = m.timestamp()
            stamps.append(ts if kind else now)
        if not payloads:
            return []
        self._offset = offset + 1  # resume after the last message emitted
        if self._timed:
            latency.received(stamps, now / 1000, polled)
        log.debug("kafka %s/%d read to offset %d", self._topic, self._part_idx, self._offset)
        return [RawMessages(tuple(payloads), tuple(keys), tuple(origins), tuple(stamps))]

    def next_awake(self) -> datetime | None:
        return self._awake
