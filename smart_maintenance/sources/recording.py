"""How long each asset's recording is, for a finite run: the warm-up is capped at a share of it.

A replay of files or a simulator run of known duration is finite: a warm-up
of a day on a recording of two days would leave half of it unjudged, and a
fault inside that half invisible. `recording_lengths(settings)` returns a
function asset_id -> milliseconds of recording (None when unknown or live);
the detection step caps each asset's warm-up at `detection.warmup_share` of
it and logs `warmup_capped` for the asset.

A replay's lengths come from one pass over its files (time and asset columns
only are decoded, on first use, not at build time).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from smart_maintenance.config.settings import Settings

RecordingLengths = Callable[[str], int | None]


def recording_lengths(settings: Settings) -> RecordingLengths | None:
    """Per asset, its recording's length in ms, for finite runs; None for live ones."""
    if settings.source == "simulator" and settings.simulator.duration_s and settings.simulator.speed == 0:
        length = int(settings.simulator.duration_s * 1000)
        return lambda _asset_id: length
    if settings.source == "replay" and settings.replay.paths and settings.replay.speed == 0:
        return _ReplaySpans(settings)
    return None


class _ReplaySpans:
    """First to last event time per asset over the replayed files, read once on first use."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._spans: dict[str, int] | None = None
        self._lock = threading.Lock()

    def __call__(self, asset_id: str) -> int | None:
        with self._lock:
            if self._spans is None:
                self._spans = self._scan()
        return self._spans.get(asset_id)

    def _scan(self) -> dict[str, int]:
        from smart_maintenance.sources.formats import plan_file
        from smart_maintenance.sources.replay import expand_paths, read_chunks

        r = self._settings.replay
        lo: dict[str, int] = {}
        hi: dict[str, int] = {}
        for name in expand_paths(list(r.paths)):
            plan = plan_file(name, fmt=r.format, time_col=r.time_col, asset_col=r.asset_col, asset=r.asset, sep=r.sep,
                             timezone=r.timezone)
            for chunk in read_chunks(plan, chunk_rows=r.chunk_rows):
                rd = chunk.readings
                if not len(rd):
                    continue
                for a in np.unique(rd.asset_id):
                    ts = rd.ts[rd.asset_id == a]
                    key = str(a)
                    lo[key] = min(lo.get(key, int(ts.min())), int(ts.min()))
                    hi[key] = max(hi.get(key, int(ts.max())), int(ts.max()))
        return {a: hi[a] - lo[a] for a in lo}
