"""Review cases: the uncertain windows of one asset and episode, decided once.

A person reviews a case, not a window. Uncertain (`needs_review`) windows of
an asset that start less than `gap_ms` after the end of the case's last
window join that case; a longer quiet starts a new one. A case carries its
window count, first and last window, peak score (and the anomaly record of
its peak window, which an approval opens the alarm from), the sensors that
made its windows anomalous, and a small trend of scores.

Guarantees:
- The case id is derived from the asset and the start of its first window, so
  a replay or a restart reproduces it.
- A decision (approve or reject) closes the asset's open case: later
  uncertain windows open a new case. A deferral leaves it open.
- The trend holds at most `TREND_POINTS` points: when full, neighbours merge
  pairwise (the max of their scores), so it stays an even summary of the case.

>>> from datetime import datetime, timedelta, timezone
>>> from types import SimpleNamespace as NS
>>> t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
>>> def a(i, h, score=0.7):
...     start = t0 + timedelta(hours=h)
...     return NS(anomaly_id=f"a{i}", asset_id="pump-01", window_start=start, window_end=start + timedelta(minutes=10),
...               score=score, severity=2, contributions=(("temp", 1.0),), sensors=(),
...               to_dict=lambda: {"anomaly_id": f"a{i}"})
>>> case, out = fold_cases(None, "pump-01", [a(1, 0), a(2, 1, 0.9), a(3, 12)], gap_ms=6 * 3600_000)
>>> [(c.window_count, c.peak_score, c.opened) for c in out]
[(2, 0.9, True), (1, 0.7, True)]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from smart_maintenance.operators.records import dt_to_ms, ms_to_dt, stable_id

__all__ = ["TREND_POINTS", "OpenCase", "ReviewCase", "case_id", "close_case", "fold_cases"]

TREND_POINTS = 24
HOUR_MS = 3_600_000
DEFAULT_GAP_MS = 6 * HOUR_MS


def case_id(asset_id: str, first_window_start_ms: int) -> str:
    return stable_id("review_case", asset_id, first_window_start_ms)


@dataclass(frozen=True)
class OpenCase:
    """The asset's case that still takes windows (picklable flow state)."""

    case_id: str
    start_ms: int  # first window's start
    first_end_ms: int
    last_end_ms: int
    count: int
    peak_score: float
    severity: int
    sensors: tuple[str, ...]
    trend: tuple[tuple[int, float], ...]  # (window end ms, score)
    peak_anomaly: dict[str, Any]
    last_anomaly_id: str


@dataclass(frozen=True, slots=True)
class ReviewCase:
    """One state of a review case, as the queue stores it (the last state of an id wins)."""

    case_id: str
    asset_id: str
    window_start: datetime  # start of the first window
    first_window_end: datetime
    window_end: datetime  # end of the last window
    window_count: int
    peak_score: float
    severity: int
    sensors: tuple[str, ...]
    trend: tuple[tuple[datetime, float], ...]
    anomaly: dict[str, Any]  # the peak window's anomaly record
    last_anomaly_id: str
    opened: bool = False  # this state is the case's first (notify once per case)

    @property
    def status(self) -> str:
        return "needs_review"

    def to_dict(self) -> dict[str, Any]:
        return {
            "case_id": self.case_id,
            "asset_id": self.asset_id,
            "window_start": self.window_start.isoformat(),
            "first_window_end": self.first_window_end.isoformat(),
            "window_end": self.window_end.isoformat(),
            "window_count": self.window_count,
            "peak_score": round(self.peak_score, 6),
            "severity": self.severity,
            "sensors": list(self.sensors),
            "trend": [[t.isoformat(), round(s, 4)] for t, s in self.trend],
            "anomaly": self.anomaly,
            "last_anomaly_id": self.last_anomaly_id,
        }

    @classmethod
    def from_anomaly(cls, a: Any) -> ReviewCase:
        """A case of one window whose id is the anomaly's (how single reviews were queued before cases)."""
        d = a.to_dict()
        return cls(case_id=a.anomaly_id, asset_id=a.asset_id, window_start=a.window_start,
                   first_window_end=a.window_end, window_end=a.window_end, window_count=1,
                   peak_score=float(a.score), severity=int(a.severity), sensors=_sensors(a),
                   trend=((a.window_end, float(a.score)),), anomaly=d, last_anomaly_id=a.anomaly_id, opened=True)


def _sensors(a: Any) -> tuple[str, ...]:
    return tuple(a.sensors) or tuple(s for s, _ in a.contributions[:3])


def _thin(trend: tuple[tuple[int, float], ...]) -> tuple[tuple[int, float], ...]:
    if len(trend) <= TREND_POINTS:
        return trend
    pairs = [trend[i:i + 2] for i in range(0, len(trend), 2)]
    return tuple((p[-1][0], max(s for _, s in p)) for p in pairs)


def _start(asset_id: str, a: Any) -> OpenCase:
    start, end = dt_to_ms(a.window_start), dt_to_ms(a.window_end)
    return OpenCase(case_id=case_id(asset_id, start), start_ms=start, first_end_ms=end, last_end_ms=end, count=1,
                    peak_score=float(a.score), severity=int(a.severity), sensors=_sensors(a),
                    trend=((end, round(float(a.score), 4)),), peak_anomaly=a.to_dict(), last_anomaly_id=a.anomaly_id)


def _join(c: OpenCase, a: Any) -> OpenCase:
    end, score = dt_to_ms(a.window_end), float(a.score)
    peak = score > c.peak_score
    return replace(
        c, last_end_ms=max(c.last_end_ms, end), count=c.count + 1, peak_score=max(c.peak_score, score),
        severity=max(c.severity, int(a.severity)),
        sensors=c.sensors + tuple(s for s in _sensors(a) if s not in c.sensors),
        trend=_thin((*c.trend, (end, round(score, 4)))),
        peak_anomaly=a.to_dict() if peak else c.peak_anomaly, last_anomaly_id=a.anomaly_id)


def _record(asset_id: str, c: OpenCase, opened: bool) -> ReviewCase:
    return ReviewCase(
        case_id=c.case_id, asset_id=asset_id, window_start=ms_to_dt(c.start_ms),
        first_window_end=ms_to_dt(c.first_end_ms), window_end=ms_to_dt(c.last_end_ms), window_count=c.count,
        peak_score=c.peak_score, severity=c.severity, sensors=c.sensors,
        trend=tuple((ms_to_dt(t), s) for t, s in c.trend), anomaly=c.peak_anomaly,
        last_anomaly_id=c.last_anomaly_id, opened=opened)


def fold_cases(case: OpenCase | None, asset_id: str, anomalies: Sequence[Any],
               gap_ms: int = DEFAULT_GAP_MS) -> tuple[OpenCase | None, tuple[ReviewCase, ...]]:
    """Fold uncertain windows (in window order) into the asset's open case.

    Returns the open case afterwards and the state of every case the batch
    touched (at most one per case, in order).
    """
    if gap_ms < 0:
        raise ValueError(f"gap_ms must not be negative, got {gap_ms}")
    out: list[ReviewCase] = []
    opened = False
    touched = False
    for a in anomalies:
        if case is not None and dt_to_ms(a.window_start) - case.last_end_ms < gap_ms:
            case, touched = _join(case, a), True
            continue
        if case is not None and touched:
            out.append(_record(asset_id, case, opened))
        case, opened, touched = _start(asset_id, a), True, True
    if case is not None and touched:
        out.append(_record(asset_id, case, opened))
    return case, tuple(out)


def close_case(case: OpenCase | None, review_id: str, decision: str) -> OpenCase | None:
    """A decision on the open case closes it (a deferral does not); other ids leave it as it is."""
    if case is not None and case.case_id == review_id and decision in ("approve", "reject"):
        return None
    return case
