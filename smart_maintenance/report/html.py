"""The `report` command: one self-contained HTML page about the plant, charts included.

    smart-maintenance report --since 7d --out report.html

Sections: KPI cards, fleet health, per-asset sensor trends (anomalies and
alarm episodes marked, the registry's normal band and failure threshold
drawn), time-to-failure forecasts with their intervals, the technicians'
schedule as a Gantt chart, feedback (threshold changes and the
false-positive rate before and after them), and tables of recent alarms, work
orders and maintenance. Charts are matplotlib PNGs embedded as base64, so the
file can be mailed. Jinja2 autoescapes everything: notes, reasons and names
are user text, and the page never contains markup that came from the data.
docs/reports.md says how each figure is computed.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from smart_maintenance.config.durations import duration_seconds
from smart_maintenance.config.registry import Registry
from smart_maintenance.operators import kpis
from smart_maintenance.report.charts import (
    MAX_PLOTTED_SENSORS,
    _h,
    gantt_figure,
    rank_sensors,
    trend_figure,
    ttf_figure,
)
from smart_maintenance.report.data import ReportData, load_report_data

if TYPE_CHECKING:
    from smart_maintenance.config.settings import Settings

TABLE_ROWS = 50  # rows of the alarms, work orders and maintenance tables


@dataclass(frozen=True, slots=True)
class ReportSummary:
    path: Path
    assets: int
    images: int
    alarms: int
    period_start: datetime | None
    period_end: datetime | None
    seconds: float
    bytes: int


# -- formatting ---------------------------------------------------------------------

def _t(x: Any) -> str:
    """A time as `YYYY-MM-DD HH:MM` UTC (a no-break space between, so tables do not wrap it), or a dash."""
    return "—" if x is None or pd.isna(x) else pd.Timestamp(x).tz_convert("UTC").strftime("%Y-%m-%d\u00a0%H:%M")


def parse_since(text: str) -> datetime | timedelta:
    """A duration back from the newest data (`36h`, `7d`, `2w`) or a UTC date/time.

    >>> parse_since("7d"), parse_since("2026-01-05")
    (datetime.timedelta(days=7), datetime.datetime(2026, 1, 5, 0, 0, tzinfo=datetime.timezone.utc))
    """
    if text.strip()[-1:].isalpha():  # a duration names its unit; a bare number is not one here
        try:
            return timedelta(seconds=duration_seconds(text))
        except ValueError:
            pass
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is neither a duration (36h, 7d, 2w) nor a date/time (2026-01-05T06:00Z)") from None
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


# -- the page -----------------------------------------------------------------------

def _fleet(data: ReportData, registry: Registry | None) -> list[dict[str, Any]]:
    ids = list(data.assets_seen)
    if registry is not None:
        ids = [a.asset_id for a in registry.assets if data.asset in (None, a.asset_id)] + \
              [a for a in ids if not registry.knows(a)]
    open_alarms = data.alarms[data.alarms["status"] != "cleared"]
    open_wo = data.work_orders[~data.work_orders["status"].isin(["done", "cancelled"])]
    flagged = data.anomalies[data.anomalies["status"] != "rejected"]
    recent = flagged[flagged["status"] == "confirmed"]
    if data.period_end is not None:
        recent = recent[recent["window_end"] >= pd.Timestamp(data.period_end) - pd.Timedelta(hours=24)]
    preds = data.predictions[data.predictions["alarm_id"].isin(open_alarms["alarm_id"])]
    rows = []
    for asset_id in ids:
        a = registry.asset(asset_id) if registry else None
        mine = open_alarms[open_alarms["asset_id"] == asset_id]
        machine = mine[mine["kind"] == "machine"]
        fails = preds.loc[preds["asset_id"] == asset_id, "failure_at"].dropna()
        ttf = (fails.min() - pd.Timestamp(data.period_end)).total_seconds() / 3600 if len(fails) else None
        wo = open_wo[open_wo["asset_id"] == asset_id]
        last = flagged.loc[flagged["asset_id"] == asset_id, "window_end"]
        score = kpis.health_score(int(machine["severity"].max()) if len(machine) else 0,
                                  bool((mine["kind"] == "sensor_fault").any()), ttf,
                                  int((recent["asset_id"] == asset_id).sum()))
        rows.append({"asset_id": asset_id, "type": a.type if a else "unregistered", "site": a.site if a else "—",
                     "criticality": a.criticality if a else "—", "open_alarms": len(mine),
                     "max_severity": int(mine["severity"].max()) if len(mine) else None,
                     "last_anomaly": _t(last.max() if len(last) else None), "health": score,
                     "health_class": "ok" if score >= 80 else "warn" if score >= 50 else "bad",
                     "ttf": _h(ttf) if ttf is not None else "—", "open_work_orders": len(wo),
                     "next_due": _t(wo["due_at"].min() if len(wo) else None),
                     "overdue": bool(len(wo)) and wo["due_at"].min() < pd.Timestamp(data.period_end)})
    return sorted(rows, key=lambda r: (r["health"], -(r["criticality"] if isinstance(r["criticality"], int) else 0)))


def _kpis(data: ReportData, n_assets: int) -> tuple[list[dict[str, str]], kpis.FeedbackEffect]:
    cards: list[dict[str, str]] = []
    if data.period_start is not None and data.period_end is not None:
        per_week = kpis.alarms_per_asset_week(data.alarms, n_assets, data.period_start, data.period_end)
        hours = (data.period_end - data.period_start).total_seconds() / 3600
        n_alarms = int(((data.alarms["kind"] == "machine") & (data.alarms["opened_at"] >= data.period_start)).sum())
        cards.append({"name": "Machine alarms per asset-week", "value": "—" if per_week is None else f"{per_week:.2f}",
                      "note": f"{n_alarms} opened, {_n(n_assets, 'asset')}, {_h(hours)}"})
    reviews = kpis.fp_rate_reviews(data.decisions)
    cards.append({"name": "False-positive rate (review cases)", "value": _pct(reviews),
                  "note": f"{reviews.hits} rejected of {reviews.total} decided cases; {data.reviews_pending} pending"})
    outcomes = kpis.fp_rate_outcomes(data.maintenance)
    cards.append({"name": "No fault found (maintenance)", "value": _pct(outcomes),
                  "note": f"{outcomes.hits} of {outcomes.total} maintenance visits"})
    effect = kpis.fp_before_after(data.decisions, data.threshold_changes)
    cards.append({"name": "FP rate before → after feedback", "value": f"{_pct(effect.before)} → {_pct(effect.after)}",
                  "note": f"{effect.before.total} / {effect.after.total} decided cases on "
                          f"{_n(len(effect.per_asset), 'asset')} with threshold changes"})
    leads = kpis.detection_lead_times(data.alarms, data.work_orders, data.maintenance, data.predictions)
    lead, n_lead = kpis.median(leads["lead_h"]), int(leads["lead_h"].notna().sum())
    forecast, n_fc = kpis.median(leads["forecast_lead_h"]), int(leads["forecast_lead_h"].notna().sum())
    cards.append({"name": "Detection lead time (median)", "value": _h(lead),
                  "note": f"alarm → repair of a confirmed fault, {_n(n_lead, 'alarm')}; forecast lead {_h(forecast)} "
                          f"({n_fc})"})
    mttr = kpis.repair_times(data.work_orders, data.maintenance)
    cards.append({"name": "MTTR", "value": _h(mttr["hours"].mean() if len(mttr) else None),
                  "note": f"work order raised → maintenance done, {_n(len(mttr), 'work order')}"})
    if data.period_start is not None and data.period_end is not None:
        m = kpis.mtbf(data.maintenance, n_assets, data.period_start, data.period_end)
        cards.append({"name": "MTBF", "value": _h(m.exposure_h),
                      "note": f"asset-hours / repairs ({_n(m.repairs, 'repair')}); mean gap between repairs of one "
                              f"asset {_h(m.between_repairs_h)} ({_n(m.gaps, 'gap')})"})
    return cards, effect


def _n(count: int, noun: str) -> str:
    """`1 repair`, `2 repairs`."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _pct(r: kpis.Rate) -> str:
    return "—" if r.value is None else f"{100 * r.value:.0f}%"


def _records(df: pd.DataFrame, columns: Mapping[str, str | None], limit: int = TABLE_ROWS) -> list[dict[str, Any]]:
    """The first `limit` rows as display text (times formatted, lists joined)."""
    out = []
    for rec in df.head(limit).to_dict("records"):
        row = {}
        for col in columns:
            v = rec.get(col)
            if isinstance(v, (list, tuple)):
                v = ", ".join(map(str, v))
            elif isinstance(v, (pd.Timestamp, datetime)) or (v is not None and not isinstance(v, str) and pd.isna(v)):
                v = _t(v)
            elif isinstance(v, float):
                v = f"{v:.3g}"
            row[col] = "" if v is None else v
        out.append(row)
    return out


def render_report(data: ReportData, registry: Registry | None, generated_at: datetime,
                  max_trend_assets: int = 40, max_sensors: int = MAX_PLOTTED_SENSORS) -> tuple[str, int, int]:
    """The page's HTML, how many images it holds and how many assets it covers."""
    import jinja2
    import matplotlib

    matplotlib.use("Agg")
    fleet = _fleet(data, registry)
    cards, effect = _kpis(data, len(fleet))
    trended = set(data.trends["asset_id"])
    plotted = [r["asset_id"] for r in fleet if r["asset_id"] in trended][:max_trend_assets]
    trends = []
    for a in plotted:  # an asset with many sensors: the most relevant are drawn, the others listed
        ranked = rank_sensors(a, data, registry)
        drawn = ranked[:max_sensors]
        trends.append({"asset_id": a, "img": trend_figure(a, data, registry, drawn), "more": ranked[max_sensors:]})
    open_ids = data.alarms.loc[(data.alarms["status"] != "cleared") & (data.alarms["kind"] == "machine"), "alarm_id"]
    ttf_rows = data.predictions[data.predictions["alarm_id"].isin(open_ids)].sort_values("failure_at")
    ttf_img = ttf_figure(ttf_rows, data.period_end) if len(ttf_rows) else None
    known = {t.technician_id: t for t in registry.technicians} if registry else {}
    techs = [(t, known[t].name if t in known else t, known[t].shift if t in known else None)
             for t in dict.fromkeys([*known, *data.assignments["technician_id"]])]
    gantt_img = gantt_figure(data.assignments, techs, data.period_end) if len(data.assignments) else None
    feedback = [{"asset_id": r.asset_id, "first_change_at": _t(r.first_change_at), "changes": r.changes,
                 "before": str(r.before), "after": str(r.after)} for r in effect.per_asset.itertuples()]
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    html = env.from_string(_TEMPLATE).render(
        title="smart-maintenance report" + (f": {data.asset}" if data.asset else ""),
        period=f"{_t(data.period_start)} – {_t(data.period_end)} UTC" if data.period_end is not None else None,
        generated=_t(generated_at) + " UTC", asset=data.asset, cards=cards, fleet=fleet, trends=trends,
        omitted=len([r for r in fleet if r["asset_id"] in trended]) - len(trends), ttf_img=ttf_img,
        ttf_missing=len(open_ids) - len(ttf_rows), gantt_img=gantt_img,
        plan_method=", ".join(sorted(set(data.assignments.get("method", pd.Series(dtype=str)).dropna()))),
        feedback=feedback, effect_before=str(effect.before), effect_after=str(effect.after),
        changes=_records(data.threshold_changes.sort_values("at", ascending=False),
                         dict.fromkeys(["at", "asset_id", "old_threshold", "new_threshold", "cause", "note"])),
        alarms=_records(data.alarms, dict.fromkeys(["opened_at", "asset_id", "kind", "status", "severity",
                                                    "cleared_at", "anomaly_count", "sensors", "reason"])),
        work_orders=_records(data.work_orders, dict.fromkeys(["created_at", "asset_id", "kind", "status", "priority",
                                                              "due_at", "technician_id", "closed_at", "reason"])),
        maintenance=_records(data.maintenance, dict.fromkeys(["completed_at", "asset_id", "outcome", "technician_id",
                                                              "action", "notes", "parts"])),
        missing=", ".join(data.missing_tables), limit=TABLE_ROWS,
    )
    return html, len(trends) + (ttf_img is not None) + (gantt_img is not None), len(fleet)


def write_report(settings: Settings, out: Path, since: datetime | timedelta | None, asset: str | None,
                 registry: Registry | None, *, now: datetime | None = None) -> ReportSummary:
    """Read the data, render the page, write it to `out` atomically."""
    from smart_maintenance.connectors.postgres.server import resolve_dsn

    started = time.perf_counter()
    data = load_report_data(resolve_dsn(settings), settings.postgres.schema_name, since=since, asset=asset)
    html, images, assets = render_report(data, registry, now or datetime.now(timezone.utc))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(html)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # a report is shared like any file written by the user, not 0600 as mkstemp makes it
    os.replace(tmp, out)
    return ReportSummary(out, assets, images, len(data.alarms), data.period_start,
                         data.period_end, time.perf_counter() - started, len(html.encode()))




_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1180px;padding:1.2em;\
color:#222}
h1{margin:.2em 0}h2{margin-top:1.8em;border-bottom:2px solid #ddd;padding-bottom:.2em}h3{margin:1.2em 0 .3em}
.meta{color:#666}.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(250px,1fr));gap:.7em}
.card{border:1px solid #ddd;border-radius:6px;padding:.6em .8em;background:#fafafa}
.card .v{font-size:1.6em;font-weight:600}.card .n{color:#666;font-size:.85em}
table{border-collapse:collapse;width:100%;font-size:.88em;margin:.4em 0}th,td{border-bottom:1px solid #e4e4e4;\
padding:.3em .45em;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right}.ok{background:#e6f4e6}.warn{background:#fff3d6}.bad{background:#fde0e0}
img{max-width:100%;height:auto;display:block}.empty{color:#888;font-style:italic}
</style></head><body>
<h1>{{ title }}</h1>
<p class="meta">{% if period %}Period (event time): {{ period }}{% else %}No data in the database yet.{% endif %}
 · generated {{ generated }}{% if asset %} · asset {{ asset }}{% endif %}{% if missing %}
 · tables not present: {{ missing }}{% endif %}</p>

<h2 id="kpis">Key figures</h2>
<div class="cards">{% for c in cards %}<div class="card"><div>{{ c.name }}</div><div class="v">{{ c.value }}</div>
<div class="n">{{ c.note }}</div></div>{% endfor %}</div>

<h2 id="fleet">Fleet health</h2>
{% if fleet %}<table><tr><th>asset</th><th>type</th><th>site</th><th>criticality</th><th>open alarms</th>
<th>max severity</th><th>last anomaly</th><th>health</th><th>time to failure</th><th>open work orders</th>\
<th>next due</th></tr>
{% for r in fleet %}<tr><td>{{ r.asset_id }}</td><td>{{ r.type }}</td><td>{{ r.site }}</td><td class="num">\
{{ r.criticality }}</td>
<td class="num">{{ r.open_alarms }}</td><td class="num">{{ r.max_severity or "—" }}</td><td>{{ r.last_anomaly }}</td>
<td class="num {{ r.health_class }}">{{ r.health }}</td><td>{{ r.ttf }}</td><td class="num">{{ r.open_work_orders }}\
</td>
<td{% if r.overdue %} class="bad" title="due before the newest data"{% endif %}>{{ r.next_due }}</td></tr>
{% endfor %}</table>
<p class="meta">Health: 100 − 12 × highest open machine-alarm severity − 10 for an open sensor fault − 25 (10) when \
failure
is forecast within 24 h (72 h) − 2 per confirmed anomaly in the last 24 h (at most 20). Time to failure counts from \
the newest data; a red due time is already past it.</p>
{% else %}<p class="empty">No assets: no data.</p>{% endif %}

<h2 id="trends">Sensor trends</h2>
{% for t in trends %}<h3>{{ t.asset_id }}</h3><img alt="sensor trends of {{ t.asset_id }}" src="{{ t.img }}">
{% if t.more %}<p class="meta">{{ t.more|length }} more sensors, not drawn \
(drawn: those its alarms and anomalies name most, then the registry's): \
{{ t.more|join(", ") }}</p>{% endif %}
{% else %}<p class="empty">No feature windows in the period: no data.</p>{% endfor %}
{% if omitted %}<p class="meta">{{ omitted }} healthier assets not drawn (use --asset to see one).</p>{% endif %}

<h2 id="ttf">Time to failure</h2>
{% if ttf_img %}<img alt="time-to-failure forecasts of open alarms" src="{{ ttf_img }}">{% else %}
<p class="empty">No forecasts for open machine alarms: no data.</p>{% endif %}
{% if ttf_missing %}<p class="meta">{{ ttf_missing }} open machine alarm(s) have no forecast yet.</p>{% endif %}

<h2 id="schedule">Technician schedule</h2>
{% if gantt_img %}<img alt="technician schedule" src="{{ gantt_img }}"><p class="meta">The current plan
{%- if plan_method %} ({{ plan_method }}){% endif %}; dotted line: newest data.</p>{% else %}
<p class="empty">No planned work: no data.</p>{% endif %}

<h2 id="feedback">Feedback learning</h2>
<p>False-positive share of decided review cases before the first threshold change of each asset: <b>\
{{ effect_before }}</b>;
after it: <b>{{ effect_after }}</b>.</p>
{% if feedback %}<table><tr><th>asset</th><th>first change</th><th>changes</th><th>FP before</th><th>FP after</th></tr>
{% for r in feedback %}<tr><td>{{ r.asset_id }}</td><td>{{ r.first_change_at }}</td><td class="num">{{ r.changes }}</td>
<td>{{ r.before }}</td><td>{{ r.after }}</td></tr>{% endfor %}</table>{% endif %}
<h3>Threshold changes (audit trail)</h3>
{% if changes %}<table><tr><th>at</th><th>asset</th><th>old</th><th>new</th><th>cause</th><th>note</th></tr>
{% for r in changes %}<tr><td>{{ r.at }}</td><td>{{ r.asset_id }}</td><td class="num">{{ r.old_threshold }}</td>
<td class="num">{{ r.new_threshold }}</td><td>{{ r.cause }}</td><td>{{ r.note }}</td></tr>{% endfor %}</table>
{% else %}<p class="empty">No threshold changes: no data.</p>{% endif %}

<h2 id="alarms">Alarms</h2>
{% if alarms %}<table><tr><th>opened</th><th>asset</th><th>kind</th><th>status</th><th>severity</th><th>cleared</th>
<th>anomalies</th><th>sensors</th><th>reason</th></tr>
{% for r in alarms %}<tr><td>{{ r.opened_at }}</td><td>{{ r.asset_id }}</td><td>{{ r.kind }}</td><td>{{ r.status }}</td>
<td class="num">{{ r.severity }}</td><td>{{ r.cleared_at }}</td><td class="num">{{ r.anomaly_count }}</td><td>\
{{ r.sensors }}</td>
<td>{{ r.reason }}</td></tr>{% endfor %}</table>{% if alarms|length == limit %}\
<p class="meta">The newest {{ limit }}.</p>{% endif %}
{% else %}<p class="empty">No alarms: no data.</p>{% endif %}

<h2 id="work-orders">Work orders</h2>
{% if work_orders %}<table><tr><th>created</th><th>asset</th><th>kind</th><th>status</th><th>priority</th><th>due</th>
<th>technician</th><th>closed</th><th>reason</th></tr>
{% for r in work_orders %}<tr><td>{{ r.created_at }}</td><td>{{ r.asset_id }}</td><td>{{ r.kind }}</td><td>\
{{ r.status }}</td>
<td class="num">{{ r.priority }}</td><td>{{ r.due_at }}</td><td>{{ r.technician_id }}</td><td>{{ r.closed_at }}</td>
<td>{{ r.reason }}</td></tr>{% endfor %}</table>{% if work_orders|length == limit %}\
<p class="meta">The newest {{ limit }}.</p>{% endif %}
{% else %}<p class="empty">No work orders: no data.</p>{% endif %}

<h2 id="maintenance">Maintenance log</h2>
{% if maintenance %}<table><tr><th>completed</th><th>asset</th><th>outcome</th><th>technician</th><th>action</th>
<th>notes</th><th>parts</th></tr>
{% for r in maintenance %}<tr><td>{{ r.completed_at }}</td><td>{{ r.asset_id }}</td><td>{{ r.outcome }}</td>
<td>{{ r.technician_id }}</td><td>{{ r.action }}</td><td>{{ r.notes }}</td><td>{{ r.parts }}</td></tr>{% endfor %}\
</table>
{% if maintenance|length == limit %}<p class="meta">The newest {{ limit }}.</p>{% endif %}
{% else %}<p class="empty">No maintenance recorded: no data.</p>{% endif %}
<p class="meta">All times UTC. How each figure is computed: docs/reports.md.</p>
</body></html>
"""
