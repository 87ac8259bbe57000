"""The sinks each stream of the catalogue goes to, and how a stream is sent to them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import bytewax.operators as op
from bytewax.outputs import FixedPartitionedSink, Sink

from smart_maintenance.config.settings import Settings
from smart_maintenance.dataflows.catalogue import STREAMS
from smart_maintenance.recovery import recovery_on


def default_outputs(settings: Settings) -> dict[str, list[Sink[Any]]]:
    """PostgreSQL for every stored stream, JSONL files with `out_dir`, alarms on the console.

    Readings and features go to PostgreSQL from the worker that has them (`PostgresLocalSink`: nothing crosses
    between processes) when the flow runs without recovery; with recovery through `PostgresBulkSink`, whose
    snapshots hold each epoch until its writes are stored (at-least-once). Decided when the flow is built:
    `recovery_on()` is known by then (`smart-maintenance run` declares it; `python -m bytewax.run` by its
    arguments).

    A flow that reads Kafka also publishes the streams of `kafka.outputs` to their topics.
    """
    from smart_maintenance.connectors.postgres.bulk import PostgresBulkSink, PostgresLocalSink
    from smart_maintenance.connectors.postgres.loop import LOOP_STREAMS, LoopSink
    from smart_maintenance.sinks.console import ConsoleAlarmSink
    from smart_maintenance.sinks.files import JsonlSink
    from smart_maintenance.sinks.notify import NotificationSink

    outputs: dict[str, list[Sink[Any]]] = {s: [] for s in STREAMS}
    for stream in ("anomalies", "alarms", "dead_letters"):  # off the flow's thread, one writer each
        outputs[stream].append(PostgresBulkSink(settings.postgres, stream, parts=1))
    for stream in LOOP_STREAMS:
        outputs[stream].append(LoopSink(settings.postgres, stream))
    bulk = PostgresBulkSink if recovery_on() else PostgresLocalSink
    if settings.postgres.store_readings:
        outputs["readings"].append(bulk(settings.postgres, "readings"))
    if settings.postgres.store_features:
        outputs["features"].append(bulk(settings.postgres, "features"))
    if settings.out_dir is not None:
        for stream in STREAMS:
            outputs[stream].append(JsonlSink(settings.out_dir, stream))
    if settings.source == "kafka":
        from smart_maintenance.connectors.kafka.sink import KafkaRecordsSink

        for stream in settings.kafka.outputs:
            outputs[stream].append(KafkaRecordsSink(settings.kafka, stream))
    if settings.cmms.enabled:  # work orders pushed to the CMMS; what it refuses becomes a dead letter
        from smart_maintenance.connectors.cmms.sink import CmmsSink

        outputs["work_orders"].append(CmmsSink(settings, dead_letters=_postgres_dead_letters(settings)))
    outputs["notifications"].append(NotificationSink(settings))
    if settings.console and "console" not in settings.notify.channels:  # else the console channel prints them
        outputs["alarms"].append(ConsoleAlarmSink())
    return outputs


def _postgres_dead_letters(settings: Settings) -> Callable[[Sequence[Any]], Any]:
    """A writer of dead letters into the job's PostgreSQL, for sinks that meet them off the flow's path."""
    def store(invalid: Sequence[Any]) -> int:
        from smart_maintenance.connectors.postgres.server import resolve_dsn
        from smart_maintenance.connectors.postgres.store import LoopStore

        with LoopStore(resolve_dsn(settings), settings.postgres.schema_name) as s:
            return s.store_dead_letters(list(invalid))
    return store


def emit(flow_step: str, stream: Any, sinks: Sequence[Sink[Any]], keyed: Any = None) -> None:
    """Send a stream to its sinks; partitioned sinks take the `(asset_id, item)` form of it (or a keyed copy), or
    key whole items themselves (`batches()`: the readings sink, one item per partition and batch)."""
    for i, sink in enumerate(sinks):
        batches = getattr(sink, "batches", lambda: None)()
        if batches is not None:  # the sink keys whole batches by partition itself: not one item per asset
            op.output(f"{flow_step}_{i}", op.flat_map(f"{flow_step}_{i}_by_part", stream, batches), sink)
        elif isinstance(sink, FixedPartitionedSink):
            if keyed is None:  # a sink with one partition (a JSONL file) does not care about the key
                keyed = op.key_on(f"{flow_step}_keyed", stream, lambda _: "")
            op.output(f"{flow_step}_{i}", keyed, sink)
        else:
            op.output(f"{flow_step}_{i}", stream, sink)
