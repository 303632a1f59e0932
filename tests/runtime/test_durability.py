"""One node with the memory store and a snapshot file: a graceful stop (what SIGTERM does) keeps
pending timers, caps, queued messages and resumable sessions."""

from __future__ import annotations

import pytest

from ..conftest import Client, run_server, shows

pytestmark = pytest.mark.integration

CAMPAIGNS = """
campaigns:
  - id: cart
    trigger: {event: add_to_cart, absent: purchase, within: 60s}
    offline: queue
    message: {kind: toast, body: "Your cart is waiting"}
  - id: offer
    trigger: {event: click}
    caps: {per_day: 1}
    message: {kind: toast, body: "Offer"}
"""


async def test_a_graceful_stop_keeps_timers_caps_and_sessions(tmp_path):
    store = f"memory://{tmp_path / 'nudge.msgpack'}"
    async with run_server(CAMPAIGNS, store=store) as first:
        client = await Client.connect(first.url)
        assert shows(await client.track("click", {"target": "x"}))
        await client.track("add_to_cart", {"id": "mug", "name": "Mug", "price": 3})
        await client.close()
    assert (tmp_path / "nudge.msgpack").exists()

    async with run_server(CAMPAIGNS, store=store) as second:
        await second.advance(61)  # the timer set before the stop fires after it
        assert second.hub.stats.timers_fired == 1
        again = await Client.connect(second.url, visitor=client.visitor, session=client.session, rx=1, seq=client.seq)
        assert again.welcome["resumed"] is True and again.welcome["ack"] == client.seq
        assert (await again.expect("show", campaign="cart"))["body"] == "Your cart is waiting"
        await again.track("page_view", {"path": "/next"})  # nothing on screen any more
        assert not shows(await again.track("click", {"target": "x"}))  # the daily cap held
        await again.close()


async def test_sigterm_snapshots_and_a_restart_fires_the_timer(tmp_path):
    """The same through a real process stopped with SIGTERM and started again."""
    from ..conftest import spawn_node

    campaigns = tmp_path / "campaigns.yaml"
    campaigns.write_text(CAMPAIGNS.replace("within: 60s", "within: 2s"))
    store = f"memory://{tmp_path / 'nudge.msgpack'}"
    async with spawn_node(campaigns, store) as node:
        client = await Client.connect(node.url)
        await client.track("add_to_cart", {"id": "mug", "name": "Mug", "price": 3})
        await client.close()
        await node.stop()  # SIGTERM
    assert (tmp_path / "nudge.msgpack").exists()
    async with spawn_node(campaigns, store) as node:
        again = await Client.connect(node.url, visitor=client.visitor, session=client.session, seq=client.seq)
        assert again.welcome["resumed"] is True
        assert (await again.expect("show", campaign="cart"))["body"] == "Your cart is waiting"
        await again.close()
