"""Past incidents for the incident memory: the record, and the text that gets embedded.

An `Incident` is a closed piece of work: what was seen (the alarm's sensors and
reason, the technician's description) and what fixed it (action, notes,
parts, outcome). `incident_from_closure` builds one when maintenance closes a
work order; `from_dict` reads one from a JSONL line (importing a CMMS
history). `document_text` is what the memory embeds and `query_text` what a
new work order searches with; both drop the detector jargon of alarm reasons
(``persistent (3 of last 5); detectors: iforest``), which every machine alarm
shares and which would only pull unrelated incidents together.

>>> inc = from_dict({"asset_id": "pump-07", "asset_type": "pump", "sensors": ["vibration"],
...     "symptoms": "DE bearing growling", "resolution": "replaced bearing 6310", "outcome": "replaced",
...     "closed_at": "2025-03-01T10:00:00Z"})
>>> document_text(inc)
'pump: DE bearing growling. Sensors: vibration. Fix: replaced bearing 6310. Outcome: replaced.'
>>> to_metadata(inc)["sensors"]
'vibration'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from smart_maintenance.operators.controls import OUTCOMES, MaintenanceRecord
from smart_maintenance.operators.plan.work_orders import WorkOrder
from smart_maintenance.operators.records import dt_to_ms, stable_id

# parts of an alarm reason that describe the detectors, not the machine
_JARGON = re.compile(r"^(persistent|not_persistent|detectors|uncertain)\b", re.IGNORECASE)
_FIELDS = ("asset_id", "asset_type", "site", "failure_mode", "symptoms", "resolution", "outcome",
           "opened_at", "closed_at", "work_order_id", "alarm_id")


@dataclass(frozen=True, slots=True)
class Incident:
    """One closed incident: what was seen on which asset, and what fixed it."""

    incident_id: str
    asset_id: str
    asset_type: str
    symptoms: str
    resolution: str
    outcome: str  # one of controls.OUTCOMES
    closed_at: str  # RFC 3339
    site: str = ""
    sensors: tuple[str, ...] = ()
    failure_mode: str = ""
    opened_at: str = ""  # RFC 3339, or "" when unknown
    work_order_id: str = ""
    alarm_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in ("incident_id", *_FIELDS)}
        d["sensors"] = list(self.sensors)
        return d


def _words(name: str) -> str:
    """Identifier to words: 'discharge_temp' -> 'discharge temp'."""
    return name.replace("_", " ").strip()


def plain_reason(reason: str) -> str:
    """An alarm reason without detector jargon, in words.

    >>> plain_reason("persistent (3 of last 5); detectors: iforest,limits")
    ''
    >>> plain_reason("oil_temp: stuck; vibration: out_of_range")
    'oil temp stuck, vibration out of range'
    """
    parts = []
    for part in reason.split(";"):
        part = part.strip()
        if not part or _JARGON.match(part):
            continue
        parts.append(_words(part.replace(": ", " ").replace(":", " ")))
    return ", ".join(parts)


def _situation(kind: str, sensors: tuple[str, ...], reason: str) -> str:
    what = ", ".join(_words(s) for s in sensors) or "sensors"
    text = f"sensor fault on {what}" if kind == "instrumentation" else f"abnormal {what}"
    plain = plain_reason(reason)
    return f"{text}: {plain}" if plain else text


def query_text(work_order: WorkOrder) -> str:
    """What a new work order searches the memory with: asset type, sensors, reason.

    >>> from datetime import datetime, timezone
    >>> t = datetime(2026, 1, 5, tzinfo=timezone.utc)
    >>> wo = WorkOrder("w1", "pump-01", "a1", "repair", "open", 3, ("pumps",), 240, t, t, t,
    ...     sensors=("vibration", "temperature"), reason="persistent (3 of last 5); detectors: iforest",
    ...     asset_type="pump")
    >>> query_text(wo)
    'pump: abnormal vibration, temperature'
    """
    situation = _situation(work_order.kind, work_order.sensors, work_order.reason)
    return f"{work_order.asset_type}: {situation}" if work_order.asset_type else situation


def _iso(t: datetime | None) -> str:
    return "" if t is None else t.isoformat()


def indexable(record: MaintenanceRecord) -> bool:
    """Is this closure worth remembering? Cancelled work taught nothing; a no-fault-found did."""
    return record.outcome != "cancelled"


def incident_from_closure(work_order: WorkOrder, record: MaintenanceRecord, failure_mode: str = "") -> Incident:
    """The incident that a maintenance record closing a work order leaves behind.

    The id is derived from the work order and the maintenance record, so a
    replay or a restart indexes the same incident again (an upsert), never twice.
    """
    resolution = "; ".join(p for p in (
        record.action,
        record.notes,
        ("parts: " + ", ".join(record.parts)) if record.parts else "",
    ) if p)
    return Incident(
        incident_id=stable_id("incident", work_order.work_order_id, record.maintenance_id),
        asset_id=work_order.asset_id,
        asset_type=work_order.asset_type,
        site=work_order.site,
        sensors=tuple(work_order.sensors),
        failure_mode=failure_mode,
        symptoms=_situation(work_order.kind, work_order.sensors, work_order.reason),
        resolution=resolution or _words(record.outcome),
        outcome=record.outcome,
        opened_at=_iso(work_order.created_at),
        closed_at=_iso(record.completed_at),
        work_order_id=work_order.work_order_id,
        alarm_id=work_order.alarm_id,
    )


def document_text(incident: Incident) -> str:
    """What the memory embeds: asset type, failure mode, symptoms, sensors, fix and outcome, compact."""
    head = incident.asset_type or "asset"
    if incident.failure_mode:
        head += f" {_words(incident.failure_mode)}"
    parts = [f"{head}: {incident.symptoms.strip().rstrip('.')}"]
    if incident.sensors:
        parts.append("Sensors: " + ", ".join(_words(s) for s in incident.sensors))
    parts.append(f"Fix: {incident.resolution.strip().rstrip('.')}")
    parts.append(f"Outcome: {_words(incident.outcome)}")
    return ". ".join(parts) + "."


def to_metadata(incident: Incident) -> dict[str, str | int | float]:
    """Chroma metadata: every field as a string (sensors comma-joined), so a hit rebuilds the incident; closed_ms."""
    d: dict[str, str | int | float] = {k: getattr(incident, k) for k in _FIELDS}
    d["sensors"] = ",".join(incident.sensors)
    d["closed_ms"] = closed_ms(incident)  # Chroma compares numbers only: "closed before" filters use this
    return d


def closed_ms(incident: Incident) -> int:
    """When the incident closed, in epoch milliseconds (0 when unknown)."""
    if not incident.closed_at:
        return 0
    return dt_to_ms(datetime.fromisoformat(incident.closed_at.replace("Z", "+00:00")))


def from_metadata(incident_id: str, meta: dict[str, Any]) -> Incident:
    """The inverse of `to_metadata`."""
    d = {k: meta.get(k, "") for k in _FIELDS}
    sensors = str(meta.get("sensors", "") or "")
    return Incident(incident_id=incident_id, sensors=tuple(s for s in sensors.split(",") if s), **d)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A search hit before ranking: cosine similarity to the query, the incident's sensors and unit vector."""

    incident_id: str
    similarity: float
    sensors: tuple[str, ...] = ()
    vector: tuple[float, ...] = ()
    group: int = 0  # 0: matched the asset-type filter; 1: filled up from the rest of the memory


def sensor_overlap(a: tuple[str, ...] | list[str], b: tuple[str, ...] | list[str]) -> float:
    """Jaccard overlap of two sensor sets, 0 when either is empty.

    >>> sensor_overlap(("vibration", "temperature"), ("vibration",))
    0.5
    """
    sa, sb = set(a), set(b)
    return len(sa & sb) / len(sa | sb) if sa and sb else 0.0


def rank(
    candidates: list[Candidate], k: int, sensors: tuple[str, ...] | list[str] = (),
    sensor_bonus: float = 0.15, diversity: float = 0.3,
) -> list[tuple[Candidate, float]]:
    """Pick k candidates, best first, with their scores: filter matches before fill-ups, then by score.

    score = similarity + sensor_bonus x sensor overlap. With `diversity` > 0 the
    choice is maximal marginal relevance: each next pick maximises
    (1 - diversity) x score - diversity x (its similarity to the closest one already
    picked), so three near-copies of one fix give way to the next different fix.

    >>> a = Candidate("a", 0.9, vector=(1.0, 0.0)); b = Candidate("b", 0.89, vector=(1.0, 0.0))
    >>> c = Candidate("c", 0.7, vector=(0.0, 1.0))
    >>> [x.incident_id for x, _ in rank([a, b, c], 2, diversity=0.0)]
    ['a', 'b']
    >>> [x.incident_id for x, _ in rank([a, b, c], 2, diversity=0.3)]
    ['a', 'c']
    """
    if not 0.0 <= diversity < 1.0:
        raise ValueError("diversity must be in [0, 1)")
    scored = [(c, c.similarity + (sensor_bonus * sensor_overlap(sensors, c.sensors) if sensors else 0.0))
              for c in candidates]
    out: list[tuple[Candidate, float]] = []
    for group in sorted({c.group for c in candidates}):
        pool = sorted((x for x in scored if x[0].group == group), key=lambda x: (-x[1], x[0].incident_id))
        while pool and len(out) < k:
            if diversity and out:
                def mmr(x: tuple[Candidate, float]) -> float:
                    closest = max(_dot(x[0].vector, y[0].vector) for y in out)
                    return (1 - diversity) * x[1] - diversity * closest
                best = max(pool, key=mmr)  # ties keep the better-scored (earlier) one
            else:
                best = pool[0]
            pool.remove(best)
            out.append(best)
    return out


def _dot(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    return sum(x * y for x, y in zip(a, b)) if a and b else 0.0


def _str(d: dict[str, Any], key: str, required: bool) -> str:
    v = d.get(key)
    if v is None or (isinstance(v, str) and not v.strip()):
        if required:
            raise ValueError(f"incident: {key} is required")
        return ""
    if not isinstance(v, str):
        raise ValueError(f"incident: {key} must be a string, got {type(v).__name__}")
    return v.strip()


def _time(d: dict[str, Any], key: str, required: bool) -> str:
    v = _str(d, key, required)
    if not v:
        return ""
    try:
        t = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError as e:
        raise ValueError(f"incident: {key} is not an RFC 3339 time: {v!r}") from e
    if t.tzinfo is None:
        raise ValueError(f"incident: {key} needs a time zone: {v!r}")
    return t.isoformat()


def from_dict(d: dict[str, Any]) -> Incident:
    """An incident from a JSONL record (an export, or a CMMS history); ValueError says what is wrong.

    Required: asset_id, asset_type, symptoms, resolution, closed_at. `sensors` is
    a list or a comma-separated string; `outcome` defaults to "repaired"; a
    missing `incident_id` is derived from asset, closing time and symptoms.

    >>> from_dict({"asset_id": "p1"})
    Traceback (most recent call last):
    ...
    ValueError: incident: asset_type is required
    """
    if not isinstance(d, dict):
        raise ValueError(f"incident: a record must be an object, got {type(d).__name__}")
    asset_id = _str(d, "asset_id", True)
    asset_type = _str(d, "asset_type", True)
    symptoms = _str(d, "symptoms", True)
    resolution = _str(d, "resolution", True)
    closed_at = _time(d, "closed_at", True)
    outcome = (_str(d, "outcome", False) or "repaired").lower()
    if outcome not in OUTCOMES:
        raise ValueError(f"incident: outcome must be one of {', '.join(OUTCOMES)}, got {outcome!r}")
    sensors = d.get("sensors") or ()
    if isinstance(sensors, str):
        sensors = [s.strip() for s in sensors.split(",")]
    if not isinstance(sensors, (list, tuple)) or not all(isinstance(s, str) for s in sensors):
        raise ValueError("incident: sensors must be a list of strings")
    sensors = tuple(s.strip() for s in sensors if s.strip())
    if any("," in s for s in sensors):
        raise ValueError("incident: a sensor name cannot contain a comma")
    return Incident(
        incident_id=_str(d, "incident_id", False) or stable_id("incident", asset_id, closed_at, symptoms),
        asset_id=asset_id,
        asset_type=asset_type,
        site=_str(d, "site", False),
        sensors=sensors,
        failure_mode=_str(d, "failure_mode", False),
        symptoms=symptoms,
        resolution=resolution,
        outcome=outcome,
        opened_at=_time(d, "opened_at", False),
        closed_at=closed_at,
        work_order_id=_str(d, "work_order_id", False),
        alarm_id=_str(d, "alarm_id", False),
    )


__all__ = [
    "Candidate", "Incident", "closed_ms", "rank", "sensor_overlap", "document_text", "from_dict", "from_metadata",
    "incident_from_closure", "indexable",
    "plain_reason", "query_text", "to_metadata",
]
