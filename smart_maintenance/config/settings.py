"""One frozen settings tree: arguments > environment > .env > TOML file > defaults.

Environment variables are `SMART_MAINTENANCE__<SECTION>__<FIELD>`, for example
`SMART_MAINTENANCE__POSTGRES__DSN=postgresql://...`. The TOML file is the one
named by `SMART_MAINTENANCE_CONFIG`, else `smart-maintenance.toml` in the
working directory when it exists. Every default runs on one laptop with no
service installed (PostgreSQL is then an embedded server in `data_dir`).
"""

from __future__ import annotations

import os
import re
import tomllib
import warnings
from collections.abc import Iterator
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from smart_maintenance.config.cmms_settings import CmmsSettings
from smart_maintenance.config.durations import Duration
from smart_maintenance.config.incident_settings import IncidentSettings
from smart_maintenance.config.notify_settings import NotifySettings
from smart_maintenance.operators.detect.detectors import DetectConfig
from smart_maintenance.operators.ingest.parse import DEFAULT_TOPIC_TEMPLATE, topic_pattern
from smart_maintenance.operators.ingest.windows import WindowConfig
from smart_maintenance.operators.judge.alarms import AlarmConfig
from smart_maintenance.operators.judge.validation import ValidationConfig
from smart_maintenance.operators.plan.dispatch import DispatchConfig
from smart_maintenance.operators.plan.work_orders import WorkOrderConfig
from smart_maintenance.operators.predict.requests import PredictConfig
from smart_maintenance.operators.predict.ttf import HOUR_MS

CONFIG_ENV = "SMART_MAINTENANCE_CONFIG"
_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_SECRET_WORDS = ("password", "secret", "token", "key")
DEFAULT_CONFIG_FILE = "smart-maintenance.toml"


def default_of(config: type, name: str) -> Any:
    """The default of one field of an operator's config dataclass: the one place a default is written.

    >>> default_of(AlarmConfig, "clear_windows")
    3
    """
    for f in fields(config):
        if f.name == name:
            if f.default is MISSING:
                raise TypeError(f"{config.__name__}.{name} has no default")
            return f.default
    raise AttributeError(f"{config.__name__} has no field {name!r}")


_W, _D, _V, _A, _P, _WO, _DP = (WindowConfig, DetectConfig, ValidationConfig, AlarmConfig, PredictConfig,
                                WorkOrderConfig, DispatchConfig)


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class PostgresSettings(_Section):
    dsn: SecretStr | None = Field(
        default=None,
        description="libpq DSN of an external server; unset = embedded server in data_dir/pgdata",
    )
    schema_name: str = Field(default="public", pattern=r"^[a-z_][a-z0-9_]*$")
    copy_rows: int = Field(default=50_000, ge=1, description="rows per COPY batch")
    outage_s: float = Field(
        default=600.0, gt=0, description="ride out a database outage this long (retrying with backoff) before failing"
    )
    store_readings: bool = True
    store_features: bool = True
    retention_days: float | None = Field(
        default=None, gt=0, description="drop raw readings' monthly partitions whose month ended longer ago; "
        "None = keep forever (features, anomalies and alarms are kept)"
    )
    embedded_dir: Path | None = Field(
        default=None, description="the embedded server's data directory when dsn is unset; None = data_dir/pgdata"
    )
    rollup_hourly_days: float | None = Field(
        default=400.0, gt=0, description="keep hourly roll-ups (min, max, mean, count per sensor) this long; "
        "None = forever"
    )
    rollup_daily_days: float | None = Field(
        default=None, gt=0, description="keep daily roll-ups this long; None = forever"
    )


class WindowSettings(_Section):
    length_s: PositiveFloat | Literal["auto"] = Field(
        default="auto",
        description="tumbling window length in seconds, or auto: auto_samples at the asset's own rate",
    )
    auto_samples: int = Field(default=default_of(_W, "auto_samples"), ge=4)
    auto_samples_one_sensor: int = Field(
        default=default_of(_W, "auto_samples_one_sensor"), ge=2,
        description="auto windows of an asset that reports one sensor only (a metric stream)",
    )
    auto_max_s: PositiveFloat | None = Field(
        default=default_of(_W, "auto_max_ms") / 1000,
        description="the longest auto window of an asset with several sensors (at least 3 samples; none: no cap)",
    )
    allowed_lateness_s: float = Field(default=default_of(_W, "lateness_ms") / 1000, ge=0)
    idle_close_s: float = Field(
        default=60.0, gt=0, description="live only: close an idle asset's windows after this much wall time"
    )
    clock_close: bool = Field(
        default=True,
        description="live only: also close a window when the asset's event time, estimated from when its readings "
        "arrive (not from its clock), passes the window's end + allowed lateness; an asset whose readings arrive "
        "spread out (store and forward) keeps closing in event time. false: close only in event time",
    )
    phase_by_asset: bool = Field(
        default=False,
        description="each asset's windows start at an offset within the window length taken from a hash of its id "
        "(the same in every process and run), so that the assets' windows do not all close in the same instant; "
        "changes every window's boundaries, so every feature and detection result. Applies to an asset's windows "
        "from its first one on: an asset resumed from a snapshot keeps the boundaries it had",
    )


class DetectionSettings(_Section):
    warmup_windows: int = Field(
        default=default_of(_D, "warmup_windows"),
        ge=8,
        description="normal running windows that form the baseline: cover a full operating cycle",
    )
    baseline_size: int = Field(
        default=default_of(_D, "baseline_size"), ge=8, description="recent normal windows the detectors learn from"
    )
    iforest_trees: int = Field(default=default_of(_D, "n_trees"), ge=5, le=500)
    iforest_samples: int = Field(default=default_of(_D, "max_samples"), ge=8, le=1024)
    z_scale: float = Field(
        default=default_of(_D, "z_scale"), gt=0, description="robust z that maps to a statistical score of 0.5"
    )
    weaker_weight: float = Field(
        default=default_of(_D, "weaker_weight"),
        ge=0,
        le=0.5,
        description="weight of the mean of the other learned detectors in the fused score",
    )
    detectors: tuple[Literal["baseline", "iforest", "multivariate"], ...] = default_of(_D, "detectors")
    refit_blocks: int = Field(
        default=default_of(_D, "refit_blocks"), ge=1, description="refit every this many blocks of 12 windows"
    )
    context_windows: int = Field(
        default=default_of(_D, "context_windows"), ge=1, description="windows aggregated into one detector row"
    )
    lag_windows: int = Field(
        default=default_of(_D, "lag_windows"),
        ge=0,
        description="> 0: add each sensor's change of mean over this many windows",
    )
    slow_sensors: tuple[str, ...] = Field(
        default=default_of(_D, "slow_sensors"), description="sensors that wander (thermal): not judged by level"
    )
    drift_ratio: float | None = Field(
        default=default_of(_D, "drift_ratio"), gt=0, description="drop level features of sensors drifting more"
    )
    mv_variance: float = Field(
        default=default_of(_D, "mv_variance"), gt=0, le=1, description="T² variance share; the rest is PCA residual Q"
    )
    mv_half: float = Field(
        default=default_of(_D, "mv_half"), gt=0, description="calibrated T²/Q statistic that maps to a score of 0.5"
    )
    model_dir: Path | None = Field(
        default=None, description="persist fitted detectors here so a new job does not start from nothing"
    )
    seed: int = default_of(_D, "seed")
    warmup: Duration = Field(
        default="1d", description="normal running time that forms the first baseline (per asset, in its own windows)"
    )
    baseline_span: Duration = Field(default="1d", description="recent normal running time the detectors learn from")
    refit_period: Duration = Field(default="1d", description="refit the learned detectors this often (event time)")
    warmup_share: float = Field(
        default=0.35,
        gt=0,
        le=1,
        description="a finite run (replay, simulator) warms up on at most this share of each asset's recording",
    )
    warmup_min_share: float | None = Field(
        # off: 0.5 (chosen on tuning seeds 101-110) raised the test seeds' false machine alarms 0.29 -> 0.49 per
        # asset-week and alarmed after a nightly restart in tests/dataflow/test_unregistered_plant.py (docs/quality.md)
        default=None, gt=0, le=1,
        description="once the warm-up's span has passed (running or not), fit on the rows learned if at least this "
                    "share of the warm-up's (none: wait for all of them)",
    )
    warmup_in_event_time: bool = Field(
        # on: 44 tuning plants, faults found up, sensor faults and false machine alarms as without it; the pure
        # DetectConfig leaves it off (docs/quality.md, "The first warm-up in event time", 2026-12-07)
        default=True,
        description="once the warm-up's span has passed (running or not), fit provisionally on the rows learned if "
                    "there are more than their columns + 1, and fit again when the warm-up's rows are all learned: "
                    "an asset that runs part of the time (cycling with demand) is judged as soon as a running one",
    )
    start_baseline: bool = Field(
        # on: 44 tuning plants 193 -> 197/264 faults found (all four on demand-cycling assets, runs of 2-3 windows),
        # the same 133/156 sensor faults, false machine alarms 43 -> 45 (0.206 -> 0.215 per asset-week), median lead
        # 0.331 -> 0.332 (docs/quality.md, branch startbase, 2026-12-07). The pure DetectConfig leaves it off
        default=True,
        description="score each start (the first running window after a stop) also against the asset's own "
                    "earlier starts, once 8 are kept; on an asset that cycles, validation judges its start on that "
                    "score instead of hiding it in the start-up grace",
    )
    stagger_fits: bool = Field(
        default=default_of(_D, "stagger"),
        description="spread warm-up fits over a block and refits over the refit period by a hash of the asset id",
    )
    new_normal_across: bool = Field(
        # on: 44 tuning plants healthy-sensor alarm episodes 63 -> 50, false machine alarms 46 -> 41, found and
        # sensor faults unchanged, median lead 0.332 -> 0.328 (docs/quality.md, 2026-12-07); off in NewNormalConfig
        default=True,
        description="the new-normal watch also sees a step split over two windows, one made while the asset stood "
                    "(judged past the start-up against the level before the stop) and one at a fit",
    )
    cross_sensor_drift: bool = Field(
        default=True,  # chosen on tuning seeds 101-110 (docs/quality.md); the pure DetectConfig keeps it off
        description="report one sensor drifting off what the asset's other sensors predict as a sensor fault (drift)",
    )
    score_through_repair: bool = Field(
        # on: 44 tuning plants 160 -> 180/264 faults found, false machine alarms 0.29 -> 0.34 per asset-week
        # (with the check below), sensor faults unchanged (docs/quality.md, 2026-12-07)
        default=True,
        description="after a re-baselining repair, score with the detectors' fit from before it until the new "
                    "baseline is warm, instead of judging nothing for a warm-up; that fit stops scoring if it "
                    "would make a candidate from the repaired machine's first windows (the machine changed)",
    )
    trend_evidence: bool = Field(
        # off: on unseen plants it buys ~0.1 of median lead for ~0.25-0.45 more false machine alarms per
        # asset-week (docs/quality.md); weigh it on a plant's own history with `whatif --try`
        default=False,
        description="sum the multivariate deviation over hours, so a developing fault alarms before it is large",
    )


class ValidationSettings(_Section):
    open_threshold: float = Field(
        default=default_of(_V, "open_threshold"), gt=0, lt=1, description="score that makes a window a candidate"
    )
    confirm_threshold: float = Field(
        default=default_of(_V, "confirm_threshold"),
        gt=0,
        lt=1,
        description="persistent candidates above it are confirmed",
    )
    persistence_k: int = Field(default=default_of(_V, "persistence_k"), ge=1)
    persistence_n: int = Field(default=default_of(_V, "persistence_n"), ge=1)
    flatline_windows: int = Field(
        default=default_of(_V, "flatline_windows"),
        ge=1,
        description="windows with zero spread that make a stuck sensor",
    )
    dropout_fraction: float = Field(
        default=default_of(_V, "dropout_fraction"),
        gt=0,
        le=1,
        description="a sensor under this share of its usual count dropped out",
    )
    startup_grace_windows: int = Field(
        default=default_of(_V, "grace_windows"),
        ge=0,
        description="windows after a stop that are not judged (warming up)",
    )
    review_step: float = Field(
        default=default_of(_V, "review_step"),
        ge=0,
        description="a rejected anomaly raises its asset's open threshold this much",
    )
    max_open: float = Field(
        default=default_of(_V, "max_open"), gt=0, lt=1, description="reviews never raise the open threshold above this"
    )
    explain_features: int = Field(
        default=default_of(_V, "explain_features"), ge=0, description="top contributing features carried by an anomaly"
    )
    startup_grace: Duration = Field(default="90min", description="after a start, this long is not judged (warming up)")
    persistence: Duration = Field(
        default="25min", description="candidates in persistence_k of persistence_n windows, n covering this"
    )
    persist_across_stops: bool = Field(
        # on, with learned states ending a run at the window a stop falls in: 44 tuning plants 184 -> 187/264 faults
        # found, false machine alarms 0.34 -> 0.20 per asset-week, sensor faults 133 -> 132/156; alone it cost 0.54
        # (docs/quality.md, branches persist and edges, 2026-12-07). The pure ValidationConfig leaves it off
        default=True,
        description="persistence counts only the windows that can be judged (running, past the start-up grace), "
                    "so an asset that runs in short bursts carries its evidence from one run to the next when it "
                    "lasted to the run's end; a stop longer than the asset's cycle (typical run plus stop), or "
                    "before its third run, forgets it",
    )
    grace_within_run: bool = Field(
        # on: 44 tuning plants 187 -> 193/264 faults found (all six on cycling assets with one-window runs), the
        # same 133/156 sensor faults, false machine alarms 41 -> 43 (0.20 -> 0.21 per asset-week), median lead
        # 0.334 -> 0.331 (docs/quality.md, branch miss16, 2026-12-07). The pure ValidationConfig leaves it off
        default=True,
        description="on an asset that cycles, the start-up grace is shorter than its typical run (in whole "
                    "windows): an asset whose runs last one window has that window judged, not none of its runs",
    )
    confirm_trend: bool = Field(
        # off: it met its bar on the 44 tuning plants, but on the held-out test seeds it took false machine alarms
        # from 0.44 to 0.64 per asset-week, over issue #16's 0.5 (docs/quality.md, branch trend, 2026-12-07)
        default=False,
        description="a persistent candidate led by the per-feature baseline is confirmed when its top feature's "
                    "robust z has a significant upward trend over the stretch of candidates since the last normal "
                    "window (one-sided Mann-Kendall, alpha 0.05: wear grows a deviation, a step to a new normal "
                    "holds it), unless a sensor is settling at a new level",
    )
    leap_at_stop: bool = Field(
        default=True,
        description="sensor health judges the window a stop falls in for a leap no stop explains (beyond the "
                    "running envelope and every reading the sensor has sent at rest): with learned states that "
                    "window is a stop, and a sensor fault that begins in it would otherwise never be judged",
    )
    leap_needs_two: bool = Field(
        # on: 44 tuning plants 88 -> 63 sensor-fault alarms on healthy sensors, the same 197/264 faults found and
        # 133/156 sensor faults, false machine alarms 45 -> 46 (docs/quality.md, branch sensorfa, 2026-12-07).
        # The pure ValidationConfig and HealthConfig leave it off
        default=True,
        description="sensor health's leap (`impossible`) must hold without any one reading of the window: one "
                    "reading is a glitch, which in a window of a few readings moves the mean as far as a broken "
                    "sensor does",
    )

    leap_after_stop: bool = Field(
        # on: the 76 tuning plants (101-110, 113-134, 138-149 and 150-181) 203 -> 206 sensor faults reported, nothing
        # else changed (docs/quality.md, branch gross3, 2026-12-07). The pure ValidationConfig and HealthConfig
        # leave it off
        default=True,
        description="sensor health judges a leap deep in a stop too (a fault that begins while the asset stands): "
                    "from the last mean at rest, when far beyond every level a stop explains; and a sensor that has "
                    "not run since its record began is judged by its sign against its level at rest",
    )

    @model_validator(mode="after")
    def _ordered(self) -> ValidationSettings:
        if not self.open_threshold <= self.confirm_threshold:
            raise ValueError("need open_threshold <= confirm_threshold")
        if self.persistence_k > self.persistence_n:
            raise ValueError("persistence_k must not exceed persistence_n")
        return self


class AlarmSettings(_Section):
    """Alarm hysteresis: when an open alarm counts down and clears (`[alarms]`; before 0.2 in `[validation]`)."""

    clear_threshold: float = Field(default=default_of(_A, "clear_threshold"), gt=0, lt=1,
                                   description="score under which an alarm counts down")
    clear_windows: int = Field(default=default_of(_A, "clear_windows"), ge=1,
                               description="windows under clear_threshold that clear an alarm")
    review_case_gap_s: float = Field(default=default_of(_A, "case_gap_ms") / 1000, ge=0,
                                     description="uncertain windows less than this apart join one review case")


_MOVED_TO_ALARMS = ("clear_threshold", "clear_windows")


class PredictionSettings(_Section):
    enabled: bool = Field(default=True, description="forecast time to failure for open machine alarms")
    min_interval_s: float = Field(
        default=default_of(_P, "min_interval_ms") / 1000,
        ge=0,
        description="at most one prediction per asset per this much event time",
    )
    horizon_h: float = Field(
        default=default_of(_P, "horizon_ms") / HOUR_MS, gt=0, description="how far ahead to look for a failure"
    )
    history_windows: int = Field(
        default=default_of(_P, "history_windows"), ge=16, description="window means kept per asset for forecasting"
    )
    rul_registry: Path | None = Field(
        default=None, description="learned RUL models by asset type (`train-rul`); None = data_dir/rul_models"
    )
    offload: bool = Field(default=True, description="fit in a separate process so detection never waits")


class WorkSettings(_Section):
    enabled: bool = Field(default=True, description="work orders and scheduling from confirmed alarms")
    margin_h: float = Field(
        default=default_of(_WO, "margin").total_seconds() / 3600,
        ge=0,
        description="due = earliest plausible failure - this margin",
    )
    due_by_severity_h: tuple[float, float, float, float, float] = Field(
        default=default_of(_WO, "due_by_severity_h"), description="due time without a forecast, severity 1..5"
    )
    horizon_days: float = Field(
        default=default_of(_DP, "horizon_days"), gt=0, description="how far ahead the plan looks"
    )
    debounce_s: float = Field(default=60.0, ge=0, description="live: re-plan after this long without new work")
    max_wait_s: float = Field(default=600.0, ge=0, description="live: re-plan at the latest this long after new work")
    solve_time_s: float = Field(
        default=default_of(_DP, "solve_time_s"), gt=0, description="wall-clock cap of one CP-SAT solve"
    )
    work_limit: float = Field(
        default=default_of(_DP, "work_limit"),
        gt=0,
        description="CP-SAT deterministic-time budget (same plan on any machine)",
    )
    gap_limit: float = Field(
        default=default_of(_DP, "gap_limit"), ge=0, lt=1,
        description="stop a plan's search once it is proven within this share of the best possible (0 = prove "
        "optimal)",
    )
    timezone: str = Field(
        default=default_of(_DP, "timezone"), description="the plant's time zone, for technicians' shift clock times"
    )


class SimulatorSettings(_Section):
    assets: int = Field(default=12, ge=1, le=100_000)
    seed: int = 7
    interval_s: float = Field(default=10.0, gt=0)
    duration_s: float | None = Field(default=3 * 86_400.0, description="simulated time; None = forever")
    speed: float = Field(
        default=0.0, ge=0, description="0 = as fast as possible, 1 = real time, 60 = a minute per second"
    )
    start: str = "2026-01-05T00:00:00Z"
    partitions: int = Field(default=2, ge=1)
    maintenance_log: bool = Field(
        default=True, description="feed the simulated plant's repairs back as a maintenance log (finite runs)"
    )


class ReplaySettings(_Section):
    paths: tuple[Path, ...] = Field(default=(), description="files to replay, one source partition each")
    format: Literal["auto", "long", "wide", "jsonl", "parquet"] = "auto"
    time_col: str | None = None
    asset_col: str | None = None
    asset: str | None = Field(default=None, description="fixed asset id for wide files without an asset column")
    sep: str | None = None
    chunk_rows: int = Field(default=100_000, ge=1)
    speed: float = Field(default=0.0, ge=0, description="0 = as fast as possible, k = k x real time")
    timezone: str | None = Field(
        default=None,
        description="CSV and Parquet times written with no offset are this zone's wall clock (an IANA name, e.g. "
        "Europe/Berlin); None: UTC. The repeated hour of a change to winter time is read in the file's order; "
        "a time the clocks skipped is a bad_timestamp reject",
    )

    @field_validator("timezone")
    @classmethod
    def _zone(cls, zone: str | None) -> str | None:
        if zone is not None:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(zone)
            except (ZoneInfoNotFoundError, ValueError) as e:
                raise ValueError(f"unknown time zone {zone!r}: give an IANA name such as 'Europe/Berlin'") from e
        return zone


class MqttSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    topics: tuple[str, ...] = Field(default=("plant/#",), description="subscription patterns")
    qos: int = Field(default=1, ge=0, le=2)
    client_id: str = "smart-maintenance"
    username: str | None = None
    password: SecretStr | None = None
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive_s: int = Field(default=30, ge=5)
    reconnect_max_s: float = Field(default=30.0, gt=0)
    alarm_topic: str = Field(
        default="smart-maintenance/alarms",
        description="notification topic prefix; keep it outside the readings subscriptions (topics)",
    )
    topic_template: str = Field(
        default=DEFAULT_TOPIC_TEMPLATE,
        description="the readings topics' layout: {asset_id} and {sensor} name those levels, any other {name} "
        "matches one level, e.g. Unified Namespace {enterprise}/{site}/{area}/{line}/{asset_id}/{sensor}",
    )

    @field_validator("topic_template")
    @classmethod
    def _template(cls, template: str) -> str:
        topic_pattern(template)  # ValueError names what is wrong
        return template


class KafkaSettings(_Section):
    brokers: tuple[str, ...] = ("127.0.0.1:9092",)
    readings_topic: str = "readings"
    alarms_topic: str = "alarms"
    work_orders_topic: str = "work_orders"
    dead_letters_topic: str = "dead_letters"
    predictions_topic: str = "predictions"
    assignments_topic: str = "assignments"
    notifications_topic: str = "notifications"
    outputs: tuple[Literal["alarms", "dead_letters", "predictions", "work_orders", "assignments", "notifications"],
                   ...] = Field(
        default=("alarms", "dead_letters", "predictions", "work_orders", "assignments", "notifications"),
        description="streams a flow that reads Kafka also publishes to their topics (JSON, keyed by asset; "
        "schemas in connectors/kafka/schemas/)",
    )
    create_topics: bool = Field(default=True, description="create missing topics at start")
    topic_partitions: int = Field(default=6, ge=1, description="partitions of a topic the flow creates")
    topic_replication: int = Field(default=1, ge=1, description="replication factor of a topic the flow creates")
    maintenance_topic: str | None = Field(
        default=None,
        description="completed-maintenance records (JSON, signed: see maintenance_keys) read by a live Kafka flow; "
        "None = off. A topic that does not exist when the flow starts is logged as a warning and left out until "
        "the next start",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: Path | None = None
    tail: bool = Field(default=True, description="false: stop at the end of the topic (a backfill from Kafka)")
    poll_interval_ms: int = Field(
        default=10, ge=0, le=1000,
        description="a partition that is not behind is polled again this much later: longer merges more of an "
                    "asset's readings into one item (less CPU per reading live), at that much more latency")
    extra: dict[str, str] = Field(default_factory=dict, description="more librdkafka settings, passed through")
    maintenance_keys: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="HMAC-SHA256 keys by key id: a maintenance message must be signed with one (docs/controls.md); "
        "required when maintenance_topic is set",
    )

    @field_validator("maintenance_keys", mode="after")
    @classmethod
    def _keys(cls, keys: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for key_id, key in keys.items():
            if not _KEY_ID.fullmatch(key_id):
                raise ValueError("maintenance_keys: a key id is 1-64 of A-Z a-z 0-9 . _ -")
            if len(key.get_secret_value().encode()) < 32:
                raise ValueError(f"maintenance_keys[{key_id}]: a key needs at least 32 bytes")
        return keys

    @model_validator(mode="after")
    def _signed_maintenance(self) -> KafkaSettings:
        if self.maintenance_topic is not None and not self.maintenance_keys:
            raise ValueError("kafka.maintenance_topic needs kafka.maintenance_keys: an unsigned control channel "
                             "would let anyone who can produce to it close work orders and silence alarms")
        return self

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # librdkafka settings passed through may be secrets (sasl.oauthbearer.client.secret, ssl.key.password)
        for name, value in super().__repr_args__():
            if name == "extra":
                value = {k: "**********" if any(w in k.lower() for w in _SECRET_WORDS) else v
                         for k, v in value.items()}
            yield name, value


class LimitsSettings(_Section):
    """What one message, asset or sender may cost: over a limit is a dead letter with a reason, never a crash."""

    max_name_len: int = Field(default=128, ge=1, le=4096, description="longest asset or sensor id (bad_name)")
    max_message_bytes: int = Field(default=1024 * 1024, ge=256, description="largest message decoded (too_large)")
    max_sensors_per_asset: int = Field(
        default=default_of(_W, "max_sensors"),
        ge=1,
        description="sensors one asset may have; readings of more are too_many_sensors",
    )
    max_assets: int = Field(
        default=100_000, ge=1, description="assets held in memory at once; new ones beyond it are too_many_assets"
    )
    max_new_assets_per_min: int = Field(
        default=1000, ge=1, description="live runs: new assets admitted per minute of wall time (new_asset_rate)"
    )
    future_jump_s: float = Field(
        default=default_of(_W, "future_ms") / 1000,
        gt=0,
        description="a reading this far ahead of its asset's stream is held as a suspect",
    )
    future_confirm: int = Field(
        default=default_of(_W, "future_confirm"),
        ge=2,
        description="distinct times ahead, in a row, that make a jump genuine (else future_outlier)",
    )
    evict_after_s: float | None = Field(
        default=7 * 86_400.0, gt=0, description="live runs: an asset silent this much wall time leaves memory"
    )


class OpcUaNode(_Section):
    """One OPC UA variable read as one sensor of one asset."""

    node_id: str = Field(min_length=1, description="e.g. ns=2;s=Pump1.Temperature or ns=2;i=1001")
    asset_id: str = Field(min_length=1)
    sensor: str = Field(min_length=1)


class OpcUaSettings(_Section):
    """`[opcua]`: the OPC UA source (docs/plant-protocols.md)."""

    endpoint: str = Field(default="opc.tcp://127.0.0.1:4840/", pattern=r"^opc\.tcp://",
                          description="the server's endpoint URL")
    nodes: tuple[OpcUaNode, ...] = Field(default=(),
                                         description="variables by node id, each mapped to asset and sensor")
    browse: tuple[str, ...] = Field(
        default=(),
        description="browse-path patterns under Objects, levels split by /, e.g. Plant/{asset_id}/{sensor}: "
        "{asset_id} and {sensor} capture a level's browse name, * matches any one level",
    )
    publishing_interval_ms: float = Field(default=500.0, gt=0, description="subscription publishing interval")
    sampling_interval_ms: float = Field(default=0.0, ge=0, description="0 = the server's fastest practical rate")
    queue_size: int = Field(default=100, ge=1, description="values the server queues per variable between publishes")
    accept_uncertain: bool = Field(default=False,
                                   description="read Uncertain status values as readings (else dead letters)")
    security_policy: Literal["None", "Basic256Sha256", "Aes128Sha256RsaOaep", "Aes256Sha256RsaPss"] = "None"
    security_mode: Literal["Sign", "SignAndEncrypt"] = "SignAndEncrypt"
    certificate: Path | None = Field(default=None,
                                     description="the client's certificate (.pem/.der), for a security policy")
    private_key: Path | None = Field(default=None, description="the client's private key (.pem/.der)")
    server_certificate: Path | None = Field(default=None,
                                            description="the server's certificate; None = taken from its endpoints")
    username: str | None = None
    password: SecretStr | None = None
    timeout_s: float = Field(default=4.0, gt=0, description="per request")
    connect_timeout_s: float = Field(default=10.0, gt=0, description="the first connection must succeed within this")
    reconnect_max_s: float = Field(default=30.0, gt=0, description="cap of the exponential reconnect backoff")
    batch_max: int = Field(default=10_000, ge=1, description="readings per batch handed to the flow")
    buffer_max: int = Field(default=100_000, ge=1, description="values held between the client thread and the flow")

    @model_validator(mode="after")
    def _security_complete(self) -> OpcUaSettings:
        if self.security_policy != "None" and (self.certificate is None or self.private_key is None):
            raise ValueError(f"security_policy {self.security_policy} needs certificate and private_key")
        if self.password is not None and self.username is None:
            raise ValueError("opcua has a password but no username")
        return self


class SparkplugSettings(_Section):
    """`[sparkplug]`: the Sparkplug B source over MQTT; the broker is `[mqtt]`'s (docs/plant-protocols.md)."""

    group_id: str = Field(default="+", description="the Sparkplug group to read, + = every group")
    edge_node_id: str = Field(default="+", description="the edge node to read, + = every node")
    client_id: str = "smart-maintenance-sparkplug"
    rebirth: bool = Field(default=True,
                          description="send NCMD Node Control/Rebirth on a sequence gap or an unknown node")
    rebirth_min_interval_s: float = Field(default=5.0, ge=0,
                                          description="at most one rebirth request per node this often")
    accept_uncertain: bool = Field(default=False, description="read metrics of Uncertain quality (64) as readings")
    batch_max: int = Field(default=10_000, ge=1)
    batch_wait_ms: int = Field(default=200, ge=0)
    buffer_max: int = Field(default=100_000, ge=1)


class Settings(BaseSettings):
    """The whole configuration of a smart-maintenance job."""

    model_config = SettingsConfigDict(
        env_prefix="SMART_MAINTENANCE__",
        env_nested_delimiter="__",
        env_file=".env",
        extra="forbid",
        frozen=True,
        allow_inf_nan=False,
        hide_input_in_errors=True,  # a mistyped or misspelt secret must not be echoed in the error
    )

    data_dir: Path = Field(default=Path(".smart-maintenance"), description="embedded database, models, state")
    registry: Path | None = Field(default=None, description="asset registry TOML; None = the built-in plant")
    strict_registry: bool = Field(default=False, description="reject readings of unknown assets/sensors")
    accept_uncertain_quality: bool = Field(
        default=False, description="MQTT and Kafka JSON payloads whose quality is uncertain are readings (True) "
        "or dead letters bad_quality (False), as [opcua]/[sparkplug] accept_uncertain (JSONL replays: always "
        "dead letters); bad is never a reading"
    )
    source: str = Field(
        default="simulator", pattern=r"^[a-z][a-z0-9_]*$",
        description="what build_flow() reads: a name in dataflows/sources.py (simulator, replay, mqtt, kafka, "
        "api: readings POSTed to the HTTP API)",
    )
    out_dir: Path | None = Field(default=None, description="also write every stream as JSONL here")
    console: bool = Field(default=True, description="print alarms as they open and clear")
    progress: bool = Field(default=True, description="progress bars on replays")
    max_ts_skew_s: float = Field(
        default=86_400.0, gt=0, description="reject timestamps this far ahead of the wall clock"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["auto", "json", "console"] = Field(default="auto", description="auto: JSON unless a terminal")
    metrics_port: int | None = Field(default=None, ge=1, le=65535, description="serve Prometheus /metrics here")
    metrics_host: str = Field(
        default="127.0.0.1", description="address /metrics binds; 0.0.0.0 lets another container scrape it"
    )
    stale_after_s: float = Field(default=900.0, gt=0, description="status: an asset silent this long is stale")
    postgres: PostgresSettings = PostgresSettings()
    windows: WindowSettings = WindowSettings()
    detection: DetectionSettings = DetectionSettings()
    validation: ValidationSettings = ValidationSettings()
    alarms: AlarmSettings = AlarmSettings()
    simulator: SimulatorSettings = SimulatorSettings()
    replay: ReplaySettings = ReplaySettings()
    mqtt: MqttSettings = MqttSettings()
    kafka: KafkaSettings = KafkaSettings()
    prediction: PredictionSettings = PredictionSettings()
    work: WorkSettings = WorkSettings()
    notify: NotifySettings = NotifySettings()
    incidents: IncidentSettings = IncidentSettings()
    limits: LimitsSettings = LimitsSettings()
    opcua: OpcUaSettings = OpcUaSettings()
    sparkplug: SparkplugSettings = SparkplugSettings()
    cmms: CmmsSettings = CmmsSettings()

    allow_plaintext_credentials: bool = Field(
        default=False,
        description="accept passwords sent unencrypted (SMTP login without STARTTLS, MQTT without TLS, Kafka "
        "SASL_PLAINTEXT); only for a test rig on a trusted network",
    )
    quarantine_unknown_assets: bool = Field(
        default=True,
        description="assets neither in the registry nor admitted (`assets admit ID`) are learned and raise "
        "alarms, but create no work orders and notify nobody; false = every asset is trusted",
    )
    admission_refresh_s: float = Field(
        default=5.0,
        gt=0,
        description="live: how often the flow re-reads admitted assets (when it meets an unknown one)",
    )


    @model_validator(mode="after")
    def _no_plaintext_credentials(self) -> Settings:
        if self.allow_plaintext_credentials:
            return self
        exposed = []
        if self.notify.email.password is not None and not self.notify.email.starttls:
            exposed.append("notify.email logs in without starttls")
        if self.mqtt.password is not None and not self.mqtt.tls:
            exposed.append("mqtt has a password but tls is off")
        if self.kafka.sasl_password is not None and self.kafka.security_protocol == "SASL_PLAINTEXT":
            exposed.append("kafka sends its SASL password with security_protocol SASL_PLAINTEXT (use SASL_SSL)")
        if self.cmms.plaintext_problem():
            exposed.append(str(self.cmms.plaintext_problem()))
        if exposed:
            raise ValueError("credentials would cross the network unencrypted: " + "; ".join(exposed)
                             + ". Fix that, or set allow_plaintext_credentials = true on a trusted test network")
        return self

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: Any) -> Any:
        """`[validation] clear_threshold / clear_windows` moved to `[alarms]`: still read, with a warning."""
        if not isinstance(data, dict) or not isinstance(data.get("validation"), dict):
            return data
        moved = {k: data["validation"][k] for k in _MOVED_TO_ALARMS if k in data["validation"]}
        if not moved:
            return data
        alarms = data.get("alarms")
        alarms = dict(alarms) if isinstance(alarms, dict) else {}
        for key, value in moved.items():
            warnings.warn(f"setting validation.{key} is deprecated: use alarms.{key}", FutureWarning,
                          stacklevel=2)
            alarms.setdefault(key, value)  # the new key wins where both are given
        validation = {k: v for k, v in data["validation"].items() if k not in _MOVED_TO_ALARMS}
        return {**data, "validation": validation, "alarms": alarms}

    @model_validator(mode="after")
    def _embedded_dir(self) -> Settings:
        """The PostgreSQL connector takes only its own section: tell it where the embedded server lives."""
        if self.postgres.embedded_dir is None:
            section = self.postgres.model_copy(update={"embedded_dir": self.data_dir / "pgdata"})
            object.__setattr__(self, "postgres", section)  # frozen: set once, while validating
        return self

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> Settings:
        if not self.alarms.clear_threshold < self.validation.open_threshold:
            raise ValueError("need alarms.clear_threshold < validation.open_threshold")
        return self

    @field_validator("data_dir", "registry", "out_dir", mode="after")
    @classmethod
    def _expand(cls, p: Path | None) -> Path | None:
        return p.expanduser() if p is not None else None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, dotenv_settings]
        toml = config_file()
        if toml is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)


def config_file() -> Path | None:
    """The TOML file in force, or None. A named file that is missing is an error."""
    named = os.environ.get(CONFIG_ENV)
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{CONFIG_ENV}={named}: no such file")
        return path
    local = Path(DEFAULT_CONFIG_FILE)
    return local if local.is_file() else None


ENV_PREFIX = "SMART_MAINTENANCE__"


def _check_environment() -> None:
    """A misspelt top-level variable would be ignored silently (nested ones are caught by the models)."""
    known = set(Settings.model_fields)
    for name in os.environ:
        if name.upper().startswith(ENV_PREFIX):
            field = name[len(ENV_PREFIX):].split("__", 1)[0].lower()
            if field not in known:
                raise ValueError(f"environment variable {name}: {field!r} is not a setting (known: {sorted(known)})")


def load_settings(**overrides: object) -> Settings:
    """Build the settings once; `overrides` are nested dicts or values, highest precedence."""
    _check_environment()
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ValueError(f"config file {config_file()}: cannot be read: {type(e).__name__}: {e}") from None
