"""The CMMS hand-off against a CMMS played by a local HTTP server: work orders pushed with their mapped body and
idempotency key, retried on 503 as Retry-After says, dead-lettered on 400; completed work read back into the
maintenance log, where a backfill applies it and closes the work order."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import bytewax.operators as op
import psycopg
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, run_main

from smart_maintenance.config.settings import Settings, load_settings
from smart_maintenance.connectors.cmms.sink import CmmsSink
from smart_maintenance.dataflows.outputs import _postgres_dead_letters
from smart_maintenance.operators.plan.work_orders import WorkOrder
from tests.integration.cmms_server import FakeCmms

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 5, 8, tzinfo=timezone.utc)
TOKEN = "cmms-test-token"
MAXIMO_LIKE = {
    "wonum": "{{ work_order_id }}", "assetnum": "{{ asset_id }}", "siteid": "BEDFORD", "wopriority": "{{ priority }}",
    "description": "{{ kind }}: {{ reason | truncate(40) }}",
    "status": "{{ {'open': 'WAPPR', 'scheduled': 'APPR', 'done': 'COMP', 'cancelled': 'CAN'}[status] }}",
    "targcompdate": "{{ due_at }}",
}


def cmms_settings(url: str, **over: Any) -> Settings:
    cmms = {"enabled": True, "base_url": f"{url}/api", "mapping": MAXIMO_LIKE,
            "create": {"method": "POST", "path": "/wo"}, "update": {"method": "PUT", "path": "/wo/{{ work_order_id }}"},
            "auth": {"kind": "bearer", "token": TOKEN}, "timeout_s": 2, "drain_timeout_s": 20,
            "retry": {"attempts": 3, "initial_backoff_s": 0.01, "max_backoff_s": 0.05},
            "completions": {"path": "/done", "items_path": "member", "done_statuses": ["COMP"], "mapping": {
                "work_order_id": "{{ wonum }}", "asset_id": "{{ assetnum }}", "completed_at": "{{ actfinish }}",
                "status": "{{ status }}", "notes": "{{ fdbk }}"}}} | over
    return load_settings(cmms=cmms, console=False, progress=False)


def wo(wo_id: str = "w/1", revision: int = 0, status: str = "open", technician: str | None = None,
       reason: str = "vibration rising") -> WorkOrder:
    return WorkOrder(wo_id, "pump-01", "al1", "repair", status, 4, ("mechanical",), 240, T0, T0 + timedelta(days=2),
                     T0 + timedelta(minutes=revision), revision=revision, technician_id=technician, reason=reason)


def push(settings: Settings, items: list[Any], dead: Any = None) -> None:
    flow = Dataflow("cmms_test")
    op.output("cmms", op.input("in", flow, TestingSource(items)), CmmsSink(settings, dead_letters=dead))
    run_main(flow)


def test_created_and_updated_work_orders_arrive_with_their_body_and_key() -> None:
    with FakeCmms() as cmms:
        dead: list = []
        push(cmms_settings(cmms.url), [wo(), wo(revision=1000, status="scheduled", technician="t1"),
                                       wo(revision=1001, status="scheduled", technician="t2"),  # body unchanged
                                       wo(revision=2000, status="done")], dead.extend)
        assert dead == []
        assert [(r["method"], r["path"]) for r in cmms.requests] == [
            ("POST", "/api/wo"), ("PUT", "/api/wo/w%2F1"), ("PUT", "/api/wo/w%2F1")]  # the id is encoded
        assert [r["headers"]["Idempotency-Key"] for r in cmms.requests] == ["w/1:0", "w/1:1000", "w/1:2000"]
        assert all(r["headers"]["Authorization"] == f"Bearer {TOKEN}" for r in cmms.requests)
        assert json.loads(cmms.requests[0]["body"]) == {
            "wonum": "w/1", "assetnum": "pump-01", "siteid": "BEDFORD", "wopriority": 4,
            "description": "repair: vibration rising", "status": "WAPPR", "targcompdate": "2026-01-07T08:00:00+00:00"}
        assert cmms.orders["w/1"]["status"] == "COMP"
        # the same input gives the same bytes: a second run pushes identical bodies (to a fresh CMMS)
        first = [r["body"] for r in cmms.requests]
    with FakeCmms() as again:
        push(cmms_settings(again.url), [wo(), wo(revision=1000, status="scheduled", technician="t1"),
                                        wo(revision=1001, status="scheduled", technician="t2"),
                                        wo(revision=2000, status="done")])
        assert [r["body"] for r in again.requests] == first


def test_a_503_is_retried_after_its_retry_after_and_lands_once() -> None:
    with FakeCmms() as cmms:
        cmms.script["POST"] = [(503, {"Retry-After": "1"}, b"maintenance window")]
        dead: list = []
        push(cmms_settings(cmms.url), [wo("w2")], dead.extend)
        posts = cmms.of("POST")
        assert len(posts) == 2 and dead == []
        assert posts[1]["at"] - posts[0]["at"] >= 0.95  # waited what the server asked, not the 0.01 s backoff
        assert {p["headers"]["Idempotency-Key"] for p in posts} == {"w2:0"}
        assert list(cmms.orders) == ["w2"]


def test_an_update_of_an_order_the_cmms_lacks_is_sent_as_a_create() -> None:
    with FakeCmms() as cmms:
        push(cmms_settings(cmms.url), [wo("w3", revision=1000, status="scheduled")])
        assert [(r["method"], r["path"], r["headers"]["Idempotency-Key"]) for r in cmms.requests] == [
            ("PUT", "/api/wo/w3", "w3:1000"), ("POST", "/api/wo", "w3:1000:create")]
        assert cmms.orders["w3"]["status"] == "APPR"


def test_a_400_and_an_unreachable_cmms_are_dead_lettered_in_postgres(pg_dsn: str, pg_schema: str) -> None:
    with FakeCmms() as cmms:
        long_answer = json.dumps({"Error": {"message": "BMXAA4087E - siteid BEDFORD is not valid " + "x" * 2000}})
        cmms.script["POST"] = [(400, {}, long_answer.encode())] + [(503, {}, b"down")] * 3
        settings = cmms_settings(cmms.url).model_copy(update={"postgres": Settings(
            postgres={"dsn": pg_dsn, "schema_name": pg_schema}).postgres})
        push(settings, [wo("w4"), wo("w5")], _postgres_dead_letters(settings))
        assert [r["headers"]["Idempotency-Key"] for r in cmms.of("POST")] == ["w4:0"] + ["w5:0"] * 3  # 400: no retry
    with psycopg.connect(pg_dsn) as conn:
        got = conn.execute(f"SELECT reason, detail, raw, origin FROM {pg_schema}.dead_letters ORDER BY origin"
                           ).fetchall()
    (reason, detail, raw, origin), (reason5, detail5, _, origin5) = got
    assert reason == "cmms_rejected" and detail.startswith("POST /wo: HTTP 400: ") and "BMXAA4087E" in detail
    assert len(detail) < 700  # the answer is truncated
    assert json.loads(raw)["wonum"] == "w4" and origin == "cmms:127.0.0.1 work_order=w4 revision=0"
    assert reason5 == "cmms_unavailable" and "HTTP 503" in detail5 and origin5.endswith("w5 revision=0")


def test_completed_work_in_the_cmms_reaches_the_maintenance_log_and_closes_the_work_order(
        pg_dsn: str, pg_schema: str, tmp_path) -> None:
    from smart_maintenance.config.registry import load_registry
    from smart_maintenance.connectors.postgres.store import LoopStore
    from smart_maintenance.dataflows.plant import build_flow
    from smart_maintenance.sources.controls import sync_cmms
    from smart_maintenance.sources.simulator import SimulatorSource

    plant = load_registry().with_simulated(2)  # compressor-01's vibration sensor fails 45.6 h in

    def run(hours: float, url: str) -> Settings:
        s = load_settings(
            console=False, progress=False, source="simulator", data_dir=tmp_path, incidents={"enabled": False},
            postgres={"dsn": pg_dsn, "schema_name": pg_schema}, prediction={"offload": False},
            simulator={"assets": 2, "duration_s": hours * 3600.0, "maintenance_log": False},
            detection={"warmup_share": 1.0}, notify={"channels": []},
            cmms=cmms_settings(url).cmms.model_dump() | {"auth": {"kind": "none"}})
        run_main(build_flow(s, source=SimulatorSource(s.simulator, plant), registry=plant),
                 epoch_interval=timedelta(seconds=5))
        return s

    def work_orders() -> list[tuple]:
        with psycopg.connect(pg_dsn) as conn:
            conn.execute("SET TIME ZONE 'UTC'")
            return conn.execute(f"SELECT work_order_id, status, closed_at, maintenance_id FROM {pg_schema}.work_orders"
                                ).fetchall()

    with FakeCmms() as cmms:
        run(46.5, cmms.url)
        [(wo_id, status, _, _)] = work_orders()
        assert status == "scheduled" and cmms.orders[wo_id]["status"] == "APPR"
        done_at = datetime(2026, 1, 6, 23, tzinfo=timezone.utc)
        cmms.completions = [
            {"wonum": wo_id, "assetnum": "compressor-01", "status": "COMP", "actfinish": "2026-01-06T23:00:00Z",
             "fdbk": "replaced the accelerometer", "source": "cli:spoofed"},
            {"wonum": "other", "assetnum": "compressor-01", "status": "INPRG", "actfinish": None},  # not done yet
            {"wonum": "bad", "assetnum": "compressor-01", "status": "COMP", "actfinish": "2099-01-01T00:00:00Z"},
        ]
        settings = run(48, cmms.url)
        assert work_orders() == [(wo_id, "done", done_at, work_orders()[0][3])]
        with psycopg.connect(pg_dsn) as conn:
            log = conn.execute(f"SELECT work_order_id, asset_id, notes, source FROM {pg_schema}.maintenance_log"
                               ).fetchall()
            dead = conn.execute(f"SELECT reason, origin FROM {pg_schema}.dead_letters").fetchall()
        assert log == [(wo_id, "compressor-01", "replaced the accelerometer", "cmms:127.0.0.1")]
        assert dead == [("bad_maintenance", "cmms:127.0.0.1 item 2")]  # the completion in the future
        assert cmms.orders[wo_id]["status"] == "COMP"  # the closed work order went back to the CMMS
        cmms.completions[0]["actfinish"] = "2026-01-06T23:30:00Z"  # edited in the CMMS, or just read again
        with LoopStore(pg_dsn, pg_schema) as store:
            assert sync_cmms(settings, store) == 0  # logged once: one record per work order


def test_a_slow_cmms_never_holds_the_flow_what_cannot_wait_is_a_dead_letter() -> None:
    import time

    with FakeCmms() as cmms:
        cmms.delay_s = 1.0
        dead: list = []
        started = time.monotonic()
        push(cmms_settings(cmms.url, queue_size=1, drain_timeout_s=0.2), [wo(f"s{i}") for i in range(4)],
             dead.extend)
        took = time.monotonic() - started
        sent = {json.loads(r["body"])["wonum"] for r in cmms.requests}
    assert took < 4  # not 4 requests of 1 s each: the queue is bounded and shutdown waits drain_timeout_s
    assert dead and {d.reason for d in dead} == {"cmms_backlog"}
    assert sent | {d.origin.split("work_order=")[1].split()[0] for d in dead} == {"s0", "s1", "s2", "s3"}
    assert any("queue full" in d.detail for d in dead)


def test_live_the_control_input_polls_the_cmms_and_rides_out_its_absence(
        pg_dsn: str, pg_schema: str, caplog: pytest.LogCaptureFixture) -> None:
    from smart_maintenance.connectors.postgres.store import LoopStore
    from smart_maintenance.sources.controls import CMMS_PART, CONTROLS_PART, ControlSource

    with FakeCmms() as cmms:
        settings = load_settings(postgres={"dsn": pg_dsn, "schema_name": pg_schema},
                                 cmms=cmms_settings(cmms.url).cmms.model_dump() | {"auth": {"kind": "none"}})
        source = ControlSource(settings, live=True, poll_s=0.1)
        assert source.list_parts() == [CONTROLS_PART, CMMS_PART]
        part = source.build_part("controls", CMMS_PART, None)
        controls = source.build_part("controls", CONTROLS_PART, None)
        try:
            assert part.next_batch() == [] and len(cmms.of("GET")) == 1
            awake = part.next_awake()
            assert awake is not None and 55 < (awake - datetime.now(timezone.utc)).total_seconds() <= 60  # poll_s
            cmms.completions = [{"wonum": "w9", "assetnum": "pump-01", "status": "COMP",
                                 "actfinish": "2026-01-05T12:00:00Z"}]
            assert part.next_batch() == []  # it stores; the controls part emits from the log
            [(asset, record)] = controls.next_batch()
            assert (asset, record.work_order_id, record.source) == ("pump-01", "w9", "cmms:127.0.0.1")
            cmms.completions.append({"wonum": "w10", "assetnum": "pump-01", "status": "COMP"})  # no time
            assert part.next_batch() == [] and part.next_batch() == []
            assert caplog.text.count("dead-lettered: bad_maintenance: completed_at is missing") == 1  # once
            cmms.script["GET"] = [(503, {}, b"busy")] * 3
            gets = len(cmms.of("GET"))
            assert part.next_batch() == [] and len(cmms.of("GET")) == gets + 1  # live, the next poll is the retry
        finally:
            controls.close()
        cmms.server.shutdown()
        cmms.server.server_close()
        assert "completed work not read from the CMMS 127.0.0.1: GET /done: HTTP 503" in caplog.text
        assert part.next_batch() == []  # the CMMS is gone: a warning, the flow goes on
        assert "completed work not read from the CMMS 127.0.0.1: GET /done: ConnectError" in caplog.text
        part.close()
    with LoopStore(pg_dsn, pg_schema) as store:
        assert len(store.controls_since(0, 0)) == 1


def test_an_answer_too_large_is_refused_not_read_whole() -> None:
    from smart_maintenance.connectors.cmms.client import CmmsError
    from smart_maintenance.connectors.cmms.source import read_completions

    with FakeCmms() as cmms:
        settings = cmms_settings(cmms.url, max_answer_bytes=4096)
        cmms.completions = [{"wonum": "w1", "assetnum": "pump-01", "status": "COMP",
                             "actfinish": "2026-01-05T12:00:00Z"}]
        (record,), bad = read_completions(settings)
        assert record.work_order_id == "w1" and bad == []
        cmms.completions[0]["fdbk"] = "x" * 5000
        with pytest.raises(CmmsError, match="larger than max_answer_bytes=4096"):
            read_completions(settings)
        assert len(cmms.of("GET")) == 2  # refused at once, not retried


def test_the_cli_previews_a_work_order_and_reads_completions_now(pg_dsn: str, pg_schema: str) -> None:
    from typer.testing import CliRunner

    from smart_maintenance.cli import app
    from smart_maintenance.connectors.postgres.loop import LoopWriter

    with LoopWriter(pg_dsn, pg_schema) as w:
        w.upsert_work_orders([wo("w7", revision=1000, status="scheduled", technician="t1")])
    with FakeCmms() as cmms:
        section = cmms_settings(cmms.url).cmms.model_dump(mode="json") | {"auth": {"kind": "none"}}
        env = {"SMART_MAINTENANCE__POSTGRES__DSN": pg_dsn, "SMART_MAINTENANCE__POSTGRES__SCHEMA_NAME": pg_schema,
               "SMART_MAINTENANCE__CMMS": json.dumps(section)}
        shown = CliRunner().invoke(app, ["cmms", "preview", "w7"], env=env)
        assert shown.exit_code == 0, shown.output
        assert f"PUT {cmms.url}/api/wo/w7" in shown.stdout and "Idempotency-Key: w7:1000" in shown.stdout
        assert json.loads(shown.stdout.split("\n", 2)[2])["status"] == "APPR"
        assert cmms.requests == []  # a preview sends nothing
        missing = CliRunner().invoke(app, ["cmms", "preview", "nope"], env=env)
        assert missing.exit_code == 2 and "no work order nope" in missing.output
        done = {"status": "COMP", "actfinish": "2026-01-05T12:00:00Z"}
        cmms.completions = [{"wonum": "w7", "assetnum": "pump-01"} | done, {"wonum": "w8"} | done]
        synced = CliRunner().invoke(app, ["cmms", "sync"], env=env)
        assert synced.exit_code == 0, synced.output
        assert "1 completion(s): 1 logged, 0 already logged, 1 dead-lettered" in synced.output
        assert "asset_id is required" in synced.output
        cmms.script["GET"] = [(503, {}, b"down")] * 5
        down = CliRunner().invoke(app, ["cmms", "sync"], env=env)
        assert down.exit_code == 1 and "HTTP 503" in down.output
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute(f"SELECT work_order_id, source FROM {pg_schema}.maintenance_log").fetchall() == [
            ("w7", "cmms:127.0.0.1")]


def test_an_answer_that_cannot_be_decoded_is_a_dead_letter_not_a_crash() -> None:
    with FakeCmms() as cmms:
        cmms.script["POST"] = [(201, {"Content-Encoding": "gzip"}, b"not gzip at all")]
        dead: list = []
        push(cmms_settings(cmms.url), [wo("g1"), wo("g2")], dead.extend)
        assert [(d.reason, d.origin.split()[1]) for d in dead] == [("cmms_rejected", "work_order=g1")]
        assert "DecodingError" in dead[0].detail and len(cmms.of("POST")) == 2  # not retried; the next goes on
        assert list(cmms.orders) == ["g2"]
