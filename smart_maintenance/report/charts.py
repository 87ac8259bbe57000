"""The report's charts: sensor trends, time-to-failure forecasts, the technicians' Gantt chart.

Each function draws one matplotlib figure and returns it as a PNG `data:` URL,
so the page (`report/html.py`) can embed it and the file can be mailed.
The caller selects a non-interactive backend (`matplotlib.use("Agg")`).
docs/reports.md says what each chart shows.
"""

from __future__ import annotations

import base64
import io
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from smart_maintenance.config.registry import Registry, Shift
from smart_maintenance.report.data import ReportData

STATUS_COLORS = {"confirmed": "#d62728", "needs_review": "#ff7f0e", "rejected": "#9a9a9a", "sensor_fault": "#9467bd"}
ALARM_COLORS = {"machine": "#d62728", "sensor_fault": "#9467bd"}
DPI = 100  # 11-inch figures: 1100 px, the width of the page


# -- labels -------------------------------------------------------------------------

def _h(hours: float | None) -> str:
    """Hours as text: `5.5 h`, or days past two days.

    >>> _h(5.52), _h(60.0), _h(None)
    ('5.5 h', '2.5 d', '—')
    """
    if hours is None or pd.isna(hours):
        return "—"
    return f"{hours / 24:.1f} d" if abs(hours) >= 48 else f"{hours:.1f} h"


def _plain(text: Any) -> str:
    """Data text for a chart label: matplotlib would read `$...$` as math."""
    return str(text).replace("$", r"\$")


# -- figures ------------------------------------------------------------------------

def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _time_axis(ax: Any) -> None:
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator(minticks=4, maxticks=10)  # type: ignore[no-untyped-call]  # no hints
    ax.xaxis.set_major_locator(locator)
    formatter = mdates.ConciseDateFormatter(locator, show_offset=False)  # type: ignore[no-untyped-call]  # no hints
    ax.xaxis.set_major_formatter(formatter)
    ax.set_xlabel("UTC", fontsize=7, loc="right")


def _naive(s: pd.Series) -> np.ndarray:
    """UTC timestamps as naive datetime64 for matplotlib (the page says times are UTC)."""
    naive: np.ndarray = s.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy()
    return naive


def _limits(s: pd.DataFrame) -> tuple[float, float]:
    """The y range of a trend: its means and the bulk of the min..max envelope, so one glitch does not flatten it."""
    mean, vmin, vmax = (s[c].astype(float).to_numpy() for c in ("mean", "vmin", "vmax"))
    if not len(mean) or np.isnan(mean).all():
        return 0.0, 1.0
    lo = min(np.nanmin(mean), np.nanpercentile(vmin, 2) if not np.isnan(vmin).all() else np.inf)
    hi = max(np.nanmax(mean), np.nanpercentile(vmax, 98) if not np.isnan(vmax).all() else -np.inf)
    return float(lo), float(hi)


MAX_PLOTTED_SENSORS = 12
"""Sensors drawn per asset: an asset with hundreds would take minutes and gigabytes to draw, and be unreadable."""


def rank_sensors(asset_id: str, data: ReportData, registry: Registry | None) -> list[str]:
    """The asset's sensors, most relevant first: those its alarms and anomalies name (most often first), then
    the registry's in its order, then the rest by name.

    >>> from datetime import datetime, timezone
    >>> t = pd.Timestamp("2026-01-05", tz="UTC")
    >>> trends = pd.DataFrame({"asset_id": ["p"] * 3, "sensor": ["a", "b", "c"], "ts": [t] * 3})
    >>> anomalies = pd.DataFrame({"asset_id": ["p", "p"], "sensor": ["c", "c"]})
    >>> alarms = pd.DataFrame({"asset_id": ["p"], "sensors": [["b", "c"]]})
    >>> data = ReportData.__new__(ReportData)
    >>> object.__setattr__(data, "trends", trends); object.__setattr__(data, "anomalies", anomalies)
    >>> object.__setattr__(data, "alarms", alarms)
    >>> rank_sensors("p", data, None)
    ['c', 'b', 'a']
    """
    present = set(data.trends.loc[data.trends["asset_id"] == asset_id, "sensor"])
    mentions: dict[str, int] = {}
    for sensor in data.anomalies.loc[data.anomalies["asset_id"] == asset_id, "sensor"].dropna():
        mentions[sensor] = mentions.get(sensor, 0) + 1
    for sensors in data.alarms.loc[data.alarms["asset_id"] == asset_id, "sensors"]:
        for sensor in sensors if isinstance(sensors, (list, tuple)) else ():
            mentions[sensor] = mentions.get(sensor, 0) + 1
    atype = registry.asset_type(asset_id) if registry else None
    order = {s: i for i, s in enumerate(atype.sensors)} if atype else {}
    return sorted(present, key=lambda s: (-mentions.get(s, 0), order.get(s, len(order)), s))


def trend_figure(asset_id: str, data: ReportData, registry: Registry | None,
                 sensors: list[str] | None = None) -> str:
    """Feature means per sensor with min..max envelope, normal band, failure line, anomalies and alarm spans.

    `sensors` are the ones drawn, in this order (default: all of the asset's, the most relevant first).
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    tr = data.trends[data.trends["asset_id"] == asset_id]
    if sensors is None:
        sensors = rank_sensors(asset_id, data, registry)
    fig, axes = plt.subplots(len(sensors), 1, sharex=True, figsize=(11, 0.4 + 1.45 * len(sensors)), squeeze=False)
    an = data.anomalies[data.anomalies["asset_id"] == asset_id]
    al = data.alarms[data.alarms["asset_id"] == asset_id]
    end = pd.Timestamp(data.period_end).tz_convert("UTC").tz_localize(None)
    start = pd.Timestamp(data.period_start).tz_convert("UTC").tz_localize(None)
    for ax, sensor in zip(axes[:, 0], sensors):
        s = tr[tr["sensor"] == sensor]
        x = _naive(s["ts"])
        ax.fill_between(x, s["vmin"].astype(float), s["vmax"].astype(float), color="#1f77b4", alpha=0.15, lw=0)
        ax.plot(x, s["mean"].astype(float), color="#1f77b4", lw=1.0)
        lo_y, hi_y = _limits(s)
        spec = registry.sensor(asset_id, sensor) if registry else None
        unit = f" ({spec.unit})" if spec else ""
        if spec:
            ax.axhspan(*spec.normal, color="#2ca02c", alpha=0.10, lw=0)
            lo_y, hi_y = min(lo_y, spec.normal[0]), max(hi_y, spec.normal[1])
            span = max(hi_y - lo_y, 1e-9)
            if lo_y - 0.6 * span <= spec.failure <= hi_y + 0.6 * span:  # near enough to draw to scale
                ax.axhline(spec.failure, color="#d62728", ls="--", lw=1.0)
                lo_y, hi_y = min(lo_y, spec.failure), max(hi_y, spec.failure)
            else:  # far off: say where it is instead of squashing the trend
                above = spec.failure > hi_y
                ax.annotate(f"failure {spec.failure:g} {'↑' if above else '↓'}", xy=(0.995, 0.96 if above else 0.04),
                            xycoords="axes fraction", ha="right", va="top" if above else "bottom",
                            fontsize=7, color="#d62728")
        pad = 0.08 * max(hi_y - lo_y, 1e-9)
        ax.set_ylim(lo_y - pad, hi_y + pad)
        for _, a in al.iterrows():
            until = a["cleared_at"] if pd.notna(a["cleared_at"]) else data.period_end
            ax.axvspan(pd.Timestamp(a["opened_at"]).tz_localize(None), pd.Timestamp(until).tz_localize(None),
                       color=ALARM_COLORS.get(a["kind"], "#d62728"), alpha=0.12, lw=0)
        mine = an[(an["sensor"] == sensor) | (an["sensor"].isna() & (sensor == sensors[0]))]
        if len(mine) and len(s):
            mid = mine["window_start"] + (mine["window_end"] - mine["window_start"]) / 2
            xs = _naive(mid)
            ys = np.interp(xs.astype("datetime64[ns]").astype(np.int64), x.astype("datetime64[ns]").astype(np.int64),
                           s["mean"].astype(float).to_numpy())
            for status, color in STATUS_COLORS.items():
                sel = (mine["status"] == status).to_numpy()
                if sel.any():
                    ax.scatter(xs[sel], ys[sel], s=14, color=color, zorder=3, edgecolors="white", linewidths=0.4)
        ax.set_ylabel(_plain(sensor) + unit, fontsize=8, rotation=0, ha="right", va="center")
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.25)
    axes[-1, 0].set_xlim(start, end)
    _time_axis(axes[-1, 0])
    handles = [Line2D([], [], color="#1f77b4", label="window mean (band: min..max)"),
               Patch(color="#2ca02c", alpha=0.25, label="normal band"),
               Line2D([], [], color="#d62728", ls="--", label="failure threshold"),
               *(Line2D([], [], ls="", marker="o", color=c, label=f"anomaly: {k.replace('_', ' ')}")
                 for k, c in STATUS_COLORS.items()),
               Patch(color=ALARM_COLORS["machine"], alpha=0.25, label="machine alarm"),
               Patch(color=ALARM_COLORS["sensor_fault"], alpha=0.25, label="sensor-fault alarm")]
    fig.legend(handles=handles, loc="upper center", ncol=5, fontsize=7, frameon=False)
    height = fig.get_figheight()  # fixed margins: tight_layout would cost a third of the time
    fig.subplots_adjust(left=0.19, right=0.985, top=1 - 0.45 / height, bottom=0.45 / height, hspace=0.18)
    return _png(fig)


def ttf_figure(rows: pd.DataFrame, data_end: datetime | None) -> str:
    """One row per open alarm: forecast made -> failure, the lo..hi interval as a bar."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 0.9 + 0.42 * len(rows)))

    def naive(t: Any) -> pd.Timestamp:
        return pd.Timestamp(t).tz_convert("UTC").tz_localize(None)

    for y, (_, r) in enumerate(rows.iterrows()):
        made, horizon = naive(r["made_at"]), naive(r["horizon_end"])
        lo = naive(r["lo"]) if pd.notna(r["lo"]) else None
        hi = naive(r["hi"]) if pd.notna(r["hi"]) else horizon
        if lo is not None:
            ax.plot([lo, hi], [y, y], color="#ff7f0e", lw=7, alpha=0.45, solid_capstyle="butt")
        if pd.notna(r["failure_at"]):
            fail = naive(r["failure_at"])
            ax.plot([made, fail], [y, y], color="#555", lw=1)
            ax.plot([fail], [y], marker="D", color="#d62728", ms=6)
            upper = _h(r["hi_hours"]) if pd.notna(r["hi"]) else "beyond the horizon"
            label = f"{_h(r['ttf_hours'])} (interval {_h(r['lo_hours'])} – {upper})"
            ax.annotate(label, (fail, y), xytext=(6, 5), textcoords="offset points", fontsize=7)
        else:
            ax.annotate("", xy=(horizon, y), xytext=(made, y), arrowprops={"arrowstyle": "->", "color": "#555"})
            ax.annotate("no crossing before the horizon", (made, y), xytext=(6, 5), textcoords="offset points",
                        fontsize=7)
        ax.plot([made], [y], marker="o", color="#1f77b4", ms=5)
    ax.axvline(naive(data_end), color="#333", ls=":", lw=1)
    ax.set_yticks(range(len(rows)), [_plain(f"{r.asset_id} · {r.sensor} ({r.method})") for r in rows.itertuples()],
                  fontsize=8)
    ax.set_ylim(len(rows) - 0.4, -0.6)
    ax.set_title("forecast made (●) → expected failure (◆), interval lo–hi (bar); dotted line: newest data",
                 fontsize=8)
    ax.grid(axis="x", alpha=0.25)
    ax.tick_params(axis="x", labelsize=7)
    _time_axis(ax)
    fig.tight_layout()
    return _png(fig)


def _shift_spans(shift: Shift, lo: pd.Timestamp, hi: pd.Timestamp) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """The technician's shifts that overlap [lo, hi] (naive UTC); a shift belongs to the day it starts."""
    spans = []
    h0, m0 = map(int, shift.start.split(":"))
    h1, m1 = map(int, shift.end.split(":"))
    for day in pd.date_range(lo.normalize() - pd.Timedelta(days=1), hi.normalize(), freq="D"):
        if day.weekday() in shift.days:
            a, b = day + pd.Timedelta(hours=h0, minutes=m0), day + pd.Timedelta(hours=h1, minutes=m1)
            spans.append((a, b if b > a else b + pd.Timedelta(days=1)))
    return [(a, b) for a, b in spans if b > lo and a < hi]


def gantt_figure(plan: pd.DataFrame, technicians: list[tuple[str, str, Shift | None]],
                 data_end: datetime | None) -> str:
    """Technician rows (their shifts shaded), one bar per assigned work order, coloured by priority."""
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    fig, ax = plt.subplots(figsize=(11, 1.0 + 0.45 * len(technicians)))
    row = {tid: i for i, (tid, _, _) in enumerate(technicians)}
    cmap = plt.get_cmap("YlOrRd")
    lo = plan["start_at"].min().tz_convert("UTC").tz_localize(None)
    hi = plan["end_at"].max().tz_convert("UTC").tz_localize(None)
    pad = max((hi - lo) * 0.03, pd.Timedelta(minutes=30))
    lo, hi = lo - pad, hi + pad
    for i, (_, _, shift) in enumerate(technicians):
        for a, b in _shift_spans(shift, lo, hi) if shift else ():
            x0 = mdates.date2num(a)  # type: ignore[no-untyped-call]  # matplotlib.dates: no hints
            ax.broken_barh([(x0, (b - a) / pd.Timedelta(days=1))], (i - 0.42, 0.84),
                           color="#e3f1e3", lw=0)
    span_days = (hi - lo) / pd.Timedelta(days=1)
    for r in plan.itertuples():
        start_at = pd.Timestamp(r.start_at).tz_convert("UTC").tz_localize(None)
        start = mdates.date2num(start_at)  # type: ignore[no-untyped-call]  # matplotlib.dates: no hints
        width = (r.end_at - r.start_at).total_seconds() / 86400.0
        prio = int(r.priority) if pd.notna(r.priority) else 3
        ax.barh(row[r.technician_id], width, left=start, height=0.6, color=cmap(0.2 + 0.16 * prio),
                edgecolor="#333", lw=0.5)
        fits = int((width / span_days * 0.8 * fig.get_figwidth() * DPI - 6) / 5)  # characters of 6.5 pt
        label = _plain(r.asset_id if len(r.asset_id) <= fits else r.asset_id[: fits - 1] + "…")
        if fits >= 4:
            ax.text(start + width / 2, row[r.technician_id], label, ha="center", va="center",
                    fontsize=6.5, color="white" if prio >= 4 else "black", clip_on=True)
    if data_end is not None:
        ax.axvline(pd.Timestamp(data_end).tz_convert("UTC").tz_localize(None), color="#333", ls=":", lw=1)
    ax.set_yticks(range(len(technicians)), [_plain(f"{name} ({tid})") for tid, name, _ in technicians], fontsize=8)
    ax.set_ylim(len(technicians) - 0.5, -0.5)
    ax.set_xlim(lo, hi)
    ax.xaxis_date()
    _time_axis(ax)
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(axis="x", alpha=0.25)
    ax.legend(handles=[Patch(color="#e3f1e3", label="on shift"),
                       *(Patch(color=cmap(0.2 + 0.16 * p), label=f"priority {p}") for p in range(1, 6))],
              loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=6, fontsize=7, frameon=False)
    fig.tight_layout()
    return _png(fig)
