"""Notification channels against real local servers: HTTP, SMTP (aiosmtpd, STARTTLS), Mosquitto, PostgreSQL."""

from __future__ import annotations

import json
import re
import shutil
import ssl
import subprocess
import threading
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from email import message_from_bytes
from email.policy import default as email_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from psycopg import sql
from pydantic import SecretStr

from smart_maintenance.config.notify_settings import EmailSettings, MqttNotifySettings, RetrySettings
from smart_maintenance.config.settings import Settings
from smart_maintenance.operators.notify import NotifyConfig, Rule, plan_notifications
from smart_maintenance.operators.records import Alarm
from smart_maintenance.sinks.notify import Dispatcher, NotificationSink, _NotifyPartition
from smart_maintenance.sinks.notify_channels import (
    Channel,
    ChannelError,
    EmailChannel,
    MqttChannel,
    SlackChannel,
    WebhookChannel,
)
from smart_maintenance.sinks.notify_ledger import MemoryLedger, PostgresLedger
from tests.integration.mqtt_broker import free_port, mosquitto  # noqa: F401

pytestmark = pytest.mark.integration

DOCS = Path(__file__).resolve().parents[2] / "docs" / "notifications.md"
T0 = datetime(2026, 1, 5, 10, tzinfo=timezone.utc)
FAST = RetrySettings(attempts=3, initial_backoff_s=0.01, max_backoff_s=0.05, max_total_s=10)
SECRET = "whsec-test-7c1d"


def notifications(channel: str, k: int = 1) -> list:
    cfg = NotifyConfig(rules=(Rule((channel,)),), rate_limit_per_hour=None)
    out, state = [], None
    for i in range(k):
        a = Alarm(f"al{i}", "pump-01", "machine", "open", 4, T0 + timedelta(minutes=i), T0 + timedelta(minutes=i),
                  None, 0.91, 3, "an1", ("vibration", "temperature"), "vibration rms high")
        state, ns = plan_notifications(state, a, site="north", cfg=cfg)
        out += ns
    return out


def deliver(channels: dict, items: list, ledger=None, retry=FAST, **kw) -> MemoryLedger:
    ledger = ledger or MemoryLedger()
    d = Dispatcher(channels, ledger, retry, **kw)
    d.submit(items)
    assert d.join(20)
    d.close()
    return ledger


# -- a real HTTP receiver ---------------------------------------------------------------

class Receiver:
    """An HTTP server on a free loopback port that records requests and answers from a per-path script."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict, bytes]] = []
        self.script: dict[str, list[int]] = {}
        self.delay_s = 0.0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append((self.path, self.headers, body))
                time.sleep(receiver.delay_s)
                codes = receiver.script.get(self.path, [200])
                code = codes.pop(0) if len(codes) > 1 else codes[0]
                self.send_response(code)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok" if code < 400 else b"busy")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    with Receiver() as r:
        yield r


def docs_verify_signature():
    """The verification snippet of docs/notifications.md, executed as a receiver would paste it."""
    text = DOCS.read_text()
    section = text[text.index("### Verifying the signature"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, str(DOCS), "exec"), namespace)
    return namespace["verify_signature"]


def test_webhook_delivers_signed_json_that_the_documented_snippet_verifies(receiver):
    verify = docs_verify_signature()
    [n] = notifications("webhook")
    ledger = deliver({"webhook": WebhookChannel(receiver.url + "/hook", SecretStr(SECRET))}, [n])
    [(path, headers, body)] = receiver.requests
    assert path == "/hook" and headers["Content-Type"] == "application/json"
    assert headers["X-SM-Notification-Id"] == n.notification_id
    assert json.loads(body) == json.loads(orjson.dumps(n.message()))
    assert verify(SECRET.encode(), headers, body)
    assert not verify(b"another secret", headers, body)
    assert not verify(SECRET.encode(), headers, body.replace(b"pump-01", b"pump-02"))
    assert not verify(SECRET.encode(), headers, body, now=int(headers["X-SM-Timestamp"]) + 301)
    assert ledger.rows[n.notification_id]["status"] == "sent"
    assert [a["detail"] for a in ledger.attempts] == ["HTTP 200"]


def test_webhook_retries_a_500_then_succeeds(receiver):
    receiver.script["/flaky"] = [500, 200]
    [n] = notifications("webhook")
    ledger = deliver({"webhook": WebhookChannel(receiver.url + "/flaky", SecretStr(SECRET))}, [n])
    row = ledger.rows[n.notification_id]
    assert (row["status"], row["attempts"]) == ("sent", 2)
    assert [(a["ok"], a["detail"][:8]) for a in ledger.attempts] == [(False, "webhook "), (True, "HTTP 200")]
    assert "answered HTTP 500" in ledger.attempts[0]["detail"]
    sigs = [h["X-SM-Signature"] for _, h, _ in receiver.requests]
    assert len(sigs) == 2 and all(docs_verify_signature()(SECRET.encode(), h, b) for _, h, b in receiver.requests)


def test_a_dead_webhook_is_recorded_failed_and_never_blocks_the_flow(receiver):
    receiver.script["/down"] = [500]
    receiver.script["/gone"] = [404]
    receiver.delay_s = 0.1
    items = notifications("webhook", 4)
    ledger = MemoryLedger()
    d = Dispatcher({"webhook": WebhookChannel(receiver.url + "/down", timeout_s=2)}, ledger, FAST)
    t = time.perf_counter()
    d.submit(items)
    submit_s = time.perf_counter() - t
    assert submit_s < 0.2  # the flow's side returns at once; delivering takes 12 x 0.1 s
    assert d.join(20)
    d.close()
    assert {(r["status"], r["attempts"]) for r in ledger.rows.values()} == {("failed", 3)}
    assert len(ledger.attempts) == 12 and not any(a["ok"] for a in ledger.attempts)

    [gone] = notifications("webhook")
    ledger = deliver({"webhook": WebhookChannel(receiver.url + "/gone")}, [gone])  # 404: retrying cannot help
    assert (ledger.rows[gone.notification_id]["status"], len(ledger.attempts)) == ("failed", 1)

    port = free_port()  # nobody listens: connection refused, retried, then failed
    ledger = deliver({"webhook": WebhookChannel(f"http://127.0.0.1:{port}/x")}, [gone])
    assert ledger.rows[gone.notification_id]["attempts"] == 3
    assert "ConnectError" in ledger.rows[gone.notification_id]["last_error"]


def test_slack_compatible_payload(receiver):
    [n] = notifications("slack")
    n = replace(n, title="pump <01> & co")
    deliver({"slack": SlackChannel(SecretStr(receiver.url + "/services/T0/B0/token"))}, [n])
    [(path, headers, body)] = receiver.requests
    doc = json.loads(body)
    assert path == "/services/T0/B0/token" and list(doc) == ["text"]
    assert doc["text"].startswith("*pump &lt;01&gt; &amp; co*\nAsset: pump-01 (site north)\n")
    assert "X-SM-Signature" not in headers

    dead = SecretStr(f"http://127.0.0.1:{free_port()}/services/T0/B0/xoxb-token")
    ledger = deliver({"slack": SlackChannel(dead)}, [n])
    row = ledger.rows[n.notification_id]
    assert row["status"] == "failed" and "ConnectError" in row["last_error"]
    assert not any("xoxb" in a["detail"] for a in ledger.attempts) and "xoxb" not in row["last_error"]


# -- SMTP: aiosmtpd, plain and STARTTLS with a login ------------------------------------------

class Mailbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 Message accepted for delivery"


def smtp_server(mailbox: Mailbox, **kwargs):
    from aiosmtpd.controller import Controller

    c = Controller(mailbox, hostname="127.0.0.1", port=free_port(), **kwargs)
    c.start()
    return c


def test_email_over_plain_smtp():
    mailbox = Mailbox()
    server = smtp_server(mailbox)
    try:
        [n] = notifications("email")
        settings = EmailSettings(host="127.0.0.1", port=server.port, sender="plant@example.com",
                                 to=("a@example.com", "b@example.com"))
        ledger = deliver({"email": EmailChannel(settings)}, [n])
    finally:
        server.stop()
    [(sender, rcpt, raw)] = mailbox.messages
    msg = message_from_bytes(raw, policy=email_policy)
    assert sender == "plant@example.com" and rcpt == ["a@example.com", "b@example.com"]
    assert msg["Subject"] == n.title and msg["Message-ID"] == f"<{n.notification_id}@smart-maintenance>"
    assert msg.get_content().replace("\r\n", "\n").strip() == n.body
    assert ledger.rows[n.notification_id]["status"] == "sent"
    assert ledger.attempts[0]["detail"] == "sent to 2 recipient(s)"


def test_an_asset_id_with_a_line_break_is_still_emailed_and_cannot_inject_a_header():
    mailbox = Mailbox()
    server = smtp_server(mailbox)
    try:
        a = Alarm("al1", "pump-01\r\nBcc: thief@example.com", "machine", "open", 4, T0, T0, None, 0.91, 3, "an1",
                  ("vibration",), "vibration rms high")
        _, [n] = plan_notifications(None, a, site="north",
                                    cfg=NotifyConfig(rules=(Rule(("email",)),), rate_limit_per_hour=None))
        settings = EmailSettings(host="127.0.0.1", port=server.port, sender="plant@example.com", to=("a@example.com",))
        ledger = deliver({"email": EmailChannel(settings)}, [n])
    finally:
        server.stop()
    assert ledger.rows[n.notification_id]["status"] == "sent"  # not left pending for ever
    [(_, rcpt, raw)] = mailbox.messages
    msg = message_from_bytes(raw, policy=email_policy)
    assert rcpt == ["a@example.com"] and msg["Bcc"] is None
    assert msg["Subject"] == "[severity 4] pump-01 Bcc: thief@example.com: machine alarm opened"  # shown, not obeyed


@pytest.fixture
def tls_cert(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made by the openssl command line."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True,
    )
    return cert, key


def test_email_with_starttls_and_login(tls_cert):
    from aiosmtpd.smtp import AuthResult, LoginPassword

    cert, key = tls_cert
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    logins: list[tuple[bytes, bool]] = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and auth_data.password == b"m41l-pass"
        logins.append((auth_data.login, session.ssl is not None))
        return AuthResult(success=ok, handled=False)  # handled=False: the server answers 535 itself

    mailbox = Mailbox()
    server = smtp_server(mailbox, tls_context=ctx, require_starttls=True, authenticator=authenticator,
                         auth_require_tls=True, auth_required=True)
    try:
        [n, m] = notifications("email", 2)
        good = EmailSettings(host="127.0.0.1", port=server.port, starttls=True, ca_file=cert, username="plant",
                             password=SecretStr("m41l-pass"), to=("ops@example.com",))
        ledger = deliver({"email": EmailChannel(good)}, [n])
        assert ledger.rows[n.notification_id]["status"] == "sent"
        assert logins == [(b"plant", True)] and len(mailbox.messages) == 1

        wrong = good.model_copy(update={"password": SecretStr("nope")})
        ledger = deliver({"email": EmailChannel(wrong)}, [m])
        row = ledger.rows[m.notification_id]
        assert (row["status"], row["attempts"]) == ("failed", 1)  # a refused login is not retried
        assert "refused the login" in row["last_error"] and "nope" not in row["last_error"]

        plain = good.model_copy(update={"starttls": False, "username": None, "password": None})
        ledger = deliver({"email": EmailChannel(plain)}, [m])  # the server insists on STARTTLS
        assert ledger.rows[m.notification_id]["status"] == "failed"
        assert len(mailbox.messages) == 1
    finally:
        server.stop()


# -- MQTT: Mosquitto ----------------------------------------------------------------------------

def test_mqtt_channel_publishes_to_the_alarm_topic(mosquitto):  # noqa: F811
    got: list[mqtt.MQTTMessage] = []
    subscribed = threading.Event()
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-notify-sub")
    sub.on_message = lambda c, u, msg: got.append(msg)
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.connect(mosquitto.host, mosquitto.port)
    sub.subscribe("smart-maintenance/alarms/#", qos=1)
    sub.loop_start()
    try:
        assert subscribed.wait(5)
        items = notifications("mqtt", 2)
        channel = MqttChannel(mosquitto.settings(), MqttNotifySettings(timeout_s=5))
        ledger = deliver({"mqtt": channel}, items)
        deadline = time.monotonic() + 5
        while len(got) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        sub.loop_stop()
        sub.disconnect()
    assert [m.topic for m in got] == ["smart-maintenance/alarms/north/pump-01"] * 2
    assert [json.loads(m.payload) for m in got] == [json.loads(orjson.dumps(n.message())) for n in items]
    assert got[0].qos == 1
    assert {r["status"] for r in ledger.rows.values()} == {"sent"}
    assert ledger.attempts[0]["detail"] == "published to smart-maintenance/alarms/north/pump-01"


def test_mqtt_channel_without_a_broker_fails_and_is_recorded():
    port = free_port()
    broker = Settings().mqtt.model_copy(update={"port": port})
    [n] = notifications("mqtt")
    ledger = deliver({"mqtt": MqttChannel(broker, MqttNotifySettings(timeout_s=0.3))}, [n],
                     retry=RetrySettings(attempts=2, initial_backoff_s=0.01, max_total_s=5))
    row = ledger.rows[n.notification_id]
    assert (row["status"], row["attempts"]) == ("failed", 2) and "cannot connect" in row["last_error"]


# -- the PostgreSQL ledger, through the Bytewax sink ------------------------------------------------

def test_postgres_ledger_records_every_attempt_and_a_replay_does_not_notify_twice(
    receiver, pg_dsn, pg_schema, tmp_path
):
    receiver.script["/flaky"] = [503, 200]
    settings = Settings(
        data_dir=tmp_path,
        postgres={"dsn": pg_dsn, "schema_name": pg_schema},
        notify={"channels": ["webhook"], "rate_limit_per_hour": 1,
                "webhook": {"url": receiver.url + "/flaky", "secret": SECRET},
                "retry": {"attempts": 3, "initial_backoff_s": 0.01, "max_total_s": 10}},
    )
    cfg = NotifyConfig.from_settings(settings.notify)
    items, state = [], None
    for i in range(2):  # the second is over the rate limit of 1 per hour
        a = Alarm(f"al{i}", "pump-01", "machine", "open", 4, T0 + timedelta(minutes=i), T0 + timedelta(minutes=i),
                  None, 0.9, 1, "an1", ("vibration",), "high")
        state, ns = plan_notifications(state, a, site="north", cfg=cfg)
        items += ns
    assert [n.status for n in items] == ["pending", "suppressed"]

    for _ in range(2):  # the second run is a replay after a restart
        part = NotificationSink(settings).build("notify", 0, 1)
        part.write_batch(items)
        assert part.dispatcher.join(20)
        part.close()
    assert len(receiver.requests) == 2  # 503, then 200; nothing on the replay

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        rows = conn.execute(sql.SQL(
            "SELECT notification_id, channel, kind, status, attempts, last_error, payload, created_at "
            "FROM {} ORDER BY created_at").format(sql.Identifier(pg_schema, "notifications"))).fetchall()
        attempts = conn.execute(sql.SQL(
            "SELECT notification_id, attempt, ok, detail FROM {} ORDER BY attempt").format(
            sql.Identifier(pg_schema, "notification_attempts"))).fetchall()
    sent, suppressed = rows
    assert sent[:5] == (items[0].notification_id, "webhook", "alarm_opened", "sent", 2)
    assert sent[6]["subject"]["alarm_id"] == "al0" and sent[7] == T0
    assert suppressed[3] == "suppressed" and suppressed[5].startswith("rate limit: 1 per hour")
    assert [(a[1], a[2]) for a in attempts] == [(1, False), (2, True)]
    assert "HTTP 503" in attempts[0][3] and attempts[1][3] == "HTTP 200"

    ledger = PostgresLedger(pg_dsn, pg_schema).open()
    try:
        ledger.record(items[0], "failed", 1, "late replay")  # a sent row never goes back
        assert ledger.status(items[0].notification_id) == "sent"
        assert "PostgresLedger" in repr(ledger)
    finally:
        ledger.close()


class Stuck(Channel):
    """A channel whose attempts hang until `gate` opens, then fail: the process "died" meanwhile."""

    name = "webhook"

    def __init__(self) -> None:
        self.gate = threading.Event()

    def send(self, n):
        self.gate.wait(20)
        raise ChannelError("the process was killed", retryable=False)


def test_notifications_queued_at_a_crash_are_delivered_once_after_a_restart(receiver, pg_dsn, pg_schema, tmp_path):
    settings = Settings(data_dir=tmp_path, postgres={"dsn": pg_dsn, "schema_name": pg_schema},
                        notify={"channels": ["webhook"], "webhook": {"url": receiver.url + "/hook"},
                                "retry": {"attempts": 3, "initial_backoff_s": 0.01, "max_total_s": 10}})
    items = notifications("webhook", 3)
    stuck = Stuck()
    crashed = _NotifyPartition(Dispatcher({"webhook": stuck}, PostgresLedger(pg_dsn, pg_schema).open(), FAST))
    crashed.write_batch(items)  # Bytewax commits the epoch after this returns; then kill -9: no close()
    try:
        restarted = NotificationSink(settings).build("notify", 0, 1)
        assert restarted.dispatcher.join(20)
        restarted.close()
        assert sorted(h["X-SM-Notification-Id"] for _, h, _ in receiver.requests) == sorted(
            n.notification_id for n in items)
        with PostgresLedger(pg_dsn, pg_schema).open() as ledger:
            assert [ledger.status(n.notification_id) for n in items] == ["sent"] * 3
            assert ledger.pending(["webhook"]) == []
    finally:
        stuck.gate.set()  # the "dead" partition's thread wakes: it must neither resend nor downgrade anything
        crashed.dispatcher.join(10)
        crashed.dispatcher.ledger.close()
    assert len(receiver.requests) == 3
    with PostgresLedger(pg_dsn, pg_schema).open() as ledger:
        assert [ledger.status(n.notification_id) for n in items] == ["sent"] * 3


def test_left_over_pending_rows_rebuild_exactly_and_are_shared_out_between_workers(pg_dsn, pg_schema):
    items = notifications("webhook", 12) + notifications("console", 2)
    ledger = PostgresLedger(pg_dsn, pg_schema).open()
    try:
        ledger.record_pending(items)
        ledger.record(items[0], "sent", 1, "")
        ledger.record_pending(items[:1])  # a replay of the batch never downgrades a sent row
        assert ledger.status(items[0].notification_id) == "sent"
        by_id = lambda ns: sorted(ns, key=lambda n: n.notification_id)  # noqa: E731
        assert by_id(ledger.pending(["webhook", "console"])) == by_id(items[1:])  # equal: every field rebuilt
        assert ledger.pending(["webhook"]) == items[1:12]  # oldest first
        shares = [ledger.pending(["webhook"], i, 2) for i in range(2)]
        assert all(shares) and by_id(shares[0] + shares[1]) == by_id(items[1:12])
    finally:
        ledger.close()
    assert MemoryLedger().pending(["webhook"]) == []
