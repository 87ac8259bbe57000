"""Small server-rendered SVG charts for the web UI (no JavaScript, no external assets).

Every label is escaped; coordinates are computed here so the page is a plain document.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from html import escape
from typing import Any

W, H, PAD = 640, 120, 4


def _x(t: datetime, t0: float, t1: float, width: int = W) -> float:
    return PAD + (t.timestamp() - t0) / max(t1 - t0, 1e-9) * (width - 2 * PAD)


def trend(sensor: str, points: Sequence[Sequence[Any]], spans: Sequence[tuple[datetime, datetime, str]],
          t0: datetime, t1: datetime) -> str:
    """A sensor's mean line with its min-max band; `spans` (start, end, kind) shade anomalies and alarms.

    >>> from datetime import timezone
    >>> a, b = datetime(2026, 1, 1, tzinfo=timezone.utc), datetime(2026, 1, 2, tzinfo=timezone.utc)
    >>> svg = trend("<t>", [[a, 1.0, 0.5, 1.5, 3], [b, 2.0, 1.0, 3.0, 3]], [(a, b, "alarm")], a, b)
    >>> "&lt;t&gt;" in svg and "<polyline" in svg and 'class="alarm"' in svg
    True
    """
    lo_t, hi_t = t0.timestamp(), t1.timestamp()
    vals: list[float] = [v for p in points for v in (p[2], p[3]) if v is not None]
    if not vals:
        return f'<p class="muted">{escape(sensor)}: no readings in range</p>'
    vmin, vmax = min(vals), max(vals)
    span = (vmax - vmin) or 1.0

    def y(v: float) -> float:
        return H - PAD - (v - vmin) / span * (H - 2 * PAD)

    line = " ".join(f"{_x(p[0], lo_t, hi_t):.1f},{y(p[1]):.1f}" for p in points)
    band = " ".join([f"{_x(p[0], lo_t, hi_t):.1f},{y(p[3]):.1f}" for p in points]
                    + [f"{_x(p[0], lo_t, hi_t):.1f},{y(p[2]):.1f}" for p in reversed(points)])
    shades = "".join(
        f'<rect class="{escape(kind)}" x="{_x(max(s, t0), lo_t, hi_t):.1f}" y="0" '
        f'width="{max(2.0, _x(min(e, t1), lo_t, hi_t) - _x(max(s, t0), lo_t, hi_t)):.1f}" height="{H}"/>'
        for s, e, kind in spans if e >= t0 and s <= t1)
    return (f'<figure class="chart"><figcaption>{escape(sensor)} <span class="muted">{vmin:.3g} .. {vmax:.3g}'
            f'</span></figcaption><svg viewBox="0 0 {W} {H}" role="img" aria-label="{escape(sensor)} trend">'
            f'{shades}<polygon class="band" points="{band}"/><polyline class="line" points="{line}"/></svg></figure>')


def gantt(rows: Sequence[dict[str, Any]]) -> str:
    """The plan as a Gantt chart: one lane per technician, one bar per work order."""
    if not rows:
        return '<p class="muted">nothing planned</p>'
    t0 = min(r["start_at"] for r in rows).timestamp()
    t1 = max(r["end_at"] for r in rows).timestamp()
    techs = sorted({r["technician_id"] for r in rows})
    lane, label_w, width = 28, 110, W + 110
    parts = [f'<svg viewBox="0 0 {width} {lane * len(techs) + 24}" role="img" aria-label="schedule">']
    for i, tech in enumerate(techs):
        parts.append(f'<text x="4" y="{i * lane + 18}">{escape(tech)}</text>')
    for r in rows:
        i = techs.index(r["technician_id"])
        x0 = label_w + _x(r["start_at"], t0, t1, W)
        x1 = label_w + _x(r["end_at"], t0, t1, W)
        parts.append(f'<rect class="job p{min(int(r["priority"]), 5)}" x="{x0:.1f}" y="{i * lane + 4}" '
                     f'width="{max(x1 - x0, 3):.1f}" height="{lane - 8}"><title>{escape(r["work_order_id"])} '
                     f'{escape(r["asset_id"])} {r["start_at"]:%Y-%m-%d %H:%M} UTC</title></rect>')
    first, last = datetime.fromtimestamp(t0, tz=timezone.utc), datetime.fromtimestamp(t1, tz=timezone.utc)
    parts.append(f'<text x="{label_w}" y="{lane * len(techs) + 18}" class="muted">{first:%Y-%m-%d %H:%M}</text>'
                 f'<text x="{width - 4}" y="{lane * len(techs) + 18}" text-anchor="end" class="muted">'
                 f'{last:%Y-%m-%d %H:%M} UTC</text></svg>')
    return "".join(parts)


def spark(trend: Sequence[Sequence[Any]] | None) -> str:
    """A case's score trend as tiny bars (scores in 0..1).

    >>> spark([["2026-01-01T00:00:00+00:00", 0.5], ["2026-01-01T00:10:00+00:00", 1.0]]).count("<rect")
    2
    """
    pts = list(trend or [])
    if not pts:
        return ""
    w = 6
    bars = "".join(f'<rect x="{i * w}" y="{24 - 24 * min(max(float(s), 0), 1):.1f}" width="{w - 1}" '
                   f'height="{24 * min(max(float(s), 0), 1):.1f}"><title>{escape(str(t))} {float(s):.2f}</title></rect>'
                   for i, (t, s) in enumerate(pts))
    return f'<svg class="spark" viewBox="0 0 {len(pts) * w} 24" role="img" aria-label="score trend">{bars}</svg>'
