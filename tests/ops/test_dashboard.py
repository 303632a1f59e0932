"""The live dashboard in Chromium: the key asked once, numbers moving under load, the charts."""

from __future__ import annotations

import asyncio

import pytest

from ..conftest import WAIT, Client, run_server

pytestmark = [pytest.mark.browser, pytest.mark.integration]

SECRET = "sk_test_dashboard"
CAMPAIGNS = """
campaigns:
  - id: offer
    trigger: {event: click}
    variants: [{id: a, weight: 1}, {id: b, weight: 1}, {id: holdout, weight: 1, holdout: true}]
    goal: {event: purchase, within: 1d}
    message: {kind: toast, body: "Offer"}
  - id: cart
    trigger: {event: add_to_cart, absent: purchase, within: 15m}
    message: {kind: modal, title: "Your cart"}
"""


async def load(server, visitors: int) -> None:
    """Visitors who click, half of them adding to the cart and a third buying."""
    clients = [await Client.connect(server.url) for _ in range(visitors)]
    for i, client in enumerate(clients):
        await client.track("click")
        if i % 2 == 0:
            await client.track("add_to_cart", {"id": "mug", "name": "Mug", "price": 3})
        if i % 3 == 0:
            await client.track("purchase", {"value": 3})


async def number(page, selector: str) -> float:
    text = (await page.locator(selector).text_content()).strip()
    return float(text) if text not in ("", "–") else -1


async def test_the_dashboard_loads_moves_and_charts(browser):
    async with run_server(CAMPAIGNS, secret_keys=[SECRET]) as server:
        page = await browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" and "401" not in msg.text else None)
        await page.goto(f"{server.http}/dashboard")

        await page.fill("#key", "pk_test")  # the publishable key is refused
        await page.click("#login button[type=submit]")
        await page.locator("#login-error").filter(has_text="secret key").wait_for(timeout=WAIT * 1000)

        await page.fill("#key", SECRET)
        await page.click("#login button[type=submit]")
        await page.locator("#board").wait_for(state="visible", timeout=WAIT * 1000)
        await page.wait_for_function("() => document.getElementById('events').textContent === '0'", timeout=WAIT * 1000)

        await load(server, 12)
        await page.wait_for_function("() => Number(document.getElementById('events').textContent) >= 12", timeout=WAIT * 1000)
        first = await number(page, "#events")
        await load(server, 6)
        await page.wait_for_function(f"() => Number(document.getElementById('events').textContent) > {first}", timeout=WAIT * 1000)
        assert await number(page, "#sessions") == 18

        offer = page.locator('.campaign[data-campaign="offer"]')
        await offer.wait_for(timeout=WAIT * 1000)
        assert await offer.locator("svg.funnel rect").count() == 6
        assert await offer.locator("svg.ab rect").count() == 3
        verdict = await offer.locator(".comparison").first.text_content()
        assert "holdout" in verdict and "too few exposures for a verdict" in verdict and "p = 1" not in verdict
        triggered = await offer.locator('svg.funnel rect[data-field="triggered"]').get_attribute("width")
        assert float(triggered) > 100

        timers = page.locator("#timers tbody tr")
        await timers.first.wait_for(timeout=WAIT * 1000)
        assert "cart" in await timers.first.text_content()
        decisions = page.locator("#decisions tbody tr")
        assert await decisions.count() > 0
        assert "holdout" in await page.locator("#decisions").text_content()  # a reason, from the trace

        await decisions.first.click()  # why: the explain trace of that session and campaign
        checks = page.locator("#explain-checks tbody tr")
        await checks.first.wait_for(timeout=WAIT * 1000)
        assert "offer" in await page.locator("#explain-title").text_content()
        assert "fires on 'click'" in await page.locator("#explain-checks").text_content()

        await page.reload()  # the key is kept for the tab
        await page.locator("#board").wait_for(state="visible", timeout=WAIT * 1000)
        assert await page.locator("#login").is_hidden()
        assert errors == []
        await page.close()


async def test_the_stream_needs_the_secret_key():
    import urllib.error
    import urllib.request

    async with run_server(CAMPAIGNS, secret_keys=[SECRET]) as server:
        def get(key):
            req = urllib.request.Request(f"{server.http}/api/dashboard", headers={"Authorization": f"Bearer {key}"})
            try:
                with urllib.request.urlopen(req, timeout=5) as response:
                    return response.status
            except urllib.error.HTTPError as exc:
                return exc.code

        assert await asyncio.to_thread(get, "pk_test") == 401
        assert await asyncio.to_thread(get, SECRET) == 200


async def test_each_stream_ends_so_that_a_stop_is_not_held(monkeypatch):
    import urllib.request

    from nudge.ops import dashboard

    monkeypatch.setattr(dashboard, "STREAM_SECONDS", 1.5)
    async with run_server(CAMPAIGNS, secret_keys=[SECRET]) as server:
        def read():
            req = urllib.request.Request(f"{server.http}/api/dashboard/stream", headers={"Authorization": f"Bearer {SECRET}"})
            with urllib.request.urlopen(req, timeout=WAIT) as response:
                return response.read().decode()  # returns once the server ends the stream

        text = await asyncio.to_thread(read)
        assert text.count("event: snapshot") == 2 and text.endswith("event: end\ndata: {}\n\n")


async def test_dead_letters_show_in_the_dashboard(browser, tmp_path):
    from .test_webhooks import Receiver, endpoints_file

    async with Receiver(failures=99, status=400) as receiver:
        hooks = endpoints_file(tmp_path, receiver.url, events=["decision"])
        async with run_server(CAMPAIGNS, secret_keys=[SECRET], webhooks=hooks) as server:
            client = await Client.connect(server.url)
            await client.track("click")
            await server.advance(0)  # the delivery is tried and refused for good
            await server.hub.webhooks.idle()
            assert server.hub.webhooks.failed == 1
            page = await browser.new_page()
            await page.goto(f"{server.http}/dashboard")
            await page.fill("#key", SECRET)
            await page.click("#login button[type=submit]")
            row = page.locator("#dead tbody tr")
            await row.first.wait_for(timeout=WAIT * 1000)
            assert "HTTP 400" in await row.first.text_content()
            assert "1 dead letters" in await page.locator("#webhook-queue").text_content()
            await page.close()
            await client.close()
