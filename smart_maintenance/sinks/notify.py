"""Deliver notifications: console, signed webhook, Slack-compatible webhook, email (SMTP), MQTT.

    flow_output("notify", notifications, NotificationSink(settings))   # items: operators.notify.Notification

The flow never waits for a channel. `write_batch` records the batch in the
ledger as `pending` (one insert; ids already recorded are left alone) and puts
each notification on its channel's bounded queue; one delivery thread per channel and worker
sends it, retrying with exponential backoff (tenacity, bounded in attempts
and total time). A full queue drops the notification, which is recorded with
status `dropped`, and a slow or failing channel delays only itself.

Every notification is recorded in a `NotificationLedger` (PostgreSQL tables
`notifications` and `notification_attempts`, or in memory): its final status
(`sent`, `failed`, `suppressed`, `dropped`) and every attempt with its outcome.
Before delivering, the ledger is asked whether the notification's id was
already sent: a replay after a crash, which plans the same ids again, does not
notify twice. Because a batch is recorded before Bytewax commits its epoch, a
job killed with notifications still queued loses none of them: a partition
that starts takes back the PostgreSQL ledger's rows still `pending` on its
channels (spread over the workers by id) and delivers them. If the ledger
cannot record a batch, that is logged and the batch is queued all the same.
Secrets (webhook key, Slack URL, SMTP and MQTT passwords) never appear in a
repr, a log line or a recorded error.

Webhook requests are signed: `X-SM-Timestamp: <unix seconds>` and
`X-SM-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`
(see docs/notifications.md for a receiver's verification code).

The channels are in `sinks.notify_channels`, the ledgers in `sinks.notify_ledger`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from bytewax.outputs import DynamicSink, StatelessSinkPartition
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)
from tenacity.stop import stop_base

from smart_maintenance import metrics
from smart_maintenance.config.notify_settings import RetrySettings
from smart_maintenance.config.settings import Settings
from smart_maintenance.connectors.postgres.server import resolve_dsn
from smart_maintenance.operators.notify import Notification
from smart_maintenance.sinks.notify_channels import (
    Channel,
    ChannelError,
    NotifyError,
    _OffChannel,
    build_channels,
)
from smart_maintenance.sinks.notify_ledger import (
    MemoryLedger,
    NotificationLedger,
    PostgresLedger,
)

log = logging.getLogger(__name__)


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
            except Exception as e:  # noqa: BLE001 - whatever a channel raises, the notification must end
                failure = e if isinstance(e, ChannelError) else ChannelError(
                    f"{self.channel.name}: {type(e).__name__}: {e}", retryable=False)  # trying again cannot help
                error = str(failure)
                number = self._safe(self.ledger.attempt, n.notification_id, False, error, _now()) or number + 1
                raise failure from e
            number = self._safe(self.ledger.attempt, n.notification_id, True, detail, _now()) or number + 1
            return detail

        r = self.retry
        # `number` counts every attempt the ledger holds, those of earlier runs too: a notification left
        # pending by a crash gets what is left of its attempts after a restart, not a fresh set every time
        used_up = lambda state: number >= r.attempts  # noqa: E731
        retrying = Retrying(
            retry=retry_if_exception(lambda e: isinstance(e, ChannelError) and e.retryable),
            stop=stop_after_attempt(r.attempts) | stop_after_delay(r.max_total_s) | _stop_on(self._stopping)
            | used_up,  # type: ignore[operator]  # tenacity's | takes any stop callable, its hints only stop_base
            wait=wait_exponential(multiplier=r.initial_backoff_s, max=r.max_backoff_s),
            sleep=self._stopping.wait,  # type: ignore[arg-type]  # woken at shutdown; its bool is ignored
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
                w = self.workers[n.channel] = ChannelWorker(
                    _OffChannel(n.channel), self.ledger, self.retry, self.queue_size
                )
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
        try:  # before the epoch commits: a crash from here on leaves the batch to the next start
            self.dispatcher.ledger.record_pending(items)
        except NotifyError as e:
            log.error("notifications queued without a pending record (a crash would lose them): %s", e)
        self.dispatcher.submit(items)

    def recover(self, channels: list[str], worker_index: int, worker_count: int) -> int:
        """Queue again what an earlier run recorded `pending` on `channels` and never finished."""
        try:
            left = self.dispatcher.ledger.pending(channels, worker_index, worker_count)
        except NotifyError as e:
            log.error("pending notifications of an earlier run not taken back: %s", e)
            return 0
        if left:
            log.warning("taking back %d notification(s) left pending by an earlier run", len(left))
            self.dispatcher.submit(left)
        return len(left)

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
            dsn = resolve_dsn(self._settings, ride_out=True)
            ledger = PostgresLedger(dsn, self._settings.postgres.schema_name).open()
        else:
            ledger = MemoryLedger()
        channels = build_channels(self._settings, worker_index, console_stream=self._console_stream)
        part = _NotifyPartition(Dispatcher(channels, ledger, ns.retry, queue_size=ns.queue_size,
                                           drain_timeout_s=ns.drain_timeout_s))
        part.recover(sorted(channels), worker_index, worker_count)
        return part
