"""Deliver notifications: console, signed webhook, Slack-compatible webhook, email (SMTP), MQTT.

    flow_output("notify", notifications, NotificationSink(settings))   # items: operators.notify.Notification

The flow never waits for a channel. `write_batch` only puts each notification
on its channel's bounded queue; one delivery thread per channel and worker
sends it, retrying with exponential backoff (tenacity, bounded in attempts
and total time). A full queue drops the notification, which is recorded with
status `dropped`, and a slow or failing channel delays only itself.

Every notification is recorded in a `NotificationLedger` (PostgreSQL tables
`notifications` and `notification_attempts`, or in memory): its final status
(`sent`, `failed`, `suppressed`, `dropped`) and every attempt with its outcome.
Before delivering, the ledger is asked whether the notification's id was
already sent: a replay after a crash, which plans the same ids again, does not
notify twice. Secrets (webhook key, Slack URL, SMTP and MQTT passwords) never
appear in a repr, a log line or a recorded error.

Webhook requests are signed: `X-SM-Timestamp: <unix seconds>` and
`X-SM-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`
(see docs/notifications.md for a receiver's verification code).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import queue
import smtplib
import ssl
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import orjson
import paho.mqtt.client as mqtt
import psycopg
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from psycopg import sql
from psycopg.types.json import Jsonb
from pydantic import SecretStr
from rich.console import Console
from rich.markup import escape
from tenacity import Retrying, retry_if_exception, stop_after_attempt, stop_after_delay, wait_exponential
from tenacity.stop import stop_base

from smart_maintenance import metrics
from smart_maintenance.config.notify_settings import EmailSettings, MqttNotifySettings, RetrySettings
from smart_maintenance.config.settings import MqttSettings, Settings
from smart_maintenance.operators.notify import Notification
from smart_maintenance.sinks.mqtt_publish import topic_level
from smart_maintenance.sinks.pg_schema import ensure_schema
from smart_maintenance.sinks.pg_server import redact, resolve_dsn
from smart_maintenance.sources.mqtt import MqttSourceError, connect, endpoint, make_client, refusal

log = logging.getLogger(__name__)


class NotifyError(Exception):
    """A notification could not be delivered or recorded."""


class ChannelError(NotifyError):
    """One delivery attempt failed; `retryable` says whether trying again can help."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """The `X-SM-Signature` value of a webhook request.

    >>> signature(b"k", "1700000000", b'{"a":1}')
    'sha256=1b6ad1bc9bf48c52ce01939866d5877c6cc4e87ddad27e16673cb8c4964394a3'
    """
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def _http_error(what: str, r: httpx.Response) -> ChannelError:
    text = r.text[:200].replace("\n", " ")
    # 408, 425, 429 and 5xx may pass; any other 4xx will not
    retryable = r.status_code in (408, 425, 429) or r.status_code >= 500
    return ChannelError(f"{what} answered HTTP {r.status_code}: {text}", retryable=retryable)


# -- channels -------------------------------------------------------------------------


class Channel:
    """One delivery system. `send` returns a short detail or raises ChannelError; it connects lazily."""

    name = "channel"
    timeout_s = 5.0  # one attempt's limit: how long shutdown waits for an attempt in flight

    def send(self, n: Notification) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass


class ConsoleChannel(Channel):
    """Print the title and body (stderr by default, so stdout stays clean for pipes)."""

    name = "console"
    _STYLE = {1: "cyan", 2: "yellow", 3: "dark_orange", 4: "red", 5: "bold red"}

    def __init__(self, stream: Any = None) -> None:
        self._console = Console(file=stream or sys.stderr, highlight=False, soft_wrap=True)

    def __repr__(self) -> str:
        return "ConsoleChannel()"

    def send(self, n: Notification) -> str:
        style = "green" if n.kind == "alarm_cleared" else self._STYLE.get(n.severity, "red")
        body = "\n".join("    " + escape(line) for line in n.body.splitlines())
        try:
            self._console.print(f"[{style}]NOTIFY {escape(n.title)}[/]\n[dim]{body}[/]")
        except OSError as e:
            raise ChannelError(f"console: {e}") from e
        return "printed"


class _HttpChannel(Channel):
    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._client: httpx.Client | None = None

    def _post(self, url: str, what: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        if self._client is None:
            self._client = httpx.Client(timeout=self.timeout_s, follow_redirects=False)
        try:
            r = self._client.post(url, content=body, headers={"Content-Type": "application/json",
                                                                "User-Agent": "smart-maintenance", **headers})
        except httpx.HTTPError as e:  # connect, read, timeout: the receiver may come back
            text = str(e).replace(url, "<url>")  # the URL may carry a token
            raise ChannelError(f"{what}: {type(e).__name__}: {text}") from None  # its request holds the URL
        if not r.is_success:
            raise _http_error(what, r)
        return r

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class WebhookChannel(_HttpChannel):
    """POST `Notification.message()` as JSON, signed with HMAC-SHA256 when a secret is set."""

    name = "webhook"

    def __init__(self, url: SecretStr | str, secret: SecretStr | None = None, *, timeout_s: float = 5.0,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(timeout_s)
        self._url = url if isinstance(url, SecretStr) else SecretStr(url)
        self._secret = secret
        self._clock = clock
        parts = urlsplit(self._url.get_secret_value())
        # the URL is a secret (paths often carry a token): only scheme and host are ever shown
        self._shown = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"

    def __repr__(self) -> str:
        return f"WebhookChannel({self._shown!r}, signed={self._secret is not None})"

    def send(self, n: Notification) -> str:
        body = orjson.dumps(n.message())
        headers = {"X-SM-Notification-Id": n.notification_id}
        if self._secret is not None:
            ts = str(int(self._clock()))  # signed per attempt: receivers may reject stale timestamps
            headers["X-SM-Timestamp"] = ts
            headers["X-SM-Signature"] = signature(self._secret.get_secret_value().encode(), ts, body)
        r = self._post(self._url.get_secret_value(), f"webhook {self._shown}", body, headers)
        return f"HTTP {r.status_code}"


class SlackChannel(_HttpChannel):
    """POST `{"text": ...}` to a Slack-compatible incoming webhook (Slack, Mattermost, Rocket.Chat)."""

    name = "slack"

    def __init__(self, url: SecretStr, *, timeout_s: float = 5.0) -> None:
        super().__init__(timeout_s)
        self._url = url
        self._shown = urlsplit(url.get_secret_value()).netloc.rpartition("@")[2]  # the path is the token

    def __repr__(self) -> str:
        return f"SlackChannel(host={self._shown!r})"

    @staticmethod
    def text(n: Notification) -> str:
        """Slack's text: bold title, then the body; `&`, `<` and `>` escaped as Slack requires."""
        esc = lambda s: s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")  # noqa: E731
        return f"*{esc(n.title)}*\n{esc(n.body)}"

    def send(self, n: Notification) -> str:
        body = orjson.dumps({"text": self.text(n)})
        r = self._post(self._url.get_secret_value(), f"slack webhook at {self._shown}", body, {})
        return f"HTTP {r.status_code}"


class EmailChannel(Channel):
    """One plain-text email per notification over SMTP, optionally upgraded with STARTTLS and logged in."""

    name = "email"

    def __init__(self, settings: EmailSettings) -> None:
        self.settings = settings
        self.timeout_s = settings.timeout_s

    def __repr__(self) -> str:
        s = self.settings
        return f"EmailChannel({s.host}:{s.port}, starttls={s.starttls}, to={list(s.to)})"

    def message(self, n: Notification) -> EmailMessage:
        s = self.settings
        msg = EmailMessage()
        msg["Subject"] = n.title
        msg["From"] = s.sender
        msg["To"] = ", ".join(s.to)
        msg["Date"] = formatdate(localtime=False, usegmt=True)
        msg["Message-ID"] = f"<{n.notification_id}@smart-maintenance>"
        msg["X-SM-Notification-Id"] = n.notification_id
        msg.set_content(n.body + "\n")
        return msg

    def send(self, n: Notification) -> str:
        s = self.settings
        where = f"SMTP {s.host}:{s.port}"
        try:
            with smtplib.SMTP(s.host, s.port, timeout=s.timeout_s) as smtp:
                if s.starttls:
                    ctx = ssl.create_default_context(cafile=str(s.ca_file) if s.ca_file else None)
                    smtp.starttls(context=ctx)
                if s.username is not None and s.password is not None:
                    smtp.login(s.username, s.password.get_secret_value())
                refused = smtp.send_message(self.message(n))
        except smtplib.SMTPNotSupportedError as e:
            raise ChannelError(f"{where} does not offer STARTTLS or AUTH: {e}", retryable=False) from e
        except smtplib.SMTPAuthenticationError as e:
            raise ChannelError(f"{where} refused the login of {s.username!r}: {e.smtp_code}", retryable=False) from e
        except smtplib.SMTPRecipientsRefused as e:
            raise ChannelError(f"{where} refused every recipient: {sorted(e.recipients)}", retryable=False) from e
        except smtplib.SMTPResponseException as e:  # 4xx is temporary by SMTP's own definition
            raise ChannelError(f"{where}: {e.smtp_code} {e.smtp_error!r}", retryable=e.smtp_code < 500) from e
        except (smtplib.SMTPException, OSError) as e:  # connect, TLS, timeouts, dropped connections
            raise ChannelError(f"{where}: {type(e).__name__}: {e}") from e
        if refused:
            return f"sent; refused {sorted(refused)}"
        return f"sent to {len(s.to)} recipient(s)"


class MqttChannel(Channel):
    """Publish `Notification.message()` as JSON to `<topic>/<site>/<asset_id>` on the job's broker."""

    name = "mqtt"

    def __init__(self, broker: MqttSettings, settings: MqttNotifySettings, *, client_id: str | None = None) -> None:
        self.broker = broker
        self.settings = settings
        self.timeout_s = settings.timeout_s
        self.topic = (settings.topic or broker.alarm_topic).rstrip("/")
        self.client_id = client_id or f"{broker.client_id}-notify-{os.getpid()}"
        self._client: mqtt.Client | None = None
        self._connected = threading.Event()
        self._refused: MqttSourceError | None = None

    def __repr__(self) -> str:
        return f"MqttChannel({endpoint(self.broker)}, topic={self.topic!r}, qos={self.settings.qos})"

    def topic_of(self, n: Notification) -> str:
        return f"{self.topic}/{topic_level(n.site)}/{topic_level(n.asset_id)}"

    def _connect(self) -> mqtt.Client:
        if self._client is not None:
            return self._client
        self._connected.clear()
        self._refused = None
        try:
            client = make_client(self.broker, self.client_id, clean_session=True)
            client.on_connect = self._on_connect
            client.on_disconnect = lambda *_: self._connected.clear()
            connect(client, self.broker, self.settings.timeout_s)
        except MqttSourceError as e:
            raise ChannelError(str(e)) from e
        client.loop_start()
        if not self._connected.wait(self.settings.timeout_s) or self._refused is not None:
            client.loop_stop()
            client.disconnect()
            err = self._refused
            raise ChannelError(str(err or f"MQTT broker {endpoint(self.broker)} did not accept the connection in time"),
                               retryable=err is None)
        self._client = client
        return client

    def _on_connect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self._refused = refusal(self.broker, reason)
        else:
            self._connected.set()

    def send(self, n: Notification) -> str:
        client = self._connect()
        topic = self.topic_of(n)
        info = client.publish(topic, orjson.dumps(n.message()), qos=self.settings.qos, retain=self.settings.retain)
        try:
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise ChannelError(f"MQTT publish to {topic!r}: {mqtt.error_string(info.rc)}")
            info.wait_for_publish(self.settings.timeout_s)
            if not info.is_published():
                raise ChannelError(f"MQTT broker {endpoint(self.broker)} did not acknowledge within {self.settings.timeout_s} s")
        except (RuntimeError, ValueError) as e:
            self.close()
            raise ChannelError(f"MQTT publish to {topic!r}: {e}") from e
        except ChannelError:
            self.close()  # a fresh connection for the next attempt
            raise
        return f"published to {topic}"

    def close(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None


class _OffChannel(Channel):
    """A channel a notification names but the settings do not switch on: every attempt fails for good."""

    def __init__(self, name: str) -> None:
        self.name = name

    def send(self, n: Notification) -> str:
        raise ChannelError(f"channel {self.name!r} is not switched on (settings.notify.channels)", retryable=False)


def build_channels(settings: Settings, worker_index: int = 0, *, console_stream: Any = None) -> dict[str, Channel]:
    """The switched-on channels of `settings.notify`, not yet connected."""
    ns = settings.notify
    out: dict[str, Channel] = {}
    for name in ns.channels:
        if name == "console":
            out[name] = ConsoleChannel(console_stream)
        elif name == "webhook":
            assert ns.webhook.url is not None  # the settings check it
            out[name] = WebhookChannel(ns.webhook.url, ns.webhook.secret, timeout_s=ns.webhook.timeout_s)
        elif name == "slack":
            assert ns.slack.url is not None
            out[name] = SlackChannel(ns.slack.url, timeout_s=ns.slack.timeout_s)
        elif name == "email":
            out[name] = EmailChannel(ns.email)
        elif name == "mqtt":
            cid = f"{settings.mqtt.client_id}-notify-{os.getpid()}-{worker_index}"
            out[name] = MqttChannel(settings.mqtt, ns.mqtt, client_id=cid)
    return out


# -- the ledger -----------------------------------------------------------------------


class NotificationLedger(Protocol):
    """Where notifications and their delivery attempts are recorded. Used from several threads."""

    def status(self, notification_id: str) -> str | None:
        """The recorded status, or None when the id is unknown."""

    def record(self, n: Notification, status: str, attempts: int, last_error: str) -> None:
        """Insert or update the notification's row; a `sent` row stays `sent`."""

    def attempt(self, notification_id: str, ok: bool, detail: str, at: datetime) -> int:
        """Record one delivery attempt; returns its number (1, 2, ... per notification)."""

    def close(self) -> None: ...


class MemoryLedger:
    """A ledger in memory, for tests and for jobs that keep no database: the newest `max_rows` are kept."""

    def __init__(self, max_rows: int = 100_000) -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, got {max_rows}")
        self.max_rows = max_rows
        self.rows: dict[str, dict[str, Any]] = {}
        self.attempts: deque[dict[str, Any]] = deque(maxlen=max_rows)
        self._numbers: dict[str, int] = {}  # notification_id -> attempts so far
        self._lock = threading.Lock()

    def status(self, notification_id: str) -> str | None:
        with self._lock:
            row = self.rows.get(notification_id)
            return row["status"] if row else None

    def record(self, n: Notification, status: str, attempts: int, last_error: str) -> None:
        with self._lock:
            old = self.rows.get(n.notification_id)
            if old is not None and old["status"] == "sent":
                return
            self.rows[n.notification_id] = {**n.to_dict(), "status": status, "attempts": attempts, "last_error": last_error}
            if len(self.rows) > self.max_rows:  # dicts keep insertion order: forget the oldest
                oldest = next(iter(self.rows))
                del self.rows[oldest]
                self._numbers.pop(oldest, None)

    def attempt(self, notification_id: str, ok: bool, detail: str, at: datetime) -> int:
        with self._lock:
            number = self._numbers[notification_id] = self._numbers.get(notification_id, 0) + 1
            self.attempts.append({"notification_id": notification_id, "attempt": number, "attempted_at": at,
                                  "ok": ok, "detail": detail})
            return number

    def close(self) -> None:
        pass


_UPSERT = """
INSERT INTO {s}.notifications AS n (notification_id, channel, kind, asset_id, subject_id, severity,
                                     created_at, status, attempts, last_error, payload, updated_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now())
ON CONFLICT (notification_id) DO UPDATE SET
    status = CASE WHEN n.status = 'sent' THEN n.status ELSE EXCLUDED.status END,
    attempts = GREATEST(n.attempts, EXCLUDED.attempts),
    last_error = CASE WHEN n.status = 'sent' THEN n.last_error ELSE EXCLUDED.last_error END,
    payload = EXCLUDED.payload,
    updated_at = now()
"""
_ATTEMPT = """
INSERT INTO {s}.notification_attempts (notification_id, attempt, attempted_at, ok, detail)
SELECT %s, coalesce(max(attempt), 0) + 1, %s, %s, %s FROM {s}.notification_attempts WHERE notification_id = %s
RETURNING attempt
"""
_STATUS = "SELECT status FROM {s}.notifications WHERE notification_id = %s"


def _json(obj: Any) -> str:
    return orjson.dumps(obj).decode()  # NaN becomes null: jsonb rejects NaN


def _text(s: str) -> str:
    return s.replace("\x00", "\ufffd")  # text columns cannot hold NUL


def _clean(x: Any) -> Any:
    if isinstance(x, str):
        return _text(x)
    if isinstance(x, dict):
        return {_text(str(k)): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


class PostgresLedger:
    """Records into `notifications` and `notification_attempts` of one schema (migrated on `open`).

    Lost connections are retried briefly on a new connection; then the error
    is raised as NotifyError (the delivery thread logs it and carries on).
    """

    def __init__(self, dsn: str, schema: str, *, attempts: int = 3) -> None:
        self._dsn, self.schema = dsn, schema
        self._conn: psycopg.Connection | None = None
        self._lock = threading.Lock()
        self._q = {k: sql.SQL(v).format(s=sql.Identifier(schema)) for k, v in
                   (("upsert", _UPSERT), ("attempt", _ATTEMPT), ("status", _STATUS))}
        self._retrying = Retrying(
            retry=retry_if_exception(lambda e: isinstance(e, (psycopg.OperationalError, psycopg.InterfaceError))),
            stop=stop_after_attempt(attempts), wait=wait_exponential(multiplier=0.2, max=2.0),
            before_sleep=lambda _: self._drop(), reraise=True,
        )

    def __repr__(self) -> str:
        return f"PostgresLedger({redact(self._dsn)!r}, {self.schema!r})"

    def open(self) -> PostgresLedger:
        ensure_schema(self._dsn, self.schema)
        return self

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _run(self, what: str, query: str, params: list[Any]) -> tuple[Any, ...] | None:
        def once() -> tuple[Any, ...] | None:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=5)
            cur = self._conn.execute(self._q[query], params)
            return cur.fetchone() if cur.description is not None else None

        with self._lock:
            try:
                return self._retrying(once)
            except psycopg.Error as e:
                raise NotifyError(f"{what} in schema {self.schema!r} at {redact(self._dsn)}: {type(e).__name__}: {e}") from e

    def status(self, notification_id: str) -> str | None:
        row = self._run("read notification status", "status", [notification_id])
        return row[0] if row else None

    def record(self, n: Notification, status: str, attempts: int, last_error: str) -> None:
        self._run("record notification", "upsert", [
            n.notification_id, n.channel, n.kind, _text(n.asset_id), _text(n.subject_id), n.severity,
            n.created_at, status, attempts, _text(last_error[:2000]), Jsonb(_clean(n.message()), dumps=_json),
        ])

    def attempt(self, notification_id: str, ok: bool, detail: str, at: datetime) -> int:
        row = self._run("record notification attempt", "attempt",
                        [notification_id, at, ok, _text(detail[:2000]), notification_id])
        assert row is not None  # INSERT ... RETURNING
        return int(row[0])

    def close(self) -> None:
        with self._lock:
            self._drop()


# -- delivery -------------------------------------------------------------------------


class _stop_on(stop_base):
    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, retry_state: Any) -> bool:
        return self.event.is_set()


class ChannelWorker:
    """A bounded queue and a delivery thread for one channel: `offer` never blocks."""

    def __init__(self, channel: Channel, ledger: NotificationLedger, retry: RetrySettings, queue_size: int) -> None:
        self.channel, self.ledger, self.retry = channel, ledger, retry
        self._queue: queue.Queue[Notification] = queue.Queue(maxsize=queue_size)
        self._dropped: deque[tuple[Notification, str]] = deque(maxlen=10 * queue_size + 1000)
        self._stopping = threading.Event()  # no new retries: shutting down
        self._done = threading.Event()
        self.counts: dict[str, int] = {s: 0 for s in ("sent", "failed", "suppressed", "dropped", "skipped")}
        self._thread = threading.Thread(target=self._run, name=f"notify-{channel.name}", daemon=True)
        self._thread.start()

    def offer(self, n: Notification) -> bool:
        """Queue `n` for delivery (or for recording, when suppressed); False when the queue is full."""
        try:
            self._queue.put_nowait(n)
            metrics.SINK_BACKLOG.labels(f"notify:{self.channel.name}").set(self._queue.qsize())
            return True
        except queue.Full:
            self._drop(n, f"queue full ({self._queue.maxsize} waiting for {self.channel.name})")
            return False

    def _drop(self, n: Notification, reason: str) -> None:
        if len(self._dropped) == self._dropped.maxlen:
            log.error("notification %s dropped and not recorded: %s", n.notification_id, reason)
        self._dropped.append((n, reason))  # recorded by the delivery thread: no I/O on the flow's path
        self.counts["dropped"] += 1
        metrics.SINK_ERRORS.labels(f"notify:{self.channel.name}").inc()

    def _run(self) -> None:
        while not (self._done.is_set() and self._queue.empty()):
            self._record_dropped()
            try:
                n = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            metrics.SINK_BACKLOG.labels(f"notify:{self.channel.name}").set(self._queue.qsize())
            try:
                self._handle(n)
            except Exception:  # a bug must not kill the thread: the flow would then drop everything
                log.exception("notification %s on %s", n.notification_id, self.channel.name)
            finally:
                self._queue.task_done()
        self._record_dropped()

    def _record_dropped(self) -> None:
        while self._dropped:
            n, reason = self._dropped.popleft()
            self._safe(self.ledger.record, n, "dropped", 0, reason)

    def _safe(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except NotifyError as e:
            log.error("%s", e)
            return None

    def _handle(self, n: Notification) -> None:
        if n.status == "suppressed":
            if self._safe(self.ledger.status, n.notification_id) is None:
                self._safe(self.ledger.record, n, "suppressed", 0, n.reason)
            self.counts["suppressed"] += 1
            return
        if self._safe(self.ledger.status, n.notification_id) == "sent":  # a replay: already delivered
            self.counts["skipped"] += 1
            return
        self._safe(self.ledger.record, n, "pending", 0, "")
        number, error = 0, ""

        def attempt() -> str:
            nonlocal number, error
            try:
                detail = self.channel.send(n)
            except ChannelError as e:
                error = str(e)
                number = self._safe(self.ledger.attempt, n.notification_id, False, error, _now()) or number + 1
                raise
            number = self._safe(self.ledger.attempt, n.notification_id, True, detail, _now()) or number + 1
            return detail

        r = self.retry
        retrying = Retrying(
            retry=retry_if_exception(lambda e: isinstance(e, ChannelError) and e.retryable),
            stop=stop_after_attempt(r.attempts) | stop_after_delay(r.max_total_s) | _stop_on(self._stopping),
            wait=wait_exponential(multiplier=r.initial_backoff_s, max=r.max_backoff_s),
            sleep=self._stopping.wait,  # woken at shutdown
            reraise=True,
        )
        try:
            retrying(attempt)
        except ChannelError:
            log.warning("notification %s on %s failed after %d attempt(s): %s", n.notification_id,
                        self.channel.name, number, error)
            metrics.SINK_ERRORS.labels(f"notify:{self.channel.name}").inc()
            self._safe(self.ledger.record, n, "failed", number, error)
            self.counts["failed"] += 1
            return
        self._safe(self.ledger.record, n, "sent", number, "")
        self.counts["sent"] += 1

    def join(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` until everything queued was handled and every drop recorded."""
        deadline = time.monotonic() + timeout_s
        while (self._queue.unfinished_tasks or self._dropped) and time.monotonic() < deadline:
            time.sleep(0.01)
        return not (self._queue.unfinished_tasks or self._dropped)

    def close(self, timeout_s: float) -> None:
        """Deliver what is queued for up to `timeout_s`, then record the rest as dropped and stop."""
        self.join(timeout_s)
        self._stopping.set()  # an attempt in flight finishes; no more retries
        while True:
            try:
                n = self._queue.get_nowait()
            except queue.Empty:
                break
            self._queue.task_done()
            self._drop(n, f"not delivered within drain_timeout_s={timeout_s} at shutdown")
        self._done.set()  # the thread records the dropped ones, then ends
        self._thread.join(max(1.0, self.channel.timeout_s))
        if self._thread.is_alive():
            log.error("notify channel %s still busy at shutdown", self.channel.name)
        else:
            self.channel.close()


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Dispatcher:
    """The channel workers of one partition: routes each notification to its channel's queue."""

    def __init__(self, channels: dict[str, Channel], ledger: NotificationLedger, retry: RetrySettings,
                 *, queue_size: int = 1000, drain_timeout_s: float = 10.0) -> None:
        self.ledger, self.retry, self.queue_size, self.drain_timeout_s = ledger, retry, queue_size, drain_timeout_s
        self.workers = {name: ChannelWorker(ch, ledger, retry, queue_size) for name, ch in channels.items()}

    def submit(self, items: list[Notification]) -> None:
        """Hand notifications to their channels; returns at once, whatever the channels do."""
        for n in items:
            w = self.workers.get(n.channel)
            if w is None:
                w = self.workers[n.channel] = ChannelWorker(_OffChannel(n.channel), self.ledger, self.retry, self.queue_size)
            w.offer(n)

    def join(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        return all(w.join(max(0.0, deadline - time.monotonic())) for w in self.workers.values())

    def close(self) -> None:
        deadline = time.monotonic() + self.drain_timeout_s
        for w in self.workers.values():
            w.close(max(0.0, deadline - time.monotonic()))
        self.ledger.close()


class _NotifyPartition(StatelessSinkPartition[Notification]):
    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher

    def write_batch(self, items: list[Notification]) -> None:
        self.dispatcher.submit(items)

    def close(self) -> None:
        self.dispatcher.close()


class NotificationSink(DynamicSink[Notification]):
    """Delivers `Notification`s on their channels from background threads, recording everything.

    `ledger` builds a partition's ledger from the worker index (default: from
    `settings.notify.ledger`); `console_stream` redirects the console channel.
    """

    def __init__(self, settings: Settings, *, ledger: Callable[[int], NotificationLedger] | None = None,
                 console_stream: Any = None) -> None:
        self._settings = settings
        self._ledger = ledger
        self._console_stream = console_stream

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _NotifyPartition:
        ns = self._settings.notify
        if self._ledger is not None:
            ledger = self._ledger(worker_index)
        elif ns.ledger == "postgres":
            ledger = PostgresLedger(resolve_dsn(self._settings), self._settings.postgres.schema_name).open()
        else:
            ledger = MemoryLedger()
        channels = build_channels(self._settings, worker_index, console_stream=self._console_stream)
        return _NotifyPartition(Dispatcher(channels, ledger, ns.retry, queue_size=ns.queue_size,
                                           drain_timeout_s=ns.drain_timeout_s))
