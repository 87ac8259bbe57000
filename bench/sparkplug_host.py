"""Sparkplug B host decoding speed: DDATA messages of 10 aliased metrics through decode + host state (no broker).

    python -m bench.sparkplug_host

Prints messages/s and readings/s on one core (what the Sparkplug source's flow thread can take).
"""

from __future__ import annotations

import time

from smart_maintenance.connectors.sparkplug.codec import DOUBLE, Metric, Payload, encode_payload
from smart_maintenance.connectors.sparkplug.host import SparkplugHost


def main() -> None:
    h = SparkplugHost()
    h.handle("spBv1.0/G/NBIRTH/e", encode_payload(Payload(timestamp=0, seq=0, metrics=())), 0)
    h.handle("spBv1.0/G/DBIRTH/e/d", encode_payload(Payload(timestamp=0, seq=1, metrics=tuple(
        Metric(name=f"s{i}", alias=i, datatype=DOUBLE, value=0.0) for i in range(10)))), 0)
    msgs = [encode_payload(Payload(timestamp=1000 + k, seq=(k + 2) % 256, metrics=tuple(
        Metric(alias=i, timestamp=1000 + k, value=float(k)) for i in range(10)))) for k in range(20000)]
    t = time.perf_counter()
    n = 0
    for m in msgs:
        n += len(h.handle("spBv1.0/G/DDATA/e/d", m, 0).rows)
    dt = time.perf_counter() - t
    print(f"{len(msgs)} DDATA x 10 metrics: {dt:.2f} s, {len(msgs)/dt:,.0f} messages/s, {n/dt:,.0f} readings/s")


if __name__ == "__main__":
    main()
