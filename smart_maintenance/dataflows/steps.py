"""Adapters from the pure operators to Bytewax's step signatures.

Everything here is thin: it builds operator configs from the settings, looks
up an asset's profile and holds the window state inside a `StatefulLogic`
(windows need end-of-stream and idle flushing, which `stateful_map` lacks).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import structlog
from bytewax.operators import StatefulLogic

from smart_maintenance import metrics
from smart_maintenance.config.registry import Registry
from smart_maintenance.config.settings import Settings
from smart_maintenance.operators.alarms import AlarmConfig, AlarmState, track_alarms
from smart_maintenance.operators.detect import DetectConfig, DetectorState, detect
from smart_maintenance.operators.model_store import restore, save_if_refitted
from smart_maintenance.operators.parse import check_readings, parse_messages, split_by_asset
from smart_maintenance.operators.profile import AssetProfile, profile_for
from smart_maintenance.operators.records import (
    Alarm,
    AssetReadings,
    Parsed,
    RawMessages,
    Readings,
    Scored,
)
from smart_maintenance.operators.validation import ValidationConfig, ValidationState, Verdict, validate
from smart_maintenance.sinks.model_files import DirectoryModelStore
from smart_maintenance.operators.windows import WindowConfig, WindowOutput, WindowState, flush_windows, window_readings


log = structlog.get_logger("smart_maintenance.flow")


@dataclass
class Steps:
    """The operator configs and the registry's profiles for one flow."""

    settings: Settings
    registry: Registry
    live: bool = False
    _profiles: dict[str, AssetProfile] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        s = self.settings
        length = s.windows.length_s
        self.window_cfg = WindowConfig(
            length_ms=None if length == "auto" else int(float(length) * 1000),
            lateness_ms=int(s.windows.allowed_lateness_s * 1000),
            auto_samples=s.windows.auto_samples,
        )
        d = s.detection
        self.detect_cfg = DetectConfig(
            warmup_windows=d.warmup_windows,
            baseline_size=d.baseline_size,
            n_trees=d.iforest_trees,
            max_samples=d.iforest_samples,
            z_scale=d.z_scale,
            weaker_weight=d.weaker_weight,
            learn_below=s.validation.clear_threshold,
            seed=d.seed,
            detectors=d.detectors,
            refit_blocks=d.refit_blocks,
            context_windows=d.context_windows,
            lag_windows=d.lag_windows,
            slow_sensors=d.slow_sensors,
            drift_ratio=d.drift_ratio,
            mv_variance=d.mv_variance,
            mv_half=d.mv_half,
        )
        self.model_store = DirectoryModelStore(d.model_dir) if d.model_dir is not None else None
        v = s.validation
        self.validation_cfg = ValidationConfig(
            open_threshold=v.open_threshold,
            confirm_threshold=v.confirm_threshold,
            persistence_k=v.persistence_k,
            persistence_n=v.persistence_n,
            flatline_windows=v.flatline_windows,
            dropout_fraction=v.dropout_fraction,
            grace_windows=v.startup_grace_windows,
            review_step=v.review_step,
            max_open=v.max_open,
            explain_features=v.explain_features,
        )
        self.alarm_cfg = AlarmConfig(clear_threshold=v.clear_threshold, clear_windows=v.clear_windows)
        self.known_assets = frozenset(a.asset_id for a in self.registry.assets) if s.strict_registry else None
        self.max_skew_ms = int(s.max_ts_skew_s * 1000)

    def profile(self, asset_id: str) -> AssetProfile:
        p = self._profiles.get(asset_id)
        if p is None:
            p = self._profiles[asset_id] = profile_for(self.registry, asset_id)
        return p

    # stateless steps -------------------------------------------------------
    def parse(self, item: Parsed | RawMessages) -> Parsed:
        if isinstance(item, RawMessages):
            received = item.receive_ms or (int(time.time() * 1000),) * len(item.payloads)
            return parse_messages(item, receive_ms=received)
        return item

    def check(self, parsed: Parsed) -> Parsed:
        now = time.time()
        checked = check_readings(parsed, now_ms=int(now * 1000), max_skew_ms=self.max_skew_ms,
                                 known_assets=self.known_assets)
        n = len(checked.readings)
        if n:
            source = self.settings.source
            metrics.READINGS_IN.labels(source).inc(n)
            metrics.LAST_BATCH.labels(source).set(now)
            metrics.SOURCE_LAG.labels(source).set(now - int(checked.readings.ts.max()) / 1000)
        return checked

    @staticmethod
    def split(readings: Readings) -> list[tuple[str, AssetReadings]]:
        return [(a.asset_id, a) for a in split_by_asset(readings)]

    # stateful steps --------------------------------------------------------
    def window_logic(self, resume: WindowState | None) -> _WindowLogic:
        idle = self.settings.windows.idle_close_s if self.live else None
        return _WindowLogic(self.window_cfg, resume, idle)

    def detect(self, state: DetectorState | None, fb: Any) -> tuple[DetectorState, Scored]:
        if state is None:  # a new job: start from the asset's last fitted models, if any were stored
            state = restore(self.model_store, fb.asset_id, self.detect_cfg)
        new, scored = detect(state, fb, self.profile(fb.asset_id), self.detect_cfg)
        metrics.WINDOWS_CLOSED.inc(len(fb))
        save_if_refitted(self.model_store, fb.asset_id, state, new, self.detect_cfg)
        return new, scored

    def validate(self, state: ValidationState | None, scored: Scored) -> tuple[ValidationState, tuple[str, list[Verdict]]]:
        asset_id = scored.features.asset_id
        state, verdicts = validate(state, scored, self.profile(asset_id), self.validation_cfg)
        return state, (asset_id, verdicts)

    def track(self, state: AlarmState | None, judged: tuple[str, list[Verdict]]) -> tuple[AlarmState, list[Alarm]]:
        asset_id, verdicts = judged
        state, changed = track_alarms(state, asset_id, verdicts, self.alarm_cfg)
        for a in changed:
            metrics.count_alarm(a.kind, a.status, opened=a.updated_at == a.opened_at)
            log.info("alarm", step="track_alarms", asset_id=a.asset_id, alarm_id=a.alarm_id, kind=a.kind,
                     status=a.status, severity=a.severity, sensors=list(a.sensors))
        return state, changed

    @staticmethod
    def count_anomaly(step_id: str, anomaly: Any) -> None:
        metrics.ANOMALIES.labels(anomaly.status).inc()

    @staticmethod
    def count_dead_letter(step_id: str, invalid: Any) -> None:
        metrics.DEAD_LETTERS.labels(invalid.reason).inc()
        log.debug("dead_letter", step=step_id, reason=invalid.reason, origin=invalid.origin,
                  dead_letter_id=invalid.dead_letter_id)


class _WindowLogic(StatefulLogic[AssetReadings, WindowOutput, WindowState]):
    """Holds one asset's window state; flushes at end of stream and, live, when the asset goes idle."""

    def __init__(self, cfg: WindowConfig, state: WindowState | None, idle_s: float | None) -> None:
        self._cfg = cfg
        self._state = state or WindowState(length_ms=cfg.length_ms)
        self._idle = timedelta(seconds=idle_s) if idle_s else None
        self._last_item = datetime.now(timezone.utc)

    def on_item(self, value: AssetReadings) -> tuple[list[WindowOutput], bool]:
        self._last_item = datetime.now(timezone.utc)
        self._state, out = window_readings(self._state, value, self._cfg)
        return ([out] if out.closed is not None or out.late else []), StatefulLogic.RETAIN

    def _flush(self) -> list[WindowOutput]:
        self._state, closed = flush_windows(self._state, self._cfg)
        return [WindowOutput(closed)] if closed is not None else []

    def on_notify(self) -> tuple[list[WindowOutput], bool]:
        return self._flush(), StatefulLogic.RETAIN

    def on_eof(self) -> tuple[list[WindowOutput], bool]:
        return self._flush(), StatefulLogic.RETAIN

    def notify_at(self) -> datetime | None:
        if self._idle is None or len(self._state.buf_ts) == 0:
            return None
        return self._last_item + self._idle

    def snapshot(self) -> WindowState:
        return self._state  # immutable: every step replaces it
