"""What the CMMS hand-off costs: the flow's side (handing a work order to the pusher), rendering a body, and
pushes per second to a local CMMS (the test's Python HTTP server), against a plain httpx loop sending the
same bodies to the same server in the same run (the baseline).

    python bench/cmms.py [--orders 2000]

Last line: `name=value` pairs.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
import orjson  # noqa: E402

from smart_maintenance.config.cmms_settings import WORK_ORDER_FIELDS  # noqa: E402
from smart_maintenance.config.settings import load_settings  # noqa: E402
from smart_maintenance.connectors.cmms.client import CmmsClient  # noqa: E402
from smart_maintenance.connectors.cmms.sink import CmmsPusher  # noqa: E402
from smart_maintenance.operators.cmms import compile_mapping, render_body  # noqa: E402
from smart_maintenance.operators.plan.work_orders import WorkOrder  # noqa: E402
from tests.integration.cmms_server import FakeCmms  # noqa: E402

T0 = datetime(2026, 1, 5, 8, tzinfo=timezone.utc)
MAPPING = {
    "wonum": "{{ work_order_id }}", "siteid": "BEDFORD", "assetnum": "{{ asset_id | upper }}",
    "description": "{{ ('Predicted ' ~ kind ~ ': ' ~ reason) | truncate(100) }}", "wopriority": "{{ 6 - priority }}",
    "status": "{{ {'open': 'WAPPR', 'scheduled': 'APPR', 'done': 'COMP'}[status] }}", "targcompdate": "{{ due_at }}",
}


def orders(n: int, prefix: str) -> list[dict]:
    out = []
    for i in range(n):
        wo = WorkOrder(f"{prefix}{i:06d}", f"pump-{i % 50:02d}", f"al{i}", "repair", "open", 1 + i % 5,
                       ("mechanical",), 240, T0, T0 + timedelta(days=2), T0, reason="vibration rising")
        out.append(wo.to_dict())
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--orders", type=int, default=2000)
    n = ap.parse_args().orders
    with FakeCmms() as cmms:
        s = load_settings(cmms={"enabled": True, "base_url": f"{cmms.url}/api", "mapping": MAPPING,
                                "create": {"method": "POST", "path": "/wo"}, "queue_size": n + 1})
        mapping = compile_mapping(MAPPING, WORK_ORDER_FIELDS)
        items = orders(n, "b")
        started = time.perf_counter()
        bodies = [orjson.dumps(render_body(mapping, wo)) for wo in items]
        render_us = (time.perf_counter() - started) / n * 1e6

        # baseline: the same bodies, one plain httpx client, one request after the other
        with httpx.Client(base_url=f"{cmms.url}/api") as http:
            started = time.perf_counter()
            for body in bodies:
                http.post("/wo", content=body, headers={"Content-Type": "application/json"})
            direct_s = time.perf_counter() - started

        dead: list = []
        pusher = CmmsPusher(CmmsClient(s.cmms), dead.extend, queue_size=n + 1, drain_timeout_s=60)
        items = orders(n, "p")
        started = time.perf_counter()
        for wo in items:
            pusher.offer(wo)
        offer_us = (time.perf_counter() - started) / n * 1e6
        assert pusher.join(120), "pushes did not finish"
        pushed_s = time.perf_counter() - started
        pusher.close()
        assert pusher.counts["pushed"] == n and not dead, (pusher.counts, dead[:1])
    print(f"orders={n} cmms_offer_us={offer_us:.1f} cmms_render_us={render_us:.1f} "
          f"cmms_push_per_s={n / pushed_s:.0f} direct_httpx_push_per_s={n / direct_s:.0f}")


if __name__ == "__main__":
    main()
