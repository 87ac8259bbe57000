"""The source registry: a source's name -> its settings section, how to build it, whether it runs live.

Adding a source is one connector (or a module in `sources/`) plus one entry
here: `settings.source = "<name>"` then selects it, `smart-maintenance run
--source <name>` offers it, and `build_flow()` builds it. Factories import
their module when called, so a flow never loads a client it does not use.

>>> sorted(SOURCES)
['api', 'kafka', 'mqtt', 'opcua', 'replay', 'simulator', 'sparkplug']
>>> from smart_maintenance.config.settings import load_settings
>>> SOURCES["simulator"].live(load_settings(simulator={"speed": 0}))
False
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bytewax.inputs import Source

from smart_maintenance.config.registry import Registry
from smart_maintenance.config.settings import Settings

Built = tuple[Source[Any], Registry]


@dataclass(frozen=True)
class SourceEntry:
    """How one kind of source is made from its own settings section."""

    section: str  # the settings section its factory reads
    build: Callable[[Settings, Registry], Built]  # the source, and the registry that goes with it
    live: Callable[[Settings], bool]  # runs on wall time (idle windows close, controls are polled)
    where: Callable[[Settings], str]  # what it reads, for people (never with credentials)
    run_option: bool = True  # offered by `smart-maintenance run --source` (replay has its own command)


def _simulator(settings: Settings, registry: Registry) -> Built:
    from smart_maintenance.sources.simulator import SimulatorSource

    plant = registry.with_simulated(settings.simulator.assets)
    return SimulatorSource(settings.simulator, plant), plant


def _replay(settings: Settings, registry: Registry) -> Built:
    from smart_maintenance.sources.replay import ReplaySource

    r = settings.replay
    return ReplaySource([str(p) for p in r.paths], fmt=r.format, time_col=r.time_col, asset_col=r.asset_col,
                        asset=r.asset, sep=r.sep, chunk_rows=r.chunk_rows, speed=r.speed,
                        progress=settings.progress, timezone=r.timezone), registry


def _mqtt(settings: Settings, registry: Registry) -> Built:
    from paho.mqtt.client import topic_matches_sub

    from smart_maintenance.connectors.mqtt.source import MqttSource

    if "mqtt" in settings.notify.channels:  # the flow would read its own notifications back as readings
        prefix = settings.notify.mqtt.topic or settings.mqtt.alarm_topic
        sample = f"{prefix}/site/asset"
        inside = [sub for sub in settings.mqtt.topics if topic_matches_sub(sub, sample)]
        if inside:
            raise ValueError(f"MQTT notifications go to {prefix}/..., which the readings subscription "
                             f"{', '.join(inside)} also receives: move notify.mqtt.topic (or mqtt.alarm_topic) "
                             "outside it")

    return MqttSource(settings.mqtt), registry


def _kafka(settings: Settings, registry: Registry) -> Built:
    from smart_maintenance.connectors.kafka.source import KafkaReadingsSource

    return KafkaReadingsSource(settings.kafka, tail=settings.kafka.tail,
                               poll_interval_s=settings.kafka.poll_interval_ms / 1000), registry


def _api(settings: Settings, registry: Registry) -> Built:
    from smart_maintenance.connectors.postgres.server import resolve_dsn
    from smart_maintenance.sources.api_ingest import ApiIngestSource

    return ApiIngestSource(resolve_dsn(settings.postgres), settings.postgres.schema_name), registry


def _sparkplug(settings: Settings, registry: Registry) -> Built:
    from smart_maintenance.connectors.sparkplug.source import SparkplugSource

    return SparkplugSource(settings.mqtt, settings.sparkplug), registry


def _opcua(settings: Settings, registry: Registry) -> Built:
    from smart_maintenance.connectors.opcua.source import OpcUaSource

    return OpcUaSource(settings.opcua), registry


SOURCES: dict[str, SourceEntry] = {
    "simulator": SourceEntry("simulator", _simulator, live=lambda s: s.simulator.speed > 0,
                             where=lambda s: f"the simulated plant ({s.simulator.assets} assets)"),
    "replay": SourceEntry("replay", _replay, live=lambda s: False,
                          where=lambda s: f"{len(s.replay.paths)} file(s)", run_option=False),
    "mqtt": SourceEntry("mqtt", _mqtt, live=lambda s: True, where=lambda s: f"mqtt at {s.mqtt.host}:{s.mqtt.port}"),
    "kafka": SourceEntry("kafka", _kafka, live=lambda s: s.kafka.tail,
                         where=lambda s: f"kafka at {','.join(s.kafka.brokers)}"),
    "api": SourceEntry("postgres", _api, live=lambda s: True,
                       where=lambda s: "readings POSTed to the HTTP API (its ingest table)"),
    "sparkplug": SourceEntry("sparkplug", _sparkplug, live=lambda s: True,
                             where=lambda s: f"sparkplug B at {s.mqtt.host}:{s.mqtt.port}"),
    "opcua": SourceEntry("opcua", _opcua, live=lambda s: True, where=lambda s: f"opc ua at {s.opcua.endpoint}"),
}


def source_entry(name: str) -> SourceEntry:
    """The registry entry for a source name; a clear error for an unknown one."""
    try:
        return SOURCES[name]
    except KeyError:
        raise ValueError(f"unknown source {name!r}: known sources are {', '.join(sorted(SOURCES))}") from None


def build_source(settings: Settings, registry: Registry) -> Built:
    """The source named by `settings.source`, and the registry that goes with it."""
    return source_entry(settings.source).build(settings, registry)
