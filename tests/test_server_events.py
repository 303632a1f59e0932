"""``POST /api/events``: a backend's events, applied by the same engine as the browser's."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import pytest
from nudge.rules.campaigns import load_text

from .conftest import (
    KEY,
    Client,
    drop_keys,
    eventually,
    redis_store_url,
    run_server,
    shows,
    visitor_id,
)

pytestmark = pytest.mark.integration

SECRET = "sk_test_secret"
CART = """
campaigns:
  - id: cart
    trigger: {event: add_to_cart, absent: purchase, within: 60s}
    offline: queue
    goal: {event: purchase, within: 1d}
    message: {kind: toast, body: "Your cart is waiting"}
  - id: vip
    trigger: {event: click}
    audience: {visitor.vip: true}
    message: {kind: toast, body: "Hello VIP"}
"""


def post(url: str, body: object, key: str | None = SECRET) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"

    def go():
        req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=5) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)

    return asyncio.to_thread(go)


async def test_needs_the_secret_key(start_server):
    server = await start_server(CART, secret_keys=[SECRET])
    event = {"id": "e1", "visitor": "v_x", "name": "purchase"}
    for key in (None, "sk_wrong", KEY):
        code, _ = await post(f"{server.http}/api/events", event, key)
        assert code == 401, key
    assert server.app.state.server_events.applied == 0


async def test_a_purchase_from_the_backend_cancels_the_reminder_and_converts(start_server):
    server = await start_server(CART, secret_keys=[SECRET])
    client = await Client.connect(server.url)
    await client.track("add_to_cart", {"id": "mug", "name": "Mug", "price": 3})
    code, body = await post(f"{server.http}/api/events", {"id": "order-1", "visitor": client.visitor, "name": "purchase", "props": {"value": 3}})
    assert (code, body) == (200, {"id": "order-1", "status": "applied", "applied": "held"})
    await server.advance(61)
    assert server.hub.stats.timers_fired == 0
    assert server.hub.scheduler is not None
    await client.close()


async def test_a_backend_purchase_after_the_reminder_counts_as_a_conversion_once(start_server):
    server = await start_server(CART, secret_keys=[SECRET])
    client = await Client.connect(server.url)
    await client.track("add_to_cart", {"id": "mug", "name": "Mug", "price": 3})
    await server.advance(61)
    await client.expect("show", campaign="cart")
    purchase = {"id": "order-2", "visitor": client.visitor, "name": "purchase", "props": {"value": 3}}
    assert (await post(f"{server.http}/api/events", purchase))[1]["status"] == "applied"
    assert (await post(f"{server.http}/api/events", purchase))[1]["status"] == "duplicate"  # a retry
    assert server.hub.results.get("cart") == {"sent": 1, "converted": 1}
    await client.close()


async def test_a_batch_with_identify_for_a_visitor_not_connected(start_server):
    server = await start_server(CART, secret_keys=[SECRET])
    visitor = visitor_id()
    code, body = await post(f"{server.http}/api/events", {"events": [
        {"id": "t1", "visitor": visitor, "name": "identify", "props": {"vip": True}},
        {"id": "t2", "visitor": visitor, "name": "page_view", "props": {"path": "/"}},
        {"id": "t3", "visitor": visitor, "name": "purchase", "props": {"value": "lots"}},
        {"visitor": visitor, "name": "purchase"},
    ]})
    assert code == 200
    statuses = [(e["status"], e.get("error", "")) for e in body["events"]]
    assert statuses[0] == ("applied", "")
    assert statuses[1][0] == "refused" and "only comes from a tab" in statuses[1][1]
    assert statuses[2][0] == "refused" and "props.value must be a number" in statuses[2][1]
    assert statuses[3][0] == "refused" and "events[3].id" in statuses[3][1]
    client = await Client.connect(server.url, visitor=visitor)
    frames = await client.track("click")
    assert [f["body"] for f in frames if f["t"] == "show"] == ["Hello VIP"]  # the trait stuck
    await client.close()


async def test_a_single_invalid_event_is_a_400(start_server):
    server = await start_server(CART, secret_keys=[SECRET])
    code, body = await post(f"{server.http}/api/events", {"id": "x", "visitor": "v", "name": "nope"})
    assert code == 400 and "unknown event" in body["error"]
    code, body = await post(f"{server.http}/api/events", {"id": "x", "visitor": "v", "name": "purchase", "site": "pk_other"})
    assert code == 400 and "site" in body["error"]


@pytest.mark.redis
async def test_with_redis_the_event_reaches_the_node_holding_the_visitor_and_ids_are_shared():
    url = redis_store_url(lease=30)
    try:
        async with run_server(CART, store=url, secret_keys=[SECRET]) as a, run_server(CART, store=url, secret_keys=[SECRET]) as b:
            client = await Client.connect(a.url)
            await client.track("add_to_cart", {"id": "mug", "name": "Mug", "price": 3})
            purchase = {"id": "order-9", "visitor": client.visitor, "name": "purchase"}
            assert (await post(f"{b.http}/api/events", purchase))[1]["applied"] == "relayed"
            assert (await post(f"{a.http}/api/events", purchase))[1]["status"] == "duplicate"
            await eventually(lambda: not a.hub.visitors[(KEY, client.visitor)].state.timers, "the relayed event applied on A")
            await a.advance(61)
            await b.advance(61)
            assert a.hub.stats.timers_fired == b.hub.stats.timers_fired == 0
            await client.close()
    finally:
        await drop_keys(url)


HOLDOUT = """
campaigns:
  - id: offer
    trigger: {event: click}
    variants: [{id: a, weight: 1}, {id: holdout, weight: 1, holdout: true}]
    goal: {event: purchase, within: 1d}
    message: {kind: toast, body: "Offer"}
"""


def get(url: str, key: str = SECRET) -> tuple[int, dict]:
    def go():
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
        with urllib.request.urlopen(req, timeout=5) as response:
            return response.status, json.load(response)

    return asyncio.to_thread(go)


async def click_and_buy(server, visitors: int) -> None:
    for i in range(visitors):
        client = await Client.connect(server.url)
        await client.track("click")
        if i % 2 == 0:
            await post(f"{server.http}/api/events", {"id": f"buy-{client.visitor}", "visitor": client.visitor, "name": "purchase"})
        await client.close()


async def test_results_report_and_counts_survive_a_restart(tmp_path):
    store = f"memory://{tmp_path}/state.msgpack"
    async with run_server(HOLDOUT, store=store, secret_keys=[SECRET]) as server:
        await click_and_buy(server, 20)
        _, first = await get(f"{server.http}/api/results")
    variants = first["report"]["offer"]["variants"]
    assert sum(v["triggered"] for v in variants.values()) == 20
    assert sum(v["converted"] for v in variants.values()) == 10
    assert first["report"]["offer"]["control"] == "holdout"
    (comparison,) = first["report"]["offer"]["comparisons"]
    assert comparison["test"] in ("fisher_exact", "two_proportion_z") and 0 <= comparison["p_value"] <= 1
    async with run_server(HOLDOUT, store=store, secret_keys=[SECRET]) as server:
        _, again = await get(f"{server.http}/api/results")
        assert again["campaigns"] == first["campaigns"]
        await click_and_buy(server, 2)
        _, more = await get(f"{server.http}/api/results")
    assert sum(v["triggered"] for v in more["report"]["offer"]["variants"].values()) == 22


@pytest.mark.redis
async def test_with_redis_results_add_up_over_nodes_and_restarts():
    url = redis_store_url(lease=30)
    try:
        async with run_server(HOLDOUT, store=url, secret_keys=[SECRET]) as a, run_server(HOLDOUT, store=url, secret_keys=[SECRET]) as b:
            await click_and_buy(a, 6)
            await click_and_buy(b, 4)
            await b.advance(b.settings.write_behind)  # B's counts reach Redis on its next tick
            _, both = await get(f"{a.http}/api/results")
        assert sum(v["triggered"] for v in both["report"]["offer"]["variants"].values()) == 10
        async with run_server(HOLDOUT, store=url, secret_keys=[SECRET]) as c:
            _, later = await get(f"{c.http}/api/results")
        assert later["campaigns"] == both["campaigns"]
    finally:
        await drop_keys(url)


async def test_backend_events_are_recorded_and_replay_to_the_same_decisions(tmp_path):
    from nudge.calibrate import recording, replay

    async with run_server(CART, record=tmp_path, secret_keys=[SECRET]) as server:
        client = await Client.connect(server.url)
        await client.track("add_to_cart", {"id": "mug", "name": "Mug", "price": 3})
        await server.advance(61)
        await client.expect("show", campaign="cart")
        await post(f"{server.http}/api/events", {"id": "o-1", "visitor": client.visitor, "name": "purchase"})
        stranger = visitor_id()
        await post(f"{server.http}/api/events", {"id": "o-2", "visitor": stranger, "name": "identify", "props": {"vip": True}})
        await client.close()
    records = list(recording.read([tmp_path]))
    live = [(r["campaign"], r["outcome"]) for r in records if r["k"] == "d"]
    assert live == [("cart", "sent"), ("cart", "converted")]
    (result,) = replay.run(records, [load_text(CART, "t.yaml")], keep_outcomes=True, drain=False)
    assert [(o.campaign, o.outcome) for o in result.outcomes] == live


SHIPPED = """
events: [order_shipped]
campaigns:
  - id: shipped
    trigger: {event: order_shipped}
    message: {kind: toast, title: "Your order {{ event.order }} is on its way"}
  - id: welcome
    trigger: {event: page_view}
    caps: {per_session: 1}
    message: {kind: modal, title: "Welcome"}
"""


async def test_a_backend_event_shows_in_the_open_tab_at_once_and_never_over_another(start_server):
    server = await start_server(SHIPPED, secret_keys=[SECRET])
    client = await Client.connect(server.url)
    shipped = {"id": "ship-1", "visitor": client.visitor, "name": "order_shipped", "props": {"order": "A17"}}
    code, body = await post(f"{server.http}/api/events", shipped)
    assert code == 200 and body["applied"] == "held"
    show = await client.expect("show", campaign="shipped")
    assert show["title"] == "Your order A17 is on its way"
    assert await server.hub.store.take_queued(KEY, client.visitor, server.clock.now()) == []  # not kept for later
    # A modal on screen: the next backend message does not cover it.
    assert [f["campaign"] for f in await client.track("page_view", {"path": "/"}) if f["t"] == "show"] == ["welcome"]
    code, body = await post(f"{server.http}/api/events", {**shipped, "id": "ship-2"})
    assert body["applied"] == "held"
    assert server.hub.results.snapshot()["shipped"]["-"] == {"sent": 1, "suppressed:busy": 1}


TRUST = """
campaigns:
  - id: vip-offer
    valuable: true
    trigger: {event: click}
    audience: {trusted.vip: true}
    message: {kind: toast, body: "20% off for our VIPs"}
  - id: come-back
    trigger: {event: page_view}
    audience:
      visit.days_since_last: {gte: 7}
      visit.last_session_pages: {lt: 3}
    message: {kind: banner, body: "Welcome back"}
"""


async def test_a_page_claiming_vip_is_not_trusted_the_backend_saying_so_is(start_server):
    server = await start_server(TRUST, secret_keys=[SECRET])
    client = await Client.connect(server.url)
    await client.track("identify", {"vip": True})  # nudge.identify({vip: true}) from the page
    assert shows(await client.track("click")) == []
    code, _ = await post(f"{server.http}/api/events", {"id": "crm-1", "visitor": client.visitor, "name": "identify", "props": {"vip": True}})
    assert code == 200
    assert [f["body"] for f in shows(await client.track("click"))] == ["20% off for our VIPs"]
    await client.close()


async def test_a_crm_identify_between_visits_does_not_reset_the_days_away(start_server):
    server = await start_server(TRUST, secret_keys=[SECRET])
    client = await Client.connect(server.url)
    visitor = client.visitor
    await client.track("page_view", {"path": "/"})
    await client.close()
    await server.advance(5 * 86400)
    code, body = await post(f"{server.http}/api/events", {"id": "crm-2", "visitor": visitor, "name": "identify", "props": {"status": "inactive"}})
    assert (code, body["status"]) == (200, "applied")
    await server.advance(3 * 86400)
    client = await Client.connect(server.url, visitor=visitor)
    assert [f["body"] for f in shows(await client.track("page_view", {"path": "/"}))] == ["Welcome back"]
    await client.close()
