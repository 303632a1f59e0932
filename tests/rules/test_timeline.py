"""Where a message goes when it is decided: the timeline core (``nudge.rules.timeline``) on its
own, and through the real server (sockets, its scheduler, a fake clock)."""

from __future__ import annotations

import pytest
from nudge.rules.state import VisitorState
from nudge.rules.timeline import (
    DROP,
    HAND_OFF,
    QUEUE,
    TAB,
    Placement,
    Presence,
    Tab,
    at_check,
    next_due,
    not_before,
    offline_rule,
    place,
    presence,
    session_ends_at,
)

from ..conftest import KEY, Client, drop_keys, eventually, redis_store_url, run_server

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


# --- the core, on its own -----------------------------------------------------------------------

T = 1_700_000_000.0


def test_the_latest_attached_tab_is_the_one_decisions_are_made_in():
    tabs = [Tab("s_1"), Tab("s_2", detached_at=T - 5), Tab("s_3")]
    assert presence(tabs, T) == Presence("s_3", float("inf"))
    assert not presence(tabs, T).offline(T + 10**9)


def test_with_no_tab_attached_the_visitor_is_away_then_offline():
    tabs = [Tab("s_1", detached_at=T - 100), Tab("s_2", detached_at=T - 10)]
    seen = presence(tabs, T, offline_after=60, grace=300)
    assert seen == Presence(None, T + 50)  # the last tab closed 10 s ago: offline 60 s after that
    assert not seen.offline(T) and seen.offline(T + 50)
    assert presence(tabs, T, offline_after=60, grace=20).offline_at == T + 10  # the grace ran out first
    assert presence([], T) == Presence(None, T)  # no session at all: offline now
    assert session_ends_at(T, 300) == T + 300


def test_where_a_show_goes():
    attached, away, offline = Presence("s_1", float("inf")), Presence(None, T + 30), Presence(None, T - 1)
    assert place(True, attached, DROP, T) == Placement(TAB)
    for rule in (QUEUE, HAND_OFF, DROP):
        assert place(False, offline, rule, T) == Placement(rule)
    assert place(False, away, QUEUE, T) == Placement(QUEUE)
    assert place(False, away, HAND_OFF, T) == Placement(QUEUE, T + 30)  # checked again when offline
    assert place(False, away, DROP, T) == Placement(QUEUE, T + 30)
    assert place(True, away, QUEUE, T) == Placement(QUEUE)  # decided in a tab that has closed since


def test_the_check_at_going_offline():
    assert at_check(Presence(None, T), HAND_OFF, T) == Placement(HAND_OFF)
    assert at_check(Presence("s_2", float("inf")), HAND_OFF, T) == Placement(QUEUE)  # a tab takes it
    assert at_check(Presence(None, T + 40), DROP, T) == Placement(QUEUE, T + 40)  # a tab came and went


def test_the_offline_rule_of_a_campaign():
    assert offline_rule("webhook", True) == HAND_OFF
    assert offline_rule("webhook", False) == QUEUE  # no endpoint takes it
    assert offline_rule("drop", False) == DROP
    assert offline_rule("queue", True) == QUEUE


def test_time_never_goes_back_for_the_engine():
    visitor = VisitorState("site", "v_1", first_seen=T, last_seen=T + 5)
    assert not_before(visitor, T + 1) == T + 5 and not_before(visitor, T + 9) == T + 9
    visitor.last_shown_at = T + 20
    assert not_before(visitor, T + 9) == T + 20


def test_what_falls_due_first_a_sessions_own_times_at_a_tie():
    assert next_due([], [], {}) is None
    assert next_due([(T + 5, "s_1")], [(T + 3, "s_2")], {"absence:a": T + 4}) == (T + 3, "end", "s_2")
    assert next_due([(T + 4, "s_1")], [(T + 4, "s_2")], {"absence:a": T + 4}) == (T + 4, "wake", "s_1")
    assert next_due([], [], {"absence:a": T + 9, "delay:b": T + 2}) == (T + 2, "timer", "delay:b")


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
    from ..ops.test_webhooks import OFFLINE, Receiver, endpoints_file, settle

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
    from ..ops.test_webhooks import OFFLINE, Receiver, endpoints_file, settle

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
