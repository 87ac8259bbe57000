"""Notification channels: console, signed webhook, Slack-compatible webhook, email (SMTP), MQTT.

Each channel sends one notification per `send` call and raises ChannelError
when the attempt fails (`retryable` says whether trying again can help);
delivery threads, queues and retries live in `sinks.notify`. Secrets
(webhook key, Slack URL, SMTP and MQTT passwords) never appear in a repr or
a raised error.

Webhook requests are signed: `X-SM-Timestamp: <unix seconds>` and
`X-SM-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`
(see docs/notifications.md for a receiver's verification code).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import smtplib
import ssl
import sys
import threading
import time
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import formatdate
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson
from pydantic import SecretStr
from rich.console import Console
from rich.markup import escape

from smart_maintenance.config.notify_settings import EmailSettings, MqttNotifySettings
from smart_maintenance.config.settings import MqttSettings, Settings
from smart_maintenance.operators.notify import Notification

if TYPE_CHECKING:  # httpx and paho are imported by the channels that use them: most flows switch on neither
    import httpx
    import paho.mqtt.client as mqtt

    from smart_maintenance.connectors.mqtt.client import MqttSourceError


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
        import httpx

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

        def esc(s: str) -> str:
            return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

        return f"*{esc(n.title)}*\n{esc(n.body)}"

    def send(self, n: Notification) -> str:
        body = orjson.dumps({"text": self.text(n)})
        r = self._post(self._url.get_secret_value(), f"slack webhook at {self._shown}", body, {})
        return f"HTTP {r.status_code}"


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def header_text(text: str, limit: int = 200) -> str:
    """Text fit for one mail header line: control characters (CR, LF, ...) become a space, long text is cut.

    An asset id with a line break would otherwise make the email library refuse the message, and the
    notification could never be delivered.

    >>> header_text("ALARM pump-01\\r\\nBcc: x@evil")
    'ALARM pump-01 Bcc: x@evil'
    """
    flat = _CONTROL.sub(" ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


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
        msg["Subject"] = header_text(n.title)
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
        from smart_maintenance.connectors.mqtt.client import endpoint

        return f"MqttChannel({endpoint(self.broker)}, topic={self.topic!r}, qos={self.settings.qos})"

    def topic_of(self, n: Notification) -> str:
        from smart_maintenance.connectors.mqtt.client import topic_level

        return f"{self.topic}/{topic_level(n.site)}/{topic_level(n.asset_id)}"

    def _connect(self) -> mqtt.Client:
        from smart_maintenance.connectors.mqtt.client import MqttSourceError, connect, endpoint, make_client

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
            from smart_maintenance.connectors.mqtt.client import refusal

            self._refused = refusal(self.broker, reason)
        else:
            self._connected.set()

    def send(self, n: Notification) -> str:
        import paho.mqtt.client as mqtt

        from smart_maintenance.connectors.mqtt.client import endpoint

        client = self._connect()
        topic = self.topic_of(n)
        info = client.publish(topic, orjson.dumps(n.message()), qos=self.settings.qos, retain=self.settings.retain)
        try:
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise ChannelError(f"MQTT publish to {topic!r}: {mqtt.error_string(info.rc)}")
            info.wait_for_publish(self.settings.timeout_s)
            if not info.is_published():
                raise ChannelError(
                    f"MQTT broker {endpoint(self.broker)} did not acknowledge within {self.settings.timeout_s} s"
                )
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
            assert ns.webhook.url is not None  # noqa: S101 - the settings check it
            out[name] = WebhookChannel(ns.webhook.url, ns.webhook.secret, timeout_s=ns.webhook.timeout_s)
        elif name == "slack":
            assert ns.slack.url is not None  # noqa: S101 - invariant, narrows the type
            out[name] = SlackChannel(ns.slack.url, timeout_s=ns.slack.timeout_s)
        elif name == "email":
            out[name] = EmailChannel(ns.email)
        elif name == "mqtt":
            cid = f"{settings.mqtt.client_id}-notify-{os.getpid()}-{worker_index}"
            out[name] = MqttChannel(settings.mqtt, ns.mqtt, client_id=cid)
    return out
