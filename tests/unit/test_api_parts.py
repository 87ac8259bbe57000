import pytest

from smart_maintenance.api.auth import RateLimiter
from smart_maintenance.api.charts import gantt, spark
from smart_maintenance.api.config import ApiConfig
from smart_maintenance.api.routers.ingest import split_body
from smart_maintenance.connectors.postgres.api_reads import health
from smart_maintenance.connectors.postgres.api_store import Principal, _key_id, hash_token, new_token


def test_rate_limiter_allows_a_burst_then_the_sustained_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(rate_per_s=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.take("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("k") == pytest.approx(0.5)
    assert limiter.take("other") == 0.0  # budgets are per key
    now[0] = 0.5
    assert limiter.take("k") == 0.0 and limiter.take("k") > 0


def test_tokens_are_random_hashed_and_carry_their_public_id() -> None:
    (t1, id1), (t2, _) = new_token(), new_token()
    assert t1 != t2 and _key_id(t1) == id1 and len(hash_token(t1)) == 64
    assert _key_id("smk_short_x") is None and _key_id("bearer") is None


def test_admin_holds_every_scope() -> None:
    assert Principal("a", frozenset({"admin"})).may("ingest")
    assert not Principal("r", frozenset({"read"})).may("review")


def test_split_body_reads_arrays_and_ndjson() -> None:
    assert split_body(b'[1, {"a": 2}]', "application/json") == [b"1", b'{"a":2}']
    assert split_body(b'{"a":1}\n{"b":2}', "application/json") == [b'{"a":1}', b'{"b":2}']


def test_health_score_bounds() -> None:
    assert health(5, 1, 9) == 0 and health(0, 0, 1) == 95


def test_charts_escape_names_and_handle_empty_input() -> None:
    assert spark([]) == "" and "nothing planned" in gantt([])
    assert "<script>" not in spark([["<script>", 0.5]])


def test_config_rejects_bad_limits() -> None:
    with pytest.raises(ValueError):
        ApiConfig(rate_per_s=0)
    with pytest.raises(ValueError):
        ApiConfig(port=0)
