"""The console in a real Chromium against a real server: a SIPp call watched live and then in detail,
the flows page with a broken draft, keyboard-only use, and the history search.

One demo-line server for the module (start-up preloads the agent's models: ~8 s); every wait is bounded.
"""

from __future__ import annotations

import re
import time

import pytest

from callbridge.app.store import CallStore
from tests.browser.conftest import ACTION_TIMEOUT_MS, console_url
from tests.interop.conftest import start_server, stop_server
from tests.interop.ivr_scenarios import ivr_caller
from tests.interop.test_media import killed_on_failure, start_call
from tests.support.console_flows import BROKEN_FLOW, SALES_FLOW

pytestmark = pytest.mark.interop

CONFIG = """\
flows:
  sales: flows/sales.yaml
outbound_trunks:
  - name: loop
    host: 127.0.0.1
    port: 9
"""
NAV = ["Live calls", "History", "Flows", "Agents & trunks", "Dispatch", "Metrics", "Phone"]


@pytest.fixture(scope="module")
def line(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("console")
    (workdir / "flows").mkdir()
    (workdir / "flows" / "sales.yaml").write_text(SALES_FLOW)
    server = start_server(workdir, CONFIG)
    yield server
    stop_server(server)


@pytest.fixture
def page(line, browser_factory):
    context = browser_factory().new_context(extra_http_headers={"Authorization": f"Bearer {line.api_token}"},
                                            viewport={"width": 1280, "height": 900})
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    yield tab
    assert not errors, errors  # no script error on any page the test visited


def test_a_call_is_followed_live_then_shown_in_detail(line, page, tmp_path, artifacts):
    page.goto(console_url(line, "/#/live"))
    page.get_by_text("Live: following call events.").wait_for()
    page.evaluate("window.__sameDocument = true")  # gone if anything reloads the page
    scenario = ivr_caller(tmp_path / "caller.xml", ["1", 3000, "1"], tail_ms=4000)
    sipp = start_call(line, tmp_path / "sipp", str(scenario), timeout=40)
    with killed_on_failure(sipp):
        active = page.locator("tr[data-call-id][data-status=active]")
        active.wait_for(timeout=10_000)
        call_id = active.get_attribute("data-call-id")
        row = page.locator(f'tr[data-call-id="{call_id}"]')
        assert "+15551230000" in row.inner_text()
        page.wait_for_function("id => document.querySelector(`tr[data-call-id='${id}']`).innerText.includes('IVR ')",
                               arg=call_id, timeout=10_000)  # the node it is at, from the event stream
        page.screenshot(path=artifacts / "live-active.png", full_page=True)
        result = sipp.wait()
    assert result.returncode == 0, result.output
    page.locator(f'tr[data-call-id="{call_id}"][data-status=hangup]').wait_for(timeout=10_000)
    assert "ended (caller hangup)" in row.inner_text()
    assert page.evaluate("window.__sameDocument") is True
    page.screenshot(path=artifacts / "live-ended.png", full_page=True)

    record = line.wait_for(lambda: (r := line.get(f"/api/calls/{call_id}")) and r["ended_at"] and r,
                           what="the final record")
    greeting = next(t["text"] for t in record["transcript"] if t["role"] == "agent")
    row.get_by_role("link").focus()
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(f"#/calls/{call_id}$"))
    ivr = page.locator("section[aria-labelledby=sec-ivr-path]")
    ivr.get_by_text("choice language_menu: pressed 1 — English").wait_for()
    ivr.get_by_text("choice main_menu: pressed 1 — Order status").wait_for()
    handoff = page.locator("section[aria-labelledby=sec-handoff]").inner_text()
    assert "order_status" in handoff and "language_menu 1 (English) → main_menu 1 (Order status)" in handoff
    page.locator("section[aria-labelledby=sec-transcript]").get_by_text(greeting).wait_for()
    dtmf = page.locator("section[aria-labelledby=sec-dtmf] tbody tr")
    assert dtmf.count() == 2 and "rfc4733" in dtmf.first.inner_text()
    waveform = page.locator("canvas.waveform[data-channels='2']")
    waveform.wait_for()  # the WAV fetched and decoded by WebAudio: two channels
    assert abs(float(waveform.get_attribute("data-duration")) - (record["talk_s"] or 0)) < 1.5
    assert int(waveform.get_attribute("data-markers")) >= 1  # the agent's greeting, at least
    page.screenshot(path=artifacts / "call-detail.png", full_page=True)


def test_flows_page_draws_the_demo_and_shows_a_broken_draft_at_its_line(line, page, artifacts):
    broken = line.workdir / "flows" / "broken.yaml"
    broken.write_text(BROKEN_FLOW)
    page.goto(console_url(line, "/#/flows"))
    demo = page.locator("section.flow", has=page.get_by_role("heading", name=re.compile("^demo")))
    for node in ("check_language", "main_menu", "language_menu", "agent_order_status"):
        assert demo.locator(f"svg.flow-graph g[data-node={node}] text.node-id").text_content() == node
    assert demo.locator("svg.flow-graph text", has_text="1: Order status").count() == 1
    page.locator("section.flow", has=page.get_by_role("heading", name=re.compile("^sales"))).wait_for()
    position = page.locator(".draft.broken .position")
    assert position.inner_text() == f"{broken.resolve()}:7:5"  # "next: nowhere"
    assert "unknown node 'nowhere'" in page.locator(".draft.broken").inner_text()
    page.screenshot(path=artifacts / "flows.png", full_page=True)


def test_every_page_works_from_the_keyboard_with_named_controls(line, page, artifacts):
    page.goto(console_url(line, "/#/live"))
    page.get_by_role("heading", name="Live calls").wait_for()
    for name in NAV:
        assert page.get_by_role("navigation", name="Console").get_by_role("link", name=name, exact=True).is_visible()
    reached: list[str] = []
    for _ in range(12):  # the skip link, then the nav, in order
        page.keyboard.press("Tab")
        reached.append(page.evaluate("document.activeElement.textContent.trim()"))
    assert [name for name in NAV if name in reached] == NAV, reached
    titles = {"History": "History", "Flows": "Flows", "Agents & trunks": "Agents and trunks",
              "Dispatch": "Dispatch an outbound call", "Metrics": "Metrics", "Live calls": "Live calls"}
    for link, title in titles.items():
        page.get_by_role("link", name=link, exact=True).focus()
        page.keyboard.press("Enter")
        heading = page.get_by_role("heading", level=1, name=title)
        heading.wait_for()
        # Focus moves to the new page's heading once the page has rendered (after its data loads). A function,
        # not an expression: Playwright re-polls an expression with eval(), which the console's CSP refuses.
        page.wait_for_function("() => document.activeElement && document.activeElement.tagName === 'H1'",
                               timeout=ACTION_TIMEOUT_MS)
        assert page.evaluate("document.activeElement.textContent.trim()") == title
    page.get_by_role("link", name="Agents & trunks", exact=True).focus()
    page.keyboard.press("Enter")
    agents = page.get_by_role("region", name="Agents", exact=True)
    agents.get_by_role("rowheader", name="assistant").wait_for()
    registrations = page.get_by_role("region", name="Outbound trunks", exact=True)
    assert "loop" in registrations.inner_text() and "not registering" in registrations.inner_text()

    # Dispatch, typed and submitted from the keyboard: a 422 names the field, which is marked and focused.
    page.get_by_role("link", name="Dispatch", exact=True).focus()
    page.keyboard.press("Enter")
    page.get_by_role("heading", level=1, name="Dispatch an outbound call").wait_for()
    for name in ("Agent", "Outbound trunk", "Call to", "Participant identity", "Ringing timeout (s)"):
        field = page.get_by_label(name, exact=True)
        field.wait_for()  # the form is built once the agents and trunks are read
        assert field.count() == 1, name
    page.get_by_label("Call to", exact=True).focus()
    page.keyboard.type("not-a-number")
    page.keyboard.press("Enter")
    outcome = page.get_by_role("alert")
    outcome.wait_for()
    assert "422" in outcome.inner_text() and "metadata.sip_call_to" in outcome.inner_text()
    call_to = page.get_by_label("Call to", exact=True)
    assert call_to.get_attribute("aria-invalid") == "true"
    assert page.evaluate("document.activeElement.id") == "d-to"
    page.screenshot(path=artifacts / "dispatch-422.png", full_page=True)

    page.get_by_role("link", name="Metrics", exact=True).focus()
    page.keyboard.press("Enter")
    page.get_by_text("Turn latency p95").wait_for()
    page.get_by_role("button", name="Refresh now").wait_for()


def seed_history(line, count: int) -> None:
    """Finished calls written where the server keeps them (its own SQLite, which takes other writers)."""
    store = CallStore.open(None, line.data_dir)
    try:
        now = time.time()
        for n in range(count):
            store.save_call({"id": f"hist-{n:02d}", "direction": "inbound", "status": "hangup",
                             "end_reason": "transfer" if n % 3 == 0 else "caller_hangup",
                             "caller": f"+4930555{n:04d}", "called": "+15550100000", "created_at": now - 600 - n,
                             "ended_at": now - 590 - n})
    finally:
        store.close()


def test_history_search_filters_and_pages(line, page, artifacts):
    seed_history(line, 30)
    page.goto(console_url(line, "/#/history"))
    page.get_by_role("searchbox", name="Number (caller or called)").fill("+4930555")
    page.get_by_role("combobox", name="End reason").select_option("transfer")
    page.get_by_role("button", name="Search").press("Enter")
    count = page.locator("#history-count")
    count.get_by_text("Calls 1–10 of 10").wait_for()  # n = 0, 3, ... 27
    rows = page.locator("table.calls tbody tr")
    assert rows.count() == 10
    assert all("transfer" in text for text in rows.all_inner_texts())
    assert "#/history?number=%2B4930555&end_reason=transfer" in page.url
    page.screenshot(path=artifacts / "history-filtered.png", full_page=True)

    page.get_by_role("button", name="Clear filters").press("Enter")
    page.get_by_role("searchbox", name="Number (caller or called)").fill("4930555")
    page.get_by_role("button", name="Search").press("Enter")
    count.get_by_text("Calls 1–25 of 30").wait_for()
    page.get_by_role("link", name="Next page").press("Enter")
    count.get_by_text("Calls 26–30 of 30").wait_for()
    assert rows.count() == 5 and "+49305550029" in rows.last.inner_text()  # the oldest, last
    page.get_by_role("searchbox", name="Number (caller or called)").fill("no such number")
    page.get_by_role("button", name="Search").press("Enter")
    page.get_by_text("No calls match.").wait_for()
