"""Completed work read back from the CMMS: one GET of `completions.path`, each item mapped into a maintenance
record (`operators/cmms.py:completion_records`), whose origin is `cmms:<host>`.

The control input (`sources/controls.py`) stores the records in the maintenance log, where they close work
orders and re-baseline assets exactly as `smart-maintenance log-maintenance` does, at their own event time.
"""

from __future__ import annotations

import time
from typing import Any

from smart_maintenance.config.settings import Settings
from smart_maintenance.connectors.cmms.client import CmmsClient
from smart_maintenance.operators.cmms import compile_mapping, completion_records
from smart_maintenance.operators.controls import MaintenanceRecord
from smart_maintenance.operators.records import Invalid

__all__ = ["read_completions"]


def read_completions(settings: Settings, client: CmmsClient | None = None,
                     now_ms: int | None = None) -> tuple[list[MaintenanceRecord], list[Invalid]]:
    """The CMMS's completed work orders as records, and the items that are not usable.

    Raises CmmsError when the CMMS cannot be asked (after the client's retries) or answers no JSON.
    A completion time more than `max_ts_skew_s` ahead of the wall clock is refused, as readings are.
    """
    cfg = settings.cmms
    c = cfg.completions
    if c.path is None:
        return [], []
    own = client is None
    client = client or CmmsClient(cfg)
    try:
        doc: Any = client.get_json(c.path)
    finally:
        if own:
            client.close()
    now = int(time.time() * 1000) if now_ms is None else now_ms
    return completion_records(doc, c.items_path, compile_mapping(c.mapping), host=cfg.host, done=c.done_statuses,
                              now_ms=now, max_ahead_ms=int(settings.max_ts_skew_s * 1000))
