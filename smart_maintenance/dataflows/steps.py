"""Adapters from the pure operators to Bytewax's step signatures.

Everything here is thin: it builds operator configs from the settings, looks
up an asset's profile and holds the window state inside a `StatefulLogic`
(windows need end-of-stream and idle flushing, which `stateful_map` lacks).
"""

from __future__ import annotations

import pickle
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Generic, TypeVar

import bytewax.operators as op
import structlog
from bytewax.dataflow import operator
from bytewax.operators import KeyedStream, StatefulLogic

from smart_maintenance import metrics
from smart_maintenance.config.registry import Registry
from smart_maintenance.config.settings import Settings
from smart_maintenance.config.stages import stage_configs
from smart_maintenance.operators.controls import (
    Control,
    hold,
    interleave,
    release,
)
from smart_maintenance.operators.detect.detectors import (
    DetectConfig,
    DetectorState,
    detect,
)
from smart_maintenance.operators.detect.detectors import (
    apply_control as apply_detect_control,
)
from smart_maintenance.operators.detect.model_store import restore, save_if_refitted
from smart_maintenance.operators.ingest.arrivals import ArrivalClock, observe
from smart_maintenance.operators.ingest.limits import (
    AssetAdmission,
    Evicted,
    after_eviction_alarms,
    after_eviction_validation,
    known_sensors,
    refused,
)
from smart_maintenance.operators.ingest.parse import (
    check_readings,
    parse_messages,
    split_by_asset,
)
from smart_maintenance.operators.ingest.units import convert_units, expected_units
from smart_maintenance.operators.ingest.windows import (
    WindowConfig,
    WindowOutput,
    WindowState,
    clock_due,
    close_due,
    drop_held,
    flush_windows,
    window_readings,
)
from smart_maintenance.operators.judge.alarms import (
    AlarmState,
    queue_cases,
    reviews_needed,
    track_alarms,
)
from smart_maintenance.operators.judge.alarms import (
    apply_control as apply_alarm_control,
)
from smart_maintenance.operators.judge.feedback import apply_control
from smart_maintenance.operators.judge.validation import (
    ValidationState,
    validate,
)
from smart_maintenance.operators.notify import (
    Notification,
    NotifyState,
    plan_notifications,
)
from smart_maintenance.operators.profile import AssetProfile, profile_for
from smart_maintenance.operators.records import (
    AssetReadings,
    FeatureBatch,
    Invalid,
    Parsed,
    RawMessages,
    Readings,
    Scored,
    dt_to_ms,
    evolve,
    ms_to_dt,
)
from smart_maintenance.operators.stages import AssetInput, Judged, Tracked
from smart_maintenance.recovery import recovery_on
from smart_maintenance.sources.recording import recording_lengths
from smart_maintenance.stores.model_files import DirectoryModelStore

log = structlog.get_logger("smart_maintenance.flow")

StaticControls = Callable[[str], list[Control]]
"""Controls known when the flow starts (a replay's maintenance log, decisions in PostgreSQL), by asset."""








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
        c = stage_configs(s)
        self.window_cfg, self.detect_cfg, self.validation_cfg = c.window, c.detect, c.validation
        self.alarm_cfg, self.notify_cfg = c.alarm, c.notify
        # one per process, shared by its worker threads: assets in memory and new ones per minute (live)
        self.admission = AssetAdmission(s.limits.max_assets, s.limits.max_new_assets_per_min if self.live else None)
        self.admission_lock = threading.Lock()
        self._admit = _Admit(self.admission, self.admission_lock)  # one for every asset's window logic
        d = s.detection
        self.model_store = DirectoryModelStore(d.model_dir) if d.model_dir is not None else None
        self.recording = recording_lengths(s)  # finite runs: each asset's warm-up is capped at a share of it
        self._asset_detect_cfg: dict[str, DetectConfig] = {}
        self.known_assets = frozenset(a.asset_id for a in self.registry.assets) if s.strict_registry else None
        self.known_sensors = known_sensors(self.registry) if s.strict_registry else None
        self.max_skew_ms = int(s.max_ts_skew_s * 1000)
        self.units = expected_units(self.registry)

    def plan_notifications(
        self, state: NotifyState | None, item: Tracked | Any
    ) -> tuple[NotifyState | None, list[Notification]]:
        """One asset's alarms and reviews (in their event order) or a planned work order -> notifications.

        An asset that has had no event keeps no state (None plans as a new `NotifyState`): most windows of
        most assets have none, and with many assets the empty states were a Python object each.
        """
        events = item.events() if isinstance(item, Tracked) else [item]
        if not events:
            return state, []  # None stays None: stateful_map keeps nothing for this asset
        asset = self.registry.asset(item.asset_id)
        site = asset.site if asset else "default"
        out: list[Notification] = []
        for event in events:
            state, notes = plan_notifications(state, event, site=site, cfg=self.notify_cfg)
            out += notes
        return state or NotifyState(), out

    def profile(self, asset_id: str) -> AssetProfile:
        p = self._profiles.get(asset_id)
        if p is None:
            p = profile_for(self.registry, asset_id)
            if p.asset_type is not None:  # kept for the registry's assets only: an invented id costs nothing here
                self._profiles[asset_id] = p
        return p

    # stateless steps -------------------------------------------------------
    def parse(self, item: Parsed | RawMessages) -> Parsed:
        if isinstance(item, RawMessages):
            received = item.receive_ms or (int(time.time() * 1000),) * len(item.payloads)
            return parse_messages(item, receive_ms=received, max_bytes=self.settings.limits.max_message_bytes,
                                  accept_uncertain=self.settings.accept_uncertain_quality)
        return item

    def check(self, parsed: Parsed) -> Parsed:
        now = time.time()
        checked = check_readings(parsed, now_ms=int(now * 1000), max_skew_ms=self.max_skew_ms,
                                 known_assets=self.known_assets, known_sensors=self.known_sensors,
                                 max_name_len=self.settings.limits.max_name_len)
        checked = convert_units(checked, self.units)
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
        evict = self.settings.limits.evict_after_s if self.live else None
        clock = self.live and self.settings.windows.clock_close
        return _WindowLogic(self.window_cfg, resume, idle, self.static_controls, self._admit, evict, clock_close=clock)

    def detect(
        self, state: DetectorState | None, item: FeatureBatch | Control
    ) -> tuple[DetectorState | None, Scored | Control]:
        if isinstance(item, Evicted):  # fitted models are in the model store; restore() brings them back
            return None, item
        if not isinstance(item, FeatureBatch):
            new_state = apply_detect_control(state, item)
            if new_state is not state:
                log.info("rebaseline", step="detect", asset_id=item.asset_id, control_id=item.control_id)
            return new_state, item
        fb = item
        if state is None:  # a new job: start from the asset's last fitted models, if any were stored
            state = restore(self.model_store, fb.asset_id, self.detect_cfg)
        new, scored = detect(state, fb, self.profile(fb.asset_id), self.asset_detect_cfg(fb.asset_id))
        if (state is None or not state.window_ms) and self.asset_detect_cfg(fb.asset_id).warmup_capped(new.window_ms):
            recording_ms = self.recording(fb.asset_id) if self.recording is not None else None  # capped: it is set
            log.warning("warmup_capped", step="detect", asset_id=fb.asset_id, recording_ms=recording_ms,
                        share=self.detect_cfg.warmup_share)
        if new.prior_dropped and not (state is not None and state.prior_dropped):
            log.info("repair_prior_dropped", step="detect", asset_id=fb.asset_id, windows=new.prior_seen,
                     at_open=new.prior_hits)  # the fit from before the repair does not describe the machine now
        metrics.WINDOWS_CLOSED.inc(len(fb))
        save_if_refitted(self.model_store, fb.asset_id, state, new, self.detect_cfg)
        for rb in scored.rebaselines:  # a lasting step to a new level: the baseline moved (audit record in the state)
            log.info(
                "new_normal",
                step="detect",
                asset_id=fb.asset_id,
                sensor=rb.sensor,
                shift=rb.shift,
                since_ms=rb.since_ms,
            )
        return new, scored

    def asset_detect_cfg(self, asset_id: str) -> DetectConfig:
        if self.recording is None:  # live: one config for all (no copy, nothing kept per asset)
            return self.detect_cfg
        cfg = self._asset_detect_cfg.get(asset_id)
        if cfg is None:
            length = self.recording(asset_id) if self.recording is not None else None
            cfg = self._asset_detect_cfg[asset_id] = replace(self.detect_cfg, recording_ms=length)
        return cfg

    def validate(self, state: ValidationState | None, item: Scored | Control) -> tuple[ValidationState | None, Judged]:
        if isinstance(item, Evicted):
            return after_eviction_validation(state), Judged(item.asset_id, control=item)
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
        if isinstance(control, Evicted):
            return after_eviction_alarms(state), Tracked(asset_id, None, (), control, ())
        if control is not None:
            state, changed = apply_alarm_control(state, control)
        else:
            state, changed = track_alarms(state, asset_id, list(judged.verdicts), self.alarm_cfg)
        for a in changed:
            metrics.count_alarm(a.kind, a.status, opened=a.updated_at == a.opened_at)
            log.info("alarm", step="track_alarms", asset_id=a.asset_id, alarm_id=a.alarm_id, kind=a.kind,
                     status=a.status, severity=a.severity, sensors=list(a.sensors))
        uncertain = [v.anomaly for v in judged.verdicts if v.anomaly is not None and v.anomaly.status == "needs_review"]
        reviews = reviews_needed(before, changed, uncertain) if uncertain else ()
        state, reviews = queue_cases(state, asset_id, list(reviews), self.alarm_cfg)  # windows -> review cases
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


@dataclass(frozen=True)
class _Admit:
    """The process's `AssetAdmission` behind its lock (worker threads share it)."""

    admission: AssetAdmission
    lock: threading.Lock

    def admit(self, asset_id: str, now_ms: int) -> str | None:
        with self.lock:
            return self.admission.admit(asset_id, now_ms)

    def held(self, asset_id: str) -> None:
        with self.lock:
            self.admission.held(asset_id)

    def forget(self, asset_id: str) -> None:
        with self.lock:
            self.admission.forget(asset_id)

    def limit(self, reason: str) -> int:
        a = self.admission
        return a.max_assets if reason == "too_many_assets" else a.max_new_per_min or 0


_IDLE_POLL = timedelta(seconds=1)  # how often an idle asset with pending controls looks at the clock again


def _now() -> datetime:
    """The wall clock of the window step (one function, so that tests can set it)."""
    return datetime.now(timezone.utc)


class _WindowLogic(StatefulLogic[AssetReadings | Control, WindowOutput, AssetInput]):
    """Holds one asset's windows and pending controls; flushes at end of stream and, live, when idle.

    A control is released once the asset's closed windows reach its event
    time, cut in between the windows before and after it, so what it does
    depends on event time, not on when it arrived.

    Live with `clock_close`, a window also closes when the asset's event time estimated from its arrivals
    (`ArrivalClock`) passes the window's end + allowed lateness, without waiting for the reading that would
    close it in event time; only while the asset's readings arrive steadily (`ArrivalClock.steady`: not a
    store-and-forward gateway), its stream has reached the window's end (`clock_due`) and its latest batch
    came within 1.5 x the allowed lateness of now (`ArrivalClock.current`: a process that stood still, then
    wakes, waits for its readings). The estimate is not snapshotted: after a restart it is learnt again from the
    arrivals, which begin with the backlog (late, spread out: no clock close until they are current).
    """

    def __init__(self, cfg: WindowConfig, state: AssetInput | WindowState | None, idle_s: float | None,
                 static: StaticControls | None = None, admit: _Admit | None = None,
                 evict_s: float | None = None, *, clock_close: bool = False) -> None:
        self._cfg = cfg
        if isinstance(state, WindowState):  # a snapshot from before controls existed
            state = AssetInput(state)
        self._state = state or AssetInput(WindowState(length_ms=cfg.length_ms))
        self._static = static
        self._idle = timedelta(seconds=idle_s) if idle_s else None
        self._admit = admit
        self._evict = timedelta(seconds=evict_s) if evict_s else None
        self._last_item = _now()
        self._clock_close = clock_close and self._idle is not None  # live only: a replay has no wall clock
        self._arrivals: ArrivalClock | None = None
        self._clock_at: datetime | None = None  # when the earliest open window closes on the clock (None: it won't)
        if admit is not None and self._state.asset_id:  # resumed from a snapshot: already in memory
            admit.held(self._state.asset_id)

    def _known(self, asset_id: str) -> None:
        """The first item of this asset in this process: queue the controls known at start."""
        if self._state.asset_id:
            return
        controls = self._state.controls
        if self._static is not None:
            controls = hold(controls, self._static(asset_id))
        self._state = evolve(self._state, controls=controls, asset_id=asset_id)

    def _out(self, closed: FeatureBatch | None, late: tuple[Invalid, ...] = (), *, final: bool = False,
             until_ms: int | None = None) -> list[WindowOutput]:
        out = [WindowOutput(None, late)] if late else []
        if not self._state.controls.pending:  # the usual case: nothing to release, nothing to cut
            if closed is not None and len(closed):  # as `interleave` with no controls
                out.append(WindowOutput(closed, ()))
            return out
        until = None if final else max(self._state.window.closed_until, until_ms or self._state.window.closed_until)
        queue, due = release(self._state.controls, until)
        self._state = evolve(self._state, controls=queue)
        for piece in interleave(closed, due):
            out.append(WindowOutput(piece, ()) if isinstance(piece, FeatureBatch) else WindowOutput(None, (), piece))
        return out

    def on_item(self, value: AssetReadings | Control) -> tuple[list[WindowOutput], bool]:
        if self._idle is not None or self._evict is not None or not self._state.asset_id:  # a replay needs no clock
            self._last_item = _now()
        if not self._state.asset_id and self._admit is not None:  # a new asset in this process
            if isinstance(value, AssetReadings):
                reason = self._admit.admit(value.asset_id, int(self._last_item.timestamp() * 1000))
                if reason is not None:
                    return [
                        WindowOutput(None, refused(value, reason, self._admit.limit(reason)))
                    ], StatefulLogic.DISCARD
            else:  # a control is trusted input: its asset is held without counting against the rate
                self._admit.held(value.asset_id)
        self._known(value.asset_id)
        if not isinstance(value, AssetReadings):
            self._state = evolve(self._state, controls=hold(self._state.controls, [value]))
            return self._out(None), StatefulLogic.RETAIN
        window, out = window_readings(self._state.window, value, self._cfg)
        self._state = evolve(self._state, window=window)
        if self._clock_close and len(value) and window.length_ms is not None:  # (auto length: no windows yet)
            ts = value.ts
            earliest = min(ts.tolist()) if len(ts) <= 64 else int(ts.min())  # a few: no numpy call
            self._arrivals = observe(self._arrivals, dt_to_ms(self._last_item), earliest, window.max_ts)
            self._plan_clock()
        return self._out(out.closed, out.late), StatefulLogic.RETAIN

    def _flush(self, final: bool, until_ms: int | None = None) -> list[WindowOutput]:
        window, closed = flush_windows(self._state.window, self._cfg)
        held: tuple[Invalid, ...] = ()
        if final:  # held readings far ahead were never confirmed
            window, held = drop_held(window, self._cfg)
        self._state = evolve(self._state, window=window)
        self._clock_at = None  # every window closed
        return ([WindowOutput(None, held)] if held else []) + self._out(closed, final=final, until_ms=until_ms)

    def _evict_due(self) -> bool:
        return (self._evict is not None and not self._state.controls.pending
                and _now() - self._last_item >= self._evict)

    def on_notify(self) -> tuple[list[WindowOutput], bool]:
        if self._evict_due():  # silent for evict_after: what closes, closes; then the asset leaves memory
            out = self._flush(final=True)
            asset_id = self._state.asset_id
            if self._admit is not None:
                self._admit.forget(asset_id)
            assert self._evict is not None  # noqa: S101 - invariant, narrows the type
            idle_ms = int(self._evict.total_seconds() * 1000)
            log.info("evicted", step="window", asset_id=asset_id, idle_s=self._evict.total_seconds())
            return out + [WindowOutput(None, (), Evicted(asset_id, idle_ms))], StatefulLogic.DISCARD
        now = _now()
        if self._clock_close and self._idle is not None and now - self._last_item < self._idle:
            return self._close_on_clock(dt_to_ms(now)), StatefulLogic.RETAIN
        # live and idle: a control whose time has passed on the wall clock applies even if the asset sends
        # nothing more (a repair logged for an asset that stays stopped still closes its work)
        return self._flush(final=False, until_ms=dt_to_ms(now) - self._cfg.lateness_ms), StatefulLogic.RETAIN

    def _plan_clock(self) -> None:
        """When the earliest open window closes on the clock, after the windows or the estimate changed.

        Kept, not computed in `notify_at`, which Bytewax calls after every item of every asset.
        """
        clock = self._arrivals
        due = clock_due(self._state.window, self._cfg) if clock is not None and clock.steady(self._cfg.lateness_ms) \
            else None
        self._clock_at = None if clock is None or due is None else ms_to_dt(clock.wall_time(due))

    def _close_on_clock(self, now_ms: int) -> list[WindowOutput]:
        clock = self._arrivals
        if clock is None or self._clock_at is None or not clock.current(now_ms, self._cfg.lateness_ms):
            self._clock_at = None  # stood still: wait for the readings (or the idle close), not the clock
            return []
        window, closed = close_due(self._state.window, self._cfg, clock.event_time(now_ms))
        self._state = evolve(self._state, window=window)
        self._plan_clock()
        return self._out(closed)

    def on_eof(self) -> tuple[list[WindowOutput], bool]:
        return self._flush(final=True), StatefulLogic.RETAIN

    def notify_at(self) -> datetime | None:
        evict_at = self._last_item + self._evict if self._evict is not None and not self._state.controls.pending \
            else None
        if self._idle is None or (self._state.window.n == 0 and not self._state.controls.pending):
            return evict_at
        at = max(self._last_item + self._idle, _now() + _IDLE_POLL)
        if self._clock_at is not None and self._clock_at < at:
            at = self._clock_at
        return at if evict_at is None else min(at, evict_at)

    def snapshot(self) -> AssetInput:
        return self._state  # immutable: every step replaces it


S = TypeVar("S")
V = TypeVar("V")
_UNREAD = b""  # the snapshot of a flow without recovery: nothing reads it
W = TypeVar("W")


class _FoldLogic(StatefulLogic[V, W, Any], Generic[S, V, W]):
    """One key's state for `fold_map`: the mapper's state, snapshotted as pickled bytes.

    Bytewax asks every key a step touched for its snapshot at the end of each epoch, with or without
    recovery. Without recovery nothing ever reads it, so it is not pickled (`recovery.py` says which).
    """

    def __init__(self, mapper: Callable[[S | None, V], tuple[S | None, W]], resume: Any) -> None:
        self._mapper = mapper
        # bytes: a snapshot of this logic; anything else: one from `op.stateful_map` (same step ids)
        self._state: S | None = pickle.loads(resume) if isinstance(resume, bytes) else resume  # noqa: S301 own snapshot
        self._snap: bytes | None = None if recovery_on() else _UNREAD

    def on_item(self, value: V) -> tuple[list[W], bool]:
        self._state, out = self._mapper(self._state, value)
        if self._snap is not _UNREAD:
            self._snap = None
        return [out], StatefulLogic.DISCARD if self._state is None else StatefulLogic.RETAIN

    def snapshot(self) -> bytes:
        if self._snap is None:  # pickled once per change: later mutation of the state cannot reach it
            self._snap = pickle.dumps(self._state, protocol=5)
        return self._snap


@operator
def _fold_flat(step_id: str, up: KeyedStream[V], mapper: Callable[[Any, V], tuple[Any, W]]) -> KeyedStream[W]:
    return op.stateful("stateful", up, lambda resume: _FoldLogic(mapper, resume))


@operator
def fold_map(step_id: str, up: KeyedStream[V], mapper: Callable[[Any, V], tuple[Any, W]]) -> KeyedStream[W]:
    """`op.stateful_map`, with the same step ids, whose snapshot is the state pickled once, not deep-copied.

    Bytewax snapshots every key a step touched at the end of each epoch; `stateful_map` deep-copies its
    state there, about 0.2 ms for a young asset's detector, validation and alarm states: with thousands of
    assets each sending a few readings per epoch that was most of the flow's time. The per-asset states
    are not all immutable (river sketches, the new-normal watch), so the snapshot must still be a copy:
    pickling is 2-5x cheaper than `copy.deepcopy` on them, and is what recovery stores anyway.
    """
    return _fold_flat("stateful_flat_map", up, mapper)
