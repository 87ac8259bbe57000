"""Adapters for the maintenance loop: prediction off the hot path, work orders, the planner.

Prediction: a `StatefulLogic` per asset cuts `PredictionRequest`s (cheap,
inline) and hands them to one process pool per worker process (a Prophet fit
takes 40-90 ms and holds the GIL; in a pool process it never stalls
detection). Finished predictions are emitted on later activations (every
item, and a wake-up every 0.2 s while any are pending); at end of stream the
logic waits for the rest. Pending requests are in the snapshot and are
submitted again after a resume; `predict` is pure, so they give the same
predictions with the same ids.

Planning: one `StatefulLogic` for the plant. Live it re-plans when no work
arrived for `debounce_s`, or `max_wait_s` after the first change, at the wall
clock; a replay (finite input) plans once at the end of its input, from the
event time of the last change, so a replay gives the same plan whatever
order its work orders arrived in.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

import structlog
from bytewax.operators import StatefulLogic

from smart_maintenance import metrics
from smart_maintenance.config.stages import (
    dispatch_config,
    predict_config,
    work_order_config,
)
from smart_maintenance.dataflows.offload import (
    STARVED_S,
    RemoteIncidents,
    boost,
    boost_all,
    pool,
    predict_with_models,
    request_id,
    reset_pool,
    wait_for,
)
from smart_maintenance.operators.controls import MaintenanceRecord
from smart_maintenance.operators.plan.dispatch import (
    DispatchConfig,
    DispatchState,
    Planned,
    plan_summary,
    replan,
    take,
    unplaced_ids,
)
from smart_maintenance.operators.plan.work_orders import (
    AssetWork,
    WorkOrder,
    WorkOrderState,
    WorkOut,
    plan_work,
)
from smart_maintenance.operators.predict.requests import (
    PredictConfig,
    Prediction,
    PredictionRequest,
    PredictionState,
    PredictSnapshot,
    advance,
    note_alarm,
)
from smart_maintenance.operators.profile import AssetProfile
from smart_maintenance.operators.records import iso
from smart_maintenance.operators.stages import Tracked

log = structlog.get_logger("smart_maintenance.loop")
_MEMORY_LOCK = threading.Lock()

_POLL = timedelta(seconds=0.2)














class PredictLogic(StatefulLogic[Tracked, Prediction, PredictSnapshot]):
    """One asset's prediction history; requests run in the pool (or inline when `offload` is off)."""

    def __init__(self, resume: PredictSnapshot | None, profile_of: Any, cfg: PredictConfig, offload: bool,
                 rul_types: Any = None) -> None:
        self._state = resume.state if resume else None
        self._rul = rul_types  # (rul_root, {asset_type}, asset_id -> asset_type) or None
        self._cfg = cfg
        self._profile_of = profile_of
        self._offload = offload
        self._pending: dict[str, PredictionRequest] = {}
        self._futures: dict[str, Future[Prediction]] = {}
        self._retried: set[str] = set()  # requests already sent again once after the pool process died
        self._since: dict[str, float] = {}  # when each request went to the pool (monotonic wall time)
        for r in resume.pending if resume else ():
            self._submit(r)

    def _with_history(self, r: PredictionRequest) -> PredictionRequest:
        """Attach the whole history when the asset's type has a learned RUL model."""
        if self._rul is None or self._state is None:
            return r
        root, types, type_of = self._rul
        asset_type = type_of(r.asset_id)
        if asset_type not in types:
            return r
        return replace(r, asset_type=asset_type, sensors=self._state.sensors, means=self._state.means.copy())

    def _submit(self, r: PredictionRequest) -> None:
        rid = request_id(r)
        if self._offload:
            self._supersede(r)
        self._pending[rid] = r
        if self._offload:
            self._futures[rid] = pool().submit(predict_with_models, r, self._rul[0] if self._rul else None)
            self._since.setdefault(rid, time.monotonic())

    def _supersede(self, r: PredictionRequest) -> None:
        """Drop the asset's queued requests for the same alarm that `r` makes out of date.

        The work order keeps an alarm's latest prediction only, so an older one still waiting for the
        pool would be computed and then ignored; when the pool falls behind (a loaded machine) these
        piled up, and a replay waited for all of them at its end. A request the pool has started is
        left to finish. Which older predictions are dropped depends on the pool's speed, so the
        predictions stream may hold fewer rows; the work orders' last states do not change (the
        latest request of each alarm is never dropped).
        """
        for rid, old in list(self._pending.items()):
            f = self._futures.get(rid)
            if old.alarm_id == r.alarm_id and old.made_at_ms < r.made_at_ms and f is not None and f.cancel():
                del self._pending[rid], self._futures[rid]
                self._retried.discard(rid)
                self._since.pop(rid, None)
                metrics.PREDICTIONS.labels("superseded").inc()

    def _failed(self, rid: str, e: BaseException) -> None:
        """A request that raised is dropped (logged and counted), never retried forever: it would fail again."""
        r = self._pending.pop(rid)
        self._futures.pop(rid, None)
        self._since.pop(rid, None)
        self._retried.discard(rid)
        metrics.PREDICTIONS.labels("failed").inc()
        log.error("prediction_failed", step="predict_ttf", asset_id=r.asset_id, alarm_id=r.alarm_id,
                  error=f"{type(e).__name__}: {e}")

    def _done(self, wait: bool = False) -> list[Prediction]:
        out: list[Prediction] = []
        root = self._rul[0] if self._rul else None
        for rid in list(self._pending):
            if not self._offload:
                t0 = time.perf_counter()
                try:
                    out.append(predict_with_models(self._pending[rid], root))
                    del self._pending[rid]
                except Exception as e:  # noqa: BLE001 - a bad request must not stop detection
                    self._failed(rid, e)
                metrics.PREDICTION_SECONDS.observe(time.perf_counter() - t0)
                continue
            f = self._futures[rid]
            if not (wait or f.done()):
                if time.monotonic() - self._since.get(rid, time.monotonic()) > STARVED_S:
                    boost("predict")
                continue
            try:
                out.append(wait_for(f, "predict"))
                del self._futures[rid], self._pending[rid]
                self._since.pop(rid, None)
                self._retried.discard(rid)
            except BrokenProcessPool as e:  # the pool process died (OOM, a native crash): a new pool, one retry
                if rid in self._retried:
                    self._failed(rid, e)
                    continue
                reset_pool()
                self._retried.add(rid)
                self._futures[rid] = retry = pool().submit(predict_with_models, self._pending[rid], root)
                if wait:
                    try:
                        out.append(wait_for(retry, "predict"))
                        del self._futures[rid], self._pending[rid]
                        self._since.pop(rid, None)
                    except Exception as e2:  # noqa: BLE001
                        self._failed(rid, e2)
            except Exception as e:  # noqa: BLE001 - the request itself is bad: drop it
                self._failed(rid, e)
        for p in out:
            metrics.PREDICTIONS.labels(p.method).inc()
            log.info("prediction", step="predict_ttf", asset_id=p.asset_id, alarm_id=p.alarm_id,
                     prediction_id=p.prediction_id, method=p.method,
                     failure_at=p.failure_at.isoformat() if p.failure_at else None)
        return out

    def on_item(self, value: Tracked) -> tuple[list[Prediction], bool]:
        if value.features is not None:
            profile: AssetProfile = self._profile_of(value.asset_id)
            self._state, request = advance(self._state, value.features, list(value.alarms), profile, self._cfg)
            if request is not None:
                self._submit(self._with_history(request))
        else:
            for a in value.alarms:
                self._state = note_alarm(self._state, a)
            m = value.maintenance
            if m is not None and m.rebaseline and self._state is not None:  # a repaired machine: a new history
                self._state = PredictionState(last_request_ms=self._state.last_request_ms,
                                              open_alarm=self._state.open_alarm)
        return self._done(), StatefulLogic.RETAIN

    def on_notify(self) -> tuple[list[Prediction], bool]:
        return self._done(), StatefulLogic.RETAIN

    def on_eof(self) -> tuple[list[Prediction], bool]:
        if self._offload:
            boost_all()  # the predictions and the incident indexing left now proceed side by side
        t0, n = time.perf_counter(), len(self._futures)
        out = self._done(wait=True)
        if n:  # what the end of a replay waits for (the pool's backlog)
            log.info("predictions_awaited", step="predict_ttf", pending=n, seconds=round(time.perf_counter() - t0, 3))
        return out, StatefulLogic.RETAIN

    def notify_at(self) -> datetime | None:
        return datetime.now(timezone.utc) + _POLL if self._futures else None

    def snapshot(self) -> PredictSnapshot:
        return PredictSnapshot(self._state, tuple(self._pending.values()))


class ScheduleLogic(StatefulLogic[WorkOrder, Planned, DispatchState]):
    """The plant's planner: collects work-order changes, re-plans debounced (live) or at end of input."""

    def __init__(self, resume: DispatchState | None, technicians: Any, cfg: DispatchConfig, *, live: bool,
                 debounce_s: float, max_wait_s: float) -> None:
        self._state = resume or DispatchState()
        self._techs = technicians
        self._cfg = cfg
        self._live = live
        self._quiet = timedelta(seconds=debounce_s)
        self._max_wait = timedelta(seconds=max_wait_s)
        self._first: datetime | None = None
        self._last: datetime | None = None
        if live and self._state.changed:  # resumed with work not yet planned: plan it soon
            self._first = self._last = datetime.now(timezone.utc)

    def on_item(self, value: WorkOrder) -> tuple[list[Planned], bool]:
        self._state, rows = take(self._state, value)
        if rows and self._live:
            now = datetime.now(timezone.utc)
            self._first = self._first or now
            self._last = now
        return [Planned(work_order=w) for w in rows], StatefulLogic.RETAIN

    def _plan(self, origin_ms: int) -> list[Planned]:
        self._first = self._last = None
        if not self._state.changed:
            return []
        t0 = time.perf_counter()
        self._state, changed, rows, plan = replan(self._state, self._techs, origin_ms, self._cfg)
        metrics.SCHEDULE_SECONDS.observe(time.perf_counter() - t0)
        if plan is not None:
            log.info("plan", step="schedule", **plan_summary(plan))
        out = [Planned(work_order=w) for w in changed]
        if plan is not None:
            out.append(Planned(assignments=tuple(rows), unplaced=tuple(unplaced_ids(self._state)),
                               planned_at=iso(self._state.plan_origin_ms or origin_ms)))
        return out

    def on_notify(self) -> tuple[list[Planned], bool]:
        return self._plan(int(time.time() * 1000)), StatefulLogic.RETAIN

    def on_eof(self) -> tuple[list[Planned], bool]:
        if self._live:
            return self._plan(int(time.time() * 1000)), StatefulLogic.RETAIN
        return self._plan(self._state.latest_ms or 0), StatefulLogic.RETAIN

    def notify_at(self) -> datetime | None:
        if not self._live or self._first is None or self._last is None:
            return None
        return min(self._last + self._quiet, self._first + self._max_wait)

    def snapshot(self) -> DispatchState:
        return self._state


Closures = tuple[tuple[WorkOrder, MaintenanceRecord], ...]


class RecallLogic(StatefulLogic[WorkOut, WorkOut, Closures]):
    """One asset's work through the incident memory: closed work is indexed, new work gets similar incidents.

    Indexing runs in the incident process and is not waited for (a closure's incident is hidden from
    a replay's own searches anyway); closures whose indexing has not finished are in the snapshot and
    are indexed again after a resume (an upsert by incident id), and end of input waits for them. The
    memory is an aid, not part of the loop's contract: if it fails (model or store unusable) the work
    orders go on without similar incidents and the error is logged.
    """

    def __init__(self, resume: Closures | None, memory: Callable[[], RemoteIncidents]) -> None:
        self._memory = memory
        self._pending: list[tuple[Closures, Future[int]]] = []
        self._since: float | None = None  # when the oldest unfinished indexing was handed over (monotonic)
        if resume:
            self._remember(resume)

    def _failed(self, what: str, e: BaseException, **ids: Any) -> None:
        metrics.SINK_ERRORS.labels("incidents").inc()
        log.error("incident_memory_failed", step="recall_incidents", action=what,
                  error=f"{type(e).__name__}: {e}", **ids)

    def _remember(self, closures: Closures) -> None:
        try:
            self._pending.append((closures, self._memory().remember(closures)))
            self._since = self._since or time.monotonic()
        except Exception as e:  # noqa: BLE001
            self._failed("remember", e, work_orders=[w.work_order_id for w, _ in closures])

    def _settle(self, wait: bool = False) -> None:
        """Forget indexing that finished; log what failed."""
        still = []
        if wait:
            boost_all()
        elif self._since is not None and time.monotonic() - self._since > STARVED_S:
            boost("incidents")
        for closures, f in self._pending:
            if not (wait or f.done()):
                still.append((closures, f))
                continue
            try:
                wait_for(f, "incidents")
            except Exception as e:  # noqa: BLE001
                self._failed("remember", e, work_orders=[w.work_order_id for w, _ in closures])
        self._pending = still
        if not still:
            self._since = None

    def on_item(self, value: WorkOut) -> tuple[list[WorkOut], bool]:
        self._settle()
        if value.closures:
            self._remember(value.closures)
        if value.orders:
            try:
                value = replace(value, orders=tuple(self._memory().attach(value.orders)))
            except Exception as e:  # noqa: BLE001
                self._failed("attach", e, work_orders=[w.work_order_id for w in value.orders])
        return [value], StatefulLogic.RETAIN

    def on_notify(self) -> tuple[list[WorkOut], bool]:
        self._settle()
        return [], StatefulLogic.RETAIN

    def on_eof(self) -> tuple[list[WorkOut], bool]:
        t0, n = time.perf_counter(), len(self._pending)
        self._settle(wait=True)
        if n:
            log.info("incidents_awaited", step="recall_incidents", pending=n,
                     seconds=round(time.perf_counter() - t0, 3))
        return [], StatefulLogic.RETAIN

    def notify_at(self) -> datetime | None:
        return datetime.now(timezone.utc) + _POLL if self._pending else None

    def snapshot(self) -> Closures:
        return tuple(c for closures, _ in self._pending for c in closures)


@dataclass
class LoopSteps:
    """The maintenance loop's configs, built once per flow from the settings."""

    settings: Any
    registry: Any
    profile_of: Any
    live: bool = False
    _work: dict[str, AssetWork] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.predict_cfg = predict_config(s)
        self.work_cfg = work_order_config(s)
        self.dispatch_cfg = dispatch_config(s)

    def asset_work(self, asset_id: str) -> AssetWork:
        from smart_maintenance.operators.plan.work_orders import asset_work

        w = self._work.get(asset_id)
        if w is None:
            w = self._work[asset_id] = asset_work(self.registry, asset_id)
        return w

    def predict_logic(self, resume: PredictSnapshot | None) -> PredictLogic:
        return PredictLogic(resume, self.profile_of, self.predict_cfg, self.settings.prediction.offload,
                            self.rul_types())

    def rul_types(self) -> tuple[str, frozenset[str], Any] | None:
        """Asset types with a registered RUL model (`train-rul`), looked up once per flow."""
        if not hasattr(self, "_rul"):
            from smart_maintenance.stores.model_registry import ModelRegistry

            s = self.settings
            root = s.prediction.rul_registry or s.data_dir / "rul_models"
            types = frozenset(ModelRegistry(root).asset_types()) if root.is_dir() else frozenset()
            self._rul = (str(root), types, lambda a: self.asset_work(a).asset_type) if types else None
        return self._rul

    def plan_work(self, state: WorkOrderState | None, item: Tracked | Prediction) -> tuple[WorkOrderState, WorkOut]:
        asset_id = item.asset_id
        return plan_work(state, item, self.asset_work(asset_id), self.work_cfg)

    def recall_logic(self, resume: tuple[tuple[WorkOrder, MaintenanceRecord], ...] | None) -> RecallLogic:
        return RecallLogic(resume, self.incident_memory)

    def incident_memory(self) -> RemoteIncidents:
        """One memory per flow, in the incident process, which opens it and loads the model from when it is made.

        A replay makes it when the flow is built and freezes it then, so its searches see the memory as
        it was when the replay began; a live flow makes it for its first work order (a flow without
        work never loads the model, about 400 MB).
        """
        with _MEMORY_LOCK:
            if not hasattr(self, "_memory"):
                self._memory = RemoteIncidents(self.settings.incidents, self.settings.data_dir, frozen=not self.live)
        return self._memory

    def schedule_logic(self, resume: DispatchState | None) -> ScheduleLogic:
        w = self.settings.work
        return ScheduleLogic(resume, self.registry.technicians, self.dispatch_cfg, live=self.live,
                             debounce_s=w.debounce_s, max_wait_s=w.max_wait_s)
