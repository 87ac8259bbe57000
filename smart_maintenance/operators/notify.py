"""Which notifications an asset's events call for: routing, deduplication and rate limits (pure).

One `NotifyState` per asset. `plan_notifications` takes the asset's next
event — an `Alarm` state, a `ReviewCase` (or a lone `needs_review` `Anomaly`) or a scheduled
`WorkOrder` — and returns one `Notification` per channel its routing rules
name:

=====================================  ======================
event                                  kind
=====================================  ======================
machine alarm, first `open` state      alarm_opened
machine alarm, severity above the      alarm_escalated
last one notified
sensor_fault alarm, first `open`       sensor_fault
any alarm, `cleared`                   alarm_cleared
review case, the state that opened it  review_needed
anomaly with status `needs_review`     review_needed
work order `scheduled` with a          work_order_scheduled
technician and a start
=====================================  ======================

Everything else yields nothing. Ids are derived from the kind, the subject,
the channel and the revision (`stable_id`), and times are the event's own, so
a replay or a restart plans exactly the same notifications; the state also
remembers recent ids, so an event seen twice is planned once. At most
`rate_limit_per_hour` notifications per asset and channel are let through per
rolling hour of event time; the rest come back with status `suppressed`, to
be recorded but not delivered.

>>> from datetime import datetime, timezone
>>> from smart_maintenance.operators.records import Alarm
>>> t = datetime(2026, 1, 5, 10, tzinfo=timezone.utc)
>>> alarm = Alarm("a1", "pump-01", "machine", "open", 4, t, t, None, 0.9, 1, "x1", ("vibration",), "vibration high")
>>> cfg = NotifyConfig(rules=(Rule(channels=("console", "webhook"), min_severity=3),))
>>> state, out = plan_notifications(None, alarm, site="north", cfg=cfg)
>>> [(n.channel, n.kind, n.status) for n in out]
[('console', 'alarm_opened', 'pending'), ('webhook', 'alarm_opened', 'pending')]
>>> out[0].title
'[severity 4] pump-01: machine alarm opened'
>>> plan_notifications(state, alarm, site="north", cfg=cfg)[1]   # the same state again: nothing new
[]
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from smart_maintenance.operators.judge.cases import ReviewCase
from smart_maintenance.operators.plan.work_orders import WorkOrder
from smart_maintenance.operators.records import Alarm, Anomaly, dt_to_ms, stable_id

if TYPE_CHECKING:  # settings are only read, never imported at run time (operators stay free of config)
    from smart_maintenance.config.notify_settings import NotifySettings

KINDS: tuple[str, ...] = (
    "alarm_opened", "alarm_escalated", "alarm_cleared", "review_needed", "work_order_scheduled", "sensor_fault",
)
STATUSES: tuple[str, ...] = ("pending", "sent", "failed", "suppressed", "dropped")
HOUR_MS = 3_600_000
CLEARED = 0  # NotifyState.alarms value of an episode that has cleared
ALARMS_KEPT = 16  # episodes remembered per asset (one per kind is open at a time; the rest have cleared)


@dataclass(frozen=True, slots=True)
class Rule:
    """Route notifications of `kinds` (empty = all) from `sites` (empty = all) at `min_severity` or above."""

    channels: tuple[str, ...]
    min_severity: int = 1
    sites: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.channels:
            raise ValueError("a rule needs at least one channel")
        if not 1 <= self.min_severity <= 5:
            raise ValueError(f"min_severity must be 1..5, got {self.min_severity}")
        unknown = set(self.kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown notification kinds {sorted(unknown)}; known: {', '.join(KINDS)}")

    def matches(self, kind: str, severity: int, site: str) -> bool:
        return (
            severity >= self.min_severity
            and (not self.sites or site in self.sites)
            and (not self.kinds or kind in self.kinds)
        )


@dataclass(frozen=True)
class NotifyConfig:
    rules: tuple[Rule, ...] = (Rule(channels=("console",)),)
    rate_limit_per_hour: int | None = 20  # per asset and channel; None = no limit
    remember: int = 256  # recent notification ids kept per asset for deduplication
    review_quiet_ms: int = HOUR_MS  # after a review_needed notice, the asset's next reviews queue silently this long

    def __post_init__(self) -> None:
        if self.rate_limit_per_hour is not None and self.rate_limit_per_hour < 1:
            raise ValueError("rate_limit_per_hour must be at least 1 (or None for no limit)")
        if self.remember < 1:
            raise ValueError("remember must be at least 1")

    @staticmethod
    def from_settings(ns: NotifySettings) -> NotifyConfig:
        """The planning part of `settings.notify`."""
        rules = tuple(
            Rule(channels=tuple(r.channels), min_severity=r.min_severity, sites=tuple(r.sites), kinds=tuple(r.kinds))
            for r in ns.effective_rules()
        )
        return NotifyConfig(rules=rules, rate_limit_per_hour=ns.rate_limit_per_hour,
                            review_quiet_ms=int(ns.review_quiet_s * 1000))


@dataclass(frozen=True, slots=True)
class Notification:
    """One message for one channel: the `notifications` stream's record."""

    notification_id: str
    channel: str
    kind: str
    asset_id: str
    subject_id: str  # alarm_id | anomaly_id | work_order_id
    severity: int  # 1..5
    site: str
    created_at: datetime  # event time of the subject, never the wall clock
    title: str
    body: str
    payload: dict[str, Any]  # the subject record's to_dict()
    status: str = "pending"  # pending, or suppressed (recorded, not delivered)
    reason: str = ""  # why suppressed

    def message(self) -> dict[str, Any]:
        """The JSON document that webhook and MQTT deliver and the ledger stores."""
        return {
            "notification_id": self.notification_id,
            "kind": self.kind,
            "asset_id": self.asset_id,
            "site": self.site,
            "subject_id": self.subject_id,
            "severity": self.severity,
            "created_at": self.created_at.isoformat(),
            "title": self.title,
            "body": self.body,
            "subject": self.payload,
        }

    def to_dict(self) -> dict[str, Any]:
        """The notifications table's columns (`payload` = `message()`), plus site, title and body."""
        return {
            "notification_id": self.notification_id,
            "channel": self.channel,
            "kind": self.kind,
            "asset_id": self.asset_id,
            "subject_id": self.subject_id,
            "severity": self.severity,
            "created_at": self.created_at.isoformat(),
            "status": self.status,
            "attempts": 0,
            "last_error": self.reason,
            "payload": self.message(),
            "site": self.site,
            "title": self.title,
            "body": self.body,
        }


@dataclass(frozen=True)
class NotifyState:
    """One asset's memory: recent ids (dedup), notified severity of open alarms, recent sends per channel."""

    seen: tuple[str, ...] = ()  # recent notification ids, oldest first
    alarms: dict[str, int] = field(default_factory=dict)  # alarm_id -> highest severity notified, CLEARED after
    sent: dict[str, tuple[int, ...]] = field(default_factory=dict)  # channel -> event-time ms of recent sends
    review_ms: int | None = None  # event time of the asset's last review_needed notice


def route(kind: str, severity: int, site: str, rules: tuple[Rule, ...]) -> tuple[str, ...]:
    """The channels of every rule that matches, in rule order, each once.

    >>> rules = (Rule(("slack",), min_severity=4), Rule(("console", "slack"), sites=("north",)))
    >>> route("alarm_opened", 5, "north", rules), route("alarm_opened", 2, "south", rules)
    (('slack', 'console'), ())
    """
    out: list[str] = []
    for rule in rules:
        if rule.matches(kind, severity, site):
            out.extend(c for c in rule.channels if c not in out)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class _Planned:
    kind: str
    subject_id: str
    revision: str
    severity: int
    at: datetime
    title: str
    body: str
    payload: dict[str, Any]


def plan_notifications(
    state: NotifyState | None, event: Alarm | Anomaly | ReviewCase | WorkOrder, *, site: str, cfg: NotifyConfig
) -> tuple[NotifyState, list[Notification]]:
    """Fold one of the asset's events into its state; return the notifications it calls for."""
    state = state or NotifyState()
    site = site or "default"
    alarms = state.alarms
    planned: _Planned | None = None
    if isinstance(event, Alarm):
        planned, alarms = _alarm_event(event, state.alarms, site)
    elif isinstance(event, Anomaly):
        at = dt_to_ms(event.window_end)
        if event.status == "needs_review" and (state.review_ms is None or at - state.review_ms >= cfg.review_quiet_ms):
            planned = _review(event, site)  # one notice per burst: the queue holds the rest
            state = replace(state, review_ms=at)
    elif isinstance(event, ReviewCase):
        at = dt_to_ms(event.first_window_end)
        if event.opened and (state.review_ms is None or at - state.review_ms >= cfg.review_quiet_ms):
            planned = _case(event, site)  # one notice per case, when it opens: the queue shows its growth
            state = replace(state, review_ms=at)
    elif isinstance(event, WorkOrder):
        if event.status == "scheduled" and event.technician_id and event.scheduled_start is not None:
            planned = _scheduled(event, site)
    else:
        raise TypeError(f"cannot plan notifications for {type(event).__name__}")
    if planned is None:
        return (state if alarms is state.alarms else replace(state, alarms=alarms)), []

    seen = list(state.seen)
    known = set(seen)
    sent = dict(state.sent)
    at_ms = dt_to_ms(planned.at)
    out: list[Notification] = []
    for channel in route(planned.kind, planned.severity, site, cfg.rules):
        nid = stable_id("notification", planned.kind, planned.subject_id, channel, planned.revision)
        if nid in known:
            continue
        seen.append(nid)
        known.add(nid)
        status, reason = "pending", ""
        if cfg.rate_limit_per_hour is not None:
            # planned work has its own budget: it comes from the planner, not in the asset's event order
            budget = f"{channel}:work" if planned.kind == "work_order_scheduled" else channel
            kept = tuple(t for t in sent.get(budget, ()) if t > at_ms - HOUR_MS)  # later sends are kept too
            if sum(t <= at_ms for t in kept) >= cfg.rate_limit_per_hour:
                status = "suppressed"
                reason = f"rate limit: {cfg.rate_limit_per_hour} per hour for asset {event.asset_id} on {channel}"
            else:
                kept = tuple(sorted((*kept, at_ms)))
            sent[budget] = kept
        out.append(Notification(
            notification_id=nid, channel=channel, kind=planned.kind, asset_id=event.asset_id,
            subject_id=planned.subject_id, severity=planned.severity, site=site, created_at=planned.at,
            title=planned.title, body=planned.body, payload=planned.payload, status=status, reason=reason,
        ))
    return NotifyState(tuple(seen[-cfg.remember:]), alarms, sent, state.review_ms), out


def _alarm_event(a: Alarm, alarms: dict[str, int], site: str) -> tuple[_Planned | None, dict[str, int]]:
    notified = alarms.get(a.alarm_id)
    if a.status == "cleared":
        at = a.cleared_at or a.updated_at
        return _Planned("alarm_cleared", a.alarm_id, "cleared", a.severity, at,
                        f"[cleared] {a.asset_id}: {_alarm_name(a)} cleared", _alarm_body(a, site), a.to_dict()), \
            _remember(alarms, a.alarm_id, CLEARED)
    if a.status != "open" or notified == CLEARED:  # an open state arriving after the clear is stale
        return None, alarms
    if notified is None:
        kind = "sensor_fault" if a.kind == "sensor_fault" else "alarm_opened"
        title = (f"[severity {a.severity}] {a.asset_id}: sensor fault ({', '.join(a.sensors) or 'unknown sensor'})"
                 if kind == "sensor_fault" else f"[severity {a.severity}] {a.asset_id}: {_alarm_name(a)} opened")
        revision = "open"
    elif a.severity > notified and a.kind != "sensor_fault":
        kind, revision = "alarm_escalated", f"severity={a.severity}"
        title = f"[severity {a.severity}] {a.asset_id}: {_alarm_name(a)} escalated from {notified} to {a.severity}"
    else:
        return None, alarms
    alarms = _remember(alarms, a.alarm_id, max(a.severity, notified or 0))
    return _Planned(
        kind, a.alarm_id, revision, a.severity, a.updated_at, title, _alarm_body(a, site), a.to_dict()
    ), alarms


def _remember(alarms: dict[str, int], alarm_id: str, severity: int) -> dict[str, int]:
    """A copy with `alarm_id` set and moved last; only the newest `ALARMS_KEPT` episodes are kept."""
    out = {k: v for k, v in alarms.items() if k != alarm_id}
    out[alarm_id] = severity
    return out if len(out) <= ALARMS_KEPT else dict(list(out.items())[-ALARMS_KEPT:])


def _alarm_name(a: Alarm) -> str:
    return "sensor-fault alarm" if a.kind == "sensor_fault" else f"{a.kind} alarm"


def _alarm_body(a: Alarm, site: str) -> str:
    lines = [
        f"Asset: {a.asset_id} (site {site})",
        f"Alarm: {_alarm_name(a)}, {a.status}, severity {a.severity}",
        f"Opened: {_t(a.opened_at)}",
    ]
    if a.status == "cleared":
        lines.append(
            f"Cleared: {_t(a.cleared_at or a.updated_at)} after {(a.cleared_at or a.updated_at) - a.opened_at}"
        )
    else:
        lines.append(f"Updated: {_t(a.updated_at)}")
    lines += [
        f"Sensors: {', '.join(a.sensors) or '-'}",
        f"Reason: {a.reason or '-'}",
        f"Peak score: {a.peak_score:.2f} over {a.anomaly_count} anomalous window(s)",
        f"Alarm id: {a.alarm_id}",
    ]
    return "\n".join(lines)


def _review(x: Anomaly, site: str) -> _Planned:
    sensors = ", ".join(f"{s} {share:.0%}" for s, share in x.contributions[:3]) or "-"
    body = "\n".join([
        f"Asset: {x.asset_id} (site {site})",
        f"Window: {_t(x.window_start)} to {_t(x.window_end)}",
        f"Score: {x.score:.2f}, confidence {x.confidence:.2f}, severity {x.severity}",
        f"Sensors: {sensors}",
        f"Reasons: {'; '.join(x.reasons) or '-'}",
        f"Decide: smart-maintenance review approve|reject {x.anomaly_id}",
    ])
    return _Planned("review_needed", x.anomaly_id, "needs_review", x.severity, x.window_end,
                    f"[severity {x.severity}] {x.asset_id}: anomaly needs review", body, x.to_dict())


def _case(c: ReviewCase, site: str) -> _Planned:
    body = "\n".join([
        f"Asset: {c.asset_id} (site {site})",
        f"Case: {c.window_count} uncertain window(s) from {_t(c.window_start)} to {_t(c.window_end)}",
        f"Peak score: {c.peak_score:.2f}, severity {c.severity}",
        f"Sensors: {', '.join(c.sensors) or '-'}",
        f"Reasons: {'; '.join(c.anomaly.get('reasons', ())) or '-'}",
        f"Decide: smart-maintenance review approve|reject {c.case_id}",
    ])
    return _Planned("review_needed", c.case_id, "needs_review", c.severity, c.first_window_end,
                    f"[severity {c.severity}] {c.asset_id}: review case opened", body, c.to_dict())


def _scheduled(w: WorkOrder, site: str) -> _Planned:
    start = w.scheduled_start
    assert start is not None and w.technician_id is not None  # noqa: S101 - invariant, narrows the type
    end = f" to {_t(w.scheduled_end)}" if w.scheduled_end is not None else ""
    body = "\n".join([
        f"Asset: {w.asset_id} (site {site})",
        f"Work order: {w.work_order_id}, {w.kind}, priority {w.priority}",
        f"Technician: {w.technician_id}",
        f"Scheduled: {_t(start)}{end} ({w.duration_min} min)",
        f"Due: {_t(w.due_at)}",
        f"Skills: {', '.join(w.required_skills) or '-'}",
        f"Sensors: {', '.join(w.sensors) or '-'}",
        f"Reason: {w.reason or '-'}",
    ])
    title = f"[priority {w.priority}] {w.asset_id}: {w.kind} scheduled for {w.technician_id} at {_t(start)}"
    return _Planned("work_order_scheduled", w.work_order_id, f"{w.technician_id}@{start.isoformat()}",
                    min(max(w.priority, 1), 5), w.updated_at, title, body, w.to_dict())


def _t(dt: datetime | None) -> str:
    if dt is None:
        return "-"
    return dt.strftime("%Y-%m-%d %H:%M UTC") if dt.utcoffset() == timedelta(0) else dt.isoformat(timespec="minutes")


@dataclass(frozen=True)
class ChannelBudget:
    """One channel's recent deliveries across all assets: event-time ms, oldest first."""

    sent: tuple[int, ...] = ()


def limit_channel(state: ChannelBudget | None, n: Notification, *, per_hour: int | None
                  ) -> tuple[ChannelBudget, Notification]:
    """Hold a channel to `per_hour` deliveries per rolling hour of event time, whatever the asset.

    The per-asset limit of `plan_notifications` does not stop a flood from many assets (or from new,
    invented asset ids): this one does. What is over it comes back `suppressed`, to be recorded only.

    >>> from datetime import datetime, timezone
    >>> t = datetime(2026, 1, 5, tzinfo=timezone.utc)
    >>> n = lambda i: Notification(f"n{i}", "sms", "alarm_opened", f"a{i}", "x", 3, "s", t, "t", "b", {})
    >>> state, out = None, []
    >>> for i in range(3):
    ...     state, m = limit_channel(state, n(i), per_hour=2)
    ...     out.append(m.status)
    >>> out
    ['pending', 'pending', 'suppressed']
    """
    state = state or ChannelBudget()
    if per_hour is None or n.status != "pending":
        return state, n
    at = dt_to_ms(n.created_at)
    # assets reach this step out of event-time order: a send within an hour either side counts, so no
    # hour-long interval ever holds more than `per_hour` (for events up to a day older than the newest)
    newest = max((*state.sent, at))
    kept = tuple(t for t in state.sent if t > newest - 25 * HOUR_MS)
    if sum(abs(t - at) < HOUR_MS for t in kept) >= per_hour:
        return ChannelBudget(kept), replace(
            n, status="suppressed", reason=f"rate limit: {per_hour} per hour on {n.channel} across all assets")
    return ChannelBudget(tuple(sorted((*kept, at)))), n
