"""SIGKILL the flow at five random points of a replay, and of a Kafka stream: nothing lost, nothing doubled."""

import random
import secrets
import subprocess
import time

import numpy as np
import psycopg
import pytest

from bench.recovery import _command, compare, flow_env, make_csv, run_with_kills

pytestmark = pytest.mark.integration


def test_killed_replay_resumes_without_loss_or_duplicates(embedded_pg, tmp_path):
    csv = tmp_path / "plant.csv"
    expected = make_csv(csv, assets=8, hours=72)
    straight, crashed = f"t_{secrets.token_hex(4)}_a", f"t_{secrets.token_hex(4)}_b"
    try:
        t = time.perf_counter()
        subprocess.run(_command(None), env=flow_env(embedded_pg, straight, csv), check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        full_s = time.perf_counter() - t
        rng = random.Random(11)  # from start-up (~1.5 s) to a few 1-second snapshots in
        delays = [rng.uniform(1.0, min(3.0, 0.5 * full_s)) for _ in range(5)]
        run = run_with_kills(flow_env(embedded_pg, crashed, csv), tmp_path / "recovery", delays)
        assert run.kills >= 5
        assert compare(embedded_pg, straight, crashed, expected) == (0, 0)
        with psycopg.connect(embedded_pg) as conn:
            anomalies, alarms = conn.execute(
                f"SELECT (SELECT count(*) FROM {crashed}.anomalies), (SELECT count(*) FROM {crashed}.alarms)"
            ).fetchone()
        assert anomalies > 20, (anomalies, alarms)  # the scenario has something to lose or double
    finally:
        with psycopg.connect(embedded_pg, autocommit=True) as conn:
            for schema in (straight, crashed):
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def test_killed_kafka_flow_resumes_from_its_snapshotted_offsets(embedded_pg, tmp_path):
    from smart_maintenance.config.registry import load_registry
    from smart_maintenance.config.settings import SimulatorSettings
    from smart_maintenance.connectors.kafka.sink import publish_readings
    from smart_maintenance.sources.plant_model import PlantModel
    from tests.integration.kafka_broker import create_topics, tansu_broker

    model = PlantModel(load_registry().with_simulated(8), SimulatorSettings(assets=8, duration_s=72 * 3600))
    readings = model.generate(range(8), 0, model.n_ticks)
    expected = int(np.isfinite(readings.value).sum())
    straight, crashed = f"t_{secrets.token_hex(4)}_ka", f"t_{secrets.token_hex(4)}_kb"
    with tansu_broker() as broker:
        topic = f"readings_{secrets.token_hex(4)}"
        create_topics(broker.bootstrap, {topic: 2})
        assert publish_readings(broker.settings(readings_topic=topic), readings) == len(readings)
        kafka = {
            "SMART_MAINTENANCE__SOURCE": "kafka",
            "SMART_MAINTENANCE__KAFKA__BROKERS": f'["{broker.bootstrap}"]',
            "SMART_MAINTENANCE__KAFKA__READINGS_TOPIC": topic,
            "SMART_MAINTENANCE__KAFKA__TAIL": "false",
        }
        try:
            t = time.perf_counter()
            subprocess.run(_command(None), env=flow_env(embedded_pg, straight, None, **kafka), check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            full_s = time.perf_counter() - t
            rng = random.Random(5)
            delays = [rng.uniform(1.0, min(3.0, 0.5 * full_s)) for _ in range(5)]
            run = run_with_kills(flow_env(embedded_pg, crashed, None, **kafka), tmp_path / "recovery", delays)
            assert run.kills >= 5
            assert compare(embedded_pg, straight, crashed, expected) == (0, 0)
        finally:
            with psycopg.connect(embedded_pg, autocommit=True) as conn:
                for schema in (straight, crashed):
                    conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
