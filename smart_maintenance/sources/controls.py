"""The control input: review decisions, completed maintenance and planners' work-order changes, fed back
into the running flow.

Items are `(asset_id, control)` with `control` a `ReviewDecision`, a
`MaintenanceRecord` or a `WorkOrderChange`, read from PostgreSQL's
`review_decisions`, `maintenance_log` and `work_order_updates` in `seq` order
by one partition, `"controls"`, whose snapshot is the last seqs emitted: a
resumed flow reads on after them (at-least-once: what was emitted after the
snapshot comes again; a snapshot from before work-order changes reached the
flow reads them all).

`live=True` polls every `poll_s` seconds forever (Bytewax sleeps until
`next_awake`, so an idle source costs nothing); `live=False` reads what is
there and ends, as a backfill replay needs.

Completion records may also come from a Kafka topic (`kafka_topic`, off
unless `kafka.maintenance_topic` is set). Its messages (JSON objects, see
`MaintenanceRecord.from_dict`) must be signed with a key of
`kafka.maintenance_keys` (headers `sm-key-id`, `sm-signature`: see
`operators/control_auth.py` and docs/controls.md); an unsigned or badly
signed one is a dead letter (`unsigned_control`, `unknown_key`,
`bad_signature`). The record's `source`, its audit trail, is the verified
origin `kafka:<topic> key=<key id>`, never a field of the message. Good
ones are stored in
`maintenance_log` and reach the flow through the `"controls"` partition like
every other record, so each is logged and applied once whatever path it took.
Live, one partition per Kafka partition stores them as they come (snapshot:
the next offset); not live, the topic is read to its end into the log before
the tables are read. A message that is not a usable record is dead-lettered
in PostgreSQL (`dead_letters`, reason `bad_maintenance`) and logged; it never
stops the flow. A topic that does not exist when the source starts is logged
as a warning and left out (records published to it once it exists are read
from its start by the next run). Consumer errors that the client recovers
from by itself (a broker restarting, a lost connection) are logged and
reading goes on; only fatal ones, and a topic that vanishes during a
backfill, stop the flow.

Completed work may also be read back from a CMMS (`cmms.completions.path`, see docs/cmms.md): live, a
`"cmms"` partition asks every `cmms.completions.poll_s` and stores what it gets in `maintenance_log`
(origin `cmms:<host>`; one record per work order, so a completion read again is logged once); not live,
the CMMS is asked once before the tables are read. A CMMS that cannot be reached is logged as a warning
and asked again at the next poll; it never stops the flow.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, cast

import orjson
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from confluent_kafka import KafkaError as ConfluentKafkaError
from confluent_kafka.admin import AdminClient

from smart_maintenance.config.settings import Settings
from smart_maintenance.connectors.kafka.config import kafka_config
from smart_maintenance.connectors.postgres.server import resolve_dsn
from smart_maintenance.connectors.postgres.store import LoopStore
from smart_maintenance.operators.control_auth import Rejected, verify
from smart_maintenance.operators.controls import Control, ControlError, MaintenanceRecord
from smart_maintenance.operators.records import Invalid

__all__ = ["CMMS_PART", "CONTROLS_PART", "ControlSource", "ControlSourceError", "parse_maintenance_message",
           "sync_cmms"]

log = logging.getLogger(__name__)

CONTROLS_PART = "controls"
CMMS_PART = "cmms"
_KAFKA_PREFIX = "maintenance-"


class ControlSourceError(RuntimeError):
    """The maintenance topic cannot be read (unreachable brokers, a fatal consume error)."""


_MISSING = (ConfluentKafkaError.UNKNOWN_TOPIC_OR_PART, ConfluentKafkaError._UNKNOWN_TOPIC,
            ConfluentKafkaError._UNKNOWN_PARTITION)


_MAX_RAW = 4096  # characters of a rejected message kept in its dead letter


def parse_maintenance_message(payload: bytes | None, origin: str, *, topic: str = "maintenance",
                              keys: Mapping[str, bytes] | None = None,
                              headers: Sequence[tuple[str, bytes | str | None]] | None = None,
                              ) -> MaintenanceRecord | Invalid:
    """One Kafka message as a maintenance record, or a dead letter saying why not.

    `keys` are the HMAC keys by id; a message must carry a valid signature
    made with one of them (with `keys=None`, a test of the record format
    alone, none is asked for and the origin is `kafka:<topic>`).

    >>> parse_maintenance_message(b'{"asset_id": "p1", "completed_at": "2026-01-05T10:00:00Z"}', "k").outcome
    'repaired'
    >>> parse_maintenance_message(b'{"asset_id": "p1"}', "k").detail
    'completed_at is missing or not a time: None'
    >>> parse_maintenance_message(b'{"asset_id": "p1"}', "k", keys={"ops": b"k" * 32}).reason
    'unsigned_control'
    """
    raw = (payload or b"").decode("utf-8", "replace")[:_MAX_RAW]
    source = f"kafka:{topic}"
    if keys is not None:
        verified = verify(keys, headers, payload)
        if isinstance(verified, Rejected):
            return Invalid(verified.reason, verified.detail, raw, origin)
        source = f"kafka:{topic} key={verified}"
    try:
        doc = orjson.loads(payload or b"")
        return MaintenanceRecord.from_dict(doc, source=source)
    except orjson.JSONDecodeError as e:
        return Invalid("bad_maintenance", f"not JSON: {e}", raw, origin)
    except ControlError as e:
        return Invalid("bad_maintenance", str(e), raw, origin)
    except Exception as e:  # noqa: BLE001 - no message may stop the flow: a bug on odd input is a dead letter
        return Invalid("unparseable", f"{type(e).__name__} while decoding the maintenance record", raw, origin)


class ControlSource(FixedPartitionedSource[tuple[str, Control], Any]):
    """Review decisions and maintenance records as `(asset_id, control)`, in the order they were recorded.

    Without recovery state the source starts at the first control ever
    stored (`from_start=True`: a new job learns every past decision) or
    after the last one (`from_start=False`: only what is decided from now
    on). Nothing connects until the flow builds the partitions.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        live: bool,
        poll_s: float = 1.0,
        batch_size: int = 500,
        kafka_topic: str | None = None,
        kafka_timeout_s: float = 30.0,
        from_start: bool = True,
        until: datetime | None = None,
    ) -> None:
        if not poll_s > 0:
            raise ValueError(f"poll_s must be positive, got {poll_s}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if kafka_timeout_s <= 0:
            raise ValueError(f"kafka_timeout_s must be positive, got {kafka_timeout_s}")
        self._settings = settings
        self.live = live
        self._poll_s = float(poll_s)
        self._batch_size = batch_size
        self._topic = kafka_topic
        self._kafka_timeout_s = kafka_timeout_s
        self._from_start = from_start
        self._keys = {k: v.get_secret_value().encode() for k, v in settings.kafka.maintenance_keys.items()}
        if kafka_topic is not None and not self._keys:
            raise ValueError("a maintenance topic needs kafka.maintenance_keys: its messages must be signed")
        self._until = until  # live: stop polling then (a paced run of finite length would otherwise never end)

    def list_parts(self) -> list[str]:
        parts = [CONTROLS_PART]
        if self.live and _reads_cmms(self._settings):
            parts.append(CMMS_PART)
        if self._topic is not None and self.live:
            parts += [f"{_KAFKA_PREFIX}{i}-{self._topic}" for i in self._kafka_partitions()]
        return parts

    def _store(self) -> LoopStore:
        pg = self._settings.postgres
        # live, ride out a database outage as the sinks do; a backfill fails fast
        return LoopStore(resolve_dsn(self._settings), pg.schema_name, outage_s=pg.outage_s if self.live else None)

    def build_part(self, step_id: str, for_part: str, resume_state: Any) -> StatefulSourcePartition[Any, Any]:
        if for_part == CONTROLS_PART:
            store = self._store()
            if self._topic is not None and not self.live:
                self._drain_topic(store)
            if not self.live and _reads_cmms(self._settings):
                sync_cmms(self._settings, store)
            if resume_state is not None:
                seqs = (*tuple(resume_state), 0)[:3]  # an older snapshot has two seqs
            else:
                seqs = (0, 0, 0) if self._from_start else store.latest_seqs()
            return _ControlsPartition(store, seqs, self.live, self._poll_s, self._batch_size, self._until)
        if for_part == CMMS_PART:
            return _CmmsPartition(self._settings, self._store(), self._until)
        if not for_part.startswith(_KAFKA_PREFIX):
            raise ControlSourceError(f"unknown part {for_part!r} (recovery state from another source?)")
        idx, topic = for_part[len(_KAFKA_PREFIX):].split("-", 1)
        if topic != self._topic:
            raise ControlSourceError(f"recovery state is for topic {topic!r}, this source reads {self._topic!r}")
        offset = OFFSET_BEGINNING if resume_state is None else int(resume_state)
        consumer = self._consumer([TopicPartition(topic, int(idx), offset)], eof=False)
        return _MaintenanceTopicPartition(self._store(), consumer, topic, int(idx), offset, self._poll_s,
                                          self._batch_size, self._keys)

    # -- Kafka ------------------------------------------------------------------------

    def _config(self) -> dict[str, Any]:
        config: dict[str, Any] = kafka_config(self._settings)
        config.setdefault("client.id", "smart-maintenance-controls")
        return config

    def _consumer(self, assignment: list[TopicPartition], *, eof: bool) -> Consumer:
        consumer = Consumer({
            "group.id": "BYTEWAX_IGNORED",  # no group: offsets live in the snapshots
            "enable.auto.commit": "false",
            "enable.partition.eof": str(eof).lower(),
            **self._config(),
        })
        consumer.assign(assignment)
        return consumer

    def _kafka_partitions(self) -> list[int]:
        """The topic's partitions; none (and a warning) when the topic does not exist."""
        # an admin client is a producer to librdkafka, which asks brokers to create a topic it looks up
        admin = AdminClient({**self._config(), "allow.auto.create.topics": "false"})
        try:
            meta = admin.list_topics(self._topic, timeout=self._kafka_timeout_s)
        except KafkaException as e:
            raise ControlSourceError(f"cannot list maintenance topic {self._topic!r}: {e}") from e
        topic = meta.topics.get(cast(str, self._topic))  # both callers have a topic
        if topic is None or (topic.error is not None and topic.error.code() in _MISSING):
            log.warning("maintenance topic %r does not exist: running without it (create it and restart the "
                        "flow to read maintenance records from Kafka)", self._topic)
            return []
        if topic.error is not None:  # e.g. not authorised: a configuration to fix, not an absence
            raise ControlSourceError(f"maintenance topic {self._topic!r} cannot be read ({topic.error.str()})")
        return sorted(topic.partitions)

    def _drain_topic(self, store: LoopStore) -> None:
        """Not live: read the whole topic into the maintenance log before the tables are read."""
        assert self._topic is not None  # noqa: S101 - invariant, narrows the type
        parts = self._kafka_partitions()
        if not parts:
            return
        consumer = self._consumer([TopicPartition(self._topic, i, OFFSET_BEGINNING) for i in parts], eof=True)
        done: set[int] = set()
        deadline = time.monotonic() + self._kafka_timeout_s
        try:
            while len(done) < len(parts):
                if time.monotonic() > deadline:
                    raise ControlSourceError(
                        f"maintenance topic {self._topic!r}: partitions {sorted(set(parts) - done)} did not reach "
                        f"their end within {self._kafka_timeout_s} s")
                msgs = consumer.consume(self._batch_size, 0.2)
                good = []
                for m in msgs:
                    kind = _classify(m, self._topic, tail=False)
                    if kind == "eof":
                        done.add(cast(int, m.partition()))  # a consumed message has its partition
                    elif kind == "message":
                        good.append(m)
                _store_messages(store, good, self._keys)
        finally:
            consumer.close()


def _classify(m: Any, topic: str, *, tail: bool) -> str:
    """`message`, `eof`, or `skip` (an error the client recovers from, logged); raises on a fatal error.

    A topic or partition that is not there stops a backfill (`tail=False`: it
    cannot reach the end) but not a live flow, which waits for it to return.
    """
    err = m.error()
    if err is None:
        return "message"
    if err.code() == ConfluentKafkaError._PARTITION_EOF:
        return "eof"
    where = f"maintenance topic {topic}/{m.partition()}"
    if err.fatal() or (not tail and err.code() in _MISSING):
        raise ControlSourceError(f"consuming {where}: {err.name()}: {err.str()}")
    log.warning("consuming %s: %s: %s (reading goes on)", where, err.name(), err.str())
    return "skip"


def _store_messages(store: LoopStore, msgs: list[Any], keys: Mapping[str, bytes]) -> int:
    """Verify and parse, log the good records, dead-letter the bad: the number of newly logged records."""
    records: list[MaintenanceRecord] = []
    bad: list[Invalid] = []
    for m in msgs:
        parsed = parse_maintenance_message(m.value(), f"kafka:{m.topic()}/{m.partition()}/{m.offset()}",
                                           topic=m.topic(), keys=keys, headers=m.headers())
        (records if isinstance(parsed, MaintenanceRecord) else bad).append(parsed)  # type: ignore[arg-type]
    for b in bad:
        log.warning("maintenance message %s dead-lettered: %s: %s", b.origin, b.reason, b.detail)
    store.store_dead_letters(bad)
    return store.store_maintenance(records) if records else 0


class _ControlsPartition(StatefulSourcePartition[tuple[str, Control], tuple[int, int, int]]):
    """Reads the control tables after the last seqs emitted."""

    def __init__(self, store: LoopStore, seqs: tuple[int, ...], live: bool, poll_s: float, batch_size: int,
                 until: datetime | None = None):
        self._store = store
        self._until = until
        self._decision_seq, self._maintenance_seq, self._change_seq = (int(x) for x in seqs)
        self._live = live
        self._poll = timedelta(seconds=poll_s)
        self._batch_size = batch_size
        self._awake: datetime | None = None

    def next_batch(self) -> list[tuple[str, Control]]:
        rows = self._store.controls_since(self._decision_seq, self._maintenance_seq, self._batch_size,
                                          change_seq=self._change_seq)
        if not rows and (not self._live or (self._until is not None and datetime.now(timezone.utc) >= self._until)):
            raise StopIteration()
        decisions = maintenance = changes = 0
        for kind, seq, _ in rows:
            if kind == "decision":
                self._decision_seq, decisions = max(self._decision_seq, seq), decisions + 1
            elif kind == "maintenance":
                self._maintenance_seq, maintenance = max(self._maintenance_seq, seq), maintenance + 1
            else:
                self._change_seq, changes = max(self._change_seq, seq), changes + 1
        more = max(decisions, maintenance, changes) >= self._batch_size  # a full page: read on at once
        self._awake = None if more or not self._live else datetime.now(timezone.utc) + self._poll
        return [(control.asset_id, control) for _, _, control in rows]

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> tuple[int, int, int]:
        return (self._decision_seq, self._maintenance_seq, self._change_seq)

    def close(self) -> None:
        self._store.close()


class _MaintenanceTopicPartition(StatefulSourcePartition[tuple[str, Control], int]):
    """One Kafka partition of the maintenance topic: stores records in the log; emits nothing itself."""

    def __init__(self, store: LoopStore, consumer: Consumer, topic: str, idx: int, offset: int, poll_s: float,
                 batch_size: int, keys: Mapping[str, bytes]):
        self._store, self._consumer, self._keys = store, consumer, keys
        self._topic, self._idx, self._offset = topic, idx, offset
        self._poll = timedelta(seconds=poll_s)
        self._batch_size = batch_size
        self._awake: datetime | None = None

    def next_batch(self) -> list[tuple[str, Control]]:
        msgs = [m for m in self._consumer.consume(self._batch_size, 0.001)
                if _classify(m, self._topic, tail=True) == "message"]
        if msgs:
            _store_messages(self._store, msgs, self._keys)
            self._offset = cast(int, msgs[-1].offset()) + 1  # a consumed message has its offset
        # an idle topic is polled every poll_s; a busy one at once
        self._awake = None if len(msgs) >= self._batch_size else datetime.now(timezone.utc) + self._poll
        return []

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> int:
        return self._offset

    def close(self) -> None:
        self._consumer.close()
        self._store.close()


# -- completions read back from a CMMS -----------------------------------------------------------------

def _reads_cmms(settings: Settings) -> bool:
    return settings.cmms.enabled and settings.cmms.completions.path is not None


def sync_cmms(settings: Settings, store: LoopStore, client: Any = None, seen: set[str] | None = None) -> int:
    """Ask the CMMS for completed work once; log the records, dead-letter the bad items: how many were new.

    A CMMS that cannot be asked is a warning (0 new), never an error: the next poll asks again. With
    `seen` (dead-letter ids already reported), a bad item read on every poll is logged once.
    """
    from smart_maintenance.connectors.cmms.client import CmmsError
    from smart_maintenance.connectors.cmms.source import read_completions

    try:
        records, bad = read_completions(settings, client)
    except CmmsError as e:
        log.warning("completed work not read from the CMMS %s: %s", settings.cmms.host, e)
        return 0
    for b in bad:
        if seen is None or b.dead_letter_id not in seen:
            log.warning("CMMS completion %s dead-lettered: %s: %s", b.origin, b.reason, b.detail)
    if seen is not None:
        if len(seen) > 10_000:
            seen.clear()
        seen.update(b.dead_letter_id for b in bad)
    store.store_dead_letters(bad)  # stored once each (by id), however often it is read
    new = store.store_maintenance(records) if records else 0
    if new:
        log.info("%d completion(s) read back from the CMMS %s", new, settings.cmms.host)
    return new


class _CmmsPartition(StatefulSourcePartition[tuple[str, Control], None]):
    """Asks the CMMS for completed work every `poll_s` and logs it; emits nothing itself (the controls part
    reads the log). One try per poll (the next poll is the retry), so a CMMS that is down holds the
    worker for one timeout at most."""

    def __init__(self, settings: Settings, store: LoopStore, until: datetime | None) -> None:
        from smart_maintenance.connectors.cmms.client import CmmsClient

        self._settings, self._store, self._until = settings, store, until
        cfg = settings.cmms
        self._client = CmmsClient(cfg.model_copy(update={"retry": cfg.retry.model_copy(update={"attempts": 1})}))
        self._seen: set[str] = set()
        self._poll = timedelta(seconds=settings.cmms.completions.poll_s)
        self._awake: datetime | None = None

    def next_batch(self) -> list[tuple[str, Control]]:
        now = datetime.now(timezone.utc)
        if self._until is not None and now >= self._until:
            raise StopIteration()
        sync_cmms(self._settings, self._store, self._client, self._seen)
        self._awake = datetime.now(timezone.utc) + self._poll
        return []

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> None:
        return None  # what was read is in the log; the next poll asks again

    def close(self) -> None:
        self._client.close()
        self._store.close()
