"""The campaign editor in Chromium, by keyboard where a person would type: create a campaign from a
starting point, break it and see the field's error, fix it, preview it at both widths, publish it,
roll it back; each starting point valid as it is; the page passes axe-core with no serious
violation. Screenshots of each screen at 1280 px and 390 px go to docs/images/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ..conftest import WAIT, run_server

pytestmark = [pytest.mark.browser, pytest.mark.integration]

SECRET = "sk_test_editor"
CAMPAIGNS = """
campaigns:
  - id: hello
    trigger: {event: click}
    message: {kind: toast, body: Hi}
"""
ROOT = Path(__file__).resolve().parents[2]
AXE = ROOT / "client_js" / "node_modules" / "axe-core" / "axe.min.js"
# NUDGE_SCREENSHOTS=docs/images: the screenshots docs/operate.md shows, taken again.
IMAGES = Path(os.environ["NUDGE_SCREENSHOTS"]) if os.environ.get("NUDGE_SCREENSHOTS") else None
MS = WAIT * 1000


async def signed_in(browser, server, width: int, height: int):
    context = await browser.new_context(viewport={"width": width, "height": height}, reduced_motion="reduce")
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("dialog", lambda dialog: dialog.accept())
    await page.goto(f"{server.http}/dashboard#campaigns")
    await page.locator("#key").fill(SECRET)
    await page.keyboard.press("Enter")
    await page.locator("#editor").wait_for(state="visible", timeout=MS)
    await page.locator('#campaign-list tr[data-campaign="hello"]').wait_for(timeout=MS)
    return context, page, errors


async def axe_violations(page) -> list[str]:
    """Serious and critical violations by axe-core (from npm), run in the page."""
    if not AXE.exists():
        pytest.fail(f"{AXE} missing: run scripts/setup --tests (npm ci in client_js)", pytrace=False)
    await page.add_script_tag(content=AXE.read_text())
    results = await page.evaluate("() => axe.run(document, {resultTypes: ['violations']})")
    return [f"{v['id']} ({v['impact']}): {v['help']} — {[n['target'] for n in v['nodes']][:3]}"
            for v in results["violations"] if v["impact"] in ("serious", "critical")]


async def shot(page, name: str, part: str | None = None) -> None:
    """The whole page, or the element ``part`` names."""
    if IMAGES is None:
        return
    IMAGES.mkdir(parents=True, exist_ok=True)
    if part:
        await page.locator(part).screenshot(path=str(IMAGES / f"{name}.png"))
    else:
        await page.screenshot(path=str(IMAGES / f"{name}.png"), full_page=True)


async def preview_shows(page, frame_id: str, kind: str) -> dict:
    """The message the snippet's renderer put on the preview page, and its box."""
    await page.wait_for_function(f"() => document.getElementById('{frame_id}').getAttribute('data-shown') === '{kind}'", timeout=MS)
    frame = page.frame_locator(f"#{frame_id}")
    host = frame.locator(f'nudge-message[data-kind="{kind}"]')
    await host.wait_for(timeout=MS)
    return {"text": await host.locator(".box").text_content(),
            "box": await frame.locator("body").evaluate(
                "b => { const r = document.querySelector('nudge-message').shadowRoot.querySelector('.box').getBoundingClientRect();"
                " return {x: r.x, y: r.y, width: r.width, height: r.height, vw: innerWidth, vh: innerHeight}; }")}


@pytest.fixture
async def server():
    async with run_server(CAMPAIGNS, secret_keys=[SECRET]) as running:
        yield running


async def test_create_break_fix_preview_publish_and_roll_back(browser, server):
    context, page, errors = await signed_in(browser, server, 1280, 900)
    await shot(page, "editor-list-1280")
    # Create from a starting point, by keyboard.
    await page.locator("#start-from").focus()
    await page.keyboard.press("End")  # the last choice ...
    await page.keyboard.press("Home")  # ... and back to the first: cart abandonment
    await page.keyboard.press("Tab")
    await page.keyboard.press("Enter")
    await page.locator("#problems-note").filter(has_text="valid").wait_for(timeout=MS)
    assert await page.locator("#f-id").input_value() == "cart-abandoned"
    assert "absent: purchase" in await page.locator("#yaml").input_value()
    assert await page.evaluate("() => document.activeElement.id") == "f-id"

    # Preview: the server's rendering for the sample visitor, through the snippet's renderer.
    desktop = await preview_shows(page, "preview-desktop", "modal")
    phone = await preview_shows(page, "preview-phone", "modal")
    assert "Still thinking about Stoneware mug?" in desktop["text"]
    assert "2 items, $60.50" in desktop["text"]
    assert desktop["box"]["vw"] == 1280 and phone["box"]["vw"] == 390
    assert phone["box"]["width"] <= 390 - 16 and desktop["box"]["width"] == 440
    assert await page.locator("#preview-warnings li").count() == 0
    # An empty cart: the title's template renders empty, and the editor says so.
    await page.locator("#s-cart").fill("")
    await page.locator("#preview-warnings li").filter(has_text="cart.names | first").wait_for(timeout=MS)
    await page.locator("#s-cart").fill("Oak tray, 34, 1")
    # The trigger event's properties fill {{ event.… }}.
    await page.locator("#f-body").fill("{{ event.name }} ships free.")
    await page.wait_for_function("() => { const h = document.getElementById('preview-phone').contentDocument.querySelector('nudge-message');"
                                 " return h && h.shadowRoot.textContent.includes('Cast-iron teapot ships free.'); }", timeout=MS)
    await page.locator("#s-event").fill("")
    await page.locator("#preview-warnings li").filter(has_text="event.name").wait_for(timeout=MS)
    await page.locator("#s-event").fill("name: Cast-iron teapot")
    await page.locator("#f-body").fill("Your cart is waiting: {{ cart.count }} item{{ 's' if cart.count != 1 }}, {{ cart.value | money }}.")

    # Break it in the form: the field's own error, in nudge check's words, with the YAML's line.
    within = page.locator("#f-within")
    await within.fill("")
    await within.type("30 minutes")
    error = page.locator("#err-f-within")
    await error.wait_for(timeout=MS)
    assert await within.get_attribute("aria-invalid") == "true"
    assert "trigger.within" in await page.locator("#problems").text_content()
    assert await page.locator("#save").is_disabled()
    line = await page.locator("#problems button.link").first.text_content()
    yaml_lines = (await page.locator("#yaml").input_value()).splitlines()
    assert yaml_lines[int(line.split()[-1]) - 1].strip().startswith("within: 30 minutes")
    await shot(page, "editor-error-1280")
    # Fix it in the YAML: the form follows.
    text = await page.locator("#yaml").input_value()
    await page.locator("#yaml").fill(text.replace("within: 30 minutes", "within: 20m"))
    await page.locator("#problems-note").filter(has_text="valid").wait_for(timeout=MS)
    assert await within.input_value() == "20m"
    assert await page.locator("#err-f-within").count() == 0

    # Each kind and position, at both widths.
    for kind in ("banner", "toast", "slidein", "modal"):
        await page.locator("#f-kind").select_option(kind)
        if kind == "banner":
            await page.locator("#f-position").select_option("bottom")
        await preview_shows(page, "preview-desktop", kind)
        phone = await preview_shows(page, "preview-phone", kind)
        if kind in ("toast", "slidein"):  # a one-line sheet at the bottom of a phone
            assert phone["box"]["width"] == 390 and abs(phone["box"]["y"] + phone["box"]["height"] - phone["box"]["vh"]) <= 1
        if kind == "banner":
            assert abs(phone["box"]["y"] + phone["box"]["height"] - phone["box"]["vh"]) <= 1
            await page.locator("#f-position").select_option("")
    await page.locator("#problems-note").filter(has_text="valid").wait_for(timeout=MS)
    await shot(page, "editor-preview-1280")

    # Publish: in force at once, version 1.
    await page.locator("#save").focus()
    await page.keyboard.press("Enter")
    await page.locator("#save-note").filter(has_text="Published").wait_for(timeout=MS)
    campaign = server.hub.engine.by_id["cart-abandoned"]
    assert campaign.trigger.within == 20 * 60
    await page.locator('#campaign-list tr[data-campaign="cart-abandoned"]').wait_for(timeout=MS)

    # A second version, then back to the first in one click.
    await page.locator("#f-title").fill("Forgot something?")
    await page.locator("#problems-note").filter(has_text="valid").wait_for(timeout=MS)
    await page.locator("#save").click()
    await page.locator("#save-note").filter(has_text="version 2").wait_for(timeout=MS)
    assert server.hub.engine.by_id["cart-abandoned"].message.texts["title"][0] == "Forgot something?"
    await page.locator('#history tr[data-version="1"]').wait_for(timeout=MS)
    await page.get_by_role("button", name="Changes in version 2").click()
    diff = await page.locator("#diff").text_content()
    assert "+  title: Forgot something?" in diff
    await shot(page, "editor-history-1280")
    await page.get_by_role("button", name="Roll back to version 1").click()
    await page.locator("#save-note").filter(has_text="Rolled back to version 1").wait_for(timeout=MS)
    assert server.hub.engine.by_id["cart-abandoned"].message.texts["title"][0] == "Still thinking about {{ cart.names | first }}?"
    assert await page.locator("#f-title").input_value() == "Still thinking about {{ cart.names | first }}?"

    # Pause and resume from the list.
    await page.get_by_role("button", name="Pause cart-abandoned").click()
    await page.locator('#campaign-list tr[data-campaign="cart-abandoned"]').filter(has_text="paused").wait_for(timeout=MS)
    paused = next(c for c in server.app.state.editor.document["campaigns"] if c["id"] == "cart-abandoned")
    assert paused.get("enabled") is False
    await page.get_by_role("button", name="Resume cart-abandoned").click()
    await page.locator('#campaign-list tr[data-campaign="cart-abandoned"]').filter(has_text="live").wait_for(timeout=MS)

    assert await axe_violations(page) == []
    assert errors == []
    await context.close()


async def test_every_starting_point_is_valid_and_delete_asks_first(browser, server):
    context, page, errors = await signed_in(browser, server, 1280, 900)
    for value in ("cart", "scroll", "exit", "reengage", "announce"):
        await page.locator("#start-from").select_option(value)
        await page.locator("#create").click()
        await page.locator("#problems-note").filter(has_text="valid").wait_for(timeout=MS)
        assert await page.locator("#problems li").count() == 0, value
    await page.get_by_role("button", name="Delete hello").click()
    await page.locator("#list-note").filter(has_text="hello deleted").wait_for(timeout=MS)
    assert "hello" not in server.hub.engine.by_id
    assert errors == []
    await context.close()


async def test_on_a_phone_the_editor_works_and_passes_axe(browser, server):
    context, page, errors = await signed_in(browser, server, 390, 844)
    await shot(page, "editor-list-390")
    await page.locator("#create").click()
    await page.locator("#problems-note").filter(has_text="valid").wait_for(timeout=MS)
    await preview_shows(page, "preview-phone", "modal")
    width = await page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390, "nothing wider than the screen"
    await page.locator("#f-within").fill("soon")
    await page.locator("#err-f-within").wait_for(timeout=MS)
    await shot(page, "editor-error-390")
    await page.locator("#f-within").fill("30m")
    await page.locator("#problems-note").filter(has_text="valid").wait_for(timeout=MS)
    await shot(page, "editor-preview-390")
    await page.locator("#save").click()
    await page.locator("#save-note").filter(has_text="Published").wait_for(timeout=MS)
    await page.locator("#f-title").fill("Forgot something?")
    await page.locator("#save").click()
    await page.locator("#save-note").filter(has_text="version 2").wait_for(timeout=MS)
    await page.get_by_role("button", name="Changes in version 2").click()
    await shot(page, "editor-history-390", "#edit > section:last-of-type")
    await page.get_by_role("button", name="Roll back to version 1").click()
    await page.locator("#save-note").filter(has_text="Rolled back to version 1").wait_for(timeout=MS)
    assert await axe_violations(page) == []
    assert errors == []
    await context.close()


async def test_results_over_time_plot_each_variant_with_no_verdict_yet(browser):
    from .test_editor import OFFER, visit

    async with run_server(OFFER, secret_keys=[SECRET]) as offer_server:
        for _hour in range(3):
            for i in range(3):
                await visit(offer_server, i == 0, i == 1)
            await offer_server.advance(3600)
        for width, height in ((1280, 900), (390, 844)):
            context = await browser.new_context(viewport={"width": width, "height": height}, reduced_motion="reduce")
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc, errors=errors: errors.append(str(exc)))
            await page.goto(f"{offer_server.http}/dashboard#campaigns")
            await page.locator("#key").fill(SECRET)
            await page.keyboard.press("Enter")
            await page.get_by_role("button", name="Edit offer").click()
            await page.locator("#results-section").wait_for(state="visible", timeout=MS)
            chart = page.locator('svg.series[data-counter="shown"]')
            await chart.wait_for(timeout=MS)
            assert await page.locator("svg.series").count() == 3
            lines = chart.locator("polyline")
            assert sorted([await lines.nth(i).get_attribute("data-variant") for i in range(await lines.count())]) == ["a", "b"]
            assert await chart.locator("circle").count() == 2 * 3  # three hours, each variant
            assert "No verdict yet" in await page.locator("#results-over-time .comparison").text_content()
            label = await chart.get_attribute("aria-label")
            shown = sum(int(part.split()[-1]) for part in label.split(": ", 1)[1].split(", "))
            assert shown == 9
            await page.locator("#r-bucket").select_option("day")
            await page.locator('svg.series[data-counter="shown"] circle').first.wait_for(timeout=MS)
            await page.wait_for_function("() => document.querySelectorAll('svg.series[data-counter=shown] circle').length <= 4", timeout=MS)
            await page.locator("#r-bucket").select_option("hour")
            await page.wait_for_function("() => document.querySelectorAll('svg.series[data-counter=shown] circle').length === 6", timeout=MS)
            await page.locator("#results-section").scroll_into_view_if_needed()
            await shot(page, f"editor-results-{width}", "#results-section")
            assert await axe_violations(page) == []
            assert errors == []
            await context.close()


async def tab_to(page, element_id: str, limit: int = 80, back: bool = False) -> None:
    """Press Tab (or Shift+Tab) until the focus is on ``element_id``: it is reachable by keyboard."""
    for _ in range(limit):
        if await page.evaluate("() => document.activeElement && document.activeElement.id") == element_id:
            return
        await page.keyboard.press("Shift+Tab" if back else "Tab")
    raise AssertionError(f"#{element_id} not reached with the keyboard")


async def test_keyboard_only_create_break_fix_and_publish(browser, server):
    context = await browser.new_context(viewport={"width": 1280, "height": 900}, reduced_motion="reduce")
    page = await context.new_page()
    await page.goto(f"{server.http}/dashboard")
    await page.locator("#key").focus()
    await page.keyboard.type(SECRET)
    await page.keyboard.press("Enter")
    await page.locator("#board").wait_for(state="visible", timeout=MS)
    await tab_to(page, "to-campaigns")
    await page.keyboard.press("Enter")
    await page.locator('#campaign-list tr[data-campaign="hello"]').wait_for(timeout=MS)
    await tab_to(page, "start-from")
    await page.keyboard.press("ArrowDown")  # scroll and dwell prompt
    await tab_to(page, "create")
    await page.keyboard.press("Enter")
    await page.locator("#problems-note").filter(has_text="valid").wait_for(timeout=MS)
    assert await page.evaluate("() => document.activeElement.id") == "f-id"
    await page.keyboard.press("Control+A")
    await page.keyboard.type("keyboard-prompt")
    await tab_to(page, "f-scroll")
    await page.keyboard.press("Control+A")
    await page.keyboard.type("150")
    await page.locator("#err-f-scroll").wait_for(timeout=MS)
    assert "trigger.scroll" in await page.locator("#problems").text_content()
    await page.keyboard.press("Control+A")
    await page.keyboard.type("60")
    await page.locator("#problems-note").filter(has_text="valid").wait_for(timeout=MS)
    await tab_to(page, "yaml")  # the text pane, then on to the save button
    await tab_to(page, "save")
    await page.keyboard.press("Enter")
    await page.locator("#save-note").filter(has_text="Published").wait_for(timeout=MS)
    assert server.hub.engine.by_id["keyboard-prompt"].trigger.scroll == 60
    await tab_to(page, "close-edit")
    await page.keyboard.press("Enter")
    assert await page.evaluate("() => document.activeElement.id") == "create"
    await context.close()


async def test_a_change_made_elsewhere_meanwhile_is_not_overwritten(browser, server):
    from .test_admin import call

    context, page, errors = await signed_in(browser, server, 1280, 900)
    await page.get_by_role("button", name="Edit hello").click()
    await page.locator("#problems-note").filter(has_text="valid").wait_for(timeout=MS)
    # Someone else saves hello through the API while it is open here.
    status, _, _ = await call(f"{server.http}/api/campaigns/hello", "PUT",
                              {"trigger": {"event": "click"}, "message": {"kind": "toast", "body": "Theirs"}}, key=SECRET,
                              headers={"If-Match": '"1"'})
    assert status == 200
    await page.locator("#f-body").fill("Mine")
    await page.locator("#save").click()
    await page.locator("#save-note").filter(has_text="someone changed it").wait_for(timeout=MS)
    assert server.hub.engine.by_id["hello"].message.texts["body"][0] == "Theirs"
    assert [e for e in errors if "412 (Precondition Failed)" not in e] == []  # the browser logs the refusal
    await context.close()


async def test_the_sign_in_and_the_live_board_pass_axe_too(browser, server):
    context = await browser.new_context(viewport={"width": 390, "height": 844}, reduced_motion="reduce")
    page = await context.new_page()
    await page.goto(f"{server.http}/dashboard")
    await page.locator("#login").wait_for(state="visible", timeout=MS)
    assert await axe_violations(page) == []
    await page.locator("#key").fill(SECRET)
    await page.keyboard.press("Enter")
    await page.locator("#board").wait_for(state="visible", timeout=MS)
    await page.locator('.campaign[data-campaign="hello"]').wait_for(timeout=MS)
    assert await axe_violations(page) == []
    await context.close()
