"""The HTTP API on real PostgreSQL through FastAPI's TestClient: every route's scope, reads, writes, ingest, limits."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

import orjson
import psycopg
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from psycopg import sql

from smart_maintenance.api.app import ANONYMOUS, api_routes, create_app
from smart_maintenance.api.config import ApiConfig
from smart_maintenance.connectors.postgres.admission import AdmissionStore
from smart_maintenance.connectors.postgres.api_store import SCOPES, ApiStore
from smart_maintenance.connectors.postgres.store import LoopStore
from tests.integration.api_seed import KNOWN, _insert, h, seed

pytestmark = pytest.mark.integration


def _app(dsn: str, schema: str, **config: Any) -> Any:
    store = ApiStore(dsn, schema).open()
    return create_app(ApiConfig(**config), store, KNOWN, lambda: LoopStore(dsn, schema).open())


def _scope_of(route: APIRoute) -> str | None:
    todo = list(route.dependant.dependencies)
    while todo:
        d = todo.pop()
        if getattr(d.call, "scope", None):
            return d.call.scope
        todo += d.dependencies
    return None


_SHAPE = create_app(ApiConfig(), ApiStore("postgresql://unused", "unused"), {}, lambda: None)
ROUTES = sorted((m, r.path, _scope_of(r)) for r in api_routes(_SHAPE) for m in r.methods if r.path not in ANONYMOUS)
BODIES = {"/api/cases/{case_id}/decision": {"decision": "defer"}, "/api/alarms/{alarm_id}/ack": {},
          "/api/alarms/{alarm_id}/comments": {"note": "x"}, "/api/work-orders/{work_order_id}/complete": {},
          "/api/maintenance": {"asset_id": "pump-01"}, "/ui/logout": {},
          "/api/work-orders/{work_order_id}": {"priority": 2}, "/api/assets/{asset_id}/admit": {},
          "/api/ingest/readings": [{"asset_id": "pump-01", "sensor": "t", "ts": 1767225600000, "value": 1}]}


@pytest.fixture(scope="module")
def plant(embedded_pg: str) -> Iterator[dict[str, Any]]:
    schema = f"t_{secrets.token_hex(6)}"
    ids = seed(embedded_pg, schema)
    client = TestClient(_app(embedded_pg, schema, rate_per_s=1000, burst=100_000))
    yield {**ids, "client": client, "dsn": embedded_pg, "schema": schema}
    client.app.state.ctx.store.close()
    with psycopg.connect(embedded_pg, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def _call(client: TestClient, method: str, path: str, token: str | None) -> Any:
    url = (path.replace("{asset_id}", "pump-01").replace("{case_id}", "nope").replace("{alarm_id}", "nope")
           .replace("{work_order_id}", "nope"))
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if method == "GET" and url == "/api/events":
        url += "?since=999999999"  # the stream would not end: the auth answer comes before it
    body = BODIES.get(path)
    return client.request(method, url, headers=headers, content=orjson.dumps(body) if body is not None else None)


def test_every_route_but_the_anonymous_ones_has_a_scope() -> None:
    assert ROUTES and all(scope in SCOPES for _, _, scope in ROUTES), [r for r in ROUTES if r[2] not in SCOPES]
    assert {s for *_, s in ROUTES} == set(SCOPES)


@pytest.mark.parametrize(("method", "path", "scope"), ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
def test_route_refuses_no_key_and_the_wrong_scope(plant: dict[str, Any], method: str, path: str, scope: str) -> None:
    client, tokens = plant["client"], plant["tokens"]
    assert _call(client, method, path, None).status_code == 401
    assert _call(client, method, path, "smk_0123456789ab_forged").status_code == 401
    for other in SCOPES:
        if other not in (scope, "admin"):
            r = _call(client, method, path, tokens[other])
            assert r.status_code == 403, (other, r.text)
    if path != "/api/events":
        assert _call(client, method, path, tokens[scope]).status_code not in (401, 403)


def test_health_is_the_only_anonymous_data_route(plant: dict[str, Any]) -> None:
    r = plant["client"].get("/health")
    assert r.status_code == 200 and r.json() == {"status": "ok", "database": "ok"}
    assert plant["client"].get("/openapi.json").status_code == 401
    assert "/api/cases" in plant["client"].get("/openapi.json", headers=_auth(plant, "read")).json()["paths"]


def _auth(plant: dict[str, Any], who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {plant['tokens'][who]}"}


def test_reads_give_health_cases_and_downsampled_readings(plant: dict[str, Any]) -> None:
    c = plant["client"]
    assets = {a["asset_id"]: a for a in c.get("/api/assets", headers=_auth(plant, "read")).json()}
    assert assets["pump-01"]["health"] == 100 - 15 * 4 - 5 and assets["pump-01"]["open_cases"] == 1
    (case,) = c.get("/api/cases?asset=pump-01", headers=_auth(plant, "read")).json()
    assert (case["case_id"], case["window_count"], case["status"]) == (plant["pump_case"], 3, "pending")
    r = c.get("/api/assets/pump-01/readings?start=2026-01-05T00:00:00Z&end=2026-01-07T00:00:00Z&points=48",
              headers=_auth(plant, "read")).json()
    vib = r["sensors"]["vibration"]
    assert len(vib) == 48 and sum(p[4] for p in vib) == 2880
    assert vib[0][1] == pytest.approx(sum(i * 0.01 for i in range(60)) / 60)  # the first hour's mean
    assert c.get("/api/assets/pump-01/readings?points=100000", headers=_auth(plant, "read")).status_code == 422
    sched = c.get("/api/schedule", headers=_auth(plant, "read")).json()
    assert [(s["work_order_id"], s["technician_id"]) for s in sched] == [("wo-pump", "tech-01")]


def test_a_key_limited_to_a_site_sees_only_its_assets(plant: dict[str, Any]) -> None:
    c, north = plant["client"], _auth(plant, "north-read")
    assert {a["asset_id"] for a in c.get("/api/assets", headers=north).json()} == {"pump-01"}
    assert {a["asset_id"] for a in c.get("/api/alarms", headers=north).json()} == {"pump-01"}
    assert c.get(f"/api/cases/{plant['motor_case']}", headers=north).status_code == 404
    assert c.post(f"/api/cases/{plant['motor_case']}/decision", headers=north,
                  json={"decision": "reject"}).status_code == 404


def test_a_decision_is_audited_with_the_key_and_reaches_the_control_input(plant: dict[str, Any]) -> None:
    c, case_id = plant["client"], plant["pump_case"]
    r = c.post(f"/api/cases/{case_id}/decision", headers=_auth(plant, "planner"),
               json={"decision": "reject", "note": "valve test"})
    assert r.status_code == 200 and r.json()["decided_by"] == "planner"
    again = c.post(f"/api/cases/{case_id}/decision", headers=_auth(plant, "planner"), json={"decision": "approve"})
    assert again.status_code == 409
    assert c.get(f"/api/cases/{case_id}", headers=_auth(plant, "read")).json()["status"] == "rejected"
    audit = c.get("/api/admin/audit", headers=_auth(plant, "admin")).json()
    assert any(a["key_name"] == "planner" and a["action"] == "case_reject" and a["subject_id"] == case_id
               for a in audit)
    with LoopStore(plant["dsn"], plant["schema"]) as loop:
        decisions = [ctl for kind, _, ctl in loop.controls_since(0, 0) if kind == "decision"]
    assert [(d.review_id, d.decision, d.decided_by) for d in decisions] == [(case_id, "reject", "planner")]


def test_ack_comment_and_complete_work(plant: dict[str, Any]) -> None:
    c, m = plant["client"], _auth(plant, "maintain")
    assert c.post("/api/alarms/al-motor/ack", headers=m, json={"note": "on it"}).status_code == 200
    assert c.post("/api/alarms/al-motor/comments", headers=m, json={"note": "bearing noise"}).status_code == 200
    assert c.post("/api/alarms/al-nope/ack", headers=m, json={}).status_code == 404
    (motor,) = [a for a in c.get("/api/alarms", headers=_auth(plant, "read")).json() if a["alarm_id"] == "al-motor"]
    assert motor["status"] == "acknowledged" and [n["kind"] for n in motor["notes"]] == ["ack", "comment"]
    r = c.post("/api/work-orders/wo-pump/complete", headers=m,
               json={"completed_at": "2026-01-06T12:00:00Z", "action": "replaced bearing", "parts": ["6204"]})
    assert r.status_code == 201 and r.json()["record"]["work_order_id"] == "wo-pump"
    bad = c.post("/api/work-orders/wo-pump/complete", headers=m, json={"outcome": "exploded"})
    assert bad.status_code == 422 and "outcome must be one of" in bad.text
    with LoopStore(plant["dsn"], plant["schema"]) as loop:
        (ctl,) = [ctl for kind, _, ctl in loop.controls_since(0, 0) if kind == "maintenance"]
    assert (ctl.work_order_id, ctl.asset_id, ctl.source, ctl.parts) == ("wo-pump", "pump-01", "api", ("6204",))


def test_ingest_is_durable_with_reasons_for_bad_rows(plant: dict[str, Any]) -> None:
    c, ing = plant["client"], _auth(plant, "ingest")
    store = c.app.state.ctx.store
    before, _ = store.ingested_since(0)  # other tests ingest too
    batch = [{"asset_id": "pump-09", "sensor": "temp", "ts": "2026-01-06T00:00:00Z", "value": 41.5},
             {"asset_id": "pump-09", "ts": 1767657600000, "values": {"vibration": 2.0, "current": 9.5}},
             {"asset_id": "pump-09", "sensor": "temp", "ts": "yesterday", "value": 1},
             {"asset_id": "pump-09", "sensor": "temp", "ts": 1767657600000},
             {"asset_id": "pump-09", "sensor": "temp", "ts": 1, "value": 3}]
    r = c.post("/api/ingest/readings", headers={**ing, "Idempotency-Key": "b-1"}, json=batch)
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["accepted"] == 3
    assert sorted((x["index"], x["reason"]) for x in body["rejected"]) == [
        (2, "bad_timestamp"), (3, "missing_field"), (4, "absurd_timestamp")]
    ndjson = b'{"asset_id":"pump-09","sensor":"temp","ts":1767657660000,"value":42}\n{"oops\n'
    r2 = c.post("/api/ingest/readings", headers={**ing, "Content-Type": "application/x-ndjson"}, content=ndjson)
    assert r2.status_code == 202 and r2.json()["accepted"] == 1 and r2.json()["rejected"][0]["reason"] == "bad_json"
    again = c.post("/api/ingest/readings", headers={**ing, "Idempotency-Key": "b-1"}, json=batch)
    assert again.status_code == 200 and again.json()["stored"] is False
    last, readings = store.ingested_since(before)
    assert list(zip(readings.sensor, readings.value)) == [("temp", 41.5), ("vibration", 2.0), ("current", 9.5),
                                                          ("temp", 42.0)]
    assert list(readings.ts) == [1767657600000] * 3 + [1767657660000]
    assert store.ingested_since(last)[1].ts.size == 0
    odd = [{"asset_id": "pump\\09", "sensor": "t\\b", "ts": 1767657600123, "value": 0.1}]  # COPY escapes
    assert c.post("/api/ingest/readings", headers=ing, json=odd).json()["accepted"] == 1
    _, back = store.ingested_since(last)
    got = (back.asset_id[0], back.sensor[0], int(back.ts[0]), back.value[0])
    assert got == ("pump\\09", "t\\b", 1767657600123, 0.1)
    reasons = store.rows("SELECT reason FROM {s}.dead_letters WHERE origin LIKE 'api:%%' ORDER BY 1")
    assert [r["reason"] for r in reasons] == ["absurd_timestamp", "bad_json", "bad_timestamp", "missing_field"]


def test_ingest_keeps_what_the_sender_said_of_quality_and_unit(plant: dict[str, Any]) -> None:
    c, ing = plant["client"], _auth(plant, "ingest")
    store = c.app.state.ctx.store
    before, _ = store.ingested_since(0)
    batch = [{"asset_id": "pump-09", "sensor": "temp", "ts": 1767657700000, "value": 100.0, "unit": "degF",
              "quality": "good"},
             {"asset_id": "pump-09", "ts": 1767657700000, "values": {"vibration": 2.0, "current": 9.5},
              "units": {"current": "A"}, "quality": 192},
             {"asset_id": "pump-09", "sensor": "temp", "ts": 1767657710000, "value": 41.0}]
    r = c.post("/api/ingest/readings", headers=ing, json=batch)
    assert r.status_code == 202 and r.json()["accepted"] == 4, r.text
    _, back = store.ingested_since(before)
    assert back.quality is not None and back.unit is not None
    got = sorted(zip(back.sensor, back.quality.tolist(), back.unit.tolist(), strict=True))
    assert got == [("current", 192, "A"), ("temp", -1, None), ("temp", 192, "degF"), ("vibration", 192, None)]


def test_keys_are_stored_hashed_and_revocation_takes_effect_within_the_key_cache(plant: dict[str, Any]) -> None:
    store = plant["client"].app.state.ctx.store
    token = store.create_key("temp-key", ["read"])
    assert plant["client"].get("/api/assets", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    dump = orjson.dumps(store.rows("SELECT * FROM {s}.api_keys")).decode()
    secret = token.split("_", 2)[2]  # smk_<id>_<secret>; the secret itself may hold "_"
    assert token not in dump and secret not in dump
    assert store.revoke_key("temp-key") and not store.revoke_key("temp-key")
    time.sleep(plant["client"].app.state.ctx.config.key_cache_s)  # how long a valid key is remembered
    assert plant["client"].get("/api/assets", headers={"X-API-Key": token}).status_code == 401


def test_body_size_rate_limit_and_no_cors(embedded_pg: str, plant: dict[str, Any]) -> None:
    client = TestClient(_app(embedded_pg, plant["schema"], max_body_bytes=2048, rate_per_s=0.001, burst=3))
    ing, read = _auth(plant, "ingest"), _auth(plant, "read")
    big = [{"asset_id": "p", "sensor": "s", "ts": 1767657600000 + i, "value": i} for i in range(100)]
    assert client.post("/api/ingest/readings", headers=ing, json=big).status_code == 413
    assert [client.get("/api/assets", headers=read).status_code for _ in range(4)] == [200, 200, 200, 429]
    pre = client.options("/api/assets",
                         headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in pre.headers
    client.app.state.ctx.store.close()


def test_pages_escape_user_text(plant: dict[str, Any]) -> None:
    c = plant["client"]
    assert c.get("/ui/").status_code == 401 and "Sign in" in c.get("/ui/").text
    page = c.get("/ui/", headers=_auth(plant, "read")).text
    assert "vibration &lt;script&gt;x&lt;/script&gt; high" in page and "<script>x</script>" not in page
    reviews = c.get("/ui/reviews?status=all", headers=_auth(plant, "read")).text
    assert "&lt;b&gt;not&lt;/b&gt;" in reviews


def test_cached_reads_keep_keys_scopes_sites_and_see_writes_at_once(plant: dict[str, Any]) -> None:
    c, read = plant["client"], _auth(plant, "read")
    c.app.state.ctx.reads.invalidate()  # earlier tests' answers may be stale: TestClient ends each request's loop,
    # and a background refresh with it
    assert len(c.get("/api/assets", headers=read).json()) > 1  # now in the read cache, fresh
    assert c.app.state.ctx.reads.ready(("read", "/api/assets", b"", frozenset())) is not None
    assert c.get("/api/assets").status_code == 401
    for _ in range(2):  # the second time the key is remembered: the cached answer is at hand, still refused
        assert c.get("/api/assets", headers=_auth(plant, "ingest")).status_code == 403
    assert {a["asset_id"] for a in c.get("/api/assets", headers=_auth(plant, "north-read")).json()} == {"pump-01"}

    def notes() -> list[str]:
        (motor,) = [a for a in c.get("/api/alarms?status=all", headers=read).json() if a["alarm_id"] == "al-motor"]
        return [n["note"] for n in motor["notes"]]

    before = notes()
    assert c.post("/api/alarms/al-motor/comments", headers=_auth(plant, "maintain"),
                  json={"note": "seen from the cache test"}).status_code == 200
    assert notes() == [*before, "seen from the cache test"]  # the write emptied the cache


def test_a_work_order_is_updated_by_event_time_audited_and_closed_ones_refuse(plant: dict[str, Any]) -> None:
    c, m, read = plant["client"], _auth(plant, "maintain"), _auth(plant, "read")
    row = {"alarm_id": "al-motor", "kind": "repair", "priority": 2, "duration_min": 60, "created_at": h(21),
           "due_at": h(50), "updated_at": h(21), "reason": "current high"}
    with psycopg.connect(plant["dsn"], autocommit=True) as conn:
        _insert(conn, plant["schema"], "work_orders", [
            {**row, "work_order_id": "wo-motor", "asset_id": "motor-02", "status": "open"},
            {**row, "work_order_id": "wo-done", "asset_id": "motor-02", "status": "done", "closed_at": h(30)}])
    url = "/api/work-orders/wo-motor"
    r = c.patch(url, headers=m, json={"technician_id": "tech-02", "scheduled_start": "2026-01-06T08:00:00Z",
                                      "priority": 5, "status": "scheduled", "comment": "bring the spare",
                                      "effective_at": "2026-01-06T07:00:00Z"})
    assert r.status_code == 200, r.text
    wo = r.json()["work_order"]
    assert (wo["technician_id"], wo["priority"], wo["status"]) == ("tech-02", 5, "scheduled")
    assert wo["scheduled_end"].startswith("2026-01-06T09:00")  # start + the work order's 60 minutes
    # an older change that arrives later loses the fields a newer one set, and sets the others
    r = c.patch(url, headers=m, json={"technician_id": "tech-03", "due_at": "2026-01-07T00:00:00Z",
                                      "effective_at": "2026-01-06T06:00:00Z"})
    assert r.status_code == 200, r.text
    (listed,) = [w for w in c.get("/api/work-orders?status=all", headers=read).json()
                 if w["work_order_id"] == "wo-motor"]
    assert (listed["technician_id"], listed["due_at"][:16]) == ("tech-02", "2026-01-07T00:00")
    assert [x["comment"] for x in listed["comments"]] == ["bring the spare"]
    audit = c.get("/api/admin/audit", headers=_auth(plant, "admin")).json()
    assert [a["key_name"] for a in audit if a["action"] == "work_order_updated"] == ["key-maintain"] * 2
    assert c.patch(url, headers=m, json={}).status_code == 422  # nothing to change
    assert c.patch(url, headers=m, json={"due_at": "2026-01-07T00:00:00"}).status_code == 422  # no zone
    assert c.patch(url, headers=m, json={"status": "done"}).status_code == 422  # completing has its own route
    assert c.patch("/api/work-orders/wo-nope", headers=m, json={"priority": 1}).status_code == 404
    closed = c.patch("/api/work-orders/wo-done", headers=m, json={"priority": 1})
    assert closed.status_code == 409 and "it is done" in closed.text
    assert c.post("/api/work-orders/wo-done/complete", headers=m, json={}).status_code == 409
    # a cancellation is logged like a completion, reaches the flow's control input, and closes the door
    r = c.patch(url, headers=m, json={"status": "cancelled", "comment": "duplicate of wo-pump"})
    assert r.status_code == 200 and r.json()["cancelled"] is True
    with LoopStore(plant["dsn"], plant["schema"]) as loop:
        (ctl,) = [ctl for kind, _, ctl in loop.controls_since(0, 0)
                  if kind == "maintenance" and ctl.work_order_id == "wo-motor"]
    assert (ctl.outcome, ctl.notes, ctl.source) == ("cancelled", "duplicate of wo-pump", "api")
    after = c.patch(url, headers=m, json={"priority": 1})
    assert after.status_code == 409 and "cancellation was logged" in after.text


def test_admit_an_unknown_asset_over_the_api(plant: dict[str, Any]) -> None:
    c, admin = plant["client"], _auth(plant, "admin")
    r = c.post("/api/assets/mystery-7/admit", headers=admin, json={"note": "new pump on line 3"})
    assert r.status_code == 200 and r.json()["new"] is True
    assert c.post("/api/assets/mystery-7/admit", headers=admin, json={}).json()["new"] is False
    with AdmissionStore(plant["dsn"], plant["schema"]) as store:
        (row,) = [a for a in store.admitted() if a["asset_id"] == "mystery-7"]
    assert (row["admitted_by"], row["note"]) == ("key-admin", "new pump on line 3")
    assert c.post("/api/assets/bad%09id/admit", headers=admin, json={}).status_code == 422
    audit = c.get("/api/admin/audit", headers=admin).json()
    assert any(a["action"] == "asset_admitted" and a["subject_id"] == "mystery-7" for a in audit)


def test_the_report_over_the_api(plant: dict[str, Any]) -> None:
    c = plant["client"]
    r = c.get("/api/report?since=30d", headers=_auth(plant, "read"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "smart-maintenance report" in r.text and "pump-01" in r.text and "<script>x</script>" not in r.text
    north = _auth(plant, "north-read")
    assert c.get("/api/report", headers=north).status_code == 403  # the fleet holds other sites' assets
    assert c.get("/api/report?asset=motor-02", headers=north).status_code == 403
    assert c.get("/api/report?asset=pump-01", headers=north).status_code == 200
    assert c.get("/api/report?since=soonish", headers=_auth(plant, "read")).status_code == 422
