"""Notification settings: channels, routing rules, deduplication, rate limits, retries.

Environment variables nest with `__` under `SMART_MAINTENANCE__NOTIFY__`, for example
`SMART_MAINTENANCE__NOTIFY__CHANNELS='["console","webhook"]'`,
`SMART_MAINTENANCE__NOTIFY__WEBHOOK__URL=https://ops.example/hooks/sm` and
`SMART_MAINTENANCE__NOTIFY__WEBHOOK__SECRET=...`. The defaults need no service:
only the console channel is on. A channel that is switched on must be
configured (a webhook needs its URL, email its recipients), or the settings
are rejected at start rather than failing at the first alarm.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

ChannelName = Literal["console", "webhook", "slack", "email", "mqtt"]
NotificationKind = Literal[
    "alarm_opened", "alarm_escalated", "alarm_cleared", "review_needed", "work_order_scheduled", "sensor_fault"
]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, hide_input_in_errors=True)


def _http_url(v: SecretStr | None, what: str) -> SecretStr | None:
    if v is not None and not v.get_secret_value().startswith(("http://", "https://")):
        raise ValueError(f"{what} must be an http:// or https:// URL")
    return v


class RoutingRule(_Section):
    """Send notifications of these kinds, at or above this severity, from these sites, to these channels."""

    channels: tuple[ChannelName, ...] = Field(min_length=1)
    min_severity: int = Field(default=1, ge=1, le=5)
    sites: tuple[str, ...] = Field(default=(), description="empty = every site")
    kinds: tuple[NotificationKind, ...] = Field(default=(), description="empty = every kind")


class WebhookSettings(_Section):
    url: SecretStr | None = Field(
        default=None, description="receiver of the JSON POST (secret: such URLs often carry a token)"
    )
    secret: SecretStr | None = Field(
        default=None, description="HMAC-SHA256 key of the X-SM-Signature header; unset = unsigned"
    )
    timeout_s: float = Field(default=5.0, gt=0)

    _http = field_validator("url")(lambda v: _http_url(v, "webhook.url"))


class SlackSettings(_Section):
    url: SecretStr | None = Field(
        default=None, description="Slack-compatible incoming-webhook URL (it carries a token: kept secret)"
    )
    timeout_s: float = Field(default=5.0, gt=0)

    _http = field_validator("url")(lambda v: _http_url(v, "slack.url"))


class EmailSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=25, ge=1, le=65535)
    starttls: bool = Field(default=False, description="upgrade the connection with STARTTLS (required when set)")
    ca_file: Path | None = Field(default=None, description="CA bundle to verify the server; unset = system CAs")
    username: str | None = None
    password: SecretStr | None = None
    sender: str = Field(default="smart-maintenance@localhost", description="the From address")
    to: tuple[str, ...] = Field(default=(), description="recipients")
    timeout_s: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _login_needs_password(self) -> EmailSettings:
        if (self.username is None) != (self.password is None):
            raise ValueError("email.username and email.password go together")
        return self


class MqttNotifySettings(_Section):
    """Publishes on the broker of the root `mqtt` section (host, port, TLS, credentials)."""

    topic: str | None = Field(
        default=None, description="topic prefix; unset = mqtt.alarm_topic. Messages go to <prefix>/<site>/<asset_id>"
    )
    qos: int = Field(default=1, ge=0, le=2)
    retain: bool = False
    timeout_s: float = Field(default=10.0, gt=0, description="connect and acknowledgement timeout")


class RetrySettings(_Section):
    attempts: int = Field(default=4, ge=1, le=20, description="delivery attempts per notification and channel")
    initial_backoff_s: float = Field(default=0.5, ge=0)
    max_backoff_s: float = Field(default=8.0, ge=0)
    max_total_s: float = Field(default=60.0, gt=0, description="give up after this long, whatever attempts are left")


class NotifySettings(_Section):
    channels: tuple[ChannelName, ...] = Field(default=("console",), description="channels switched on")
    review_quiet_s: float = Field(
        default=3600.0,
        ge=0,
        description="after a review-needed notice, an asset's next reviews queue silently this long",
    )
    rules: tuple[RoutingRule, ...] = Field(
        default=(), description="routing; empty = every switched-on channel gets everything from min_severity up"
    )
    min_severity: int = Field(default=1, ge=1, le=5, description="the threshold of the implicit rule (no rules)")
    rate_limit_per_hour: int | None = Field(
        default=20,
        ge=1,
        description="at most this many per asset and channel per rolling hour of event time; null = no limit",
    )
    channel_rate_limit_per_hour: int | None = Field(
        default=120, ge=1,
        description="at most this many per channel per rolling hour of event time across all assets; null = no limit",
    )
    ledger: Literal["postgres", "memory"] = Field(
        default="postgres", description="where notifications and attempts are recorded (postgres: the job's database)"
    )
    queue_size: int = Field(
        default=1_000, ge=1, description="notifications waiting per channel and worker; beyond: dropped"
    )
    drain_timeout_s: float = Field(default=10.0, ge=0, description="at shutdown, wait this long for queued deliveries")
    retry: RetrySettings = RetrySettings()
    webhook: WebhookSettings = WebhookSettings()
    slack: SlackSettings = SlackSettings()
    email: EmailSettings = EmailSettings()
    mqtt: MqttNotifySettings = MqttNotifySettings()

    @field_validator("channels")
    @classmethod
    def _distinct(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(v)) != len(v):
            raise ValueError("channels are listed twice")
        return v

    @model_validator(mode="after")
    def _usable(self) -> NotifySettings:
        needs = {
            "webhook": (self.webhook.url is None, "webhook.url"),
            "slack": (self.slack.url is None, "slack.url"),
            "email": (not self.email.to, "email.to"),
        }
        for channel in self.channels:
            missing, what = needs.get(channel, (False, ""))
            if missing:
                raise ValueError(f"channel {channel!r} is switched on but {what} is not set")
        for i, rule in enumerate(self.rules):
            off = [c for c in rule.channels if c not in self.channels]
            if off:
                raise ValueError(f"rules[{i}] routes to {off}, which are not in channels {list(self.channels)}")
        return self

    def effective_rules(self) -> tuple[RoutingRule, ...]:
        """The rules in force: the configured ones, or one rule sending everything to every channel."""
        if self.rules:
            return self.rules
        return (RoutingRule(channels=self.channels, min_severity=self.min_severity),) if self.channels else ()
