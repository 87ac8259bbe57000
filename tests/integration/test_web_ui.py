"""The web UI in a real browser: Debian's Chromium driven by Playwright against a real uvicorn on loopback.

A planner signs in with a key, decides a review case, completes a work order and sees both on the
asset page; the live banner shows a change made elsewhere. Screenshots of each page go to the test's
tmp directory (printed at the end).
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn
from playwright.sync_api import Page, expect, sync_playwright
from psycopg import sql

from smart_maintenance.api.app import create_app
from smart_maintenance.api.config import ApiConfig
from smart_maintenance.connectors.postgres.api_store import ApiStore
from smart_maintenance.connectors.postgres.store import LoopStore
from tests.integration.api_seed import KNOWN, _insert, h, seed

pytestmark = pytest.mark.integration
CHROMIUM = "/usr/bin/chromium"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # a thread cannot take signals; the test stops it
        pass


@pytest.fixture(scope="module")
def served(embedded_pg: str) -> Iterator[dict[str, Any]]:
    schema = f"t_{secrets.token_hex(6)}"
    ids = seed(embedded_pg, schema)
    store = ApiStore(embedded_pg, schema).open()
    app = create_app(ApiConfig(events_poll_s=0.1), store, KNOWN, lambda: LoopStore(embedded_pg, schema).open())
    port = _free_port()
    server = _Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield {**ids, "url": f"http://127.0.0.1:{port}", "schema": schema}
    server.should_exit = True
    thread.join(10)
    store.close()
    with psycopg.connect(embedded_pg, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, tmp_path: Path) -> Iterator[Page]:
    ctx = browser.new_context(viewport={"width": 1024, "height": 768})  # a tablet in landscape
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" and "401" not in m.text else None)
    yield pg
    ctx.close()
    assert not errors, errors  # no script errors, no CSP violations


def _sign_in(page: Page, served: dict[str, Any], who: str = "planner") -> None:
    page.goto(served["url"] + "/ui/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.fill("input[name=key]", served["tokens"][who])
    page.click("button[type=submit]")
    expect(page.get_by_role("heading", name="Fleet")).to_be_visible()


def _shot(page: Page, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 5_000


def test_a_wrong_key_is_refused_in_the_browser(page: Page, served: dict[str, Any]) -> None:
    page.goto(served["url"] + "/ui/reviews")
    page.fill("input[name=key]", "smk_0123456789ab_wrong")
    page.click("button[type=submit]")
    expect(page.locator(".result")).to_contain_text("not valid")
    assert page.context.cookies() == []


def test_planner_decides_a_case_completes_work_and_sees_it_on_the_asset_page(
        page: Page, served: dict[str, Any], tmp_path: Path) -> None:
    _sign_in(page, served)
    row = page.locator("tr[data-asset='pump-01']")
    expect(row.locator(".health")).to_have_text("35")  # severity-4 alarm and one open case
    _shot(page, tmp_path, "fleet")

    page.click("text=Review cases")
    case = page.locator(f"article[data-case='{served['pump_case']}']")
    expect(case).to_contain_text("3 uncertain window(s)")
    _shot(page, tmp_path, "reviews")
    case.locator("input[name=note]").fill("confirmed <b>by</b> ear")
    case.get_by_role("button", name="Approve").click()
    expect(case).to_have_count(0)  # decided: no longer in the open queue

    page.click("text=Work orders")
    wo = page.locator("article[data-work-order='wo-pump']")
    expect(page.locator(".gantt svg rect.job")).to_have_count(1)
    _shot(page, tmp_path, "work_orders")
    wo.locator("input[name=action]").fill("replaced drive-end bearing")
    wo.get_by_role("button", name="Complete").click()
    expect(wo.locator(".status")).to_have_text("completion logged")

    page.goto(served["url"] + "/ui/assets/pump-01")
    expect(page.locator(f"#asset-cases li[data-case='{served['pump_case']}'] .status")).to_have_text("approved")
    expect(page.locator("#asset-cases")).to_contain_text("by planner")
    expect(page.locator("#asset-work-orders li[data-work-order='wo-pump'] .status")).to_contain_text(
        "completion logged (repaired)")
    expect(page.locator("#asset-history")).to_contain_text("replaced drive-end bearing")
    expect(page.locator("figure.chart")).to_have_count(2)  # vibration and temp trends
    _shot(page, tmp_path, "asset")

    page.click("text=Log maintenance")
    _shot(page, tmp_path, "maintenance")
    print(f"\nscreenshots in {tmp_path}")


def test_the_live_banner_shows_a_change_made_elsewhere(page: Page, served: dict[str, Any]) -> None:
    _sign_in(page, served, "north-read")
    page.wait_for_timeout(500)  # the stream is connected
    r = httpx.post(f"{served['url']}/api/cases/{served['motor_case']}/decision", json={"decision": "defer"},
                   headers={"Authorization": f"Bearer {served['tokens']['planner']}"})
    assert r.status_code == 200
    with contextlib.suppress(AssertionError):  # motor-02 is at site south: this north key must not see it
        expect(page.locator("#live")).to_be_visible(timeout=1500)
    assert page.locator("#live").is_hidden()
    r = httpx.post(f"{served['url']}/api/alarms/al-pump/comments", json={"note": "x"},
                   headers={"Authorization": f"Bearer {served['tokens']['maintain']}"})
    assert r.status_code == 200  # a comment changes no alarm state: still nothing
    r = httpx.post(f"{served['url']}/api/alarms/al-pump/ack", json={"note": "on my way"},
                   headers={"Authorization": f"Bearer {served['tokens']['maintain']}"})
    assert r.status_code == 200
    expect(page.locator("#live")).to_contain_text("alarm on pump-01, acknowledged", timeout=5000)


def test_a_planner_reassigns_work_in_the_browser(page: Page, served: dict[str, Any], embedded_pg: str) -> None:
    with psycopg.connect(embedded_pg, autocommit=True) as conn:
        _insert(conn, served["schema"], "work_orders", [
            {"work_order_id": "wo-motor", "asset_id": "motor-02", "alarm_id": "al-motor", "kind": "repair",
             "status": "open", "priority": 2, "duration_min": 60, "created_at": h(21), "due_at": h(50),
             "updated_at": h(21), "reason": "current high"}])
    _sign_in(page, served)
    page.click("text=Work orders")
    wo = page.locator("article[data-work-order='wo-motor']")
    wo.locator("input[name=technician_id]").fill("tech-07")
    wo.locator("select[name=priority]").select_option("5")
    wo.locator("input[name=comment]").fill("spare <b>motor</b> on site")
    wo.get_by_role("button", name="Update").click()
    expect(wo).to_contain_text("priority 5")  # the page reloads with the change folded in
    expect(wo).to_contain_text("tech-07")
    expect(wo.locator(".comment")).to_have_text("planner: spare <b>motor</b> on site")  # escaped, shown as text
