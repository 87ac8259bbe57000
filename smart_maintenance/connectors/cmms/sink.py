"""The CMMS sink: every created or updated work order pushed to the CMMS, from a background thread.

    outputs["work_orders"].append(CmmsSink(settings, dead_letters=write_dead_letters))

The flow never waits on the CMMS: `write_batch` puts the work orders on a bounded queue (`queue_size`)
and one thread per worker pushes them in order (so a create goes before its updates), with the
client's retries. What cannot be pushed becomes a dead letter, handed to `dead_letters` from that
thread (the wiring stores them in PostgreSQL):

- `cmms_rejected`: a 4xx answer; the reason holds the status and the start of the answer;
- `cmms_unavailable`: no answer after every retry (timeouts, 5xx, 429);
- `cmms_mapping`: the mapping cannot render this work order;
- `cmms_backlog`: the queue was full, or the work order was still queued at shutdown after
  `drain_timeout_s`;
- `cmms_error`: anything else (a bug), logged with its traceback.

A revision whose rendered body equals the last one pushed for the order (a re-plan that changed
only fields the mapping does not send) is not sent again. A job killed with work orders still queued
does not push them; the order's next revision is pushed (as a create when the CMMS answers 404).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import Any

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from smart_maintenance import metrics
from smart_maintenance.config.cmms_settings import CmmsSettings
from smart_maintenance.config.settings import Settings
from smart_maintenance.connectors.cmms.client import CmmsClient, CmmsRejected, CmmsUnavailable
from smart_maintenance.operators.cmms import MappingError
from smart_maintenance.operators.records import Invalid

__all__ = ["CmmsSink", "CmmsPusher"]

log = logging.getLogger(__name__)

DeadLetters = Callable[[Sequence[Invalid]], Any]
_LABEL = "cmms"
_REMEMBER = 10_000  # work orders whose last pushed body is kept, to skip unchanged revisions


def _as_dict(item: Any) -> dict[str, Any]:
    return item if isinstance(item, dict) else item.to_dict()


class CmmsPusher:
    """A bounded queue and the thread that pushes what is on it. `offer` never blocks."""

    def __init__(self, client: CmmsClient, dead_letters: DeadLetters | None, *, queue_size: int,
                 drain_timeout_s: float) -> None:
        self.client = client
        self._dead_letters = dead_letters
        self._drain_timeout_s = drain_timeout_s
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=queue_size)
        self._overflow: deque[Invalid] = deque()
        self._last: OrderedDict[str, bytes] = OrderedDict()
        self._done = threading.Event()
        self.counts = {s: 0 for s in ("pushed", "unchanged", "rejected", "unavailable", "mapping", "backlog", "error")}
        self._thread = threading.Thread(target=self._run, name="cmms-push", daemon=True)
        self._thread.start()

    def offer(self, work_order: dict[str, Any]) -> bool:
        try:
            self._queue.put_nowait(work_order)
        except queue.Full:
            self._overflow.append(self._invalid(work_order, "cmms_backlog",
                                                f"queue full ({self._queue.maxsize} work orders waiting)", ""))
            self.counts["backlog"] += 1
            metrics.SINK_ERRORS.labels(_LABEL).inc()
            return False
        metrics.SINK_BACKLOG.labels(_LABEL).set(self._queue.qsize())
        return True

    def _invalid(self, wo: dict[str, Any], reason: str, detail: str, raw: str) -> Invalid:
        origin = f"cmms:{self.client.cfg.host} work_order={wo.get('work_order_id')} revision={wo.get('revision')}"
        return Invalid(reason, detail, raw, origin)

    def _run(self) -> None:
        while not (self._done.is_set() and self._queue.empty()):
            self._flush_overflow()
            try:
                wo = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            try:
                self._push(wo)
            except Exception as e:  # a bug must not kill the thread: every later work order would be lost
                log.exception("pushing work order %s to the CMMS", wo.get("work_order_id"))
                self._fail(wo, "error", "cmms_error", f"{type(e).__name__}: {e}", "")
            finally:
                self._queue.task_done()
                metrics.SINK_BACKLOG.labels(_LABEL).set(self._queue.qsize())
        self._flush_overflow()

    def _push(self, wo: dict[str, Any]) -> None:
        wo_id = str(wo.get("work_order_id"))
        try:
            body = self.client.body(wo)
        except MappingError as e:
            return self._fail(wo, "mapping", "cmms_mapping", str(e), "")
        if self._last.get(wo_id) == body:
            self.counts["unchanged"] += 1
            return None
        try:
            pushed = self.client.push(wo, body)
        except CmmsRejected as e:
            return self._fail(wo, "rejected", "cmms_rejected", str(e), body.decode())
        except CmmsUnavailable as e:
            return self._fail(wo, "unavailable", "cmms_unavailable", str(e), body.decode())
        self._last[wo_id] = body
        self._last.move_to_end(wo_id)
        while len(self._last) > _REMEMBER:
            self._last.popitem(last=False)
        self.counts["pushed"] += 1
        log.debug("work order %s pushed: %s %s -> %d after %d tries", wo_id, pushed.method, pushed.path,
                  pushed.status, pushed.attempts)
        return None

    def _fail(self, wo: dict[str, Any], count: str, reason: str, detail: str, raw: str) -> None:
        self.counts[count] += 1
        metrics.SINK_ERRORS.labels(_LABEL).inc()
        log.warning("work order %s not pushed to the CMMS: %s: %s", wo.get("work_order_id"), reason, detail)
        self._store([self._invalid(wo, reason, detail, raw)])

    def _flush_overflow(self) -> None:
        bad = []
        while self._overflow:
            bad.append(self._overflow.popleft())
        if bad:
            self._store(bad)

    def _store(self, bad: list[Invalid]) -> None:
        if self._dead_letters is None:
            return
        try:
            self._dead_letters(bad)
        except Exception as e:  # noqa: BLE001 - a dead-letter store down must not stop the pushes
            log.error("%d CMMS dead letter(s) not stored: %s: %s", len(bad), type(e).__name__, e)

    def join(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` until everything queued was handled."""
        deadline = time.monotonic() + timeout_s
        while (self._queue.unfinished_tasks or self._overflow) and time.monotonic() < deadline:
            time.sleep(0.01)
        return not (self._queue.unfinished_tasks or self._overflow)

    def close(self) -> None:
        """Push what is queued for up to `drain_timeout_s`; the rest become dead letters; stop."""
        self.join(self._drain_timeout_s)
        self.client.stopping.set()  # a request in flight finishes; no more retries
        while True:
            try:
                wo = self._queue.get_nowait()
            except queue.Empty:
                break
            self._queue.task_done()
            self.counts["backlog"] += 1
            self._overflow.append(self._invalid(
                wo, "cmms_backlog", f"not pushed within drain_timeout_s={self._drain_timeout_s} at shutdown", ""))
        self._done.set()
        self._thread.join(self.client.cfg.timeout_s + self.client.cfg.connect_timeout_s + 1)
        if self._thread.is_alive():
            log.error("CMMS pusher still busy at shutdown")
        self.client.close()


class _CmmsPartition(StatelessSinkPartition[Any]):
    def __init__(self, pusher: CmmsPusher) -> None:
        self.pusher = pusher

    def write_batch(self, items: list[Any]) -> None:
        for item in items:
            self.pusher.offer(_as_dict(item))

    def close(self) -> None:
        self.pusher.close()


class CmmsSink(DynamicSink[Any]):
    """Work orders (`WorkOrder` or their dicts) to the CMMS's REST API; `dead_letters` stores what failed."""

    def __init__(self, settings: Settings | CmmsSettings, *, dead_letters: DeadLetters | None = None) -> None:
        self._cfg = settings.cmms if isinstance(settings, Settings) else settings
        if self._cfg.base_url is None:
            raise ValueError("cmms.base_url is not set")
        self._dead_letters = dead_letters

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _CmmsPartition:
        cfg = self._cfg
        return _CmmsPartition(CmmsPusher(CmmsClient(cfg), self._dead_letters, queue_size=cfg.queue_size,
                                         drain_timeout_s=cfg.drain_timeout_s))
