"""One visitor's values never stop anyone else's state being saved (issue 13, item 2).

A lone UTF-16 surrogate (``"\\ud800"`` in a JSON frame: what a page title cut between the two
halves of a pair becomes) or a whole number beyond 64 bits (``98765432109876543210``) cannot be
encoded by MessagePack, which the store writes. At the edge they are normalised the way
docs/protocol.md says ("Values"); behind it, a record the store cannot encode anyway is left out
of its batch alone, logged and counted, and /readyz and /metrics say so.

Real sockets, real Redis, a real process stopped with SIGTERM and started again.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request

import pytest
from nudge.rules.state import SessionState, VisitorState
from nudge.store.memory import MemoryStore
from nudge.store.redis import RedisStore

from ..conftest import KEY, Client, drop_keys, redis_store_url, spawn_node, visitor_id

pytestmark = pytest.mark.integration

NEIGHBOURS = 10

CAMPAIGNS = """
version: 1
events: [greet]
campaigns:
  - id: greeting
    trigger: {event: greet}
    message: {kind: toast, title: "Hello {{ event.who }}"}
"""

# What the hostile visitor sends, as JSON text (json.dumps would refuse to write the surrogate).
LONE_SURROGATE = '{"t":"ev","seq":1,"name":"page_view","props":{"path":"/p","title":"Mug \\ud800"}}'
BEYOND_64_BITS = '{"t":"ev","seq":1,"name":"identify","props":{"n":98765432109876543210}}'


async def get(url: str) -> tuple[int, str]:
    def fetch() -> tuple[int, str]:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    return await asyncio.to_thread(fetch)


def metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name) and not line.startswith("#"))


async def neighbours(url: str) -> list[Client]:
    clients = []
    for i in range(NEIGHBOURS):
        client = await Client.connect(url, visitor=visitor_id())
        await client.track("add_to_cart", {"id": f"sku{i}", "name": "Mug", "price": 12.5, "quantity": i + 1})
        clients.append(client)
    return clients


@pytest.mark.redis
@pytest.mark.parametrize("hostile", [LONE_SURROGATE, BEYOND_64_BITS], ids=["lone_surrogate", "beyond_64_bits"])
async def test_one_visitors_value_does_not_stop_the_write_behind(start_server, hostile):
    url = redis_store_url()
    try:
        node = await start_server(CAMPAIGNS, store=url)
        attacker = await Client.connect(node.url, visitor=visitor_id())
        await attacker.ws.send(hostile)
        answer = await attacker.recv()
        clients = await neighbours(node.url)
        await node.advance(node.settings.write_behind)
        reader = RedisStore(url)
        try:
            carts = [await reader.load_visitor(KEY, client.visitor) for client in clients]
            assert [state.cart.count if state else None for state in carts] == list(range(1, NEIGHBOURS + 1))
            sessions = [await reader.load_session(KEY, client.session) for client in clients]
            assert all(s is not None and s.last_event_seq == 1 for s in sessions)
            # The attacker's own state is written too, with the value normalised at the edge.
            mine = await reader.load_visitor(KEY, attacker.visitor)
            session = await reader.load_session(KEY, attacker.session)
        finally:
            await reader.close()
        assert answer == {"t": "ack", "seq": 1}
        assert mine is not None and session is not None
        if hostile is LONE_SURROGATE:
            assert session.title == "Mug \ufffd"
        else:
            assert mine.traits["n"] == 98765432109876543210.0 and isinstance(mine.traits["n"], float)
        status, _ = await get(node.http + "/readyz")
        assert status == 200
        for client in [attacker, *clients]:
            await client.close()
    finally:
        await drop_keys(url)


@pytest.mark.redis
async def test_a_record_the_store_cannot_encode_is_left_out_alone_and_counted(start_server, caplog):
    """Behind the edge (a state from anywhere else that holds what MessagePack cannot): the
    write-behind writes every other record, logs and counts the one, and health says so."""
    url = redis_store_url()
    try:
        node = await start_server(CAMPAIGNS, store=url)
        bad = await Client.connect(node.url, visitor=visitor_id())
        await bad.track("page_view", {"path": "/p"})
        node.hub.visitors[(KEY, bad.visitor)].state.traits["broken"] = "\ud800"  # bypasses the edge
        clients = await neighbours(node.url)
        await node.advance(node.settings.write_behind)
        reader = RedisStore(url)
        try:
            carts = [await reader.load_visitor(KEY, client.visitor) for client in clients]
            assert all(state is not None for state in carts)
            assert await reader.load_visitor(KEY, bad.visitor) is None  # left out
            assert await reader.load_session(KEY, bad.session) is not None  # its session is fine
        finally:
            await reader.close()
        assert any(bad.visitor in r.getMessage() and "not stored" in r.getMessage() for r in caplog.records)
        _, text = await get(node.http + "/metrics")
        assert metric(text, "nudge_store_errors_total") >= 1
        assert metric(text, 'nudge_store_records_refused_total{kind="visitor"}') >= 1
        status, body = await get(node.http + "/readyz")
        assert status == 200  # every other record is stored: the node still serves
        assert any("could not be stored" in d for d in json.loads(body)["degraded"])
        for client in [bad, *clients]:
            await client.close()
    finally:
        await drop_keys(url)


@pytest.mark.parametrize("hostile", [LONE_SURROGATE, BEYOND_64_BITS], ids=["lone_surrogate", "beyond_64_bits"])
async def test_one_visitors_value_does_not_stop_the_snapshot_at_a_restart(tmp_path, hostile):
    """The memory store's snapshot, written at SIGTERM, holds every other cart: a real process
    stopped, and the file read back as the next process reads it."""
    campaigns = tmp_path / "campaigns.yaml"
    campaigns.write_text(CAMPAIGNS)
    snapshot = tmp_path / "state.msgpack"
    async with spawn_node(campaigns, f"memory://{snapshot}") as node:
        attacker = await Client.connect(node.url, visitor=visitor_id())
        await attacker.ws.send(hostile)
        await attacker.recv()
        clients = await neighbours(node.url)
        for client in [attacker, *clients]:
            await client.close()
        await node.stop()
    assert snapshot.exists()
    restored = MemoryStore(snapshot)
    carts = [await restored.load_visitor(KEY, client.visitor) for client in clients]
    assert [state.cart.count if state else None for state in carts] == list(range(1, NEIGHBOURS + 1))
    assert await restored.load_visitor(KEY, attacker.visitor) is not None
    # and a new process starts on it
    async with spawn_node(campaigns, f"memory://{snapshot}") as again:
        status, _ = await get(again.http + "/readyz")
        assert status == 200


async def test_a_lone_surrogate_in_a_visitors_own_show_reaches_them(start_server):
    """The same surrogate rendered into the visitor's own message: the show arrives (with the
    replacement character) and the socket stays open."""
    node = await start_server(CAMPAIGNS)
    client = await Client.connect(node.url)
    await client.ws.send('{"t":"ev","seq":1,"name":"greet","props":{"who":"Ann \\ud83d"}}')
    show = await client.expect("show")
    assert show["title"] == "Hello Ann \ufffd"
    assert (await client.track("page_view", {"path": "/"}))[-1]["t"] == "ack"  # still open
    await client.close()


def test_the_memory_snapshot_leaves_out_only_what_it_cannot_encode(tmp_path, caplog):
    """Defence behind the edge, for the memory store: one visitor (and one session) holding what
    MessagePack cannot keep is left out of the snapshot, logged and counted; the rest is written."""
    store = MemoryStore(tmp_path / "state.msgpack")
    loop = asyncio.new_event_loop()
    try:
        for i in range(NEIGHBOURS):
            state = VisitorState(KEY, f"v_good{i:012d}", first_seen=1.0)
            state.cart.add("mug", "Mug", 1.0, i + 1)
            loop.run_until_complete(store.save_visitor(state))
        bad = VisitorState(KEY, "v_bad0000000000000", first_seen=1.0, traits={"n": 2**70})
        loop.run_until_complete(store.save_visitor(bad))
        broken = SessionState("s_bad000000000", KEY, bad.id, 1.0, title="\udfff")
        loop.run_until_complete(store.save_session(broken, 60.0))
        loop.run_until_complete(store.save_session(SessionState("s_good00000000", KEY, "v_good000000000000", 1.0), 60.0))
        loop.run_until_complete(store.close())
        assert store.refused == {"visitor": 1, "session": 1}
        again = MemoryStore(tmp_path / "state.msgpack")
        counts = [loop.run_until_complete(again.load_visitor(KEY, f"v_good{i:012d}")).cart.count for i in range(NEIGHBOURS)]
        assert counts == list(range(1, NEIGHBOURS + 1))
        assert loop.run_until_complete(again.load_visitor(KEY, bad.id)) is None
        assert loop.run_until_complete(again.load_session(KEY, "s_good00000000")) is not None
        assert any(bad.id in r.getMessage() for r in caplog.records)
    finally:
        loop.close()


@pytest.mark.redis
async def test_readyz_is_503_while_writes_fail_for_another_reason(start_server, monkeypatch):
    """Not an outage and not one record: every write-behind failing (a fault injected into the
    store's batch write). /readyz says so until a write-behind succeeds again."""
    url = redis_store_url()
    try:
        node = await start_server(CAMPAIGNS, store=url)
        client = await Client.connect(node.url, visitor=visitor_id())
        await client.track("page_view", {"path": "/p"})
        save = node.hub.store.save_visitors

        async def failing(visitors, sessions):
            raise RuntimeError("the disk is on fire")

        monkeypatch.setattr(node.hub.store, "save_visitors", failing)
        await node.advance(node.settings.write_behind)
        status, body = await get(node.http + "/readyz")
        assert status == 503 and any("the disk is on fire" in d for d in json.loads(body)["degraded"])
        _, text = await get(node.http + "/metrics")
        assert metric(text, "nudge_store_errors_total") >= 1
        monkeypatch.setattr(node.hub.store, "save_visitors", save)
        await node.advance(node.settings.write_behind)  # written with the next batch
        status, _ = await get(node.http + "/readyz")
        assert status == 200
        reader = RedisStore(url)
        try:
            assert (await reader.load_session(KEY, client.session)).page == "/p"
        finally:
            await reader.close()
        await client.close()
    finally:
        await drop_keys(url)
