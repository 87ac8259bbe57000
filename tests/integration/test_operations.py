"""Operating the flow: Prometheus metrics count what happened, and no secret is ever printed."""

import secrets
import socket

import httpx
import psycopg
import pytest
from bytewax.testing import TestingSink, TestingSource, run_main
from typer.testing import CliRunner

from smart_maintenance.cli import app
from smart_maintenance.config.settings import load_settings
from smart_maintenance.dataflows.plant import STREAMS, build_flow
from smart_maintenance.health import scrape
from smart_maintenance.operators.records import RawMessages
from tests.synthetic import as_parsed, asset_day

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _total(samples, name, **labels):
    return sum(v for k, v in samples.get(name, {}).items() if all(dict(k).get(a) == b for a, b in labels.items()))


def test_metrics_count_readings_anomalies_and_dead_letters():
    port = _free_port()
    settings = load_settings(console=False, metrics_port=port, detection={"warmup_windows": 36, "baseline_size": 96})
    url = f"http://127.0.0.1:{port}/metrics"
    items = [RawMessages((b"{oops",), (None,), ("test:1",))] + as_parsed([asset_day("x", drift_last_h=4)], 1800)
    out = {s: [] for s in STREAMS}
    flow = build_flow(settings, source=TestingSource(items), sinks={s: [TestingSink(out[s])] for s in STREAMS})
    before = scrape(httpx.get(url).text)
    run_main(flow)
    after = scrape(httpx.get(url).text)

    def delta(name, **labels):
        return _total(after, name, **labels) - _total(before, name, **labels)

    assert delta("sm_readings_in_total") == sum(len(r) for r in out["readings"])
    assert delta("sm_dead_letters_total", reason="bad_json") == 1
    assert delta("sm_anomalies_total") == len(out["anomalies"]) > 0
    assert delta("sm_windows_closed_total") == 288
    assert delta("sm_alarm_changes_total", status="open") == sum(a.status == "open" for a in out["alarms"])


def test_no_secret_reaches_any_output(embedded_pg, tmp_path, monkeypatch):
    pg_secret, mqtt_secret, kafka_secret = (f"s3cret-{secrets.token_hex(6)}" for _ in range(3))
    dsn = embedded_pg.replace("postgres:@", f"postgres:{pg_secret}@")  # trust auth ignores the password
    schema = f"t_{secrets.token_hex(4)}"
    for key, value in {
        "SMART_MAINTENANCE__POSTGRES__DSN": dsn,
        "SMART_MAINTENANCE__POSTGRES__SCHEMA_NAME": schema,
        "SMART_MAINTENANCE__MQTT__PASSWORD": mqtt_secret,
        "SMART_MAINTENANCE__KAFKA__SASL_PASSWORD": kafka_secret,
        "SMART_MAINTENANCE__LOG_LEVEL": "DEBUG",
        "SMART_MAINTENANCE__LOG_FORMAT": "json",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    csv = tmp_path / "r.csv"
    csv.write_text("ts,asset_id,sensor,value\n1767225600000,p1,t,1\n1767225610000,p1,t,oops\n")
    runner = CliRunner()
    try:
        outputs = [runner.invoke(app, args) for args in (["replay", str(csv)], ["db"], ["status"])]
        assert outputs[0].exit_code == 0 and outputs[1].exit_code == 0
        text = "".join(r.output for r in outputs) + "".join(repr(r.exception) for r in outputs)
        text += repr(load_settings()) + str(load_settings().model_dump())
        assert '"logger"' in text and "dead_letter" in text  # the JSON debug logs were captured and scanned
        for secret in (pg_secret, mqtt_secret, kafka_secret):
            assert secret not in text
    finally:
        with psycopg.connect(embedded_pg, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
