"""Adapters from the pure operators to Bytewax's step signatures.

Everything here is thin: it builds operator configs from the settings, looks
up an asset's profile and holds the window state inside a `StatefulLogic`
(windows need end-of-stream and idle flushing, which `stateful_map` lacks).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

import structlog
from bytewax.operators import StatefulLogic

from smart_maintenance import metrics
from smart_maintenance.config.durations import duration_ms
from smart_maintenance.config.registry import Registry
from smart_maintenance.config.settings import Settings
from smart_maintenance.operators.judge.alarms import (
    AlarmConfig,
    AlarmState,
    clear_all,
    open_from_review,
    reviews_needed,
    track_alarms,
)
from smart_maintenance.operators.controls import (
    Control,
    ControlQueue,
    MaintenanceRecord,
    ReviewDecision,
    hold,
    interleave,
    release,
)
from smart_maintenance.operators.detect.detectors import DetectConfig, DetectorState, detect
from smart_maintenance.operators.judge.feedback import apply_control
from smart_maintenance.operators.notify import Notification, NotifyConfig, NotifyState, plan_notifications
from smart_maintenance.operators.detect.model_store import restore, save_if_refitted
from smart_maintenance.operators.ingest.parse import check_readings, parse_messages, split_by_asset
from smart_maintenance.operators.profile import AssetProfile, profile_for
from smart_maintenance.operators.records import (
    Alarm,
    AssetReadings,
    FeatureBatch,
    Parsed,
    RawMessages,
    Readings,
    Scored,
)
from smart_maintenance.operators.judge.validation import ValidationConfig, ValidationState, Verdict, validate
from smart_maintenance.sources.recording import recording_lengths
from smart_maintenance.stores.model_files import DirectoryModelStore
from smart_maintenance.operators.ingest.windows import WindowConfig, WindowOutput, WindowState, flush_windows, window_readings


log = structlog.get_logger("smart_maintenance.flow")

StaticControls = Callable[[str], list[Control]]
"""Controls known when the flow starts (a replay's maintenance log, decisions in PostgreSQL), by asset."""


@dataclass(frozen=True, slots=True)
class Judged:
    """`validate`'s item: the verdicts of a batch of windows, or a control passing through."""

    asset_id: str
    verdicts: tuple[Verdict, ...] = ()
    features: FeatureBatch | None = None
    control: Control | None = None
    threshold_changes: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class Tracked:
    """`track_alarms`' item: what the rest of the loop needs from one step of one asset."""

    asset_id: str
    features: FeatureBatch | None
    alarms: tuple[Alarm, ...]
    control: Control | None
    threshold_changes: tuple[dict[str, Any], ...]
    reviews: tuple[Any, ...] = ()  # the batch's needs_review anomalies outside an open machine alarm

    def events(self) -> list[Any]:
        """Alarm changes and reviews needed, in event-time order (an alarm before a review of the same time)."""
        timed = [(a.updated_at, 0, i, a) for i, a in enumerate(self.alarms)]
        timed += [(r.window_end, 1, i, r) for i, r in enumerate(self.reviews)]
        return [e for *_, e in sorted(timed, key=lambda t: t[:3])]

    @property
    def maintenance(self) -> MaintenanceRecord | None:
        return self.control if isinstance(self.control, MaintenanceRecord) else None


@dataclass(frozen=True)
class AssetInput:
    """The window step's state: the asset's open windows and the controls waiting for its event time."""

    window: WindowState
    controls: ControlQueue = ControlQueue()
    asset_id: str = ""


@dataclass
class Steps:
    """The operator configs and the registry's profiles for one flow."""

    settings: Settings
    registry: Registry
    live: bool = False
    static_controls: StaticControls | None = None
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
            warmup_ms=duration_ms(d, "warmup", "warmup_windows"),
            baseline_ms=duration_ms(d, "baseline_span", "baseline_size"),
            refit_ms=duration_ms(d, "refit_period", "refit_blocks"),
            warmup_share=d.warmup_share,
        )
        self.model_store = DirectoryModelStore(d.model_dir) if d.model_dir is not None else None
        self.recording = recording_lengths(s)  # finite runs: each asset's warm-up is capped at a share of it
        self._asset_detect_cfg: dict[str, DetectConfig] = {}
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
            grace_ms=duration_ms(v, "startup_grace", "startup_grace_windows"),
            persistence_ms=duration_ms(v, "persistence", "persistence_k", "persistence_n"),
        )
        self.notify_cfg = NotifyConfig.from_settings(s.notify)
        self.alarm_cfg = AlarmConfig(clear_threshold=v.clear_threshold, clear_windows=v.clear_windows)
        self.known_assets = frozenset(a.asset_id for a in self.registry.assets) if s.strict_registry else None
        self.max_skew_ms = int(s.max_ts_skew_s * 1000)

    def plan_notifications(self, state: NotifyState | None, item: Tracked | Any) -> tuple[NotifyState, list[Notification]]:
        """One asset's alarms and reviews (in their event order) or a planned work order -> notifications."""
        asset = self.registry.asset(item.asset_id)
        site = asset.site if asset else "default"
        out: list[Notification] = []
        for event in item.events() if isinstance(item, Tracked) else [item]:
            state, notes = plan_notifications(state, event, site=site, cfg=self.notify_cfg)
            out += notes
        return state or NotifyState(), out

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
    def window_logic(self, resume: AssetInput | None) -> _WindowLogic:
        idle = self.settings.windows.idle_close_s if self.live else None
        return _WindowLogic(self.window_cfg, resume, idle, self.static_controls)

    def detect(self, state: DetectorState | None, item: FeatureBatch | Control) -> tuple[DetectorState | None, Scored | Control]:
        if not isinstance(item, FeatureBatch):
            if isinstance(item, MaintenanceRecord) and item.rebaseline:
                log.info("rebaseline", step="detect", asset_id=item.asset_id, maintenance_id=item.maintenance_id)
                return DetectorState(), item  # the machine changed: learn its normal again
            return state, item
        fb = item
        if state is None:  # a new job: start from the asset's last fitted models, if any were stored
            state = restore(self.model_store, fb.asset_id, self.detect_cfg)
        new, scored = detect(state, fb, self.profile(fb.asset_id), self.asset_detect_cfg(fb.asset_id))
        if (state is None or not state.window_ms) and self.asset_detect_cfg(fb.asset_id).warmup_capped(new.window_ms):
            log.warning("warmup_capped", step="detect", asset_id=fb.asset_id, recording_ms=self.recording(fb.asset_id),
                        share=self.detect_cfg.warmup_share)
        metrics.WINDOWS_CLOSED.inc(len(fb))
        save_if_refitted(self.model_store, fb.asset_id, state, new, self.detect_cfg)
        for rb in scored.rebaselines:  # a lasting step to a new level: the baseline moved (audit record in the state)
            log.info("new_normal", step="detect", asset_id=fb.asset_id, sensor=rb.sensor, shift=rb.shift, since_ms=rb.since_ms)
        return new, scored

    def asset_detect_cfg(self, asset_id: str) -> DetectConfig:
        cfg = self._asset_detect_cfg.get(asset_id)
        if cfg is None:
            length = self.recording(asset_id) if self.recording is not None else None
            cfg = self._asset_detect_cfg[asset_id] = replace(self.detect_cfg, recording_ms=length)
        return cfg

    def validate(self, state: ValidationState | None, item: Scored | Control) -> tuple[ValidationState | None, Judged]:
        if not isinstance(item, Scored):
            state, changes = apply_control(state, item, self.validation_cfg)
            for c in changes:
                log.info("threshold_changed", step="validate", asset_id=c["asset_id"], cause=c["cause"],
                         old=c["old_threshold"], new=c["new_threshold"], control_id=c["control_id"])
            return state, Judged(item.asset_id, control=item, threshold_changes=tuple(changes))
        asset_id = item.features.asset_id
        state, verdicts = validate(state, item, self.profile(asset_id), self.validation_cfg)
        return state, Judged(asset_id, tuple(verdicts), item.features)

    def track(self, state: AlarmState | None, judged: Judged) -> tuple[AlarmState | None, Tracked]:
        asset_id, control, before = judged.asset_id, judged.control, state
        if isinstance(control, MaintenanceRecord) and control.outcome != "cancelled":
            state, changed = clear_all(state, asset_id, control.at_ms, f"maintenance {control.outcome}",
                                       control.work_order_id)
        elif isinstance(control, ReviewDecision) and control.decision == "approve":
            state, changed = open_from_review(state, asset_id, control.anomaly)
        elif control is not None:
            changed = []
        else:
            state, changed = track_alarms(state, asset_id, list(judged.verdicts), self.alarm_cfg)
        for a in changed:
            metrics.count_alarm(a.kind, a.status, opened=a.updated_at == a.opened_at)
            log.info("alarm", step="track_alarms", asset_id=a.asset_id, alarm_id=a.alarm_id, kind=a.kind,
                     status=a.status, severity=a.severity, sensors=list(a.sensors))
        uncertain = [v.anomaly for v in judged.verdicts if v.anomaly is not None and v.anomaly.status == "needs_review"]
        reviews = reviews_needed(before, changed, uncertain) if uncertain else ()
        return state, Tracked(asset_id, judged.features, tuple(changed), control, judged.threshold_changes, reviews)

    @staticmethod
    def count_anomaly(step_id: str, anomaly: Any) -> None:
        metrics.ANOMALIES.labels(anomaly.status).inc()

    @staticmethod
    def count_work_order(step_id: str, wo: Any) -> None:
        metrics.WORK_ORDERS.labels(wo.status).inc()
        log.info("work_order", step="schedule", asset_id=wo.asset_id, work_order_id=wo.work_order_id,
                 alarm_id=wo.alarm_id, status=wo.status, priority=wo.priority, due_at=wo.due_at.isoformat(),
                 technician_id=wo.technician_id)

    @staticmethod
    def count_dead_letter(step_id: str, invalid: Any) -> None:
        metrics.DEAD_LETTERS.labels(invalid.reason).inc()
        log.debug("dead_letter", step=step_id, reason=invalid.reason, origin=invalid.origin,
                  dead_letter_id=invalid.dead_letter_id)


_IDLE_POLL = timedelta(seconds=1)  # how often an idle asset with pending controls looks at the clock again


class _WindowLogic(StatefulLogic[AssetReadings | Control, WindowOutput, AssetInput]):
    """Holds one asset's windows and pending controls; flushes at end of stream and, live, when idle.

    A control is released once the asset's closed windows reach its event
    time, cut in between the windows before and after it, so what it does
    depends on event time, not on when it arrived.
    """

    def __init__(self, cfg: WindowConfig, state: AssetInput | WindowState | None, idle_s: float | None,
                 static: StaticControls | None = None) -> None:
        self._cfg = cfg
        if isinstance(state, WindowState):  # a snapshot from before controls existed
            state = AssetInput(state)
        self._state = state or AssetInput(WindowState(length_ms=cfg.length_ms))
        self._static = static
        self._idle = timedelta(seconds=idle_s) if idle_s else None
        self._last_item = datetime.now(timezone.utc)

    def _known(self, asset_id: str) -> None:
        """The first item of this asset in this process: queue the controls known at start."""
        if self._state.asset_id:
            return
        controls = self._state.controls
        if self._static is not None:
            controls = hold(controls, self._static(asset_id))
        self._state = replace(self._state, controls=controls, asset_id=asset_id)

    def _out(self, closed: FeatureBatch | None, late: tuple = (), *, final: bool = False,
             until_ms: int | None = None) -> list[WindowOutput]:
        until = None if final else max(self._state.window.closed_until, until_ms or self._state.window.closed_until)
        queue, due = release(self._state.controls, until)
        self._state = replace(self._state, controls=queue)
        out = [WindowOutput(None, late)] if late else []
        for piece in interleave(closed, due):
            out.append(WindowOutput(piece, ()) if isinstance(piece, FeatureBatch) else WindowOutput(None, (), piece))
        return out

    def on_item(self, value: AssetReadings | Control) -> tuple[list[WindowOutput], bool]:
        self._last_item = datetime.now(timezone.utc)
        self._known(value.asset_id)
        if not isinstance(value, AssetReadings):
            self._state = replace(self._state, controls=hold(self._state.controls, [value]))
            return self._out(None), StatefulLogic.RETAIN
        window, out = window_readings(self._state.window, value, self._cfg)
        self._state = replace(self._state, window=window)
        return self._out(out.closed, out.late), StatefulLogic.RETAIN

    def _flush(self, final: bool, until_ms: int | None = None) -> list[WindowOutput]:
        window, closed = flush_windows(self._state.window, self._cfg)
        self._state = replace(self._state, window=window)
        return self._out(closed, final=final, until_ms=until_ms)

    def on_notify(self) -> tuple[list[WindowOutput], bool]:
        # live and idle: a control whose time has passed on the wall clock applies even if the asset sends
        # nothing more (a repair logged for an asset that stays stopped still closes its work)
        now_ms = int(datetime.now(timezone.utc).timestamp() * 1000)
        return self._flush(final=False, until_ms=now_ms - self._cfg.lateness_ms), StatefulLogic.RETAIN

    def on_eof(self) -> tuple[list[WindowOutput], bool]:
        return self._flush(final=True), StatefulLogic.RETAIN

    def notify_at(self) -> datetime | None:
        if self._idle is None or (len(self._state.window.buf_ts) == 0 and not self._state.controls.pending):
            return None
        return max(self._last_item + self._idle, datetime.now(timezone.utc) + _IDLE_POLL)

    def snapshot(self) -> AssetInput:
        return self._state  # immutable: every step replaces it
