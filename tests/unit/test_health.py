from datetime import datetime, timedelta, timezone

from smart_maintenance.health import assess, scrape

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
METRICS = """# TYPE sm_last_batch_timestamp_seconds gauge
sm_last_batch_timestamp_seconds{source="mqtt"} %f
# TYPE sm_source_lag_seconds gauge
sm_source_lag_seconds{source="mqtt"} 2.5
# TYPE sm_sink_backlog_batches gauge
sm_sink_backlog_batches{sink="postgres:readings"} 3.0
"""


def test_fresh_assets_and_a_live_source_are_healthy():
    samples = scrape(METRICS % (NOW.timestamp() - 4))
    h = assess(NOW, {"p1": NOW - timedelta(minutes=5)}, 900, samples)
    assert h.healthy and h.sources["mqtt"] == {"idle_s": 4.0, "lag_s": 2.5}
    assert h.backlog == {"postgres:readings": 3.0}


def test_stale_assets_and_a_silent_source_are_unhealthy():
    samples = scrape(METRICS % (NOW.timestamp() - 3600))
    h = assess(NOW, {"p1": NOW - timedelta(hours=2), "p2": NOW}, 900, samples)
    assert not h.healthy and h.stale_assets == ("p1",)
    assert any("silent" in p for p in h.problems)
    assert not assess(NOW, {}, 900, None).healthy  # nothing reported yet


def test_an_evicted_stray_id_does_not_keep_status_unhealthy_for_ever():
    from smart_maintenance.health import remembered

    seen = {"p1": NOW - timedelta(minutes=5), "stray": NOW - timedelta(days=8)}
    assert assess(NOW, seen, 900, None).stale_assets == ("stray",)
    kept = remembered(NOW, seen, 7 * 86_400)
    assert list(kept) == ["p1"] and assess(NOW, kept, 900, None).healthy
    assert remembered(NOW, seen, None) == seen
