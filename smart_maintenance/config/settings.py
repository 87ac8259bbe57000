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
from collections.abc import Iterator
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from smart_maintenance.config.incident_settings import IncidentSettings
from smart_maintenance.config.notify_settings import NotifySettings

CONFIG_ENV = "SMART_MAINTENANCE_CONFIG"
_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_SECRET_WORDS = ("password", "secret", "token", "key")
DEFAULT_CONFIG_FILE = "smart-maintenance.toml"


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


class WindowSettings(_Section):
    length_s: PositiveFloat | Literal["auto"] = Field(
        default="auto",
        description="tumbling window length in seconds, or auto: auto_samples at the asset's own rate",
    )
    auto_samples: int = Field(default=30, ge=4)
    allowed_lateness_s: float = Field(default=30.0, ge=0)
    idle_close_s: float = Field(
        default=60.0, gt=0, description="live only: close an idle asset's windows after this much wall time"
    )


class DetectionSettings(_Section):
    warmup_windows: int = Field(
        default=288, ge=8, description="normal running windows that form the baseline: cover a full operating cycle"
    )
    baseline_size: int = Field(default=288, ge=8, description="recent normal windows the detectors learn from")
    iforest_trees: int = Field(default=50, ge=5, le=500)
    iforest_samples: int = Field(default=64, ge=8, le=1024)
    z_scale: float = Field(default=6.0, gt=0, description="robust z that maps to a statistical score of 0.5")
    weaker_weight: float = Field(
        default=0.25, ge=0, le=0.5, description="weight of the mean of the other learned detectors in the fused score"
    )
    detectors: tuple[Literal["baseline", "iforest", "multivariate"], ...] = ("baseline", "iforest", "multivariate")
    refit_blocks: int = Field(default=24, ge=1, description="refit every this many blocks of 12 windows")
    context_windows: int = Field(default=1, ge=1, description="windows aggregated into one detector row")
    lag_windows: int = Field(default=0, ge=0, description="> 0: add each sensor's change of mean over this many windows")
    slow_sensors: tuple[str, ...] = Field(default=(), description="sensors that wander (thermal): not judged by level")
    drift_ratio: float | None = Field(default=None, gt=0, description="drop level features of sensors drifting more")
    mv_variance: float = Field(default=1.0, gt=0, le=1, description="T² variance share; the rest is PCA residual Q")
    mv_half: float = Field(default=5.0, gt=0, description="calibrated T²/Q statistic that maps to a score of 0.5")
    model_dir: Path | None = Field(
        default=None, description="persist fitted detectors here so a new job does not start from nothing"
    )
    seed: int = 0


class ValidationSettings(_Section):
    open_threshold: float = Field(default=0.6, gt=0, lt=1, description="score that makes a window a candidate")
    confirm_threshold: float = Field(default=0.75, gt=0, lt=1, description="persistent candidates above it are confirmed")
    clear_threshold: float = Field(default=0.4, gt=0, lt=1, description="score under which an alarm counts down")
    persistence_k: int = Field(default=3, ge=1)
    persistence_n: int = Field(default=5, ge=1)
    clear_windows: int = Field(default=3, ge=1, description="windows under clear_threshold that clear an alarm")
    flatline_windows: int = Field(default=3, ge=1, description="windows with zero spread that make a stuck sensor")
    dropout_fraction: float = Field(default=0.5, gt=0, le=1, description="a sensor under this share of its usual count dropped out")
    startup_grace_windows: int = Field(default=18, ge=0, description="windows after a stop that are not judged (warming up)")
    review_step: float = Field(default=0.05, ge=0, description="a rejected anomaly raises its asset's open threshold this much")
    max_open: float = Field(default=0.95, gt=0, lt=1, description="reviews never raise the open threshold above this")
    explain_features: int = Field(default=3, ge=0, description="top contributing features carried by an anomaly")

    @model_validator(mode="after")
    def _ordered(self) -> ValidationSettings:
        if not self.clear_threshold < self.open_threshold <= self.confirm_threshold:
            raise ValueError("need clear_threshold < open_threshold <= confirm_threshold")
        if self.persistence_k > self.persistence_n:
            raise ValueError("persistence_k must not exceed persistence_n")
        return self


class PredictionSettings(_Section):
    enabled: bool = Field(default=True, description="forecast time to failure for open machine alarms")
    min_interval_s: float = Field(default=3600.0, ge=0, description="at most one prediction per asset per this much event time")
    horizon_h: float = Field(default=168.0, gt=0, description="how far ahead to look for a failure")
    history_windows: int = Field(default=288, ge=16, description="window means kept per asset for forecasting")
    rul_registry: Path | None = Field(
        default=None, description="learned RUL models by asset type (`train-rul`); None = data_dir/rul_models"
    )
    offload: bool = Field(default=True, description="fit in a separate process so detection never waits")


class WorkSettings(_Section):
    enabled: bool = Field(default=True, description="work orders and scheduling from confirmed alarms")
    margin_h: float = Field(default=4.0, ge=0, description="due = earliest plausible failure - this margin")
    due_by_severity_h: tuple[float, float, float, float, float] = Field(
        default=(168.0, 96.0, 48.0, 24.0, 8.0), description="due time without a forecast, severity 1..5"
    )
    horizon_days: float = Field(default=7.0, gt=0, description="how far ahead the plan looks")
    debounce_s: float = Field(default=60.0, ge=0, description="live: re-plan after this long without new work")
    max_wait_s: float = Field(default=600.0, ge=0, description="live: re-plan at the latest this long after new work")
    solve_time_s: float = Field(default=10.0, gt=0, description="wall-clock cap of one CP-SAT solve")
    work_limit: float = Field(default=5.0, gt=0, description="CP-SAT deterministic-time budget (same plan on any machine)")
    timezone: str = Field(default="UTC", description="the plant's time zone, for technicians' shift clock times")


class SimulatorSettings(_Section):
    assets: int = Field(default=12, ge=1, le=100_000)
    seed: int = 7
    interval_s: float = Field(default=10.0, gt=0)
    duration_s: float | None = Field(default=3 * 86_400.0, description="simulated time; None = forever")
    speed: float = Field(default=0.0, ge=0, description="0 = as fast as possible, 1 = real time, 60 = a minute per second")
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
    alarm_topic: str = "plant/alarms"


class KafkaSettings(_Section):
    brokers: tuple[str, ...] = ("127.0.0.1:9092",)
    readings_topic: str = "readings"
    alarms_topic: str = "alarms"
    work_orders_topic: str = "work_orders"
    dead_letters_topic: str = "dead_letters"
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
    source: Literal["simulator", "replay", "mqtt", "kafka"] = Field(
        default="simulator", description="what build_flow() reads"
    )
    out_dir: Path | None = Field(default=None, description="also write every stream as JSONL here")
    console: bool = Field(default=True, description="print alarms as they open and clear")
    progress: bool = Field(default=True, description="progress bars on replays")
    max_ts_skew_s: float = Field(default=86_400.0, gt=0, description="reject timestamps this far ahead of the wall clock")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["auto", "json", "console"] = Field(default="auto", description="auto: JSON unless a terminal")
    metrics_port: int | None = Field(default=None, ge=1, le=65535, description="serve Prometheus /metrics here")
    stale_after_s: float = Field(default=900.0, gt=0, description="status: an asset silent this long is stale")
    postgres: PostgresSettings = PostgresSettings()
    windows: WindowSettings = WindowSettings()
    detection: DetectionSettings = DetectionSettings()
    validation: ValidationSettings = ValidationSettings()
    simulator: SimulatorSettings = SimulatorSettings()
    replay: ReplaySettings = ReplaySettings()
    mqtt: MqttSettings = MqttSettings()
    kafka: KafkaSettings = KafkaSettings()
    prediction: PredictionSettings = PredictionSettings()
    work: WorkSettings = WorkSettings()
    notify: NotifySettings = NotifySettings()
    incidents: IncidentSettings = IncidentSettings()
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
        default=5.0, gt=0, description="live: how often the flow re-reads admitted assets (when it meets an unknown one)"
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
        if exposed:
            raise ValueError("credentials would cross the network unencrypted: " + "; ".join(exposed)
                             + ". Fix that, or set allow_plaintext_credentials = true on a trusted test network")
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
