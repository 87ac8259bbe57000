"""MqttSource and the MQTT publisher against a real Mosquitto, through the real plant flow.

Each test first opens the source's persistent session once (build + close), so
the broker queues what is published before the flow's client connects: the
tests need no "is it subscribed yet" handshake.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from bytewax.testing import TestingSink, cluster_main, run_main

from smart_maintenance.config.registry import load_registry
from smart_maintenance.config.settings import SimulatorSettings, load_settings
from smart_maintenance.connectors.mqtt.client import MqttSourceError
from smart_maintenance.connectors.mqtt.publish import MqttPublisher, publish_readings
from smart_maintenance.connectors.mqtt.source import MqttSource
from smart_maintenance.dataflows.plant import STREAMS, build_flow
from smart_maintenance.operators.records import Readings
from smart_maintenance.sources.plant_model import PlantModel
from tests.integration.mqtt_broker import (  # noqa: F401 - fixtures
    AUTH_PASSWORD,
    AUTH_USER,
    Broker,
    free_port,
    mosquitto,
    mosquitto_auth,
)

pytestmark = pytest.mark.integration

SETTINGS = load_settings(console=False)


def _plant(n: int) -> tuple[Readings, object]:
    """The first `n` readings of a simulated 5-asset plant, and its registry (for the sites)."""
    model = PlantModel(load_registry(None), SimulatorSettings(assets=5, duration_s=None))
    readings = model.generate(range(5), 0, n // 25 + 1)
    return readings.take(np.arange(n)), model.registry


def _open_session(source: MqttSource, workers: int = 1) -> None:
    for w in range(workers):
        source.build("read", w, workers).close()


def _flow(source: MqttSource) -> tuple[object, dict[str, list]]:
    out: dict[str, list] = {s: [] for s in STREAMS}
    return build_flow(SETTINGS, source=source, sinks={s: [TestingSink(out[s])] for s in STREAMS}), out


def _in_thread(flow: object) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            run_main(flow)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


def _rows(out: dict[str, list]) -> list[tuple[str, str, int, float]]:
    return sorted(
        (a, s, t, v)
        for r in out["readings"]
        for a, s, t, v in zip(r.asset_id, r.sensor, r.ts.tolist(), r.value.tolist())
    )


def _expected(readings: Readings) -> list[tuple[str, str, int, float]]:
    return sorted(zip(readings.asset_id, readings.sensor, readings.ts.tolist(), readings.value.tolist()))


def _causes(e: BaseException | None) -> list[BaseException]:
    chain = []
    while e is not None:
        chain.append(e)
        e = e.__cause__
    return chain


def _count(out: dict[str, list]) -> int:
    return sum(len(r) for r in list(out["readings"]))


def test_published_readings_bare_numbers_and_bad_json_flow_through(mosquitto: Broker):  # noqa: F811 a pytest fixture
    readings, registry = _plant(5000)
    settings = mosquitto.settings()
    source = MqttSource(settings, stop_after=len(readings) + 2, batch_wait_ms=50)
    _open_session(source)
    flow, out = _flow(source)
    thread, errors = _in_thread(flow)
    before = time.time_ns() // 1_000_000
    with MqttPublisher(settings, registry=registry) as pub:
        stats = pub.publish(readings)
        pub.send("plant/site/pump-x/temp", b"21.5")
        pub.send("plant/raw", b'{"asset_id": ')
        pub.flush()
    thread.join(20)
    after = time.time_ns() // 1_000_000
    assert not thread.is_alive() and errors == []
    assert (stats.messages, stats.non_finite) == (5000, 0)
    bare = [row for row in _rows(out) if row[0] == "pump-x"]
    assert len(bare) == 1 and (bare[0][1], bare[0][3]) == ("temp", 21.5) and before <= bare[0][2] <= after
    assert [row for row in _rows(out) if row[0] != "pump-x"] == _expected(readings)
    assert [(d.reason, d.origin) for d in out["dead_letters"]] == [("bad_json", "mqtt:plant/raw")]


def test_frames_of_20_readings_flow_through_and_a_bad_value_costs_one_dead_letter(mosquitto: Broker):  # noqa: F811
    readings, registry = _plant(2000)
    value = readings.value.copy()
    value[7] = np.nan  # sent as null: that value is a dead letter, the rest of its frame goes on
    readings = Readings(readings.asset_id, readings.sensor, readings.ts, value)
    per_asset = np.unique(readings.asset_id, return_counts=True)[1]
    messages = int(sum(-(-n // 20) for n in per_asset))
    settings = mosquitto.settings()
    source = MqttSource(settings, stop_after=messages, batch_wait_ms=50)
    _open_session(source)
    stats = publish_readings(settings, readings, registry=registry, frame=20)
    assert (stats.messages, stats.non_finite, stats.readings) == (messages, 1, len(readings))
    assert messages < len(readings) / 19
    flow, out = _flow(source)
    run_main(flow)
    assert _rows(out) == _expected(readings.take(np.isfinite(value)))
    [dead] = out["dead_letters"]
    asset = readings.asset_id[7]
    assert (dead.reason, dead.origin) == ("bad_value", f"mqtt:plant/{registry.asset(asset).site}/{asset}/frame")


def test_paced_publish_and_topics_carry_the_registry_site(mosquitto: Broker):  # noqa: F811 a pytest fixture
    settings = mosquitto.settings(topics=("plant/south/#",))
    readings, registry = _plant(50)  # pump-02 is the only asset at the south site
    source = MqttSource(settings, batch_wait_ms=0, idle_stop_s=0.5)
    _open_session(source)
    stats = publish_readings(settings, readings, registry=registry, rate=2000)
    assert stats.messages == 50 and stats.seconds >= 49 / 2000  # paced
    flow, out = _flow(source)
    run_main(flow)
    pump_02 = set(readings.sensor[readings.asset_id == "pump-02"])
    assert {(a, s) for a, s, _, _ in _rows(out)} == {("pump-02", s) for s in pump_02}


def test_credentials(mosquitto_auth: Broker):  # noqa: F811 a pytest fixture
    good = mosquitto_auth.settings(username=AUTH_USER, password=AUTH_PASSWORD)
    source = MqttSource(good, stop_after=3, batch_wait_ms=0)
    _open_session(source)
    three = Readings.of([("p1", "t", 1_790_000_000_000 + i, 1.0) for i in range(3)])
    assert publish_readings(good, three).messages == 3
    flow, out = _flow(source)
    run_main(flow)
    assert _count(out) == 3
    wrong = mosquitto_auth.settings(username=AUTH_USER, password="not-the-password")
    with pytest.raises(MqttSourceError) as err:
        MqttSource(wrong).build("read", 0, 1)
    assert f"127.0.0.1:{mosquitto_auth.port}" in str(err.value) and "refused" in str(err.value)
    assert "not-the-password" not in str(err.value) and AUTH_PASSWORD not in str(err.value)


def test_error_on_the_network_thread_fails_the_flow_and_unacked_messages_come_back(mosquitto: Broker):  # noqa: F811 a pytest fixture
    settings = mosquitto.settings()
    calls = iter(range(1_000_000))

    def clock() -> int:  # breaks on the third message
        if next(calls) == 2:
            raise RuntimeError("clock broke")
        return time.time_ns() // 1_000_000

    _open_session(MqttSource(settings))
    publish_readings(settings, Readings.of([("p1", "t", 1_790_000_000_000 + i, float(i)) for i in range(10)]))
    flow, _ = _flow(MqttSource(settings, clock=clock, batch_wait_ms=0))
    with pytest.raises(Exception) as err:
        run_main(flow)
    chain = _causes(err.value)  # Bytewax wraps it, in build or next_batch: whichever saw it first
    source_error = next(e for e in chain if isinstance(e, MqttSourceError))
    assert "clock broke" in str(source_error) and isinstance(source_error.__cause__, RuntimeError)
    # the failed message and all after it were not acknowledged: the broker redelivers them
    # (a PUBACK still in flight when the client hung up may bring back an earlier one too)
    flow, out = _flow(MqttSource(settings, idle_stop_s=1, batch_wait_ms=0))
    run_main(flow)
    values = [int(v) for _, _, _, v in _rows(out)]
    assert set(range(2, 10)) <= set(values) <= set(range(10)) and len(values) == len(set(values))


def test_broker_restart_mid_stream_loses_nothing(mosquitto: Broker):  # noqa: F811 a pytest fixture
    settings = mosquitto.settings()
    readings, registry = _plant(2000)
    first, second = readings.take(np.arange(1000)), readings.take(np.arange(1000, 2000))
    source = MqttSource(settings, idle_stop_s=3, batch_wait_ms=20)  # outlasts the reconnect backoff (1 s)
    _open_session(source)
    flow, out = _flow(source)
    thread, errors = _in_thread(flow)
    with MqttPublisher(settings, registry=registry) as pub:
        pub.publish(first)
        deadline = time.monotonic() + 10
        while _count(out) < 1000 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _count(out) >= 1000
        mosquitto.restart()  # the persistent session (with its subscription) survives in the broker's file
        assert pub.publish(second).messages == 1000  # the publisher reconnects too
    thread.join(20)
    assert not thread.is_alive() and errors == []
    rows, expected = _rows(out), _expected(readings)
    assert sorted(set(rows)) == expected  # nothing lost ...
    assert set(rows[i] for i in range(1, len(rows)) if rows[i] == rows[i - 1]) <= set(_expected(first))
    # ... and at most redeliveries of messages whose PUBACK the stopping broker did not take in


def test_two_workers_share_the_subscription(mosquitto: Broker):  # noqa: F811 a pytest fixture
    settings = mosquitto.settings()
    readings, registry = _plant(2000)
    source = MqttSource(settings, idle_stop_s=1.0, batch_wait_ms=20)
    assert source.subscriptions(2) == [("$share/smart-maintenance/plant/#", 1)]
    _open_session(source, workers=2)
    publish_readings(settings, readings, registry=registry)
    flow, out = _flow(source)
    cluster_main(flow, [], 0, worker_count_per_proc=2)
    assert _rows(out) == _expected(readings)


def test_bad_arguments_and_no_broker(mosquitto: Broker):  # noqa: F811 a pytest fixture
    settings = mosquitto.settings()
    for kwargs in ({"batch_max": 0}, {"batch_wait_ms": -1}, {"buffer_max": 5, "batch_max": 10}, {"stop_after": 0},
                   {"idle_stop_s": 0}):
        with pytest.raises(ValueError):
            MqttSource(settings, **kwargs)
    with pytest.raises(ValueError, match="no username"):
        MqttSource(mosquitto.settings(password="x"))
    nobody = mosquitto.settings(port=free_port())
    with pytest.raises(MqttSourceError, match=f"cannot connect to MQTT broker 127.0.0.1:{nobody.port}"):
        MqttSource(nobody, connect_timeout_s=0.3).build("read", 0, 1)
