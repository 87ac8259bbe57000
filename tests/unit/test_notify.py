import io
import pickle
import threading
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from pydantic import SecretStr, ValidationError

from smart_maintenance.config.notify_settings import NotifySettings, RetrySettings
from smart_maintenance.config.settings import Settings, load_settings
from smart_maintenance.operators.notify import NotifyConfig, NotifyState, Rule, plan_notifications, route
from smart_maintenance.operators.plan.work_orders import WorkOrder
from smart_maintenance.operators.records import Alarm, Anomaly
from smart_maintenance.sinks.notify import Dispatcher, NotificationSink
from smart_maintenance.sinks.notify_channels import (
    Channel,
    ChannelError,
    ConsoleChannel,
    SlackChannel,
    WebhookChannel,
    build_channels,
)
from smart_maintenance.sinks.notify_ledger import MemoryLedger

T0 = datetime(2026, 1, 5, 10, tzinfo=timezone.utc)
TABLE_COLUMNS = {"notification_id", "channel", "kind", "asset_id", "subject_id", "severity", "created_at",
                 "status", "attempts", "last_error", "payload"}
ALL = NotifyConfig(rules=(Rule(channels=("console", "webhook")),), rate_limit_per_hour=None)


def alarm(status="open", severity=3, *, alarm_id="al1", kind="machine", at=T0, opened=T0, asset="pump-01",
          sensors=("vibration",)):
    return Alarm(alarm_id, asset, kind, status, severity, opened, at, at if status == "cleared" else None,
                 0.9, 2, "an1", sensors, "vibration rms high")


def anomaly(status="needs_review", severity=3):
    return Anomaly("an9", "pump-01", T0 - timedelta(minutes=5), T0, 0.7, status, 0.6, severity,
                   ("score 0.70 above open threshold",), (("vibration", 0.8), ("temperature", 0.2)))


def work_order(status="scheduled", technician="tech-1", start=T0 + timedelta(hours=2)):
    return WorkOrder("wo1", "pump-01", "al1", "repair", status, 4, ("mechanical",), 120, T0, T0 + timedelta(hours=8),
                     T0 + timedelta(minutes=1), technician_id=technician, scheduled_start=start,
                     scheduled_end=start + timedelta(hours=2) if start else None, site="north")


def plan(events, cfg=ALL, state=None, site="north"):
    out = []
    for e in events:
        state, ns = plan_notifications(state, e, site=site, cfg=cfg)
        out += ns
    return state, out


# -- routing ----------------------------------------------------------------------------

def test_route_by_severity_site_and_kind_in_rule_order():
    rules = (
        Rule(("email",), min_severity=4),
        Rule(("slack", "email"), sites=("north",), kinds=("alarm_opened", "alarm_escalated")),
        Rule(("console",)),
    )
    assert route("alarm_opened", 5, "north", rules) == ("email", "slack", "console")
    assert route("alarm_opened", 2, "north", rules) == ("slack", "email", "console")
    assert route("alarm_cleared", 2, "north", rules) == ("console",)
    assert route("alarm_opened", 3, "south", rules) == ("console",)
    assert route("alarm_opened", 5, "south", rules[:2]) == ("email",)
    assert route("alarm_opened", 3, "south", rules[:2]) == ()


def test_rule_rejects_bad_arguments():
    with pytest.raises(ValueError):
        Rule(())
    with pytest.raises(ValueError):
        Rule(("console",), min_severity=6)
    with pytest.raises(ValueError, match="unknown notification kinds"):
        Rule(("console",), kinds=("alarm_open",))


# -- planning -----------------------------------------------------------------------------

def test_alarm_lifecycle_opens_escalates_and_clears_once_each():
    events = [
        alarm(severity=3),
        alarm(severity=3, at=T0 + timedelta(minutes=1), sensors=("vibration", "temperature")),  # sensors only
        alarm(severity=5, at=T0 + timedelta(minutes=2)),
        alarm(severity=4, at=T0 + timedelta(minutes=3)),  # lower than notified: nothing
        alarm("cleared", 5, at=T0 + timedelta(minutes=30)),
        alarm("cleared", 5, at=T0 + timedelta(minutes=30)),  # delivered twice upstream
        alarm(severity=5, at=T0 + timedelta(minutes=2)),  # a stale open state after the clear
    ]
    state, out = plan(events, NotifyConfig(rules=(Rule(("console",)),)))
    assert [(n.kind, n.severity, n.created_at) for n in out] == [
        ("alarm_opened", 3, T0),
        ("alarm_escalated", 5, T0 + timedelta(minutes=2)),
        ("alarm_cleared", 5, T0 + timedelta(minutes=30)),
    ]
    assert out[0].title == "[severity 3] pump-01: machine alarm opened"
    assert "escalated from 3 to 5" in out[1].title
    assert "Sensors: vibration" in out[0].body and "site north" in out[0].body
    assert "Cleared: 2026-01-05 10:30 UTC after 0:30:00" in out[2].body
    assert state.alarms == {"al1": 0}  # cleared: a late open state of the episode is stale


def test_sensor_fault_alarm_is_its_own_kind_and_does_not_escalate():
    events = [alarm(kind="sensor_fault", alarm_id="sf1", severity=2, sensors=("temperature",)),
              alarm(kind="sensor_fault", alarm_id="sf1", severity=4, at=T0 + timedelta(minutes=5)),
              alarm("cleared", 4, kind="sensor_fault", alarm_id="sf1", at=T0 + timedelta(hours=1))]
    _, out = plan(events, NotifyConfig(rules=(Rule(("console",)),)))
    assert [n.kind for n in out] == ["sensor_fault", "alarm_cleared"]
    assert out[0].title == "[severity 2] pump-01: sensor fault (temperature)"


def test_review_and_scheduled_work_orders():
    cfg = NotifyConfig(rules=(Rule(("console",)),))
    _, out = plan([anomaly("confirmed"), anomaly("rejected"), anomaly("needs_review")], cfg)
    assert [(n.kind, n.subject_id, n.created_at) for n in out] == [("review_needed", "an9", T0)]
    assert "review approve|reject an9" in out[0].body and "vibration 80%" in out[0].body

    moved = work_order(start=T0 + timedelta(hours=5))
    _, out = plan([work_order("open", None, None), work_order("scheduled", None, None), work_order(), work_order(),
                   moved, work_order("done")], cfg)
    assert [n.kind for n in out] == ["work_order_scheduled", "work_order_scheduled"]
    assert out[0].notification_id != out[1].notification_id  # re-planned: a new start is news
    assert out[0].severity == 4 and "Technician: tech-1" in out[0].body and "Due: 2026-01-05 18:00 UTC" in out[0].body
    assert out[0].title == "[priority 4] pump-01: repair scheduled for tech-1 at 2026-01-05 12:00 UTC"


def test_ids_are_deterministic_per_channel_and_use_event_time():
    events = [alarm(), alarm(severity=5, at=T0 + timedelta(minutes=2)), anomaly(), work_order()]
    _, a = plan(events)
    _, b = plan(events)
    assert [n.notification_id for n in a] == [n.notification_id for n in b]
    assert len({n.notification_id for n in a}) == len(a) == 8
    assert [n.channel for n in a[:2]] == ["console", "webhook"]
    assert all(n.created_at.tzinfo is not None for n in a)
    assert a[0].to_dict()["created_at"] == "2026-01-05T10:00:00+00:00"


def test_severity_threshold_and_empty_site():
    cfg = NotifyConfig(rules=(Rule(("webhook",), min_severity=4),))
    _, out = plan([alarm(severity=3)], cfg, site="")
    assert out == []
    _, out = plan([alarm(severity=4)], cfg, site="")
    assert [n.site for n in out] == ["default"]


def test_rate_limit_per_asset_and_channel_on_a_rolling_hour_of_event_time():
    cfg = NotifyConfig(rules=(Rule(("console", "webhook")),), rate_limit_per_hour=2)
    events = [alarm(alarm_id=f"a{i}", at=T0 + timedelta(minutes=10 * i), opened=T0 + timedelta(minutes=10 * i))
              for i in range(4)]
    events.append(alarm(alarm_id="a9", at=T0 + timedelta(minutes=61), opened=T0 + timedelta(minutes=61)))
    state, out = plan(events, cfg)
    by_channel = [(n.subject_id, n.status) for n in out if n.channel == "webhook"]
    assert by_channel == [("a0", "pending"), ("a1", "pending"), ("a2", "suppressed"), ("a3", "suppressed"),
                          ("a9", "pending")]  # a0 left the hour at 11:00; suppressed ones do not count
    suppressed = next(n for n in out if n.status == "suppressed" and n.channel == "webhook")
    assert suppressed.reason == "rate limit: 2 per hour for asset pump-01 on webhook"
    assert suppressed.to_dict()["last_error"] == suppressed.reason
    assert [n.status for n in out if n.channel == "console"] == [n for _, n in by_channel]
    # another asset has its own budget
    _, other = plan([alarm(alarm_id="b0", asset="fan-02")], cfg, state=None)
    assert {n.status for n in other} == {"pending"}
    assert len(state.sent["webhook"]) <= 2


def test_state_pickles_and_replay_from_a_snapshot_gives_the_same_notifications():
    events = [alarm(), anomaly(), alarm(severity=5, at=T0 + timedelta(minutes=2)), work_order(),
              alarm("cleared", 5, at=T0 + timedelta(hours=1))]
    cfg = replace(ALL, rate_limit_per_hour=3)
    full_state, full = plan(events)
    mid, first = plan(events[:2], cfg)
    snap = pickle.loads(pickle.dumps(mid))
    assert snap == mid
    _, rest = plan(events[2:], cfg, state=snap)
    _, again = plan(events, cfg)
    assert [n.to_dict() for n in first + rest] == [n.to_dict() for n in again]
    assert pickle.loads(pickle.dumps(full[0])) == full[0]
    assert len(pickle.dumps(full_state)) < 20_000


def test_dedup_memory_is_bounded():
    cfg = NotifyConfig(rules=(Rule(("console",)),), rate_limit_per_hour=None, remember=8)
    events = [alarm(alarm_id=f"a{i}", at=T0 + timedelta(minutes=i)) for i in range(50)]
    state, out = plan(events, cfg)
    assert len(out) == 50 and len(state.seen) == 8 and len(state.alarms) == 16


def test_to_dict_has_the_table_columns_and_starts_pending():
    _, out = plan([alarm()])
    d = out[0].to_dict()
    assert TABLE_COLUMNS <= set(d)
    assert d["status"] == "pending" and d["attempts"] == 0
    assert d["payload"]["subject"] == alarm().to_dict()
    assert d["payload"]["title"] == out[0].title


def test_plan_rejects_other_records():
    with pytest.raises(TypeError):
        plan_notifications(NotifyState(), "an alarm", site="x", cfg=ALL)


# -- settings --------------------------------------------------------------------------------

def test_default_settings_need_no_service():
    ns = Settings().notify
    assert ns.channels == ("console",)
    cfg = NotifyConfig.from_settings(ns)
    assert cfg.rules == (Rule(("console",)),) and cfg.rate_limit_per_hour == 20
    assert list(build_channels(Settings())) == ["console"]


def test_settings_refuse_a_channel_without_its_configuration():
    with pytest.raises(ValidationError, match="webhook.url is not set"):
        NotifySettings(channels=("console", "webhook"))
    with pytest.raises(ValidationError, match="email.to"):
        NotifySettings(channels=("email",))
    with pytest.raises(ValidationError, match="not in channels"):
        NotifySettings(rules=({"channels": ["slack"]},))
    with pytest.raises(ValidationError, match="listed twice"):
        NotifySettings(channels=("console", "console"))
    with pytest.raises(ValidationError):
        NotifySettings(retry={"attempts": 0})


def test_settings_from_environment_keep_secrets_hidden(monkeypatch):
    monkeypatch.setenv("SMART_MAINTENANCE__NOTIFY__CHANNELS", '["console", "webhook", "slack"]')
    monkeypatch.setenv("SMART_MAINTENANCE__NOTIFY__WEBHOOK__URL", "https://ops.example/hook?token=abc")
    monkeypatch.setenv("SMART_MAINTENANCE__NOTIFY__WEBHOOK__SECRET", "hunter2-webhook")
    monkeypatch.setenv("SMART_MAINTENANCE__NOTIFY__SLACK__URL", "https://hooks.slack.example/services/T0/B0/xoxsecret")
    monkeypatch.setenv("SMART_MAINTENANCE__NOTIFY__RULES", '[{"channels": ["slack"], "min_severity": 4}]')
    s = load_settings()
    assert s.notify.webhook.secret.get_secret_value() == "hunter2-webhook"
    assert NotifyConfig.from_settings(s.notify).rules == (Rule(("slack",), min_severity=4),)
    channels = build_channels(s)
    shown = repr(s) + repr(channels)
    for secret in ("hunter2-webhook", "xoxsecret", "token=abc", "/services/"):
        assert secret not in shown
    assert "https://ops.example" in repr(channels["webhook"]) and "/hook" not in repr(channels["webhook"])


# -- delivery (in-process channels; real servers are in tests/integration) ----------------

class Flaky(Channel):
    name = "webhook"

    def __init__(self, fail=0, retryable=True, block: threading.Event | None = None):
        self.fail, self.retryable, self.block, self.sent = fail, retryable, block, []

    def send(self, n):
        if self.block is not None:
            self.block.wait(5)
        if self.fail:
            self.fail -= 1
            raise ChannelError("HTTP 503: busy", retryable=self.retryable)
        self.sent.append(n.notification_id)
        return "HTTP 200"


FAST = RetrySettings(attempts=4, initial_backoff_s=0.01, max_backoff_s=0.02, max_total_s=5)


def _notifications(k=1, channel="webhook", **kw):
    cfg = NotifyConfig(rules=(Rule((channel,)),), rate_limit_per_hour=None)
    _, out = plan([alarm(alarm_id=f"a{i}", at=T0 + timedelta(minutes=i)) for i in range(k)], cfg)
    return [replace(n, **kw) for n in out]


def test_retries_then_sent_and_every_attempt_recorded():
    ledger, ch = MemoryLedger(), Flaky(fail=2)
    d = Dispatcher({"webhook": ch}, ledger, FAST)
    [n] = _notifications()
    d.submit([n])
    assert d.join(5)
    d.close()
    row = ledger.rows[n.notification_id]
    assert (row["status"], row["attempts"], row["last_error"]) == ("sent", 3, "")
    assert [(a["attempt"], a["ok"]) for a in ledger.attempts] == [(1, False), (2, False), (3, True)]
    assert ledger.attempts[0]["detail"] == "HTTP 503: busy" and ch.sent == [n.notification_id]


def test_permanent_failure_is_not_retried_and_replays_of_sent_are_skipped():
    ledger = MemoryLedger()
    bad = Dispatcher({"webhook": Flaky(fail=9, retryable=False)}, ledger, FAST)
    [n, m] = _notifications(2)
    bad.submit([n])
    bad.join(5)
    bad.close()
    assert (ledger.rows[n.notification_id]["status"], ledger.rows[n.notification_id]["attempts"]) == ("failed", 1)

    ch = Flaky()
    good = Dispatcher({"webhook": ch}, ledger, FAST)
    good.submit([m, m, n])  # m twice: a replay after a crash
    good.join(5)
    good.close()
    assert ch.sent == [m.notification_id, n.notification_id]  # a failed one gets another chance, a sent one not
    assert ledger.rows[n.notification_id]["attempts"] == 2 and good.workers["webhook"].counts["skipped"] == 1


def test_suppressed_is_recorded_not_delivered_and_unknown_channels_fail():
    ledger, ch = MemoryLedger(), Flaky()
    d = Dispatcher({"webhook": ch}, ledger, FAST)
    [s] = _notifications(status="suppressed", reason="rate limit")
    [e] = _notifications(channel="email")
    d.submit([s, e])
    d.join(5)
    d.close()
    assert ch.sent == []
    assert ledger.rows[s.notification_id]["status"] == "suppressed"
    assert ledger.rows[s.notification_id]["last_error"] == "rate limit"
    assert ledger.rows[e.notification_id]["status"] == "failed"
    assert "not switched on" in ledger.rows[e.notification_id]["last_error"]


def test_a_stuck_channel_never_blocks_submit_and_overflow_is_recorded_dropped():
    gate = threading.Event()
    ledger, ch = MemoryLedger(), Flaky(block=gate)
    d = Dispatcher({"webhook": ch}, ledger, FAST, queue_size=3, drain_timeout_s=0.2)
    items = _notifications(10)
    t = time.perf_counter()
    d.submit(items)
    assert time.perf_counter() - t < 0.5  # the channel is blocked: anything waiting on it would hang
    gate.set()
    d.join(5)
    d.close()
    statuses = [ledger.rows[n.notification_id]["status"] for n in items]
    assert statuses.count("sent") >= 3 and statuses.count("dropped") >= 6
    assert statuses.count("sent") + statuses.count("dropped") == 10
    dropped = next(r for r in ledger.rows.values() if r["status"] == "dropped")
    assert dropped["last_error"].startswith("queue full")


def test_close_drains_within_its_timeout_and_records_the_rest():
    gate = threading.Event()  # never set: the channel hangs until its own 5 s limit
    ledger = MemoryLedger()
    d = Dispatcher({"webhook": Flaky(block=gate)}, ledger, FAST, drain_timeout_s=0.1)
    items = _notifications(3)
    d.submit(items)
    time.sleep(0.05)
    t = time.perf_counter()
    gate.set()  # let the attempt in flight finish so the test stays fast
    d.close()
    assert time.perf_counter() - t < 2
    assert {ledger.rows[n.notification_id]["status"] for n in items} <= {"sent", "dropped"}


def test_console_channel_prints_and_sink_builds_with_memory_ledger():
    buf = io.StringIO()
    ledger = MemoryLedger()
    sink = NotificationSink(Settings(notify={"ledger": "memory"}), ledger=lambda i: ledger, console_stream=buf)
    part = sink.build("notify", 0, 1)
    [n] = _notifications(channel="console")
    part.write_batch([n])
    part.close()
    assert "NOTIFY [severity 3] pump-01: machine alarm opened" in buf.getvalue()
    assert "Reason: vibration rms high" in buf.getvalue()
    assert ledger.rows[n.notification_id]["status"] == "sent"
    assert repr(ConsoleChannel()) == "ConsoleChannel()"


def test_slack_text_escapes_and_reprs_hide_secrets():
    [n] = _notifications(channel="slack")
    n = replace(n, title="a <b> & c")
    assert SlackChannel.text(n).startswith("*a &lt;b&gt; &amp; c*\n")
    s = SlackChannel(SecretStr("https://hooks.example/services/T/B/secret"))
    w = WebhookChannel("https://user:pw@h.example/x?k=v", SecretStr("s3"))
    assert "secret" not in repr(s) and "pw" not in repr(w) and "k=v" not in repr(w) and "s3" not in repr(w)


def test_sink_in_a_bytewax_flow_delivers_everything_by_the_end_of_the_run():
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSource, run_main

    buf, ledger = io.StringIO(), MemoryLedger()
    items = _notifications(5, channel="console")
    flow = Dataflow("notify_test")
    op.output("notify", op.input("in", flow, TestingSource(items)),
              NotificationSink(Settings(), ledger=lambda i: ledger, console_stream=buf))
    run_main(flow)
    assert [ledger.rows[n.notification_id]["status"] for n in items] == ["sent"] * 5
    assert buf.getvalue().count("NOTIFY ") == 5


def test_a_burst_of_reviews_is_one_notice_per_quiet_period():
    def review(minutes):
        a = anomaly()
        return replace(a, anomaly_id=f"an{minutes}", window_end=a.window_end + timedelta(minutes=minutes))

    _, notes = plan([review(m) for m in (0, 5, 10, 55, 60, 65)])
    assert sorted({n.subject_id for n in notes}) == ["an0", "an60"]


class Broken(Channel):
    """A channel with a bug (or a library that refuses the message): it raises something other than ChannelError."""

    name = "webhook"

    def __init__(self):
        self.calls = 0

    def send(self, n):
        self.calls += 1
        raise ValueError("Header values may not contain linefeed or carriage return characters")


def test_a_channel_that_raises_anything_ends_the_notification_failed_not_pending():
    ledger, ch = MemoryLedger(), Broken()
    d = Dispatcher({"webhook": ch}, ledger, FAST)
    [n] = _notifications()
    d.submit([n])
    assert d.join(5)
    d.close()
    row = ledger.rows[n.notification_id]
    assert (row["status"], row["attempts"], ch.calls) == ("failed", 1, 1)  # not retried: it cannot help
    assert "ValueError: Header values may not contain linefeed" in row["last_error"]


def test_attempts_are_bounded_across_restarts():
    ledger = MemoryLedger()
    [n] = _notifications()
    for _ in range(3):  # an earlier run tried three times, then was killed with the notification pending
        ledger.attempt(n.notification_id, False, "HTTP 503: busy", T0)
    ch = Flaky(fail=99)
    d = Dispatcher({"webhook": ch}, ledger, FAST)  # FAST allows 4 attempts
    d.submit([n])  # the restarted partition takes it back
    assert d.join(5)
    d.close()
    row = ledger.rows[n.notification_id]
    assert (row["status"], row["attempts"]) == ("failed", 4)
    assert len(ledger.attempts) == 4 and ch.fail == 98  # one attempt was left, not a fresh four


def test_a_channel_budget_holds_across_assets_in_any_hour_whatever_the_arrival_order():
    from smart_maintenance.operators.notify import ChannelBudget, limit_channel

    [n] = _notifications()
    minutes = [50, 0, 30, 10, 70, 120, 5, 200]  # event times from many assets, out of order
    state, passed = None, []
    for i, m in enumerate(minutes):
        state, out = limit_channel(state, replace(n, notification_id=f"n{i}", asset_id=f"a{i}",
                                                  created_at=T0 + timedelta(minutes=m)), per_hour=2)
        if out.status == "pending":
            passed.append(m)
        else:
            assert out.reason == "rate limit: 2 per hour on webhook across all assets"
    assert passed == [50, 0, 70, 120, 200]
    ordered = sorted(passed)
    assert all(b - a >= 60 for a, b in zip(ordered, ordered[2:]))  # never three within an hour
    assert pickle.loads(pickle.dumps(state)) == state and isinstance(state, ChannelBudget)
    suppressed = replace(n, status="suppressed")
    assert limit_channel(state, suppressed, per_hour=2) == (state, suppressed)  # already suppressed: no budget used
    assert limit_channel(None, n, per_hour=None)[1] is n
