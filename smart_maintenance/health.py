"""Is a running job healthy? Judged from what it stored and what its metrics endpoint says."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Health:
    problems: tuple[str, ...]
    stale_assets: tuple[str, ...] = ()
    sources: dict[str, dict[str, float]] = field(default_factory=dict)  # source -> lag_s, idle_s
    backlog: dict[str, float] = field(default_factory=dict)  # sink -> queued batches

    @property
    def healthy(self) -> bool:
        return not self.problems


def scrape(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Prometheus text exposition to {metric sample name: {labels: value}}."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def remembered(now: datetime, last_window_end: dict[str, datetime],
               evict_after_s: float | None) -> dict[str, datetime]:
    """The assets a live flow still holds: one silent for `limits.evict_after_s` was evicted and is forgotten.

    >>> from datetime import timezone
    >>> t = datetime(2026, 1, 8, tzinfo=timezone.utc)
    >>> sorted(remembered(t, {"a": datetime(2026, 1, 7, tzinfo=timezone.utc),
    ...                       "stray": datetime(2026, 1, 1, tzinfo=timezone.utc)}, 7 * 86_400 - 1))
    ['a']
    """
    if evict_after_s is None:
        return dict(last_window_end)
    return {a: t for a, t in last_window_end.items() if (now - t).total_seconds() <= evict_after_s}


def assess(
    now: datetime,
    last_window_end: dict[str, datetime],
    stale_after_s: float,
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] | None,
) -> Health:
    """Stale assets (no closed window for `stale_after_s`), silent sources, and sink backlog."""
    problems: list[str] = [] if last_window_end else ["no asset has reported a closed window yet"]
    stale = tuple(a for a, t in sorted(last_window_end.items()) if (now - t).total_seconds() > stale_after_s)
    if stale:
        problems.append(f"{len(stale)} stale asset(s): no data for over {stale_after_s:g} s")
    sources: dict[str, dict[str, float]] = {}
    backlog: dict[str, float] = {}
    if samples is not None:
        for labels, value in samples.get("sm_last_batch_timestamp_seconds", {}).items():
            src = dict(labels).get("source", "?")
            sources.setdefault(src, {})["idle_s"] = now.timestamp() - value
        for labels, value in samples.get("sm_source_lag_seconds", {}).items():
            sources.setdefault(dict(labels).get("source", "?"), {})["lag_s"] = value
        for labels, value in samples.get("sm_sink_backlog_batches", {}).items():
            backlog[dict(labels).get("sink", "?")] = value
        if not sources:
            problems.append("the flow has not received any reading yet")
        for src, v in sources.items():
            if v.get("idle_s", 0.0) > stale_after_s:
                problems.append(f"source {src} silent for {v['idle_s']:.0f} s")
    return Health(tuple(problems), stale, sources, backlog)
