"""Signed identity (nudge.identity): a user id is taken only with a token the site's backend
signed; forged, expired and other-site tokens create nothing."""

from __future__ import annotations

import asyncio

import pytest
from nudge import identity

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

SECRET = "sk_test_identity_secret"
NOW = 1_700_000_000.0  # the fake clock's start
LATER = int(NOW) + 3600


def test_sign_and_check():
    token = identity.sign(SECRET, KEY, "u42", LATER)
    assert identity.refusal(token, KEY, "u42", NOW, [SECRET]) is None
    assert identity.refusal(token, KEY, "u42", NOW, ["sk_old", SECRET]) is None  # during a rotation
    assert "expired" in identity.refusal(token, KEY, "u42", LATER + 1, [SECRET])
    assert "not signed" in identity.refusal(token, "pk_other", "u42", NOW, [SECRET])
    assert "not signed" in identity.refusal(token, KEY, "u43", NOW, [SECRET])
    assert "not signed" in identity.refusal(token, KEY, "u42", NOW, ["sk_other"])
    assert "not a token" in identity.refusal("v1.x.y", KEY, "u42", NOW, [SECRET])
    assert "off" in identity.refusal(token, KEY, "u42", NOW, [])
    forged = token[:-1] + ("0" if token[-1] != "0" else "1")
    assert identity.refusal(forged, KEY, "u42", NOW, [SECRET]) is not None
    stretched = f"v1.{LATER + 86400}.{token.rsplit('.', 1)[1]}"  # a later expiry, the old signature
    assert "not signed" in identity.refusal(stretched, KEY, "u42", NOW, [SECRET])


BAD_TOKENS = {
    "forged": lambda: identity.sign("sk_guessed", KEY, "u42", LATER),
    "expired": lambda: identity.sign(SECRET, KEY, "u42", int(NOW) - 1),
    "other site": lambda: identity.sign(SECRET, "pk_other_site", "u42", LATER),
    "other user": lambda: identity.sign(SECRET, KEY, "u41", LATER),
    "missing": lambda: None,
    "garbage": lambda: "v1.9999999999." + "0" * 64,
}


@pytest.mark.integration
@pytest.mark.parametrize("kind", BAD_TOKENS)
async def test_hello_with_a_bad_identity_token_creates_nothing(start_server, kind):
    server = await start_server(secret_keys=[SECRET])
    client = await Client.connect(server.url, hello=False)
    hello = {"t": "hello", "v": 1, "key": KEY, "visitor": visitor_id(), "user_id": "u42"}
    if (token := BAD_TOKENS[kind]()) is not None:
        hello["user_token"] = token
    await client.send(hello)
    code, reason = await client.closed()
    assert code == 4403 and "user_id" in reason
    assert server.hub.sessions == {} and server.hub.visitors == {}


@pytest.mark.integration
async def test_hello_with_a_valid_token_identifies_the_visitor(start_server):
    server = await start_server(secret_keys=[SECRET])
    client = await Client.connect(server.url, hello=False)
    token = identity.sign(SECRET, KEY, "u42", LATER)
    await client.send({"t": "hello", "v": 1, "key": KEY, "visitor": visitor_id(), "user_id": "u42", "user_token": token})
    welcome = await client.recv()
    assert welcome["t"] == "welcome"
    traits = server.hub.visitors[(KEY, welcome["visitor"])].state.traits
    assert traits == {"user_id": "u42"}


@pytest.mark.integration
async def test_identify_event_needs_a_valid_token(start_server):
    server = await start_server(secret_keys=[SECRET])
    client = await Client.connect(server.url)
    traits = server.hub.visitors[(KEY, client.visitor)].state.traits
    frames = await client.track("identify", {"user_id": "victim", "plan": "pro", "user_token": identity.sign("sk_x", KEY, "victim", LATER)})
    assert frames[0]["t"] == "error" and frames[0]["code"] == "bad_event" and "user_id" in frames[0]["reason"]
    assert traits == {}  # nothing of a refused event is applied
    frames = await client.track("identify", {"user_id": "u42", "plan": "pro", "user_token": identity.sign(SECRET, KEY, "u42", LATER)})
    assert frames == [{"t": "ack", "seq": client.seq}]
    assert traits == {"user_id": "u42", "plan": "pro"}  # the token is never kept


def test_secrets_are_redacted_from_log_records():
    import logging

    from nudge.ops import redact

    token = identity.sign(SECRET, KEY, "u42", LATER)
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "got %s and %s from /ws?key=pk_a&token=abc123 (Authorization: Bearer %s)", (SECRET, token, "sk_live_z"), None)
    assert redact.Redactor().filter(record)
    message = record.getMessage()
    assert SECRET not in message and token not in message and "abc123" not in message and "sk_live_z" not in message
    assert "pk_a" in message  # publishable keys stay: they are public and useful when debugging


@pytest.mark.integration
@pytest.mark.parametrize("how", ["hello", "header"])
async def test_an_opted_out_visitor_gets_no_session(start_server, how):
    import websockets

    from ..conftest import ORIGIN, WAIT

    server = await start_server()
    headers = {"Sec-GPC": "1"} if how == "header" else {}
    ws = await websockets.connect(server.url, subprotocols=["nudge.v1.json"], origin=ORIGIN, additional_headers=headers, open_timeout=WAIT)
    client = Client(ws, "json")
    hello = {"t": "hello", "v": 1, "key": KEY, "visitor": visitor_id()}
    if how == "hello":
        hello["gpc"] = True
    await client.send(hello)
    assert (await client.closed())[0] == 4451
    assert server.hub.sessions == {} and server.hub.visitors == {}


# --- messages follow a signed-in user across devices -------------------------------------------

CART = """
version: 1
campaigns:
  - id: cart
    trigger: {event: add_to_cart, absent: purchase, within: 15m}
    offline: queue
    message: {kind: modal, title: "Still thinking about {{ cart.names | first }}?"}
"""


async def _queued_on_the_phone(server, user: str = "u42") -> Client:
    """A signed-in phone adds to its cart and goes away; the cart message waits for it."""
    shown = server.hub.stats.shown
    phone = await Client.connect(server.url, user=(user, identity.sign(SECRET, KEY, user, LATER)))
    await phone.track("add_to_cart", {"id": "m1", "name": "Blue Mug", "price": 12.5})
    await phone.close()
    await eventually(lambda: server.hub.stats.connections == 0, "the phone to detach")
    await server.advance(16 * 60)
    assert phone.visitor in await server.hub.store.user_visitors(KEY, user)
    assert server.hub.stats.shown == shown + 1  # decided, and queued: nobody was there to see it
    return phone


@pytest.mark.integration
@pytest.mark.parametrize("store", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def test_a_message_queued_on_one_device_is_shown_on_the_users_next_device(store):
    url = redis_store_url() if store == "redis" else "memory://"
    try:
        async with run_server(CART, store=url, secret_keys=[SECRET]) as server:
            phone = await _queued_on_the_phone(server)
            # Someone else on another browser, anonymous or claiming u42 without proof, gets nothing.
            stranger = await Client.connect(server.url)
            assert shows(await stranger.track("page_view", {"path": "/"})) == []
            refused = await stranger.track("identify", {"user_id": "u42", "user_token": identity.sign("sk_x", KEY, "u42", LATER)})
            assert shows(refused) == [] and refused[0]["code"] == "bad_event"
            # The same user signs in on the laptop: the phone's message is shown there, once.
            laptop = await Client.connect(server.url, user=("u42", identity.sign(SECRET, KEY, "u42", LATER)))
            show = await laptop.expect("show", campaign="cart")
            assert show["title"] == "Still thinking about Blue Mug?"
            assert shows(await laptop.track("page_view", {"path": "/"})) == []
            # It was taken, not copied: the phone coming back does not see it again.
            back = await Client.connect(server.url, visitor=phone.visitor, user=("u42", identity.sign(SECRET, KEY, "u42", LATER)))
            assert shows(await back.track("page_view", {"path": "/"})) == []
            assert sorted(await server.hub.store.user_visitors(KEY, "u42")) == sorted([phone.visitor, laptop.visitor])
    finally:
        if store == "redis":
            await drop_keys(url)


@pytest.mark.integration
async def test_signing_in_mid_visit_hands_over_what_waits_on_other_devices(start_server):
    server = await start_server(CART, secret_keys=[SECRET])
    await _queued_on_the_phone(server)
    await _queued_on_the_phone(server)  # a second device queued the same campaign: shown once
    tablet = await Client.connect(server.url)  # anonymous at first
    assert shows(await tablet.track("page_view", {"path": "/"})) == []
    frames = await tablet.track("identify", {"user_id": "u42", "user_token": identity.sign(SECRET, KEY, "u42", LATER)})
    assert [f["campaign"] for f in shows(frames)] == ["cart"]
    other = await Client.connect(server.url, user=("u43", identity.sign(SECRET, KEY, "u43", LATER)))
    assert shows(await other.track("page_view", {"path": "/"})) == []  # another user's devices: nothing


async def _backend(server, body: dict) -> tuple[int, dict]:
    import json
    import urllib.error
    import urllib.request

    def go():
        request = urllib.request.Request(f"{server.http}/api/events", data=json.dumps(body).encode(), method="POST",
                                         headers={"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)

    return await asyncio.to_thread(go)


@pytest.mark.integration
async def test_a_user_id_from_the_backend_counts_as_proven(start_server):
    server = await start_server(CART, secret_keys=[SECRET])
    phone = await Client.connect(server.url)  # never signed in on the page itself
    await phone.track("add_to_cart", {"id": "m1", "name": "Blue Mug", "price": 12.5})
    await phone.close()
    await eventually(lambda: server.hub.stats.connections == 0, "the phone to detach")
    code, body = await _backend(server, {"id": "crm-1", "visitor": phone.visitor, "name": "identify", "props": {"user_id": "u42"}})
    assert code == 200 and body["status"] == "applied"
    assert await server.hub.store.user_visitors(KEY, "u42") == [phone.visitor]  # erasure by user finds it too
    await server.advance(16 * 60)
    laptop = await Client.connect(server.url, user=("u42", identity.sign(SECRET, KEY, "u42", LATER)))
    assert (await laptop.expect("show", campaign="cart"))["title"] == "Still thinking about Blue Mug?"
    code, body = await _backend(server, {"id": "crm-2", "visitor": phone.visitor, "name": "identify", "props": {"user_id": "x" * 200}})
    assert code == 400 and "user_id" in body["error"]


TIP = """
campaigns:
  - id: tip
    trigger: {event: click}
    caps: {per_day: 2}
    message: {kind: toast, title: Tip}
"""


@pytest.mark.integration
@pytest.mark.parametrize("store", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def test_caps_count_per_signed_in_user_across_their_devices(store):
    """per_day: 2 for a user signed in on a phone and a laptop: 2 in all, not 2 + 2."""
    url = redis_store_url() if store == "redis" else "memory://"
    try:
        async with run_server(TIP, store=url, secret_keys=[SECRET]) as server:
            token = identity.sign(SECRET, KEY, "u42", LATER)
            phone = await Client.connect(server.url, user=("u42", token))
            laptop = await Client.connect(server.url, user=("u42", token))
            seen = []
            for device in (phone, laptop, phone, laptop, phone):
                seen += shows(await device.track("click"))
                await server.advance(11)  # the toast is off screen: the next one is not "busy"
            assert len(seen) == 2
            # Anonymous, a browser keeps its own caps: someone else is not limited by u42's.
            stranger = await Client.connect(server.url)
            assert len(shows(await stranger.track("click"))) == 1
            await server.advance(86_401)  # a day later, the user's cap has room again
            assert len(shows(await laptop.track("click"))) == 1
            for client in (phone, laptop, stranger):
                await client.close()
    finally:
        if store == "redis":
            await drop_keys(url)
