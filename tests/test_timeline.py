"""Where a message goes when it is decided: the timeline core (``nudge.rules.timeline``) on its
own, and through the real server (sockets, its scheduler, a fake clock)."""

from __future__ import annotations

import pytest

from .conftest import KEY, Client, drop_keys, eventually, redis_store_url, run_server

CART = """
campaigns:
  - id: cart-abandoned
    trigger: {event: add_to_cart, absent: purchase, within: 30s}
    expires: 1h
    message: {kind: modal, title: "Still thinking about {{ cart.names | first }}?"}
"""
MUG = {"id": "mug", "name": "Blue Mug", "price": 9}


async def detached(server, session: str) -> None:
    await eventually(lambda: (live := server.hub.sessions.get(session)) is not None and live.conn is None, "the detach")


# --- through the server -------------------------------------------------------------------------


@pytest.mark.parametrize("store", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def test_a_reminder_due_after_the_tab_closed_is_shown_in_a_new_tab_within_the_grace(start_server, store):
    """The demo's case: add to cart, close the tab 2 s later, open a new one 34 s later."""
    url = redis_store_url() if store == "redis" else "memory://"
    try:
        server = await start_server(CART, store=url)
        client = await Client.connect(server.url)
        await client.track("add_to_cart", MUG)
        await server.advance(2)
        await client.close()
        await detached(server, client.session)
        await server.advance(32)  # the window closed at 30 s; the old session is still resumable
        assert client.session in server.hub.sessions
        later = await Client.connect(server.url, visitor=client.visitor)  # a new tab: a new session
        assert later.welcome["resumed"] is False
        show = await later.expect("show", campaign="cart-abandoned")
        assert show["title"] == "Still thinking about Blue Mug?"
        await later.ack()
        again = await Client.connect(server.url, visitor=client.visitor, session=client.session, rx=client.rx)
        await again.send({"t": "ping"})
        assert await again.recv() == {"t": "pong"}  # once: the old tab resumed gets nothing more
    finally:
        if store == "redis":
            await drop_keys(url)


async def test_offline_webhook_is_handed_off_when_the_visitor_goes_offline_within_the_grace(tmp_path):
    from .test_webhooks import OFFLINE, Receiver, endpoints_file, settle

    async with Receiver(failures=0) as receiver:
        hooks = endpoints_file(tmp_path, receiver.url, events=["offline"], campaigns=["cart"])
        async with run_server(OFFLINE, webhooks=hooks, grace=300, offline_after=60) as server:
            client = await Client.connect(server.url)
            await client.track("add_to_cart", {"id": "mug", "name": "Mug", "price": 3})
            await client.close()
            await detached(server, client.session)
            await settle(server, 61)  # the window closed at 60 s, the tab closed 61 s ago: offline
            assert client.session in server.hub.sessions  # still within the grace
            (bodies,) = receiver.accepted.values()
            assert bodies[0]["type"] == "offline" and bodies[0]["campaign"] == "cart"
            assert await server.hub.store.take_queued(KEY, client.visitor, server.clock.now()) == []


async def test_a_tab_back_before_the_visitor_is_offline_is_shown_the_message_not_handed_off(tmp_path):
    from .test_webhooks import OFFLINE, Receiver, endpoints_file, settle

    async with Receiver(failures=0) as receiver:
        hooks = endpoints_file(tmp_path, receiver.url, events=["offline"], campaigns=["cart"])
        async with run_server(OFFLINE, webhooks=hooks, grace=300, offline_after=60) as server:
            client = await Client.connect(server.url)
            await client.track("add_to_cart", {"id": "mug", "name": "Mug", "price": 3})
            await server.advance(30)
            await client.close()
            await detached(server, client.session)
            await settle(server, 40)  # due at 60 s, 10 s after the tab closed: not offline yet
            later = await Client.connect(server.url, visitor=client.visitor)
            await later.expect("show", campaign="cart")
            await settle(server, 120)
            assert sum(receiver.tries.values()) == 0
