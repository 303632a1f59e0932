"""Several nodes sharing one Redis, in this process: each a real server on its own port with its
own fake clock, all on the real Redis server (a key prefix per test, removed afterwards)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from ..conftest import KEY, WAIT, Client, drop_keys, eventually, redis_store_url, run_server, shows

pytestmark = [pytest.mark.redis, pytest.mark.integration]

CART = """
campaigns:
  - id: cart
    trigger: {event: add_to_cart, absent: purchase, within: 60s}
    offline: queue
    message: {kind: toast, body: "Your cart is waiting"}
"""

OFFER = """
campaigns:
  - id: offer
    trigger: {event: click}
    caps: {per_day: 5}
    message: {kind: toast, body: "Offer"}
"""


async def written(node, session: str, seq: int) -> None:
    """Await the node's write of the session (applied event ``seq``) reaching Redis."""
    async def held() -> bool:
        stored = await node.hub.store.load_session(KEY, session)
        return stored is not None and stored.last_event_seq >= seq and stored.detached_at is not None

    await eventually(held, f"session {session} written up to event {seq}")


@contextlib.asynccontextmanager
async def nodes(campaigns: str, count: int = 2, **overrides):
    url = redis_store_url(lease=30)
    try:
        async with contextlib.AsyncExitStack() as stack:
            running = [
                await stack.enter_async_context(run_server(campaigns, store=url, **overrides))
                for _ in range(count)
            ]
            yield running
    finally:
        await drop_keys(url)


async def test_a_timer_claimed_on_one_node_reaches_the_visitor_on_another():
    async with nodes(CART) as (a, b):
        client = await Client.connect(a.url)
        await client.track("add_to_cart", {"id": "mug", "name": "Mug", "price": 3})
        await b.advance(61)  # only B's clock reaches the due time: B claims the timer
        assert b.hub.stats.timers_relayed == 1 and b.hub.stats.timers_fired == 0
        show = await client.expect("show", campaign="cart")
        assert show["body"] == "Your cart is waiting"
        assert a.hub.stats.timers_fired == 1
        await client.close()


async def test_a_purchase_on_one_node_cancels_the_timer_for_every_node():
    async with nodes(CART) as (a, b):
        client = await Client.connect(a.url)
        await client.track("add_to_cart", {"id": "mug", "name": "Mug", "price": 3})
        await client.track("purchase", {"value": 3})
        await b.advance(61)
        await a.advance(61)
        assert a.hub.stats.timers_fired == b.hub.stats.timers_fired == 0
        await client.close()


async def test_one_cap_hammered_from_two_nodes_is_never_exceeded():
    """1,000 trials: one visitor with a tab on each node clicks in both at once; each trial is a
    campaign capped at once a day. Both nodes' engines say yes from their own state; the
    check-and-count in Redis lets exactly one through, and the other becomes a suppression."""
    trials = 1000
    campaigns = "campaigns:\n" + "".join(
        f"  - {{id: c{i}, trigger: {{event: click, where: {{target: t{i}}}}}, caps: {{per_day: 1}},"
        f" message: {{kind: toast, body: x}}}}\n"
        for i in range(trials)
    )
    budget = {"events_per_second": 1e6, "event_burst": 10 * trials}  # the fake clock stands still
    async with nodes(campaigns, **budget) as (a, b):
        on_a = await Client.connect(a.url)
        on_b = await Client.connect(b.url, visitor=on_a.visitor)

        async def hammer(client: Client) -> list[dict]:
            for i in range(trials):
                await client.event("page_view", {"path": f"/p{i}"})  # takes the last message away
                await client.event("click", {"target": f"t{i}"})
            frames = []
            while not frames or frames[-1] != {"t": "ack", "seq": 2 * trials}:
                frames.append(await client.recv())
            return shows(frames)

        shown_a, shown_b = await asyncio.gather(hammer(on_a), hammer(on_b))
        campaigns_shown = [f["campaign"] for f in shown_a + shown_b]
        assert len(campaigns_shown) == len(set(campaigns_shown)) == trials  # once each, never twice
        lost = a.hub.stats.lost_races + b.hub.stats.lost_races
        assert lost == trials  # every trial was a real race, lost by one node
        await on_a.close()
        await on_b.close()


async def test_a_session_resumes_on_the_other_node_with_nothing_lost_or_repeated():
    async with nodes(OFFER) as (a, b):
        client = await Client.connect(a.url)
        first = shows(await client.track("click", {"target": "x"}))
        await client.ack()
        await client.track("page_view", {"path": "/next"})  # the first one leaves the screen
        second = shows(await client.track("click", {"target": "x"}))  # not acknowledged
        assert [f["seq"] for f in first + second] == [1, 2]
        await client.close()  # the socket drops; the next one lands on B
        await written(a, client.session, seq=3)

        again = await Client.connect(b.url, visitor=client.visitor, session=client.session, rx=1, seq=client.seq)
        assert again.welcome["resumed"] is True and again.welcome["ack"] == 3
        assert (await again.expect("show"))["seq"] == 2  # the unacknowledged one, again
        await again.track("page_view", {"path": "/after"})
        third = shows(await again.track("click", {"target": "x"}))
        assert [f["seq"] for f in third] == [3]
        await eventually(lambda: a.hub.sessions == {}, "A let go of the session")
        await a.advance(3600)  # past A's grace period: A queues nothing, drops nothing
        await again.close()
        await written(b, client.session, seq=again.seq)
        resumed = await Client.connect(b.url, visitor=client.visitor, session=client.session, rx=3, seq=again.seq)
        assert resumed.welcome["resumed"] is True and resumed.welcome["ack"] == again.seq
        await resumed.close()


async def test_a_connected_session_taken_over_by_another_node_is_closed_on_the_first():
    async with nodes(OFFER) as (a, b):
        client = await Client.connect(a.url)
        await client.track("click", {"target": "x"})
        await a.advance(1)  # written behind
        other = await Client.connect(b.url, visitor=client.visitor, session=client.session, rx=1, seq=client.seq)
        assert other.welcome["resumed"] is True
        assert (await client.closed())[0] == 4409
        await other.close()


async def test_a_relay_listener_that_dies_silently_is_replaced():
    """The subscription is dropped under the listener's feet (as after a reconnect that forgot
    to resubscribe): the node's own probe goes unanswered, it subscribes again, and a message
    relayed from the other node gets through."""
    async with nodes(CART) as (a, b):
        relay = a.hub.cluster
        await a.advance(1)  # first probe sent
        await eventually(lambda: relay.probe_answered, "probe heard")
        # Faults injected under the relay, in its own subscription: no public door is meant to do this.
        await relay._pubsub.unsubscribe()  # noqa: SLF001  (silent: no error, no more messages)
        await a.advance(1)  # the probe sent now never comes back ...
        await a.advance(1)  # ... which the next check notices
        assert relay.resubscribed == 1 and relay.healthy

        client = await Client.connect(a.url)
        await client.track("add_to_cart", {"id": "mug", "name": "Mug", "price": 3})
        await b.advance(70)  # A's clock moved 2 s: due at A's T0 + 62
        await client.expect("show", campaign="cart")
        await client.close()


async def test_a_relay_whose_connection_dies_resubscribes():
    async with nodes(CART) as (a, b):
        relay = a.hub.cluster
        # A fault injected under the relay, in its own subscription: no public door is meant to do this.
        await relay._pubsub.connection.disconnect()  # noqa: SLF001  (the socket under the listener is gone)
        await eventually(
            lambda: relay._listener is None or relay._listener.done() or relay._pubsub.connection is not None,  # noqa: SLF001
            "listener noticed",
        )
        await a.advance(1)
        await a.advance(1)
        client = await Client.connect(a.url)
        await client.track("add_to_cart", {"id": "mug", "name": "Mug", "price": 3})
        await b.advance(70)
        await client.expect("show", campaign="cart")
        await client.close()


async def test_a_timer_whose_node_died_mid_way_fires_once_after_the_lease():
    """Two ways a node can die holding a claimed timer, played out on the store directly: before
    deciding (the timer is claimed again after the lease and fires), and after queuing the
    message but before finishing (claimed again, refused as a duplicate: queued once)."""
    from nudge.rules.state import VisitorState
    from nudge.store import CapCheck

    async with nodes(CART, count=1) as (node,):
        store, clock = node.hub.store, node.clock
        now = clock.now()
        for visitor in ("v_dies_before", "v_dies_after"):
            await store.save_visitor(VisitorState(KEY, visitor, first_seen=now))
            await store.schedule(KEY, visitor, "absence:cart", now + 60)
        # The dead node: it claimed both, carried out one of them, finished neither.
        claimed = await store.claim_due(now + 60)
        assert len(claimed) == 2
        after = next(t for t in claimed if t.visitor == "v_dies_after")
        check = CapCheck("cart")
        queued = ({"campaign": "cart", "kind": "toast", "body": "Your cart is waiting"}, now + 3600)
        assert await store.confirm_show(KEY, after.visitor, check, after.due, once=after.token, queue=queued) is None

        await node.advance(60 + 29)  # the lease (30 s) has not run out yet
        assert node.hub.stats.timers_fired == 0
        await node.advance(2)
        assert node.hub.stats.timers_fired == 2 and node.hub.stats.lost_races == 1  # the duplicate
        assert len(await store.take_queued(KEY, "v_dies_before", clock.now())) == 1
        assert len(await store.take_queued(KEY, "v_dies_after", clock.now())) == 1
        assert await store.next_due() is None


async def test_a_node_that_missed_the_take_over_does_not_resume_from_its_old_copy():
    """A session moves A → B, but A never hears that B took it (the relay lost the record): when
    it comes back to A, A sees in Redis that B owned it since and reads B's state, not its own."""
    async with nodes(OFFER) as (a, b):
        async def deaf(record: dict) -> None:
            pass

        a.hub.cluster.handler = deaf
        client = await Client.connect(a.url)
        assert [f["seq"] for f in shows(await client.track("click", {"target": "x"}))] == [1]
        await client.ack()
        await client.close()
        await written(a, client.session, seq=client.seq)

        on_b = await Client.connect(b.url, visitor=client.visitor, session=client.session, rx=1, seq=client.seq)
        await on_b.track("page_view", {"path": "/b"})
        assert [f["seq"] for f in shows(await on_b.track("click", {"target": "x"}))] == [2]
        await on_b.ack()
        await on_b.close()
        await written(b, client.session, seq=on_b.seq)
        assert client.session in a.hub.sessions  # A still holds its old, detached copy

        back = await Client.connect(a.url, visitor=client.visitor, session=client.session, rx=2, seq=on_b.seq)
        assert back.welcome["resumed"] is True and back.welcome["ack"] == on_b.seq  # B's state
        await back.track("page_view", {"path": "/a"})
        assert [f["seq"] for f in shows(await back.track("click", {"target": "x"}))] == [3]
        await back.close()


async def test_events_make_no_redis_round_trip_and_are_written_behind_in_one_batch():
    async with nodes(OFFER, count=1, events_per_second=1e6, event_burst=10_000) as (node,):
        redis = node.hub.store.redis
        calls = {"commands": 0, "pipelines": 0}
        command, pipeline = redis.execute_command, redis.pipeline

        async def counted_command(*args, **kwargs):
            calls["commands"] += 1
            return await command(*args, **kwargs)

        def counted_pipeline(*args, **kwargs):
            calls["pipelines"] += 1
            return pipeline(*args, **kwargs)

        clients = [await Client.connect(node.url) for _ in range(5)]
        redis.execute_command, redis.pipeline = counted_command, counted_pipeline
        for client in clients:
            for i in range(100):
                await client.track("page_view" if i % 2 else "scroll", {"path": f"/p{i}", "depth": i})
        assert calls == {"commands": 0, "pipelines": 0}  # 500 events, not one round trip
        batches = []
        save = node.hub.store.save_visitors

        async def counted_save(visitors, sessions):
            batches.append((len(visitors), len(sessions)))
            await save(visitors, sessions)

        node.hub.store.save_visitors = counted_save
        await node.advance(node.settings.write_behind)
        assert batches == [(5, 5)]  # every changed session and visitor, in one batch
        stored = await node.hub.store.load_session(KEY, clients[0].session)
        assert stored.last_event_seq == 100
        for client in clients:
            await client.close()


async def test_a_socket_closing_during_a_write_behind_waits_for_it():
    """A write-behind goes out in several pipelines; a socket that closes meanwhile writes its
    session once that write-behind has ended, not alongside it (so a state encoded earlier never
    lands after one encoded later)."""
    async with nodes(OFFER, count=1) as (node,):
        first, second = await Client.connect(node.url), await Client.connect(node.url)
        await first.track("page_view", {"path": "/a"})
        await second.track("page_view", {"path": "/b"})
        store, held, release = node.hub.store, asyncio.Event(), asyncio.Event()
        save, writes = store.save_visitors, []

        async def held_save(visitors, sessions):
            writes.append(("start", sorted(state.id for state, _ in sessions)))
            if len(writes) == 1:
                held.set()
                await release.wait()  # the tick's write-behind, still under way
            await save(visitors, sessions)
            writes.append(("end", None))

        store.save_visitors = held_save
        tick = asyncio.create_task(node.advance(node.settings.write_behind))
        async with asyncio.timeout(WAIT):
            await held.wait()
        await first.track("scroll", {"depth": 40})
        await first.close()
        live = node.hub.sessions[first.session]
        await eventually(lambda: live.conn is None, "the session detached")
        assert writes == [("start", sorted([first.session, second.session]))]  # its write waits
        release.set()
        await tick
        await eventually(lambda: len(writes) == 4, "the detached session written")
        assert writes[1:] == [("end", None), ("start", [first.session]), ("end", None)]
        stored = await store.load_session(KEY, first.session)
        assert stored.last_event_seq == 2 and stored.detached_at is not None
        await second.close()


async def test_write_behinds_keep_their_cadence_however_long_one_takes():
    """The next write-behind is due ``write_behind`` s after the last one began: one that takes
    a while under load does not push the next back (what a crash loses stays within the
    interval), and one that took longer than the interval is followed at once."""
    async with nodes(OFFER, count=1) as (node,):
        client = await Client.connect(node.url)
        interval, hub = node.settings.write_behind, node.hub
        began = hub.next_tick_at
        for took in (0.3 * interval, 1.5 * interval):
            await client.track("page_view", {"path": "/"})
            save, held, release = hub.store.save_visitors, asyncio.Event(), asyncio.Event()

            async def slow_save(visitors, sessions, save=save, held=held, release=release):
                held.set()
                await release.wait()
                await save(visitors, sessions)

            hub.store.save_visitors = slow_save
            tick = asyncio.create_task(node.advance(began - node.clock.now()))
            async with asyncio.timeout(WAIT):
                await held.wait()
            node.clock.advance(took)  # the write-behind takes this long
            release.set()
            await tick
            hub.store.save_visitors = save
            assert hub.next_tick_at == max(began + interval, began + took)
            began = hub.next_tick_at
        await client.close()


async def test_a_beacon_that_reaches_another_node_is_applied_there():
    """The page's last flush lands on node B while node A held the socket: B takes the session
    over (A lets go) and applies the events; a cart window it opens is a timer like any other."""
    from .test_beacon import beacon, post

    async with nodes(CART) as (a, b):
        client = await Client.connect(a.url)
        await client.track("page_view", {"path": "/"})
        await client.close()
        await written(a, client.session, seq=1)
        body = beacon(client, (2, "add_to_cart", {"id": "mug", "name": "Mug", "price": 3}))
        assert await post(b, body) == 204
        assert b.hub.sessions[client.session].state.last_event_seq == 2
        await eventually(lambda: client.session not in a.hub.sessions, "A let go")
        assert await b.hub.store.next_due() == b.clock.now() + 60

        nxt = await Client.connect(a.url, visitor=client.visitor, session=client.session, seq=2)
        assert nxt.welcome["resumed"] is True and nxt.welcome["ack"] == 2
        await a.advance(61)
        await nxt.expect("show", campaign="cart")
        await nxt.close()
