"""Try it on my device, in Chromium: the operator makes a test link of an unsaved draft in the
editor; a second browser opens it and the draft fires there, its decision and why shown live
in the editor; a third browser on the same page never sees it; nothing is counted; once the
mark expires the test device is an ordinary visitor again and the link does nothing."""

from __future__ import annotations

import time

import pytest
from nudge.runtime.clock import FakeClock

from ..conftest import eventually, run_server
from ..snippet.test_snippet import LOADER, Shop
from .test_editor_browser import MS, SECRET, axe_violations, shot, signed_in

pytestmark = [pytest.mark.browser, pytest.mark.integration]

CAMPAIGNS = """
campaigns:
  - id: hello
    trigger: {event: click}
    message: {kind: toast, body: Hi}
"""


def shop_page(server) -> str:
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Shop</title>
<script>{LOADER % server.http}
nudge('init', {{siteKey: 'pk_test'}});</script></head><body><main><h1>The shop</h1></main></body></html>"""


@pytest.fixture
def shop():
    site = Shop()
    yield site
    site.close()


def announced(page):
    return page.locator('nudge-message[data-campaign="announcement"]')


async def plain_visit_seen(server, page) -> str:
    """Wait until the page's snippet is connected and its page view applied; its visitor id."""
    await page.wait_for_function("() => window.nudge && nudge.state === 'open' && !nudge.visitorId().startsWith('try_')", timeout=MS)
    visitor = await page.evaluate("() => nudge.visitorId()")
    await eventually(lambda: any(live.state.visitor == visitor and live.state.counters.get("page_view")
                                 for live in server.hub.sessions.values()), "the page view applied")
    return visitor


async def test_a_draft_fires_on_the_test_device_only_live_in_the_editor_and_expires(browser, shop):
    # The server's clock starts at the browser's time: the snippet reads the mark's expiry too.
    async with run_server(CAMPAIGNS, clock=FakeClock(time.time()), secret_keys=[SECRET], origins=[shop.url]) as server:
        shop.pages["/"] = shop_page(server)
        before = server.hub.results.snapshot()
        context, editor, errors = await signed_in(browser, server, 1280, 900)
        await editor.locator("#start-from").select_option("announce")
        await editor.locator("#create").click()
        await editor.locator("#problems-note").filter(has_text="valid").wait_for(timeout=MS)
        await editor.locator("#f-title").fill("Free shipping, just for you")
        await editor.locator("#problems-note").filter(has_text="valid").wait_for(timeout=MS)
        await editor.get_by_role("button", name="Try it on my device").click()
        link = editor.locator("#try-link")
        await link.wait_for(state="visible", timeout=MS)
        url = await link.get_attribute("href")
        assert url.startswith(f"{shop.url}/#nudge-try=t1.")
        assert await editor.locator("#try-qr-code path").count() == 1
        assert "announcement" not in server.hub.engine.by_id, "a draft: not in force"

        # The operator's phone opens the link: the draft fires there.
        device_context = await browser.new_context(viewport={"width": 390, "height": 844})
        device = await device_context.new_page()
        await device.goto(url)
        message = announced(device)
        await message.wait_for(timeout=MS)
        assert "Free shipping, just for you" in await message.locator(".box").text_content()
        assert await device.evaluate("() => location.hash") == "", "the mark leaves the address"
        assert (await device.evaluate("() => nudge.visitorId()")).startswith("try_")

        # Live in the editor: the decision and its why.
        row = editor.locator('#try-decisions tr[data-campaign="announcement"][data-outcome="sent"]')
        await row.wait_for(timeout=MS)
        await row.get_by_text("Why").click()
        why = await row.locator("ul.checks").text_content()
        assert "event: fires on 'page_view'" in why and "caps, limits, cooldown, quiet hours" in why
        await editor.locator("#try-now ul.checks").wait_for(timeout=MS)
        await editor.locator('#try-decisions tr[data-campaign="announcement"][data-outcome="shown"]').wait_for(timeout=MS)
        await shot(editor, "editor-try-1280", "#try-section")
        assert await axe_violations(editor) == []

        # Someone else on the same page: nothing.
        other_context = await browser.new_context()
        other = await other_context.new_page()
        await other.goto(f"{shop.url}/")
        visitor = await plain_visit_seen(server, other)
        assert await announced(other).count() == 0
        assert not [live for live in server.hub.sessions.values() if live.state.visitor == visitor and live.trace]
        assert server.hub.results.snapshot() == before, "nothing counted"
        assert not server.hub.recent

        # The mark expires: the test device is an ordinary visitor again, and the link does nothing.
        await server.advance(3601)
        await device.wait_for_function("() => nudge.state === 'open' && !nudge.visitorId().startsWith('try_')", timeout=MS)
        await device.goto(url)
        await plain_visit_seen(server, device)
        assert await announced(device).count() == 0
        assert server.hub.results.snapshot() == before
        await editor.locator("#try-note").filter(has_text="The test is over").wait_for(timeout=MS)
        assert [e for e in errors if "404 (Not Found)" not in e] == []  # the browser logs the answer "over"
        for ctx in (context, device_context, other_context):
            await ctx.close()
