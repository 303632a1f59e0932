"""``POST /api/events``: a backend's events, applied by the same engine as the browser's."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from datetime import UTC

import pytest
from nudge.rules.campaigns import load_text

from ..conftest import (
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
    earlier = await Client.connect(server.url, visitor=visitor)  # seen once, then gone
    await earlier.track("page_view", {"path": "/"})
    await earlier.close()
    await eventually(lambda: server.hub.stats.connections == 0, "the tab to detach")
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


# --- events by the site's own user id -------------------------------------------------------

NOW = 1_700_000_000.0  # the fake clock's start
LATER = int(NOW) + 3600


def _signed_in(user: str) -> tuple[str, str]:
    from nudge import identity

    return user, identity.sign(SECRET, KEY, user, LATER)


async def test_a_purchase_by_the_shops_user_id_cancels_the_reminder_of_the_proven_visitor(start_server):
    server = await start_server(CART, secret_keys=[SECRET])
    page = await Client.connect(server.url, user=_signed_in("12345"))
    await page.track("add_to_cart", {"id": "mug", "name": "Mug", "price": 3})
    code, body = await post(f"{server.http}/api/events", {"id": "o-1", "user_id": "12345", "name": "purchase"})
    assert (code, body) == (200, {"id": "o-1", "status": "applied", "user_id": "12345", "visitors": {page.visitor: "held"}})
    await server.advance(61)
    assert server.hub.stats.timers_fired == 0 and server.hub.results.get("cart") == {}
    await page.close()


async def test_the_shops_user_id_as_a_visitor_lands_on_nobody(start_server):
    server = await start_server(CART, secret_keys=[SECRET])
    page = await Client.connect(server.url, user=_signed_in("12345"))
    await page.track("add_to_cart", {"id": "mug", "name": "Mug", "price": 3})
    code, body = await post(f"{server.http}/api/events", {"id": "o-2", "visitor": "12345", "name": "purchase"})
    assert code == 404 and body["status"] == "unknown_visitor" and "user_id" in body["error"]
    assert await server.hub.store.load_visitor(KEY, "12345") is None  # nothing made up
    assert server.app.state.server_events.applied == 0
    await server.advance(61)
    await page.expect("show", campaign="cart")  # the reminder, as it should without a purchase
    # The id is not spent: once sent to the right target, it applies.
    code, body = await post(f"{server.http}/api/events", {"id": "o-2", "visitor": page.visitor, "name": "purchase"})
    assert body["status"] == "applied"
    await page.close()


async def test_an_event_for_a_user_not_yet_linked_waits_for_their_first_proven_visit(start_server):
    server = await start_server(CART, secret_keys=[SECRET])
    code, body = await post(f"{server.http}/api/events", {"id": "crm-9", "user_id": "u77", "name": "identify", "props": {"vip": True}})
    assert code == 202 and body["status"] == "pending" and body["user_id"] == "u77" and body["kept_until"].endswith("Z")
    stranger = await Client.connect(server.url)  # someone else: not given it
    assert shows(await stranger.track("click")) == []
    page = await Client.connect(server.url, user=_signed_in("u77"))
    assert [f["body"] for f in shows(await page.track("click"))] == ["Hello VIP"]
    assert await server.hub.store.take_for_user(KEY, "u77", server.clock.now()) == []  # taken once
    await stranger.close()
    await page.close()


async def test_a_backend_identify_links_the_visitor_and_applies_what_waited(start_server):
    server = await start_server(CART, secret_keys=[SECRET])
    page = await Client.connect(server.url)
    await page.track("page_view", {"path": "/"})
    await page.close()
    await eventually(lambda: server.hub.stats.connections == 0, "the tab to detach")
    await post(f"{server.http}/api/events", {"id": "c1", "user_id": "u88", "name": "identify", "props": {"vip": True}})
    code, body = await post(f"{server.http}/api/events", {"id": "c2", "visitor": page.visitor, "name": "identify", "props": {"user_id": "u88"}})
    assert body["status"] == "applied"
    again = await Client.connect(server.url, visitor=page.visitor)  # anonymous on the page, linked by the backend
    assert [f["body"] for f in shows(await again.track("click"))] == ["Hello VIP"]
    assert await server.hub.store.user_visitors(KEY, "u88") == [page.visitor]
    await again.close()


async def test_the_payload_a_backend_developer_tries_first_gets_every_problem_at_once(start_server):
    server = await start_server(CART, secret_keys=[SECRET])
    first_try = {"userId": "12345", "eventType": "purchase_complete", "productId": "98765", "timestamp": "2024-04-27T15:30:00Z"}
    code, body = await post(f"{server.http}/api/events", first_try)
    assert code == 400 and body["status"] == "refused"
    by_field = {p["field"]: p for p in body["errors"]}
    assert by_field["event.userId"]["hint"] == "did you mean 'user_id'?"
    assert by_field["event.eventType"]["hint"] == "did you mean 'name'?"
    assert "props.productId" in by_field["event.productId"]["hint"]
    assert {"event.id", "event.visitor", "event.name"} <= set(by_field)
    assert "event.timestamp" not in by_field  # a good ISO 8601 time
    assert "/v1/track" in body["error"]  # the Segment-compatible endpoint, named
    fixed = {"id": "o-9", "user_id": "12345", "name": "purchase", "props": {"productId": "98765"}, "timestamp": "2024-04-27T15:30:00Z"}
    code, body = await post(f"{server.http}/api/events", fixed)
    assert code == 202 and body["status"] == "pending" and body["timestamp"] == "2023-11-14T22:13:20.000Z"  # not after now
    for bad, words in (("yesterday", "ISO 8601"), ("2024-04-27T15:30:00", "time zone"), (1714231800000, "milliseconds")):
        code, body = await post(f"{server.http}/api/events", {**fixed, "id": f"o-{bad}", "timestamp": bad})
        assert code == 400 and words in body["error"] and [p["field"] for p in body["errors"]] == ["event.timestamp"]


GOAL_WITHIN = """
campaigns:
  - id: cart
    trigger: {event: add_to_cart, absent: purchase, within: 60s}
    goal: {event: purchase, within: 1h}
    message: {kind: toast, body: "Your cart is waiting"}
"""


async def test_a_purchase_reported_late_converts_by_when_it_happened(start_server):
    server = await start_server(GOAL_WITHIN, secret_keys=[SECRET])
    page = await Client.connect(server.url)
    await page.track("add_to_cart", {"id": "mug", "name": "Mug", "price": 3})
    await server.advance(61)
    await page.expect("show", campaign="cart")
    shown_at = server.clock.now()
    await server.advance(2 * 3600)  # the order system reports it two hours late...
    from datetime import datetime

    happened = datetime.fromtimestamp(shown_at + 1800, UTC).isoformat()  # ...30 min after the reminder
    code, body = await post(f"{server.http}/api/events", {"id": "o-late", "visitor": page.visitor, "name": "purchase", "timestamp": happened})
    assert code == 200 and body["timestamp"].startswith(happened[:19])
    assert server.hub.results.get("cart") == {"sent": 1, "converted": 1}
    # Without the timestamp the same report would be a miss.
    await page.track("add_to_cart", {"id": "cup", "name": "Cup", "price": 2})
    await server.advance(61)
    await page.expect("show", campaign="cart")
    await server.advance(2 * 3600)
    await post(f"{server.http}/api/events", {"id": "o-late-2", "visitor": page.visitor, "name": "purchase"})
    assert server.hub.results.get("cart") == {"sent": 2, "converted": 1}
    await page.close()


@pytest.mark.redis
async def test_with_redis_a_user_id_reaches_their_tab_on_another_node_and_waits_for_one_anywhere():
    url = redis_store_url(lease=30)
    try:
        async with run_server(CART, store=url, secret_keys=[SECRET]) as a, run_server(CART, store=url, secret_keys=[SECRET]) as b:
            page = await Client.connect(a.url, user=_signed_in("12345"))
            await page.track("add_to_cart", {"id": "mug", "name": "Mug", "price": 3})
            late = a.clock.now() - 30
            code, body = await post(f"{b.http}/api/events", {"id": "o-r1", "user_id": "12345", "name": "purchase", "timestamp": late})
            assert code == 200 and body["visitors"] == {page.visitor: "relayed"}
            await eventually(lambda: not a.hub.visitors[(KEY, page.visitor)].state.timers, "the relayed purchase applied on A")
            await a.advance(61)
            await b.advance(61)
            assert a.hub.stats.timers_fired == b.hub.stats.timers_fired == 0
            # Kept in Redis for a user not seen yet: whichever node they come to applies it.
            code, body = await post(f"{b.http}/api/events", {"id": "c-r2", "user_id": "u-new", "name": "identify", "props": {"vip": True}})
            assert code == 202
            other = await Client.connect(a.url, user=_signed_in("u-new"))
            assert [f["body"] for f in shows(await other.track("click"))] == ["Hello VIP"]
            await page.close()
            await other.close()
    finally:
        await drop_keys(url)


async def test_a_late_purchase_with_its_timestamp_replays_to_the_same_conversion(tmp_path):
    from nudge.calibrate import recording, replay

    async with run_server(GOAL_WITHIN, record=tmp_path, secret_keys=[SECRET]) as server:
        page = await Client.connect(server.url)
        await page.track("add_to_cart", {"id": "mug", "name": "Mug", "price": 3})
        await server.advance(61)
        await page.expect("show", campaign="cart")
        shown_at = server.clock.now()
        await server.advance(2 * 3600)
        await post(f"{server.http}/api/events", {"id": "o-1", "visitor": page.visitor, "name": "purchase", "timestamp": shown_at + 1800})
        await page.close()
    records = list(recording.read([tmp_path]))
    assert [r.get("happened") for r in records if r["k"] == "ev" and r.get("name") == "purchase"] == [shown_at + 1800]
    live = [(r["campaign"], r["outcome"]) for r in records if r["k"] == "d"]
    assert live == [("cart", "sent"), ("cart", "converted")]
    (result,) = replay.run(records, [load_text(GOAL_WITHIN, "t.yaml")], keep_outcomes=True, drain=False)
    assert [(o.campaign, o.outcome) for o in result.outcomes] == live


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


async def test_traits_sent_by_user_id_are_trusted_kept_or_applied_at_once(start_server):
    server = await start_server(TRUST, secret_keys=[SECRET])
    code, _ = await post(f"{server.http}/api/events", {"id": "crm-u1", "user_id": "u-vip", "name": "identify", "props": {"vip": True}})
    assert code == 202  # kept until the user is proven on a page
    page = await Client.connect(server.url, user=_signed_in("u-vip"))
    assert [f["body"] for f in shows(await page.track("click"))] == ["20% off for our VIPs"]
    other = await Client.connect(server.url, user=_signed_in("u-two"))
    assert shows(await other.track("click")) == []
    code, body = await post(f"{server.http}/api/events", {"id": "crm-u2", "user_id": "u-two", "name": "identify", "props": {"vip": True}})
    assert body["visitors"] == {other.visitor: "held"}
    assert [f["body"] for f in shows(await other.track("click"))] == ["20% off for our VIPs"]
    await page.close()
    await other.close()
