"""The Segment-spec endpoints (``/v1/*``), fed by Segment's and RudderStack's own Python
libraries pointed at a real server: nobody on this project wrote the clients."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from nudge import identity

from ..conftest import KEY, Client, eventually, shows

pytestmark = pytest.mark.integration

SECRET = "sk_test_cdp_secret"
LATER = 1_700_000_000 + 3600
CART = """
campaigns:
  - id: cart
    trigger: {event: add_to_cart, absent: purchase, within: 60s}
    goal: {event: purchase, within: 1d}
    message: {kind: toast, body: "Your cart is waiting"}
  - id: vip
    trigger: {event: click}
    audience: {visitor.vip: true}
    message: {kind: toast, body: "Hello VIP"}
"""


def library(name: str, host: str, write_key: str = SECRET):
    """A client of the named library, pointed at ``host``; errors it reports are collected."""
    errors: list[Exception] = []

    def on_error(error, _items):
        errors.append(error)

    if name == "segment":
        from segment.analytics import Client as Segment

        client = Segment(write_key=write_key, host=host, on_error=on_error, max_retries=0, upload_interval=0.05)
    else:
        from rudderstack.analytics import Client as Rudder

        client = Rudder(write_key=write_key, host=host, on_error=on_error, max_retries=0, upload_interval=0.05)
    client.errors = errors
    return client


LIBRARIES = ["segment", "rudderstack"]


async def flush(client) -> None:
    await asyncio.to_thread(client.flush)


@pytest.mark.parametrize("name", LIBRARIES)
async def test_a_track_by_user_id_cancels_the_reminder_on_the_proven_page(start_server, name):
    server = await start_server(CART, secret_keys=[SECRET])
    page = await Client.connect(server.url, user=("12345", identity.sign(SECRET, KEY, "12345", LATER)))
    await page.track("add_to_cart", {"id": "mug", "name": "Mug", "price": 3})
    client = library(name, server.http)
    client.track(user_id="12345", event="Order Completed", properties={"order_id": "A1", "revenue": 3, "products": [{"product_id": "mug"}]})
    await flush(client)
    assert client.errors == []
    await eventually(lambda: server.app.state.server_events.applied == 1, "the track to be applied")
    await server.advance(61)
    assert server.hub.stats.timers_fired == 0 and server.hub.results.get("cart") == {}
    client.shutdown()
    await page.close()


@pytest.mark.parametrize("name", LIBRARIES)
async def test_identify_links_the_visitor_then_a_batch_cancels_its_reminder(start_server, name):
    server = await start_server(CART, secret_keys=[SECRET])
    page = await Client.connect(server.url)  # anonymous on the page
    await page.track("add_to_cart", {"id": "mug", "name": "Mug", "price": 3})
    client = library(name, server.http)
    # The pipeline got the snippet's nudge.visitorId() as its anonymousId.
    client.identify(user_id="u2", anonymous_id=page.visitor, traits={"vip": True, "address": {"city": "Ghent"}})
    client.track(user_id="u2", event="Order Completed", properties={"total": 3}, message_id="order-u2-1")
    client.track(user_id="u2", event="Order Completed", properties={"total": 3}, message_id="order-u2-1")  # a resend
    await flush(client)
    assert client.errors == []
    await eventually(lambda: server.app.state.server_events.duplicates == 1, "all three to arrive")
    assert await server.hub.store.user_visitors(KEY, "u2") == [page.visitor]
    assert server.app.state.server_events.applied == 2  # the identify and one purchase
    await server.advance(61)
    assert server.hub.stats.timers_fired == 0
    assert [f["body"] for f in shows(await page.track("click"))] == ["Hello VIP"]  # the trait
    client.shutdown()
    await page.close()


@pytest.mark.parametrize("name", LIBRARIES)
async def test_events_for_a_user_not_seen_yet_wait_for_their_page(start_server, name):
    server = await start_server(CART, secret_keys=[SECRET])
    client = library(name, server.http)
    client.identify(user_id="u3", traits={"vip": True})
    await flush(client)
    assert client.errors == []
    page = await Client.connect(server.url, user=("u3", identity.sign(SECRET, KEY, "u3", LATER)))
    assert [f["body"] for f in shows(await page.track("click"))] == ["Hello VIP"]
    client.shutdown()
    await page.close()


@pytest.mark.parametrize("name", LIBRARIES)
async def test_a_wrong_write_key_is_refused_and_reported_to_the_library(start_server, name):
    server = await start_server(CART, secret_keys=[SECRET])
    client = library(name, server.http, write_key="pk_not_a_secret")
    client.track(user_id="u1", event="Order Completed")
    await flush(client)
    assert [getattr(e, "status", None) for e in client.errors] == [401]
    assert server.app.state.server_events.applied == 0
    client.shutdown()


def post(url: str, body: bytes, headers: dict[str, str]):
    def go():
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json", **headers}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)

    return asyncio.to_thread(go)


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


async def test_the_spec_by_hand_single_calls_gzip_limits_and_unknown_fields(start_server):
    server = await start_server(CART, secret_keys=[SECRET])
    page = await Client.connect(server.url)
    await page.track("add_to_cart", {"id": "mug", "name": "Mug", "price": 3})
    track = {"anonymousId": page.visitor, "event": "Product Removed", "properties": {"product_id": "mug"},
             "messageId": "m-1", "context": {"library": {"name": "curl"}}, "channel": "server"}
    code, body = await post(f"{server.http}/v1/track", json.dumps(track).encode(), basic(SECRET))
    assert code == 200 and body["status"] == "applied" and body["unused"] == ["channel", "context"]
    assert server.hub.visitors[(KEY, page.visitor)].state.cart.count == 0
    # gzip, as RudderStack sends by default; a page call is accepted and left to the snippet
    batch = {"batch": [{"type": "page", "anonymousId": page.visitor, "name": "Home"},
                       {"type": "track", "userId": "u9", "event": "Nope"}]}
    code, body = await post(f"{server.http}/v1/batch", gzip.compress(json.dumps(batch).encode()), {**basic(SECRET), "Content-Encoding": "gzip"})
    assert code == 200 and [e["status"] for e in body["events"]] == ["ignored", "refused"]
    assert "declare it under events" in body["events"][1]["error"]
    # a user_id among the traits cannot link the visitor to another user than userId says
    identify = {"userId": "u-right", "anonymousId": page.visitor, "traits": {"user_id": "u-wrong", "plan": "pro"}}
    code, body = await post(f"{server.http}/v1/identify", json.dumps(identify).encode(), basic(SECRET))
    assert code == 200 and body["status"] == "applied"
    assert await server.hub.store.user_visitors(KEY, "u-right") == [page.visitor]
    assert await server.hub.store.user_visitors(KEY, "u-wrong") == []
    # an anonymousId that is not a Nudge visitor: reported, nothing made up
    code, body = await post(f"{server.http}/v1/track", json.dumps({"anonymousId": "seg-anon-1", "event": "Order Completed"}).encode(), basic(SECRET))
    assert code == 200 and body["status"] == "unknown_visitor"
    assert await server.hub.store.load_visitor(KEY, "seg-anon-1") is None
    # Segment's limits: 32 KB a message, 500 KB a batch (even once gunzipped)
    big = {"userId": "u1", "event": "Order Completed", "properties": {"note": "x" * 40_000}}
    code, body = await post(f"{server.http}/v1/track", json.dumps(big).encode(), basic(SECRET))
    assert code == 413 and body["code"] == "too_large"
    batch = {"batch": [{**big, "type": "track"}, {"type": "identify", "userId": "u1", "traits": {"plan": "pro"}}]}
    code, body = await post(f"{server.http}/v1/batch", json.dumps(batch).encode(), basic(SECRET))
    assert code == 200 and [e["status"] for e in body["events"]] == ["refused", "pending"]
    assert "larger than 32768 bytes" in body["events"][0]["error"]
    bomb = gzip.compress(json.dumps({"batch": [], "pad": "x" * 2_000_000}).encode())
    code, body = await post(f"{server.http}/v1/batch", bomb, {**basic(SECRET), "Content-Encoding": "gzip"})
    assert code == 413
    code, body = await post(f"{server.http}/v1/batch", b"not gzip", {**basic(SECRET), "Content-Encoding": "gzip"})
    assert code == 400 and body["code"] == "bad_gzip"
    code, body = await post(f"{server.http}/v1/batch", b'{"events": []}', basic(SECRET))
    assert code == 400 and body["code"] == "bad_batch"
    code, body = await post(f"{server.http}/v1/identify", b"{}", basic("sk_wrong"))
    assert code == 401 and body["code"] == "unauthorized"
    await page.close()


async def test_timestamps_are_corrected_for_the_senders_clock(start_server):
    server = await start_server(CART, secret_keys=[SECRET])
    segment = server.app.state.segment
    now = server.clock.now()
    from nudge.ops.server_events import iso

    # The sender's clock is an hour fast: it says it sent at +1h, and the event happened 10 s before.
    message = {"timestamp": iso(now + 3590), "sentAt": iso(now + 3600)}
    assert segment.happened(message, None) == pytest.approx(now - 10)
    assert segment.happened({"originalTimestamp": iso(now - 5)}, None) == pytest.approx(now - 5)
    assert segment.happened({"timestamp": iso(now - 30)}, iso(now)) == pytest.approx(now - 30)  # the batch's sentAt
    assert segment.happened({}, iso(now)) is None
    with pytest.raises(ValueError, match="timestamp"):
        segment.happened({"timestamp": "soon"}, None)


NODE = Path(__file__).resolve().parents[2] / "client_js"


async def segment_node(server, calls: list, write_key: str = SECRET) -> dict:
    """Deliver ``calls`` with Segment's own Node library (@segment/analytics-node)."""
    process = await asyncio.create_subprocess_exec(
        "node", str(NODE / "test-support" / "segment-node.mjs"), server.http, write_key, json.dumps(calls),
        cwd=NODE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    return json.loads(out.decode().strip().splitlines()[-1])


@pytest.mark.skipif(not (NODE / "node_modules" / "@segment" / "analytics-node").exists(), reason="npm ci in client_js (scripts/setup --tests)")
async def test_segments_node_library_identify_track_and_batch_cancel_a_reminder(start_server):
    server = await start_server(CART, secret_keys=[SECRET])
    proven = await Client.connect(server.url, user=("12345", identity.sign(SECRET, KEY, "12345", LATER)))
    await proven.track("add_to_cart", {"id": "mug", "name": "Mug", "price": 3})
    anonymous = await Client.connect(server.url)
    await anonymous.track("add_to_cart", {"id": "cup", "name": "Cup", "price": 2})
    report = await segment_node(server, [
        ["track", {"userId": "12345", "event": "Order Completed", "properties": {"revenue": 3}}],
        ["identify", {"userId": "u5", "anonymousId": anonymous.visitor, "traits": {"vip": True}}],
        ["track", {"userId": "u5", "event": "Order Completed", "properties": {"total": 2}, "messageId": "o-u5"}],
    ])
    assert report == {"errors": []}
    assert server.app.state.server_events.applied == 3
    await server.advance(61)
    assert server.hub.stats.timers_fired == 0  # both reminders cancelled
    assert [f["body"] for f in shows(await anonymous.track("click"))] == ["Hello VIP"]
    report = await segment_node(server, [["track", {"userId": "u5", "event": "Order Completed"}]], write_key="pk_wrong")
    assert report["errors"] and server.app.state.server_events.applied == 3
    await proven.close()
    await anonymous.close()


async def test_traits_from_a_cdp_are_a_backends_word_trusted(start_server):
    server = await start_server("""
campaigns:
  - id: vip-offer
    valuable: true
    trigger: {event: click}
    audience: {trusted.vip: true}
    message: {kind: toast, body: "20% off for our VIPs"}
""", secret_keys=[SECRET])
    page = await Client.connect(server.url, user=("u7", identity.sign(SECRET, KEY, "u7", LATER)))
    await page.track("identify", {"vip": True})  # the page's own claim: not trusted
    assert shows(await page.track("click")) == []
    client = library("segment", server.http)
    client.identify(user_id="u7", traits={"vip": True})
    await flush(client)
    assert client.errors == []
    await eventually(lambda: server.app.state.server_events.applied == 1, "the identify to be applied")
    assert [f["body"] for f in shows(await page.track("click"))] == ["20% off for our VIPs"]
    client.shutdown()
    await page.close()
