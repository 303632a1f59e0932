"""Before publishing, in Chromium: the marketer opens the demo's welcome, changes its cap in the
draft, replays it against the recorded sample traffic and reads the draft's fires, suppressions
by reason and messages per visitor per day beside the campaign in force; an edit after that says
the result is of an older draft; nothing is published. Screenshots at 1280 px and 390 px go to
docs/images/ (NUDGE_SCREENSHOTS)."""

from __future__ import annotations

import shutil

import pytest
from nudge.runtime.clock import FakeClock

from ..conftest import run_server
from .test_draft_replay import DEMO, LOG_END, SAMPLE
from .test_editor_browser import MS, axe_violations, shot

pytestmark = [pytest.mark.browser, pytest.mark.integration]

SECRET = "sk_test_replay"


@pytest.fixture
async def server(tmp_path):
    directory = tmp_path / "log"
    directory.mkdir()
    shutil.copy(SAMPLE, directory / "nudge-events-20231114T220000-000.jsonl.gz")
    async with run_server(DEMO, clock=FakeClock(LOG_END), secret_keys=[SECRET], record=directory) as running:
        yield running


async def editing_welcome(browser, server, width: int, height: int):
    context = await browser.new_context(viewport={"width": width, "height": height}, reduced_motion="reduce")
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    await page.goto(f"{server.http}/dashboard#campaigns")
    await page.locator("#key").fill(SECRET)
    await page.keyboard.press("Enter")
    await page.get_by_role("button", name="Edit welcome").click()
    await page.locator("#problems-note").filter(has_text="valid").wait_for(timeout=MS)
    return context, page, errors


async def cell(page, row: str, column: int) -> str:
    return (await page.locator(f'#replay-table tr[data-row="{row}"] td').nth(column).text_content()).strip()


@pytest.mark.parametrize("width,height", [(1280, 900), (390, 844)])
async def test_the_marketer_replays_a_draft_beside_the_campaign_in_force(browser, server, width, height):
    context, page, errors = await editing_welcome(browser, server, width, height)
    # The draft: once in a visitor's lifetime instead of once a day, typed in the YAML.
    text = await page.locator("#yaml").input_value()
    assert "per_day: 1" in text
    await page.locator("#yaml").fill(text.replace("per_day: 1", "lifetime: 1"))
    await page.locator("#problems-note").filter(has_text="valid").wait_for(timeout=MS)
    # By keyboard: the window, then the button.
    await page.locator("#replay-days").focus()
    await page.locator("#replay-days").select_option("14")
    await page.keyboard.press("Tab")
    assert await page.evaluate("() => document.activeElement.id") == "replay"
    await page.keyboard.press("Enter")
    await page.locator("#replay-table").wait_for(timeout=MS * 6)
    summary = await page.locator("#replay-summary").text_content()
    assert summary.startswith("5,776 events from 200 visitors")
    # Draft, then in force: docs/operate.md's figures.
    assert (await cell(page, "fired", 0), await cell(page, "fired", 1)) == ("158", "204")
    assert (await cell(page, "visitors", 0), await cell(page, "visitors", 1)) == ("158", "158")
    assert (await cell(page, "suppressed:cap:lifetime", 0), await cell(page, "suppressed:cap:lifetime", 1)) == ("249", "0")
    assert (await cell(page, "suppressed:cap:per_day", 0), await cell(page, "suppressed:cap:per_day", 1)) == ("0", "201")
    assert (await cell(page, "per-day:1", 0), await cell(page, "per-day:1", 1)) == ("158", "204")
    assert "lifetime cap" in await page.locator('#replay-table tr[data-row="suppressed:cap:lifetime"] th').text_content()
    await shot(page, f"editor-replay-{width}", "#replay-section")
    assert await axe_violations(page) == []

    # Another edit: the result shown is of the older draft, and says so.
    await page.locator("#f-title").fill("Welcome!")
    await page.locator("#replay-note").filter(has_text="changed since this replay").wait_for(timeout=MS)

    # Nothing was published.
    welcome = server.hub.engine.by_id["welcome"]
    assert welcome.caps.per_day == 1 and welcome.caps.lifetime is None
    assert errors == []
    await context.close()


async def test_without_an_event_log_the_editor_says_so(browser, tmp_path):
    async with run_server(DEMO, secret_keys=[SECRET]) as server:
        context, page, errors = await editing_welcome(browser, server, 1280, 900)
        await page.locator("#replay").click()
        await page.locator("#replay-note").filter(has_text="not recording").wait_for(timeout=MS)
        assert await page.locator("#replay-table").count() == 0
        # The browser logs the 404 itself; the page raised nothing.
        assert [e for e in errors if "status of 404" not in e] == []
        await context.close()
