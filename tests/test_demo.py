"""The demo in a real browser: Debian's chromium driven by Playwright against a real server whose
clock the test moves."""

from __future__ import annotations

import pytest

from .conftest import WAIT, eventually, run_server

pytestmark = pytest.mark.browser

@pytest.fixture
async def demo():
    async with run_server(demo=True) as server:
        yield server


async def open_page(browser, url: str):
    """A new tab: in a new browser profile when handed the browser, in the same one when handed a
    context."""
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    await page.goto(url)
    await page.wait_for_function("() => window.nudge && window.nudge.state === 'open'", timeout=WAIT * 1000)
    return page, errors


def session_on(server, path: str):
    return next((s.state for s in server.hub.sessions.values() if s.state.page == path and s.conn), None)


def outcomes(server, campaign: str) -> dict[str, int]:
    return server.hub.results.get(campaign)


async def test_scroll_and_dwell_banner_is_shown_and_its_click_reaches_the_server(browser, demo):
    page, errors = await open_page(browser, f"{demo.http}/article.html")
    await eventually(lambda: session_on(demo, "/article.html"), "the page view")
    await page.mouse.wheel(0, 100_000)
    await eventually(lambda: (s := session_on(demo, "/article.html")) and s.scroll_depth >= 50, "the scroll")
    await demo.advance(5)  # 5 s on the page, by the server's clock
    banner = page.locator('nudge-message[data-campaign="read-article"]')
    await banner.wait_for(timeout=WAIT * 1000)
    assert await banner.get_attribute("data-kind") == "banner"
    assert "Enjoying the read?" in await banner.locator("h2, strong").first.text_content()
    await eventually(lambda: outcomes(demo, "read-article").get("shown") == 1, "shown")
    await banner.locator(".nudge-cta").click()
    await eventually(lambda: outcomes(demo, "read-article").get("clicked") == 1, "clicked")
    assert errors == []


async def test_cart_abandoned_modal_names_the_item_and_escape_dismisses_it(browser, demo):
    page, errors = await open_page(browser, f"{demo.http}/")
    await page.locator("button.add-to-cart").first.click()
    await eventually(lambda: any(v.state.cart.count for v in demo.hub.visitors.values()), "the cart add")
    name = next(iter(next(v for v in demo.hub.visitors.values() if v.state.cart.count).state.cart.names))
    await demo.advance(30)  # the welcome slide-in shows at 4 s; the cart reminder waits behind it
    welcome = page.locator('nudge-message[data-campaign="welcome"]')
    await welcome.wait_for(timeout=WAIT * 1000)
    assert await page.locator('nudge-message[data-campaign="cart-abandoned"]').count() == 0
    await welcome.locator(".nudge-dismiss").click()
    modal = page.locator('nudge-message[data-campaign="cart-abandoned"]')
    await modal.wait_for(timeout=WAIT * 1000)
    dialog = modal.locator('[role="dialog"]')
    assert await dialog.get_attribute("aria-modal") == "true"
    assert name in await dialog.text_content()
    focused = await page.evaluate("() => { const h = document.querySelector('nudge-message[data-campaign=cart-abandoned]'); return !!(h && h.shadowRoot && h.shadowRoot.activeElement); }")
    assert focused, "focus moves into the modal"
    await page.keyboard.press("Escape")
    await modal.wait_for(state="detached", timeout=WAIT * 1000)
    await eventually(lambda: outcomes(demo, "cart-abandoned").get("dismissed") == 1, "dismissed")
    assert errors == []


async def test_text_from_event_data_is_never_markup(browser, demo):
    page, errors = await open_page(browser, f"{demo.http}/checkout.html")
    await page.evaluate("""() => nudge.track('add_to_cart', {id: 'x', name: '<img src=x onerror="window.pwned=1">', price: 99})""")
    toast = page.locator('nudge-message[data-campaign="big-spender"]')
    await toast.wait_for(timeout=WAIT * 1000)
    assert '<img src=x onerror="window.pwned=1"> ships free.' in await toast.locator('[role="status"]').text_content()
    assert await toast.locator("img").count() == 0
    assert await page.evaluate("() => window.pwned") is None


async def test_the_session_survives_a_page_navigation(browser, demo):
    page, errors = await open_page(browser, f"{demo.http}/")
    await eventually(lambda: session_on(demo, "/"), "the first page view")
    first = session_on(demo, "/").id
    await page.goto(f"{demo.http}/article.html")
    await page.wait_for_function("() => window.nudge && window.nudge.state === 'open'", timeout=WAIT * 1000)
    await eventually(lambda: session_on(demo, "/article.html"), "the second page view")
    assert session_on(demo, "/article.html").id == first
    assert session_on(demo, "/article.html").counters["page_view"] == 2


async def test_a_cart_reminder_due_after_the_tab_closed_shows_in_a_new_tab(browser, demo):
    """Add to cart, close the tab 2 s later, open a new tab 34 s later (the demo's window: 30 s)."""
    context = await browser.new_context()  # one browser profile: the visitor id is shared by its tabs
    page, errors = await open_page(context, f"{demo.http}/")
    await page.locator("button.add-to-cart").first.click()
    await eventually(lambda: any(v.state.cart.count for v in demo.hub.visitors.values()), "the cart add")
    session = next(s for s in demo.hub.sessions.values() if s.visitor.state.cart.count)
    await demo.advance(2)
    await page.close()
    await eventually(lambda: session.conn is None, "the tab closing")
    await demo.advance(32)
    assert session.state.id in demo.hub.sessions  # within the grace: resumable, yet nobody is looking
    again, errors = await open_page(context, f"{demo.http}/")
    modal = again.locator('nudge-message[data-campaign="cart-abandoned"]')
    await modal.wait_for(timeout=WAIT * 1000)
    await eventually(lambda: outcomes(demo, "cart-abandoned").get("shown") == 1, "shown")
    assert errors == []


def _overlap(a: dict, b: dict) -> bool:
    return a["x"] < b["x"] + b["width"] and b["x"] < a["x"] + a["width"] and a["y"] < b["y"] + b["height"] and b["y"] < a["y"] + a["height"]


async def test_on_a_phone_the_welcome_slidein_leaves_the_first_product_uncovered(browser, demo):
    context = await browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True, reduced_motion="reduce")  # measured at rest
    page = await context.new_page()
    await page.goto(f"{demo.http}/")
    await page.wait_for_function("() => window.nudge && window.nudge.state === 'open'", timeout=WAIT * 1000)
    await eventually(lambda: session_on(demo, "/"), "the page view")
    await demo.advance(5)
    welcome = page.locator('nudge-message[data-campaign="welcome"]')
    await welcome.wait_for(timeout=WAIT * 1000)
    box = await welcome.locator(".box").bounding_box()
    assert box["width"] >= 390 - 1, "a bottom sheet, the width of the screen"
    assert abs(box["y"] + box["height"] - 844) <= 1, "at the bottom of the screen"
    first = page.locator(".product").first
    for part in ("h2", ".price", "button.add-to-cart"):
        covered = await first.locator(part).bounding_box()
        assert not _overlap(box, covered), f"the message covers the first product's {part}"
    # Still reachable and closable from the keyboard; the sheet is announced as a dialog.
    assert await welcome.locator('[role="dialog"]').count() == 1
    body = welcome.locator(".nudge-body")
    assert "Add something to your cart" in await body.text_content(), "the body stays in the dialog, for screen readers"
    more = welcome.locator(".nudge-more")
    assert await more.get_attribute("aria-expanded") == "false"
    await more.focus()
    await page.keyboard.press("Enter")
    assert await more.get_attribute("aria-expanded") == "true"
    opened = await body.bounding_box()
    assert opened["height"] > 10 and opened["width"] > 200, "More opens the body"
    await welcome.locator(".nudge-dismiss").focus()
    await page.keyboard.press("Escape")
    await welcome.wait_for(state="detached", timeout=WAIT * 1000)
    await context.close()


async def test_on_a_phone_a_toast_is_a_bottom_sheet_that_is_still_announced(browser, demo):
    context = await browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True, reduced_motion="reduce")
    page = await context.new_page()
    await page.goto(f"{demo.http}/checkout.html")
    await page.wait_for_function("() => window.nudge && window.nudge.state === 'open'", timeout=WAIT * 1000)
    await page.evaluate("() => nudge.track('add_to_cart', {id: 'teapot', name: 'Cast-iron teapot', price: 48})")
    toast = page.locator('nudge-message[data-campaign="big-spender"]')
    await toast.wait_for(timeout=WAIT * 1000)
    box = await toast.locator(".box").bounding_box()
    assert box["width"] >= 389 and abs(box["y"] + box["height"] - 844) <= 1 and box["height"] < 90
    region = toast.locator('[role="status"]')
    assert await region.get_attribute("aria-live") == "polite"
    assert "Cast-iron teapot ships free." in await region.text_content(), "the live region still holds the body"
    await toast.locator(".nudge-dismiss").focus()
    await page.keyboard.press("Escape")
    await toast.wait_for(state="detached", timeout=WAIT * 1000)
    await context.close()
