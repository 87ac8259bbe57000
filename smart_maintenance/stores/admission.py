"""Which assets the flow treats as admitted: the registry's, those admitted in PostgreSQL, or all.

`Admission(asset_id)` answers from memory. The admitted ids stored in
PostgreSQL (`connectors/postgres/admission.py`) are read at the first
question; a live flow reads them again, at most every `refresh_s` seconds,
when it is asked about an asset it does not know as admitted, so
`smart-maintenance assets admit ID` takes effect within seconds without a
restart. Only the first read is waited for: a live flow's later reads run in
a background thread and the answer changes when they finish, so a quarantined
asset's readings never hold the flow's thread for a database round trip.
A replay reads them once, so the same input gives the same result.
If the database cannot be read, the last ids read are kept (none at first:
unknown assets stay quarantined) and a warning is logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

__all__ = ["Admission"]

log = logging.getLogger(__name__)


class Admission:
    """`admission(asset_id) -> bool`: may this asset create work orders and notify people?"""

    def __init__(self, registered: Iterable[str], *, quarantine: bool = True,
                 load: Callable[[], set[str]] | None = None, refresh_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if refresh_s is not None and not refresh_s > 0:
            raise ValueError(f"refresh_s must be positive (or None: read once), got {refresh_s}")
        self._registered = frozenset(registered)
        self._quarantine = quarantine
        self._load, self._refresh_s, self._clock = load, refresh_s, clock
        self._admitted: frozenset[str] = frozenset()
        self._loaded_at: float | None = None
        self._lock = threading.Lock()

    def __call__(self, asset_id: str) -> bool:
        if not self._quarantine or asset_id in self._registered or asset_id in self._admitted:
            return True
        if self._load is None:
            return False
        with self._lock:
            now = self._clock()
            last = self._loaded_at
            due = last is None or (self._refresh_s is not None and now - last >= self._refresh_s)
            if due:
                self._loaded_at = now
                if last is None:
                    self._read()
                else:  # a live re-read: answered from memory meanwhile
                    threading.Thread(target=self._read, name="admission-refresh", daemon=True).start()
        return asset_id in self._admitted

    def _read(self) -> None:
        if self._load is None:
            return
        try:
            self._admitted = frozenset(self._load())
        except Exception as e:  # noqa: BLE001 - the flow goes on with what it knew
            log.warning("admitted assets cannot be read (keeping the %d known): %s", len(self._admitted), e)
