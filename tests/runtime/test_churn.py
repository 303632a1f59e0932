"""Visitor churn (issue 13, item 5): a script opening sockets with ever new visitor ids must not
grow a node's memory without bound. ``--max-visitors`` caps both what the node holds (sessions
resumable for the grace period) and what the memory store keeps (for ``--retention``); past it,
the oldest idle visitors go first, counted. bench/churn.py measures the memory itself."""

from __future__ import annotations

import asyncio
import urllib.request

import pytest
from nudge.runtime.config import Settings

from ..conftest import KEY, Client, eventually, visitor_id

pytestmark = pytest.mark.integration

CAMPAIGNS = """
version: 1
campaigns:
  - id: hi
    trigger: {event: add_to_cart}
    message: {kind: toast, title: "Hi"}
"""

CAP = 40


async def metrics(node) -> str:
    def fetch() -> str:
        with urllib.request.urlopen(node.http + "/metrics", timeout=5) as response:
            return response.read().decode()

    return await asyncio.to_thread(fetch)


def sample(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


async def visit(node, visitor: str) -> Client:
    client = await Client.connect(node.url, visitor=visitor)
    await client.track("add_to_cart", {"id": "m", "name": "Mug", "price": 3})
    await client.close()
    return client


async def test_new_visitor_ids_past_the_cap_evict_the_oldest_idle_visitors(start_server):
    node = await start_server(CAMPAIGNS, max_visitors=CAP, grace=60)
    store, hub = node.hub.store, node.hub
    kept = await Client.connect(node.url, visitor=visitor_id())  # stays connected throughout
    await kept.track("add_to_cart", {"id": "m", "name": "Mug", "price": 3})
    ids = [visitor_id() for _ in range(3 * CAP)]
    for visitor in ids:
        await visit(node, visitor)
        await eventually(lambda: hub.stats.connections == 1, "the socket closed")
        assert len(hub.visitors) <= CAP  # held: the connected one and the newest detached
    assert (KEY, kept.visitor) in hub.visitors
    # The oldest detached sessions were ended before their grace: their visitors went to the
    # store, which keeps at most CAP of them, the most recently written.
    await node.advance(61)  # the rest of the grace: every detached session ends
    stored = [await store.load_visitor(KEY, visitor) for visitor in ids]
    assert [s is not None for s in stored] == [False] * (2 * CAP) + [True] * CAP
    assert stored[-1].cart.count == 1
    text = await metrics(node)
    assert sample(text, 'nudge_visitors_evicted_total{from="sessions"}') > 0
    # At least the 2 x CAP visitors it no longer has (a record dropped while its visitor was still
    # held is dropped again when written anew at the end of the session: counted each time).
    assert sample(text, 'nudge_visitors_evicted_total{from="store"}') >= 2 * CAP
    # A visitor who was evicted comes back as a new visitor; the connected one lost nothing.
    assert (await kept.track("page_view", {"path": "/"}))[-1]["t"] == "ack"
    assert hub.visitors[(KEY, kept.visitor)].state.cart.count == 1
    again = await Client.connect(node.url, visitor=ids[0])
    frames = await again.track("add_to_cart", {"id": "t", "name": "Tea", "price": 1})
    assert frames[-1]["t"] == "ack" and hub.visitors[(KEY, ids[0])].state.cart.count == 1
    await again.close()
    await kept.close()


def test_the_default_is_a_cap():
    """The README's default is safe for a public site: a cap, not retention alone."""
    assert Settings().max_visitors == 100_000
