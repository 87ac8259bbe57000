"""The plant dataflow: sensor readings in; features, anomalies and alarms out.

Run it with Bytewax directly (settings from the environment / TOML file):

    python -m bytewax.run "smart_maintenance.dataflows.plant:build_flow()"
    python -m bytewax.run "smart_maintenance.dataflows.plant:build_flow()" -w 2

or through the CLI (`smart-maintenance run`, `smart-maintenance replay FILE`).

Readings move as per-asset micro-batches (columnar numpy arrays), not one
item per reading: every step below costs one Python call per batch.

Item shapes, step by step:
    read            Parsed | RawMessages       a batch from a source partition
    parse           Parsed                     good readings + rejects
    check           Parsed                     + non-finite / absurd / unknown rejects
    split_by_asset  (asset_id, AssetReadings)
    window          (asset_id, WindowOutput)   closed windows' features + late readings
    detect          (asset_id, Scored)
    validate        (asset_id, (asset_id, [Verdict]))
    track_alarms    (asset_id, Alarm)
Outputs: readings, features, anomalies, alarms, reviews, dead_letters.
"""

from __future__ import annotations

import threading
from functools import partial
from datetime import datetime, timedelta, timezone
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import FixedPartitionedSink, Sink

from smart_maintenance.config.registry import Registry, load_registry
from smart_maintenance.config.settings import Settings, load_settings
from smart_maintenance.dataflows.loop_steps import LoopSteps
from smart_maintenance.dataflows.steps import Steps
from smart_maintenance.logs import configure_logging
from smart_maintenance.metrics import serve_metrics
from smart_maintenance.operators.controls import Control
from smart_maintenance.operators.admission import quarantine_notification
from smart_maintenance.operators.notify import limit_channel
from smart_maintenance.operators.records import FeatureBatch
from smart_maintenance.stores.admission import Admission

STREAMS = (
    "readings", "features", "anomalies", "alarms", "predictions", "work_orders", "assignments",
    "notifications", "reviews", "maintenance_log", "threshold_changes", "dead_letters",
)

Outputs = Mapping[str, Sequence[Sink[Any]]]


def default_source(settings: Settings, registry: Registry) -> tuple[Source[Any], Registry]:
    """The source named by the settings, and the registry that goes with it."""
    if settings.source == "replay":
        from smart_maintenance.sources.replay import ReplaySource

        r = settings.replay
        source = ReplaySource(
            [str(p) for p in r.paths],
            fmt=r.format,
            time_col=r.time_col,
            asset_col=r.asset_col,
            asset=r.asset,
            sep=r.sep,
            chunk_rows=r.chunk_rows,
            speed=r.speed,
            progress=settings.progress,
        )
        return source, registry
    if settings.source == "mqtt":
        from smart_maintenance.connectors.mqtt.source import MqttSource

        return MqttSource(settings.mqtt), registry
    if settings.source == "kafka":
        from smart_maintenance.connectors.kafka.source import KafkaReadingsSource

        return KafkaReadingsSource(settings.kafka, tail=settings.kafka.tail), registry
    from smart_maintenance.sources.simulator import SimulatorSource

    plant = registry.with_simulated(settings.simulator.assets)
    return SimulatorSource(settings.simulator, plant), plant


class StaticControls:
    """Controls known when a finite run starts, by asset: loaded once per process, on first use (not at build)."""

    def __init__(self, *loaders: Callable[[], Sequence[Control]]) -> None:
        self._loaders = loaders
        self._by_asset: dict[str, list[Control]] | None = None
        self._lock = threading.Lock()

    def __call__(self, asset_id: str) -> list[Control]:
        with self._lock:
            if self._by_asset is None:
                by_asset: dict[str, list[Control]] = {}
                for load in self._loaders:
                    for c in load():
                        by_asset.setdefault(c.asset_id, []).append(c)
                self._by_asset = by_asset
            return list(self._by_asset.get(asset_id, ()))


def default_controls(settings: Settings, registry: Registry, *, live: bool,
                     stored: bool) -> tuple[Source[Any] | None, StaticControls | None]:
    """Where review decisions and maintenance records come from.

    Live: the control input polls PostgreSQL while the flow runs. A finite
    run (replay, simulator) reads them once, up front, so that each applies
    at its event time and a replay is repeatable: those stored in PostgreSQL
    (`stored`) and, for the simulator, its own maintenance log.
    """
    if live and stored:
        from smart_maintenance.sources.controls import ControlSource

        topic = settings.kafka.maintenance_topic if settings.source == "kafka" else None
        # a new live job takes what is decided and logged from now on (with --recovery it resumes from its
        # snapshot): re-applying last month's repairs would re-baseline detectors restored from data_dir/models
        return ControlSource(settings, live=True, kafka_topic=topic, from_start=False,
                             until=paced_run_end(settings)), None
    loaders: list[Callable[[], Sequence[Control]]] = []
    if stored:
        loaders.append(lambda: _stored_controls(settings))
    if settings.source == "simulator" and settings.simulator.maintenance_log and settings.simulator.duration_s:
        from smart_maintenance.sources.simulator import ground_truth, simulated_maintenance

        plant = registry
        loaders.append(lambda: simulated_maintenance(ground_truth(plant, settings.simulator)))
    return None, (StaticControls(*loaders) if loaders else None)


def default_admission(settings: Settings, registry: Registry, *, stored: bool, live: bool) -> Admission:
    """Registry assets are admitted; so are those admitted in PostgreSQL (`stored`), re-read live."""
    load = None
    if stored and settings.quarantine_unknown_assets:
        def load() -> set[str]:
            from smart_maintenance.connectors.postgres.admission import AdmissionStore
            from smart_maintenance.connectors.postgres.server import resolve_dsn

            with AdmissionStore(resolve_dsn(settings), settings.postgres.schema_name) as store:
                return store.admitted_ids()
    return Admission((a.asset_id for a in registry.assets), quarantine=settings.quarantine_unknown_assets,
                     load=load, refresh_s=settings.admission_refresh_s if live else None)


def paced_run_end(settings: Settings, now: datetime | None = None) -> datetime | None:
    """When a paced simulator run of finite length should be over (None: no end).

    Its control input stops polling then, so that the job ends: the planned
    wall time (duration / speed) plus a grace of a tenth of it, at least a
    minute, for a flow that falls behind its pace. Controls logged later are
    not applied by this run.

    >>> from smart_maintenance.config.settings import load_settings
    >>> t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    >>> paced_run_end(load_settings(simulator={"duration_s": 86_400, "speed": 360}), t0) - t0
    datetime.timedelta(seconds=300)
    """
    sim = settings.simulator
    if settings.source != "simulator" or not sim.duration_s or not sim.speed > 0:
        return None
    planned = sim.duration_s / sim.speed
    return (now or datetime.now(timezone.utc)) + timedelta(seconds=planned + max(60.0, planned / 10))


def _stored_controls(settings: Settings) -> list[Control]:
    from smart_maintenance.connectors.postgres.server import resolve_dsn
    from smart_maintenance.connectors.postgres.store import LoopStore

    with LoopStore(resolve_dsn(settings), settings.postgres.schema_name) as store:
        return [c for _, _, c in store.controls_since(0, 0, limit=1_000_000)]


def default_outputs(settings: Settings) -> dict[str, list[Sink[Any]]]:
    """PostgreSQL for every stored stream, JSONL files with `out_dir`, alarms on the console.

    A flow that reads Kafka also writes its alarms and dead letters to Kafka topics.
    """
    from smart_maintenance.sinks.console import ConsoleAlarmSink
    from smart_maintenance.sinks.files import JsonlSink
    from smart_maintenance.sinks.notify import NotificationSink
    from smart_maintenance.connectors.postgres.bulk import PostgresBulkSink
    from smart_maintenance.connectors.postgres.loop import LOOP_STREAMS, LoopSink
    from smart_maintenance.connectors.postgres.sink import PostgresSink

    outputs: dict[str, list[Sink[Any]]] = {s: [] for s in STREAMS}
    for stream in ("anomalies", "alarms", "dead_letters"):
        outputs[stream].append(PostgresSink(settings, stream))
    for stream in LOOP_STREAMS:
        outputs[stream].append(LoopSink(settings, stream))
    if settings.postgres.store_readings:
        outputs["readings"].append(PostgresBulkSink(settings, "readings"))
    if settings.postgres.store_features:
        outputs["features"].append(PostgresBulkSink(settings, "features"))
    if settings.out_dir is not None:
        for stream in STREAMS:
            outputs[stream].append(JsonlSink(settings.out_dir, stream))
    if settings.source == "kafka":
        from smart_maintenance.connectors.kafka.sink import KafkaRecordsSink

        for stream in ("alarms", "dead_letters"):
            outputs[stream].append(KafkaRecordsSink(settings.kafka, stream))
    outputs["notifications"].append(NotificationSink(settings))
    if settings.console and "console" not in settings.notify.channels:  # else the console channel prints them
        outputs["alarms"].append(ConsoleAlarmSink())
    return outputs


def _emit(flow_step: str, stream: Any, sinks: Sequence[Sink[Any]], keyed: Any = None) -> None:
    """Send a stream to its sinks; partitioned sinks take the `(asset_id, item)` form of it (or a keyed copy)."""
    for i, sink in enumerate(sinks):
        if isinstance(sink, FixedPartitionedSink):
            if keyed is None:  # a sink with one partition (a JSONL file) does not care about the key
                keyed = op.key_on(f"{flow_step}_keyed", stream, lambda _: "")
            op.output(f"{flow_step}_{i}", keyed, sink)
        else:
            op.output(f"{flow_step}_{i}", stream, sink)


def _maintenance_loop(settings: Settings, loop: LoopSteps, tracked: Any, *, recall: bool,
                      admitted: Callable[[str], bool] = lambda _: True) -> tuple[Any, Any, Any]:
    """Time to failure -> work orders -> plan: the `predictions`, `work_orders` and `assignments` streams.

    Each stage can be switched off (`prediction.enabled`, `work.enabled`); its streams are then None.
    Only admitted assets make work orders (quarantine: `operators/admission.py`).
    """
    predictions = None
    work_inputs = tracked  # (asset_id, Tracked)
    if settings.prediction.enabled:
        keyed_predictions = op.stateful("predict_ttf", tracked, loop.predict_logic)  # (asset_id, Prediction)
        predictions = op.key_rm("prediction_items", keyed_predictions)
        work_inputs = op.merge("work_inputs", tracked, keyed_predictions)
    if not settings.work.enabled:
        return predictions, None, None
    work_inputs = op.filter("admitted_work", work_inputs, lambda kv: admitted(kv[0]))
    work = op.stateful_map("plan_work", work_inputs, loop.plan_work)  # (asset_id, WorkOut)
    if settings.incidents.enabled and recall:  # closed work is remembered; new work recalls the like of it
        if not loop.live:  # a replay's first closures come seconds in: load the model on another thread from now
            loop.incident_memory()  # (live, it loads on the first work order, hours before a closure needs it)
        work = op.map_value("recall_incidents", work, loop.recall_incidents)
    work_changes = op.flat_map("work_changes", work, lambda kv: kv[1].orders)  # WorkOrder
    planned = op.stateful("schedule", op.key_on("plant", work_changes, lambda _: "plant"), loop.schedule_logic)
    work_orders = op.filter_map("work_orders", planned, lambda kv: kv[1].work_order)
    assignments = op.filter_map("assignments", planned, lambda kv: kv[1] if kv[1].work_order is None else None)
    return predictions, work_orders, assignments


def build_flow(
    settings: Settings | None = None,
    *,
    source: Source[Any] | None = None,
    sinks: Outputs | None = None,
    registry: Registry | None = None,
    live: bool | None = None,
    control_source: Source[Any] | None = None,
    static_controls: Callable[[str], list[Control]] | None = None,
) -> Dataflow:
    """The whole job as one dataflow. Nothing connects until the flow runs."""
    settings = settings or load_settings()
    configure_logging(settings.log_level, settings.log_format)
    if settings.metrics_port is not None:
        serve_metrics(settings.metrics_port)
    registry = registry or load_registry(settings.registry)
    if source is None:
        source, registry = default_source(settings, registry)
    outputs = default_outputs(settings) if sinks is None else sinks
    if live is None:
        live = bool(getattr(source, "live", False))
    if control_source is None and static_controls is None:
        control_source, static_controls = default_controls(settings, registry, live=live, stored=sinks is None)
    steps = Steps(settings, registry, live=live, static_controls=static_controls)
    loop = LoopSteps(settings, registry, steps.profile, live=live)

    flow = Dataflow("smart_maintenance")
    batches = op.input("read", flow, source)
    parsed = op.map("parse", batches, steps.parse)
    checked = op.map("check", parsed, steps.check)
    rejects = op.flat_map("rejects", checked, lambda p: p.rejects)
    readings = op.filter_map("readings", checked, lambda p: p.readings if len(p.readings) else None)
    by_asset = op.flat_map("split_by_asset", readings, steps.split)  # (asset_id, AssetReadings)
    window_inputs = by_asset
    if control_source is not None:  # + (asset_id, ReviewDecision | MaintenanceRecord)
        window_inputs = op.merge("with_controls", by_asset, op.input("read_controls", flow, control_source))
    windows = op.stateful("window", window_inputs, steps.window_logic)
    late = op.flat_map("late", windows, lambda kv: kv[1].late)
    # (asset_id, FeatureBatch | Control): a control sits between the windows before and after its time
    closed = op.filter_map_value("closed", windows, lambda w: w.closed if w.closed is not None else w.control)
    closed_features = op.filter_value("closed_features", closed, lambda x: isinstance(x, FeatureBatch))
    scored = op.stateful_map("detect", closed, steps.detect)
    judged = op.stateful_map("validate", scored, steps.validate)
    tracked = op.stateful_map("track_alarms", judged, steps.track)
    alarms = op.flat_map_value("alarms", tracked, lambda t: t.alarms)
    anomalies = op.flat_map("anomalies", judged, lambda kv: [v.anomaly for v in kv[1].verdicts if v.anomaly])
    reviews = op.flat_map("route_review", tracked, lambda kv: kv[1].reviews)  # needs_review, outside alarms
    dead_letters = op.merge("dead_letters", rejects, late)
    threshold_changes = op.flat_map("threshold_changes", tracked, lambda kv: kv[1].threshold_changes)
    maintenance = op.filter_map("maintenance", tracked, lambda kv: kv[1].maintenance)

    # the maintenance loop: time to failure -> work orders -> plan
    admitted = default_admission(settings, registry, stored=sinks is None, live=live)
    predictions, work_orders, assignments = _maintenance_loop(settings, loop, tracked, recall=sinks is None,
                                                              admitted=admitted)
    if work_orders is not None:
        op.inspect("count_work_orders", work_orders, steps.count_work_order)

    # notifications: alarms, reviews needed and planned work, deduplicated and rate limited per asset
    notify_events = op.merge(
        "notify_events",
        tracked,  # (asset_id, Tracked): the asset's alarm changes and reviews needed, in their order
        *([] if work_orders is None else  # (asset_id, WorkOrder)
          [op.key_on("work_orders_by_asset", work_orders, lambda w: w.asset_id)]),
    )
    notifications = op.flat_map_value("notifications", op.stateful_map(
        "plan_notifications", notify_events, steps.plan_notifications), lambda notes: notes)

    op.inspect("count_anomalies", anomalies, steps.count_anomaly)
    op.inspect("count_dead_letters", dead_letters, steps.count_dead_letter)

    _emit("store_readings", readings, outputs.get("readings", ()), keyed=by_asset)
    _emit("store_features", op.map("features", closed_features, lambda kv: kv[1]), outputs.get("features", ()),
          keyed=closed_features)
    _emit("store_anomalies", anomalies, outputs.get("anomalies", ()))
    _emit("queue_reviews", reviews, outputs.get("reviews", ()))
    _emit("store_alarms", op.key_rm("alarm_items", alarms), outputs.get("alarms", ()))
    _emit("store_dead_letters", dead_letters, outputs.get("dead_letters", ()))
    _emit("store_threshold_changes", threshold_changes, outputs.get("threshold_changes", ()))
    _emit("store_maintenance", maintenance, outputs.get("maintenance_log", ()))
    for stream, items in (("predictions", predictions), ("work_orders", work_orders), ("assignments", assignments)):
        if items is not None:
            _emit(f"store_{stream}", items, outputs.get(stream, ()))
    # ... and per channel across all assets, so that many (or invented) asset ids cannot flood a channel
    unquarantined = op.map("quarantine", op.key_rm("notification_items", notifications),
                           lambda n: quarantine_notification(n, admitted=admitted(n.asset_id)))
    by_channel = op.key_on("notifications_by_channel", unquarantined, lambda n: n.channel)
    limited = op.stateful_map("limit_per_channel", by_channel,
                              partial(limit_channel, per_hour=settings.notify.channel_rate_limit_per_hour))
    _emit("notify", op.key_rm("limited_notifications", limited), outputs.get("notifications", ()))
    return flow
