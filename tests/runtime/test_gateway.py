"""The WebSocket endpoint end to end: a real server on a free port, driven by the ``websockets``
client in both encodings, time moved by a fake clock."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import msgpack
import pytest
import websockets

from ..conftest import KEY, ORIGIN, Client, shows, visitor_id

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("socket_layer")]  # on each socket layer

CAMPAIGNS = """
version: 1
campaigns:
  - id: mug-toast
    trigger: {event: add_to_cart, where: {id: mug}}
    message: {kind: toast, title: "Nice {{ event.name }}"}
  - id: cart-abandoned
    priority: 10
    trigger: {event: add_to_cart, absent: purchase, within: 15m}
    expires: 1h
    message:
      kind: modal
      title: "Still thinking about {{ cart.names | first }}?"
      body: "{{ cart.names | join(', ') }}"
      cta: {label: Checkout, url: /checkout}
  - id: read-more
    trigger: {path: /article*, scroll: 50, dwell: 5s}
    caps: {per_session: 1}
    message: {kind: banner, position: bottom, title: "Enjoying it?"}
"""

MUG = {"id": "mug", "name": "Blue Mug", "price": 12.5}
TOWEL = {"id": "towel", "name": "Tea Towel", "price": 6}


async def test_handshake_and_acks(start_server, encoding):
    server = await start_server(CAMPAIGNS)
    client = await Client.connect(server.url, encoding=encoding)
    assert client.welcome["resumed"] is False
    assert client.welcome["ack"] == 0
    assert client.session.startswith("s_")
    frames = await client.track("page_view", {"path": "/"})
    assert frames == [{"t": "ack", "seq": 1}]
    await client.send({"t": "ping"})
    assert await client.recv() == {"t": "pong"}


async def test_server_makes_a_visitor_id_when_none_is_sent(start_server):
    server = await start_server(CAMPAIGNS)
    client = await Client.connect(server.url, hello=False)
    await client.send({"t": "hello", "v": 1, "key": KEY})
    welcome = await client.recv()
    assert welcome["visitor"].startswith("v_") and len(welcome["visitor"]) > 16


async def test_show_is_personalised_and_sent_before_the_ack(start_server, encoding):
    server = await start_server(CAMPAIGNS)
    client = await Client.connect(server.url, encoding=encoding)
    frames = await client.track("add_to_cart", MUG)
    assert [f["t"] for f in frames] == ["show", "ack"]
    show = frames[0]
    assert show["seq"] == 1
    assert show["campaign"] == "mug-toast"
    assert show["kind"] == "toast"
    assert show["title"] == "Nice Blue Mug"


async def test_a_resent_event_is_applied_once(start_server, encoding):
    server = await start_server(CAMPAIGNS)
    client = await Client.connect(server.url, encoding=encoding)
    await client.event("add_to_cart", MUG, seq=1)
    first = [await client.recv(), await client.recv()]
    assert [f["t"] for f in first] == ["show", "ack"]
    await client.event("add_to_cart", MUG, seq=1)
    assert await client.recv() == {"t": "ack", "seq": 1}
    visitor = server.hub.visitors[(KEY, client.visitor)].state
    assert visitor.cart.count == 1
    assert server.hub.stats.duplicates == 1
    await client.send({"t": "ping"})
    assert await client.recv() == {"t": "pong"}  # and no second show before it


async def test_reconnect_resumes_the_session_with_nothing_lost_or_shown_twice(start_server, encoding):
    server = await start_server(CAMPAIGNS)
    first = await Client.connect(server.url, encoding=encoding)
    await first.track("page_view", {"path": "/shop"})
    frames = await first.track("add_to_cart", MUG)
    assert len(shows(frames)) == 1  # show seq 1 received but never acknowledged
    await first.event("add_to_cart", TOWEL)  # seq 3: sent, its ack never read
    await first.close()

    # The tab reconnects knowing only its session id and what it processed (nothing: rx=0).
    second = await Client.connect(server.url, encoding=encoding, visitor=first.visitor, session=first.session, rx=0, seq=3)
    assert second.welcome["resumed"] is True
    assert second.welcome["session"] == first.session
    assert second.welcome["ack"] == 3  # the server applied seq 3: the client must not resend it
    resent = await second.recv()
    assert resent["t"] == "show" and resent["seq"] == 1 and resent["campaign"] == "mug-toast"
    await second.event("add_to_cart", TOWEL, seq=3)  # a client that resends anyway ...
    assert await second.recv() == {"t": "ack", "seq": 3}  # ... is acknowledged, not applied again
    visitor = server.hub.visitors[(KEY, first.visitor)].state
    assert {i.id: i.quantity for i in visitor.cart.items.values()} == {"mug": 1, "towel": 1}
    assert server.hub.sessions[first.session].state.counters["page_view"] == 1
    await second.ack(1)
    await second.close()

    # Having acknowledged seq 1, a third connection gets nothing again.
    third = await Client.connect(server.url, encoding=encoding, visitor=first.visitor, session=first.session, rx=1, seq=3)
    assert third.welcome["resumed"] is True
    await third.send({"t": "ping"})
    assert await third.recv() == {"t": "pong"}
    await server.advance(10)  # the first toast has left the screen
    frames = await third.track("add_to_cart", MUG)
    assert [f["t"] for f in frames] == ["show", "ack"]
    assert frames[0]["seq"] == 2  # message seqs continue in the resumed session


async def test_resuming_someone_elses_session_starts_a_new_one(start_server):
    server = await start_server(CAMPAIGNS)
    owner = await Client.connect(server.url)
    intruder = await Client.connect(server.url, session=owner.session)  # another visitor id
    assert intruder.welcome["resumed"] is False
    assert intruder.session != owner.session


async def test_a_second_connection_takes_the_session_over(start_server):
    server = await start_server(CAMPAIGNS)
    first = await Client.connect(server.url)
    second = await Client.connect(server.url, visitor=first.visitor, session=first.session)
    assert second.welcome["resumed"] is True
    code, reason = await first.closed()
    assert code == 4409
    assert "resumed" in reason
    assert await second.track("page_view", {"path": "/"}) == [{"t": "ack", "seq": 1}]


@pytest.mark.parametrize(
    "frame, code",
    [
        ({"t": "nope"}, "malformed"),
        ([1, 2, 3], "malformed"),
        ({"t": "ev", "seq": "one", "name": "click"}, "bad_event"),
        ({"t": "hello", "v": 1, "key": KEY}, "protocol"),
        ({"t": "ack", "seq": -1}, "malformed"),
    ],
)
async def test_bad_frames_get_an_error_and_the_connection_lives_on(start_server, encoding, frame, code):
    server = await start_server(CAMPAIGNS)
    client = await Client.connect(server.url, encoding=encoding)
    await client.send(frame)
    error = await client.recv()
    assert error["t"] == "error" and error["code"] == code and error["reason"]
    assert await client.track("add_to_cart", MUG)  # still works


async def test_invalid_json_and_msgpack_bytes(start_server):
    server = await start_server(CAMPAIGNS)
    as_json = await Client.connect(server.url, encoding="json")
    await as_json.ws.send("{not json")
    assert (await as_json.recv())["code"] == "malformed"
    as_msgpack = await Client.connect(server.url, encoding="msgpack")
    await as_msgpack.ws.send(b"\xc1\xc1")  # 0xc1 is never used in MessagePack
    assert (await as_msgpack.recv())["code"] == "malformed"
    await as_msgpack.ws.send(msgpack.packb({"t": "ping", "x": msgpack.ExtType(1, b"zz")}))
    assert (await as_msgpack.recv())["code"] == "malformed"  # ext types are refused
    await as_msgpack.ws.send('{"t": "ping"}')  # text on a binary connection
    assert (await as_msgpack.recv())["code"] == "malformed"
    await as_json.ws.send(json.dumps({"t": "ping"}))
    assert await as_json.recv() == {"t": "pong"}


@pytest.mark.parametrize(
    "props, reason",
    [
        ({"name": "Mug", "price": 3}, "props.id is required"),
        ({"id": "mug", "name": "Mug", "price": "cheap"}, "props.price must be a number"),
        ({"id": "mug", "name": "Mug", "quantity": 0}, "props.quantity"),
    ],
)
async def test_bad_event_is_refused_with_its_field_and_acknowledged(start_server, props, reason):
    server = await start_server(CAMPAIGNS)
    client = await Client.connect(server.url)
    seq = await client.event("add_to_cart", props)
    error = await client.recv()
    assert error["code"] == "bad_event" and error["seq"] == seq and reason in error["reason"]
    assert await client.recv() == {"t": "ack", "seq": seq}
    assert server.hub.visitors[(KEY, client.visitor)].state.cart.count == 0


@pytest.mark.parametrize("price", [10**400, -(10**309)])
async def test_a_number_past_the_largest_float_is_refused_at_the_edge(start_server, price):
    """No number a price can be (it overflowed float() once: 1011 and a traceback per frame): the
    rule for values (docs/protocol.md) refuses the frame, the socket stays open, nothing applied."""
    server = await start_server(CAMPAIGNS)
    client = await Client.connect(server.url)
    await client.event("add_to_cart", {"id": "mug", "name": "Mug", "price": price})
    error = await client.recv()
    assert error["t"] == "error" and error["code"] == "malformed" and "1.8e308" in error["reason"], error
    assert await client.track("click", {"target": "x"}) == [{"t": "ack", "seq": client.seq}]
    assert server.hub.visitors[(KEY, client.visitor)].state.cart.count == 0


async def test_unknown_event_name(start_server):
    server = await start_server(CAMPAIGNS)
    client = await Client.connect(server.url)
    seq = await client.event("sign_up")
    error = await client.recv()
    assert error == {"t": "error", "code": "unknown_event", "seq": seq, "reason": error["reason"]}
    assert "sign_up" in error["reason"] and "events:" in error["reason"]


async def test_declared_custom_events_are_accepted(start_server):
    server = await start_server("campaigns: []\nevents: [sign_up]\n")
    client = await Client.connect(server.url)
    assert await client.track("sign_up", {"plan": "pro"}) == [{"t": "ack", "seq": 1}]


async def test_oversized_frame_closes_only_that_socket(start_server, encoding):
    server = await start_server(CAMPAIGNS, max_frame=4096)
    bystander = await Client.connect(server.url)
    client = await Client.connect(server.url, encoding=encoding)
    await client.event("click", {"text": "x" * 5000})
    code, _ = await client.closed()
    assert code == 1009
    assert await bystander.track("add_to_cart", MUG)


@pytest.mark.parametrize(
    "key, origin, code",
    [
        ("pk_unknown", ORIGIN, 4401),
        ("sk_live_secret", ORIGIN, 4401),
        (KEY, "http://evil.test", 4403),
        (KEY, "http://shop.test.evil.io", 4403),
        (KEY, "null", 4403),
        (KEY, None, 4403),
    ],
)
async def test_refused_keys_and_origins(start_server, key, origin, code):
    server = await start_server(CAMPAIGNS)
    client = await Client.connect(server.url, key=key, origin=origin, hello=False)
    await client.send({"t": "hello", "v": 1, "key": key, "visitor": visitor_id()})
    assert (await client.closed())[0] == code
    assert server.hub.sessions == {}  # nothing was created for it


@pytest.mark.parametrize(
    "first, code",
    [
        ({"t": "ev", "seq": 1, "name": "click"}, 4400),
        ({"t": "hello", "v": 2, "key": KEY}, 4400),
        ({"t": "hello", "v": 1, "key": KEY, "visitor": "short"}, 4400),
        ("not json", 4400),
    ],
)
async def test_the_first_frame_must_be_a_valid_hello(start_server, first, code):
    server = await start_server(CAMPAIGNS)
    client = await Client.connect(server.url, hello=False)
    if isinstance(first, str):
        await client.ws.send(first)
    else:
        await client.send(first)
    assert (await client.closed())[0] == code


async def test_no_hello_in_time(start_server):
    server = await start_server(CAMPAIGNS, handshake_timeout=0.2)
    client = await Client.connect(server.url, hello=False)
    assert (await client.closed())[0] == 4408


async def test_unknown_subprotocol_is_refused_at_the_handshake(start_server):
    server = await start_server(CAMPAIGNS)
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(server.url, subprotocols=["chat"], origin=ORIGIN)
    assert refused.value.response.status_code == 403


async def test_no_subprotocol_means_json(start_server):
    server = await start_server(CAMPAIGNS)
    async with websockets.connect(server.url, origin=ORIGIN) as ws:
        await ws.send(json.dumps({"t": "hello", "v": 1, "key": KEY, "visitor": visitor_id()}))
        assert json.loads(await ws.recv())["t"] == "welcome"


async def test_rate_limit_closes_and_the_unacknowledged_event_is_resent(start_server):
    server = await start_server(CAMPAIGNS, events_per_second=1, event_burst=3)
    client = await Client.connect(server.url)
    for _ in range(3):
        await client.track("click")
    await client.event("add_to_cart", MUG)  # the fourth: over budget
    code, reason = await client.closed()
    assert code == 4429 and "events per second" in reason
    await server.advance(10)  # the budget refills with time
    again = await Client.connect(server.url, visitor=client.visitor, session=client.session, seq=3)
    assert again.welcome["ack"] == 3  # seq 4 was not applied: the client resends it
    frames = await again.track("add_to_cart", MUG)
    assert [f["t"] for f in frames] == ["show", "ack"]


async def test_cart_abandoned_fires_when_the_window_closes(start_server, encoding):
    server = await start_server(CAMPAIGNS)
    client = await Client.connect(server.url, encoding=encoding)
    await client.track("add_to_cart", TOWEL)
    await client.track("add_to_cart", MUG)
    await client.ack()
    await server.advance(14 * 60)
    await client.send({"t": "ping"})
    assert await client.recv() == {"t": "pong"}  # nothing yet
    await server.advance(60)
    show = await client.expect("show", campaign="cart-abandoned")
    assert show["title"] == "Still thinking about Tea Towel?"
    assert show["body"] == "Tea Towel, Blue Mug"
    assert show["cta"] == {"label": "Checkout", "url": "/checkout"}


async def test_purchase_cancels_the_cart_reminder(start_server):
    server = await start_server(CAMPAIGNS)
    client = await Client.connect(server.url)
    await client.track("add_to_cart", TOWEL)
    await client.track("purchase", {"value": 6})
    await server.advance(16 * 60)
    await client.send({"t": "ping"})
    assert await client.recv() == {"t": "pong"}
    assert server.hub.stats.timers_fired == 0


async def test_cart_reminder_waits_for_the_next_visit_when_the_tab_is_closed(start_server):
    server = await start_server(CAMPAIGNS, grace=60)
    client = await Client.connect(server.url)
    await client.track("add_to_cart", TOWEL)
    await client.close()
    await server.advance(61)  # the session is over
    assert client.session not in server.hub.sessions
    await server.advance(15 * 60)  # the window closes while the visitor is away
    assert server.hub.stats.shown == 1
    later = await Client.connect(server.url, visitor=client.visitor)  # a new visit, a new session
    assert later.welcome["resumed"] is False
    show = await later.expect("show", campaign="cart-abandoned")
    assert show["title"] == "Still thinking about Tea Towel?"
    assert show["seq"] == 1


async def test_a_message_decided_during_a_page_change_reaches_the_next_page(start_server):
    server = await start_server(CAMPAIGNS, grace=1800)
    client = await Client.connect(server.url)
    await client.track("add_to_cart", TOWEL)
    await client.close()  # navigating: the socket closes ...
    await server.advance(15 * 60)  # ... and the window closes in between (within the grace period)
    after = await Client.connect(server.url, visitor=client.visitor, session=client.session, seq=client.seq)
    assert after.welcome["resumed"] is True
    show = await after.expect("show", campaign="cart-abandoned")
    assert show["seq"] == 1


async def test_page_trigger_fires_on_scroll_and_dwell(start_server, encoding):
    server = await start_server(CAMPAIGNS)
    client = await Client.connect(server.url, encoding=encoding)
    await client.track("page_view", {"path": "/article/42"})
    assert shows(await client.track("scroll", {"depth": 60})) == []  # scrolled, but only just arrived
    await server.advance(5)
    show = await client.expect("show", campaign="read-more")
    assert show["kind"] == "banner" and show["position"] == "bottom"


async def test_healthz_counts_connections_and_events(start_server):
    server = await start_server(CAMPAIGNS)
    health = json.loads(await fetch(f"{server.http}/healthz"))
    assert health["status"] == "ok" and health["connections"] == 0
    client = await Client.connect(server.url)
    await client.track("page_view", {"path": "/"})
    health = json.loads(await fetch(f"{server.http}/healthz"))
    assert health["connections"] == 1 and health["events"] == 1


async def fetch(url: str) -> bytes:
    """GET in a thread: the server runs in this test's event loop."""

    def get() -> bytes:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read()

    return await asyncio.to_thread(get)


# --- evs: several events in one frame ---------------------------------------------------------


async def test_a_batch_is_applied_in_order_and_acked_once_after_its_shows(start_server, encoding):
    server = await start_server(CAMPAIGNS)
    client = await Client.connect(server.url, encoding=encoding)
    await client.send({"t": "evs", "events": [
        {"seq": 1, "name": "page_view", "props": {"path": "/"}},
        {"seq": 2, "name": "add_to_cart", "props": MUG},
        {"seq": 3, "name": "scroll", "props": {"depth": 30}},
    ]})
    show, ack = await client.recv(), await client.recv()
    assert show["t"] == "show" and show["campaign"] == "mug-toast"
    assert ack == {"t": "ack", "seq": 3}
    assert server.hub.stats.events == 3
    client.seq = 3
    assert await client.track("click", {"target": "x"}) == [{"t": "ack", "seq": 4}]


async def test_a_batch_skips_resent_events_and_refuses_bad_ones_alone(start_server, encoding):
    server = await start_server(CAMPAIGNS)
    client = await Client.connect(server.url, encoding=encoding)
    await client.track("page_view", {"path": "/"})
    await client.send({"t": "evs", "events": [
        {"seq": 1, "name": "page_view", "props": {"path": "/"}},  # a resend
        {"seq": 2, "name": "add_to_cart", "props": {"name": "no id"}},
        "not a map",
        {"seq": 3, "name": "add_to_cart", "props": TOWEL},
    ]})
    bad, not_a_map, ack = await client.recv(), await client.recv(), await client.recv()
    assert bad["code"] == "bad_event" and bad["seq"] == 2
    assert not_a_map["code"] == "bad_event" and "seq" not in not_a_map
    assert ack == {"t": "ack", "seq": 3}
    assert server.hub.stats.events == 2 and server.hub.stats.duplicates == 1
    assert server.hub.visitors[(KEY, client.visitor)].state.cart.count == 1


@pytest.mark.parametrize("events", [[], "x", [{"seq": n, "name": "click"} for n in range(1, 102)]])
async def test_a_malformed_batch_is_refused_whole(start_server, events):
    server = await start_server(CAMPAIGNS)
    client = await Client.connect(server.url)
    await client.send({"t": "evs", "events": events})
    error = await client.recv()
    assert error["t"] == "error" and error["code"] == "malformed"
    assert server.hub.stats.events == 0


async def test_the_chosen_socket_layer_serves_ws_and_http_shares_its_port(start_server, socket_layer):
    server = await start_server()
    ws = await websockets.connect(server.url, subprotocols=["nudge.v1.json"], origin=ORIGIN, compression=None)
    try:
        # uvicorn names itself in the 101; picows sends no Server header
        assert (ws.response.headers.get("server") == "uvicorn") == (socket_layer == "uvicorn")
    finally:
        await ws.close()
    health = await asyncio.to_thread(lambda: json.loads(urllib.request.urlopen(server.http + "/healthz", timeout=5).read()))
    assert health["status"] == "ok"


def test_auto_picks_picows_when_installed_and_uvicorn_for_deflate():
    from nudge.runtime.config import Settings

    assert Settings().ws_server == "uvicorn"  # the default until picows passes the whole suite
    assert Settings().socket_layer() == "uvicorn"
    assert Settings(ws_server="auto").socket_layer() == "picows"  # installed with the tests (scripts/setup)
    assert Settings(ws_server="auto", deflate=True).socket_layer() == "uvicorn"  # picows has no per-message deflate
    assert Settings(ws_server="uvicorn").socket_layer() == "uvicorn"
    assert "picows has no per-message deflate" in "; ".join(Settings(ws_server="picows", deflate=True).problems())
    assert "ws_server must be" in "; ".join(Settings(ws_server="h2").problems())
