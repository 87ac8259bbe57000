"""OpcUaSource against a real asyncua Server on a loopback port, alone and through the real plant flow."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from asyncua import ua
from bytewax.testing import TestingSink, run_main

from smart_maintenance.config.settings import OpcUaSettings, load_settings
from smart_maintenance.connectors.opcua.client import OpcUaSourceError
from smart_maintenance.connectors.opcua.source import OpcUaSource
from smart_maintenance.dataflows.plant import STREAMS, build_flow
from smart_maintenance.operators.records import Invalid, Parsed, dt_to_ms
from tests.integration.opcua_server import (  # noqa: F401 - fixture
    PASSWORD,
    USER,
    PlantServer,
    opcua_server_fixture,
)

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 5, tzinfo=timezone.utc)


def _drain(part: object, want: int, timeout_s: float = 15) -> tuple[list[tuple], list[Invalid]]:
    rows: list[tuple] = []
    rejects: list[Invalid] = []
    deadline = time.monotonic() + timeout_s
    while len(rows) + len(rejects) < want and time.monotonic() < deadline:
        for p in part.next_batch():  # type: ignore[attr-defined]
            assert isinstance(p, Parsed)
            r = p.readings
            rows += list(zip(r.asset_id, r.sensor, r.ts.tolist(), r.value.tolist()))
            rejects += p.rejects
        time.sleep(0.02)
    return rows, rejects


def _settings(server: PlantServer, **kw: object) -> OpcUaSettings:
    return OpcUaSettings(endpoint=server.endpoint, publishing_interval_ms=50, connect_timeout_s=5, **kw)


def test_browse_pattern_source_timestamps_and_bad_status_become_dead_letters(opcua_server: PlantServer):
    settings = _settings(opcua_server, browse=("Plant/{asset_id}/{sensor}",))
    part = OpcUaSource(settings).build("read", 0, 1)
    try:
        rows, _ = _drain(part, 3)  # the initial value of each of the 3 variables
        assert sorted((a, s) for a, s, _, _ in rows) == [("fan-02", "speed"), ("pump-01", "temp"),
                                                          ("pump-01", "vibration")]
        opcua_server.write("pump-01.temp", 21.5, T0)
        rows, rejects = _drain(part, 1)
        assert rows == [("pump-01", "temp", dt_to_ms(T0), 21.5)] and rejects == []
        opcua_server.write("pump-01.temp", 99.0, T0 + timedelta(seconds=1), status=ua.StatusCodes.BadSensorFailure)
        opcua_server.write("fan-02.speed", 3.0, T0 + timedelta(seconds=2))
        rows, rejects = _drain(part, 2)
        assert rows == [("fan-02", "speed", dt_to_ms(T0) + 2000, 3.0)]
        assert [(d.reason, d.origin) for d in rejects] == [("bad_status", "opcua:ns=2;s=pump-01.temp")]
        assert "BadSensorFailure" in rejects[0].detail
    finally:
        part.close()


def test_configured_node_ids_and_a_missing_node_fails_the_start(opcua_server: PlantServer):
    nodes = [{"node_id": "ns=2;s=pump-01.vibration", "asset_id": "P1", "sensor": "vib_rms"}]
    part = OpcUaSource(_settings(opcua_server, nodes=nodes)).build("read", 0, 1)
    try:
        opcua_server.write("pump-01.vibration", 0.25, T0)
        opcua_server.write("pump-01.temp", 50.0, T0)  # not subscribed
        rows, _ = _drain(part, 2, timeout_s=3)
        assert rows[-1] == ("P1", "vib_rms", dt_to_ms(T0), 0.25) and {r[0] for r in rows} == {"P1"}
    finally:
        part.close()
    missing = [{"node_id": "ns=2;s=nope", "asset_id": "P1", "sensor": "x"}]
    with pytest.raises(OpcUaSourceError, match="ns=2;s=nope"):
        OpcUaSource(_settings(opcua_server, nodes=missing)).build("read", 0, 1)


def test_user_and_password_from_settings_and_a_refused_password_is_not_retried(opcua_server: PlantServer):
    nodes = [{"node_id": "ns=2;s=fan-02.speed", "asset_id": "fan-02", "sensor": "speed"}]
    part = OpcUaSource(_settings(opcua_server, nodes=nodes, username=USER, password=PASSWORD)).build("read", 0, 1)
    try:
        opcua_server.write("fan-02.speed", 12.0, T0)
        rows, _ = _drain(part, 2, timeout_s=3)
        assert ("fan-02", "speed", dt_to_ms(T0), 12.0) in rows and opcua_server.users.accepted == [USER]
    finally:
        part.close()
    began = time.monotonic()
    with pytest.raises(OpcUaSourceError, match="BadUserAccessDenied|BadIdentityToken") as err:
        OpcUaSource(_settings(opcua_server, nodes=nodes, username=USER, password="wrong")).build("read", 0, 1)
    assert time.monotonic() - began < 3  # connect_timeout_s is 5: a refusal is final, not retried
    assert "wrong" not in str(err.value)


def test_other_workers_do_not_connect():
    settings = OpcUaSettings(endpoint="opc.tcp://127.0.0.1:1/none", nodes=[
        {"node_id": "ns=2;s=a", "asset_id": "a", "sensor": "b"}])
    with pytest.raises(StopIteration):  # worker 1 of 2 owns no client: its partition ends at once
        OpcUaSource(settings).build("read", 1, 2).next_batch()


def test_unreachable_server_fails_with_the_endpoint():
    settings = OpcUaSettings(endpoint="opc.tcp://127.0.0.1:1/none", connect_timeout_s=0.5, nodes=[
        {"node_id": "ns=2;s=a", "asset_id": "a", "sensor": "b"}])
    with pytest.raises(OpcUaSourceError, match="127.0.0.1:1"):
        OpcUaSource(settings).build("read", 0, 1)


def test_reconnects_after_a_server_restart():
    server = PlantServer({"pump-01": ("temp",)})  # its own: stopping a server others used can hang
    server.start()
    settings = _settings(server, browse=("Plant/{asset_id}/{sensor}",), reconnect_max_s=1.0)
    part = OpcUaSource(settings).build("read", 0, 1)
    try:
        _drain(part, 1)
        server.stop()
        time.sleep(1.0)
        server.start()  # same port, same node ids
        deadline = time.monotonic() + 20
        got: list[tuple] = []
        while time.monotonic() < deadline and ("pump-01", "temp", dt_to_ms(T0), 7.0) not in got:
            server.write("pump-01.temp", 7.0, T0)
            rows, _ = _drain(part, 1, timeout_s=1)
            got += rows
        assert ("pump-01", "temp", dt_to_ms(T0), 7.0) in got
    finally:
        part.close()
        server.close()


def test_plant_flow_reads_opcua_and_makes_features(opcua_server: PlantServer):
    settings = load_settings(console=False, source="opcua", windows={"length_s": 10, "idle_close_s": 1},
                             opcua=_settings(opcua_server, browse=("Plant/{asset_id}/{sensor}",)).model_dump())
    out: dict[str, list] = {s: [] for s in STREAMS}
    n = 30
    source = OpcUaSource(settings.opcua, stop_after=3 + 2 * n + 1, idle_stop_s=5)
    flow = build_flow(settings, source=source, sinks={s: [TestingSink(out[s])] for s in STREAMS})
    start = datetime.now(timezone.utc) - timedelta(seconds=2 * n)

    def play() -> None:
        time.sleep(1.5)
        for i in range(n):
            opcua_server.write("pump-01.temp", 20.0 + i % 3, start + timedelta(seconds=2 * i))
            opcua_server.write("pump-01.vibration", 0.1 * (i % 4), start + timedelta(seconds=2 * i))
            time.sleep(0.06)
        opcua_server.write("fan-02.speed", 1.0, start, status=ua.StatusCodes.BadCommunicationError)

    threading.Thread(target=play, daemon=True).start()
    run_main(flow)
    readings = [(a, s) for r in out["readings"] for a, s in zip(r.asset_id, r.sensor)]
    assert readings.count(("pump-01", "temp")) >= n
    features = {(f["asset_id"], f["sensor"]) for batch in out["features"] for f in batch.rows()}
    assert {("pump-01", "temp"), ("pump-01", "vibration")} <= features
    assert [d.reason for d in out["dead_letters"]] == ["bad_status"]
