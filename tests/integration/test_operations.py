"""Operating the flow: Prometheus metrics count what happened, and no secret is ever printed."""

import json
import secrets
import socket
import typing

import httpx
import psycopg
import pytest
from bytewax.testing import TestingSink, TestingSource, run_main
from pydantic import BaseModel, SecretStr
from typer.testing import CliRunner

from smart_maintenance.cli import app
from smart_maintenance.config.settings import Settings, load_settings
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


def _secret_fields(model: type, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every settings field that holds a secret (SecretStr), as its path in the settings tree."""
    out = []
    for name, f in model.model_fields.items():
        ann = f.annotation
        args = (ann, *typing.get_args(ann))
        if SecretStr in args:
            out.append((*prefix, name))
        for a in args:
            if isinstance(a, type) and issubclass(a, BaseModel):
                out += _secret_fields(a, (*prefix, name))
    return out


def test_no_secret_reaches_any_output(embedded_pg, tmp_path, monkeypatch):
    fields = _secret_fields(Settings)
    assert ("postgres", "dsn") in fields and ("notify", "webhook", "secret") in fields and len(fields) >= 7
    secret_of = {path: f"s3cret-{secrets.token_hex(6)}" for path in fields}
    env = {"SMART_MAINTENANCE__" + "__".join(p.upper() for p in path): value for path, value in secret_of.items()}
    for path, value in secret_of.items():  # URLs must stay URLs; each carries its secret (unreachable: port 9)
        if path[-1] == "url":
            env["SMART_MAINTENANCE__" + "__".join(p.upper() for p in path)] = f"http://127.0.0.1:9/hook/{value}"
    keys = ("kafka", "maintenance_keys")  # a dict of secrets: one key of 32+ bytes that holds the secret
    env["SMART_MAINTENANCE__KAFKA__MAINTENANCE_KEYS"] = json.dumps({"ops": secret_of[keys] + "k" * 16})
    env["SMART_MAINTENANCE__ALLOW_PLAINTEXT_CREDENTIALS"] = "true"  # the port-9 services here have no TLS
    env["SMART_MAINTENANCE__QUARANTINE_UNKNOWN_ASSETS"] = "false"  # asset x must notify on every channel
    env["SMART_MAINTENANCE__POSTGRES__DSN"] = embedded_pg.replace(
        "postgres:@", f"postgres:{secret_of['postgres', 'dsn']}@"
    )
    schema = f"t_{secrets.token_hex(4)}"
    for key, value in {
        **env,
        "SMART_MAINTENANCE__POSTGRES__SCHEMA_NAME": schema,
        "SMART_MAINTENANCE__NOTIFY__CHANNELS": '["console", "webhook", "slack", "email"]',
        "SMART_MAINTENANCE__NOTIFY__EMAIL__PORT": "9",
        "SMART_MAINTENANCE__NOTIFY__EMAIL__TO": '["ops@example.com"]',
        "SMART_MAINTENANCE__NOTIFY__EMAIL__USERNAME": "ops",
        "SMART_MAINTENANCE__OPCUA__USERNAME": "ops",  # its password is one of the secrets above
        "SMART_MAINTENANCE__LOG_LEVEL": "DEBUG",
        "SMART_MAINTENANCE__LOG_FORMAT": "json",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SMART_MAINTENANCE__DETECTION__WARMUP_WINDOWS", "36")
    monkeypatch.setenv("SMART_MAINTENANCE__DETECTION__BASELINE_SIZE", "96")
    monkeypatch.setenv("SMART_MAINTENANCE__NOTIFY__RETRY__ATTEMPTS", "1")
    day = asset_day("x", seed=1, drift_last_h=4)  # opens an alarm: notifications are attempted on every channel
    csv = tmp_path / "r.csv"
    rows = "".join(f"{t},x,{n},{v}\n" for n, t, v in zip(day.sensor, day.ts, day.value))
    csv.write_text("ts,asset_id,sensor,value\n" + rows + "1767225610000,p1,t,oops\n")
    runner = CliRunner()
    try:
        outputs = [runner.invoke(app, args) for args in (["replay", str(csv)], ["db"], ["status"])]
        assert outputs[0].exit_code == 0 and outputs[1].exit_code == 0, [r.output[-2000:] for r in outputs]
        text = "".join(r.output for r in outputs) + "".join(repr(r.exception) for r in outputs)
        text += repr(load_settings()) + str(load_settings().model_dump())
        assert '"logger"' in text and "dead_letter" in text  # the JSON debug logs were captured and scanned
        for path, secret in secret_of.items():
            assert secret not in text, path
    finally:
        with psycopg.connect(embedded_pg, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
