"""The store contract. Every implementation runs this same suite (Redis joins in its own issue)."""

from __future__ import annotations

import pytest
from nudge.state import SessionState, VisitorState
from nudge.store import Store, open_store

T0 = 1_700_000_000.0


@pytest.fixture(params=["memory://"])
async def store(request) -> Store:
    store = open_store(request.param)
    yield store
    await store.close()


async def test_visitor_round_trip(store):
    assert await store.load_visitor("pk", "v_1") is None
    visitor = VisitorState("pk", "v_1", first_seen=T0)
    visitor.cart.add("mug", "Mug", 3.0, 2)
    visitor.timers["absence:x"] = T0 + 60
    await store.save_visitor(visitor)
    loaded = await store.load_visitor("pk", "v_1")
    assert loaded.cart.count == 2 and loaded.timers == {"absence:x": T0 + 60}
    assert await store.load_visitor("other-site", "v_1") is None


async def test_session_round_trip_and_drop(store):
    session = SessionState("s_1", "pk", "v_1", T0, page="/", last_event_seq=7)
    await store.save_session(session, ttl=300)
    assert (await store.load_session("pk", "s_1")).last_event_seq == 7
    await store.drop_session("pk", "s_1")
    assert await store.load_session("pk", "s_1") is None


async def test_timers_fire_once_in_due_order(store):
    await store.schedule("pk", "v_1", "absence:b", T0 + 20)
    await store.schedule("pk", "v_2", "absence:a", T0 + 10)
    await store.schedule("pk", "v_3", "delay:c", T0 + 30)
    assert await store.next_due() == T0 + 10
    assert await store.claim_due(T0 + 5) == []
    due = await store.claim_due(T0 + 25)
    assert [(t.visitor, t.key, t.due) for t in due] == [("v_2", "absence:a", T0 + 10), ("v_1", "absence:b", T0 + 20)]
    assert await store.claim_due(T0 + 25) == []  # claimed once
    assert await store.next_due() == T0 + 30


async def test_rescheduling_replaces_and_cancel_removes(store):
    await store.schedule("pk", "v_1", "absence:a", T0 + 10)
    await store.schedule("pk", "v_1", "absence:a", T0 + 50)  # a new add_to_cart restarts the window
    assert await store.next_due() == T0 + 50
    assert await store.claim_due(T0 + 20) == []
    await store.cancel("pk", "v_1", "absence:a")
    assert await store.next_due() is None
    assert await store.claim_due(T0 + 100) == []


async def test_claim_respects_the_limit(store):
    for i in range(5):
        await store.schedule("pk", f"v_{i}", "absence:a", T0 + i)
    assert len(await store.claim_due(T0 + 10, limit=3)) == 3
    assert len(await store.claim_due(T0 + 10, limit=3)) == 2


async def test_queued_messages_are_taken_once_and_expire(store):
    await store.enqueue("pk", "v_1", {"campaign": "a"}, expires_at=T0 + 100)
    await store.enqueue("pk", "v_1", {"campaign": "b"}, expires_at=T0 + 10)
    assert await store.take_queued("pk", "v_1", T0 + 50) == [{"campaign": "a"}]
    assert await store.take_queued("pk", "v_1", T0 + 50) == []
    assert await store.take_queued("pk", "v_2", T0) == []


async def test_queue_is_bounded(store):
    for i in range(50):
        await store.enqueue("pk", "v_1", {"n": i}, expires_at=T0 + 100)
    queued = await store.take_queued("pk", "v_1", T0)
    assert len(queued) == 20 and queued[-1] == {"n": 49}


def test_unknown_store_url():
    with pytest.raises(ValueError, match="unsupported store URL"):
        open_store("postgres://x")
