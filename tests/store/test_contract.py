"""The store contract. Every implementation runs this same suite: memory, and the real Redis
server at NUDGE_TEST_REDIS_URL under a key prefix of its own (removed afterwards)."""

from __future__ import annotations

import asyncio
import json
import secrets

import msgpack
import pytest
from nudge.rules.state import SessionState, VisitorState
from nudge.store import CapCheck, DueTimer, Store, codec, open_store

from ..conftest import drop_keys, eventually, redis_store_url

T0 = 1_700_000_000.0


async def _ignore(record: dict) -> None:
    pass


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def store(request) -> Store:
    url = "memory://" if request.param == "memory" else redis_store_url(lease=30)
    store = open_store(url)
    yield store
    await store.close()
    if request.param == "redis":
        await drop_keys(url)


async def test_visitor_round_trip(store):
    assert await store.load_visitor("pk", "v_1") is None
    visitor = VisitorState("pk", "v_1", first_seen=T0)
    visitor.cart.add("mug", "Mug", 3.0, 2)
    visitor.timers["absence:x"] = T0 + 60
    visitor.shown["a"] = [T0]
    await store.save_visitor(visitor)
    loaded = await store.load_visitor("pk", "v_1")
    assert loaded.cart.count == 2 and loaded.timers == {"absence:x": T0 + 60}
    assert loaded.cart.items["mug"].name == "Mug" and loaded.shown == {"a": [T0]}
    assert await store.load_visitor("other-site", "v_1") is None


async def test_many_states_in_one_batch(store):
    visitors = [VisitorState("pk", f"v_{i}", first_seen=T0) for i in range(3)]
    sessions = [(SessionState(f"s_{i}", "pk", f"v_{i}", T0, last_event_seq=i), 300.0) for i in range(3)]
    await store.save_visitors(visitors, sessions)
    assert (await store.load_visitor("pk", "v_2")).id == "v_2"
    assert (await store.load_session("pk", "s_2")).last_event_seq == 2
    assert await store.ping()


async def test_a_state_that_cannot_be_encoded_never_fails_its_batch(store):
    """One visitor and one session holding what MessagePack cannot (a lone surrogate, a whole
    number beyond 64 bits; the edge normalises both, so this is a fault behind it): every other
    record of the batch is written. A store that encodes (Redis) leaves the two out, counted;
    the memory store encodes only for its snapshot (tested in test_storable.py)."""
    visitors = [VisitorState("pk", f"v_{i}", first_seen=T0) for i in range(10)]
    sessions = [(SessionState(f"s_{i}", "pk", f"v_{i}", T0, last_event_seq=i), 300.0) for i in range(10)]
    visitors[3].traits["n"] = 2**70
    sessions[6][0].title = "cut \ud83d"
    await store.save_visitors(visitors, sessions)
    await store.save_visitor(visitors[3])
    stored = [await store.load_visitor("pk", f"v_{i}") for i in range(10)]
    assert all(stored[i] is not None for i in range(10) if i != 3)
    kept = [await store.load_session("pk", f"s_{i}") for i in range(10)]
    assert all(kept[i].last_event_seq == i for i in range(10) if i != 6)
    if store.name == "redis":
        assert stored[3] is None and await store.load_session("pk", "s_6") is None
        assert store.refused == {"visitor": 2, "session": 1}
    else:
        assert store.refused == {}


async def test_session_round_trip_and_drop(store):
    session = SessionState("s_1", "pk", "v_1", T0, page="/", last_event_seq=7)
    session.met.add("x")
    session.outbox.append({"t": "show", "seq": 1, "campaign": "a"})
    await store.save_session(session, ttl=300)
    loaded = await store.load_session("pk", "s_1")
    assert loaded.last_event_seq == 7 and loaded.met == {"x"} and loaded.outbox[0]["campaign"] == "a"
    await store.drop_session("pk", "s_1")
    assert await store.load_session("pk", "s_1") is None


async def test_a_session_never_moves_backwards(store):
    """A node that wrote a session late (its writes were behind) cannot undo events another node
    applied since: the applied event seq only grows."""
    ahead = SessionState("s_1", "pk", "v_1", T0, last_event_seq=9)
    await store.save_session(ahead, ttl=300)
    behind = SessionState("s_1", "pk", "v_1", T0, last_event_seq=4)
    await store.save_session(behind, ttl=300)
    assert (await store.load_session("pk", "s_1")).last_event_seq == 9


async def test_a_session_taken_over_refuses_the_old_owners_writes(store):
    """Node A still has a write of the session in flight when node B resumes it: once B owns the
    session, A's write does not land, whatever its seq."""
    if store.cluster("test", _ignore).alone:
        pytest.skip("one node owns every session")
    store.node = "a"
    await store.save_session(SessionState("s_1", "pk", "v_1", T0, last_event_seq=3), ttl=300)
    store.node = "c"
    assert await store.own_session("pk", "s_1", "v_other", ttl=300) == "!"  # not theirs
    store.node = "b"
    assert await store.own_session("pk", "s_1", "v_1", ttl=300) == "a"
    store.node = "a"
    await store.save_session(SessionState("s_1", "pk", "v_1", T0, last_event_seq=9), ttl=300)
    assert (await store.load_session("pk", "s_1")).last_event_seq == 3
    store.node = "b"
    await store.save_session(SessionState("s_1", "pk", "v_1", T0, last_event_seq=4), ttl=300)
    assert (await store.load_session("pk", "s_1")).last_event_seq == 4


async def test_a_write_behind_guards_each_session_of_its_batch(store):
    """A write-behind's batch holds each session to the same rules as a single write: one behind
    the stored copy, or owned by another node now, is not written; the others in the batch are."""
    several = not store.cluster("test", _ignore).alone
    store.node = "a"
    await store.save_session(SessionState("s_1", "pk", "v_1", T0, last_event_seq=9), ttl=300)
    await store.save_session(SessionState("s_2", "pk", "v_2", T0, last_event_seq=3), ttl=300)
    if several:
        store.node = "b"
        assert await store.own_session("pk", "s_2", "v_2", ttl=300) == "a"
        store.node = "a"
    batch = [
        (SessionState("s_1", "pk", "v_1", T0, last_event_seq=4), 300.0),  # behind: refused
        (SessionState("s_2", "pk", "v_2", T0, last_event_seq=8), 300.0),  # b's now, where several
        (SessionState("s_3", "pk", "v_3", T0, last_event_seq=1), 300.0),  # new: written
    ]
    visitors = [VisitorState("pk", f"v_{i}", first_seen=T0 + i) for i in (1, 2, 3)]
    await store.save_visitors(visitors, batch)
    assert (await store.load_session("pk", "s_1")).last_event_seq == 9
    assert (await store.load_session("pk", "s_2")).last_event_seq == (3 if several else 8)
    assert (await store.load_session("pk", "s_3")).last_event_seq == 1
    assert [(await store.load_visitor("pk", f"v_{i}")).first_seen for i in (1, 2, 3)] == [T0 + 1, T0 + 2, T0 + 3]


async def test_timers_fire_once_in_due_order(store):
    await store.schedule("pk", "v_1", "absence:b", T0 + 20)
    await store.schedule("pk", "v_2", "absence:a", T0 + 10)
    await store.schedule("pk", "v_3", "delay:c", T0 + 30)
    assert await store.next_due() == T0 + 10
    assert await store.claim_due(T0 + 5) == []
    due = await store.claim_due(T0 + 25)
    assert [(t.visitor, t.key, t.due) for t in due] == [("v_2", "absence:a", T0 + 10), ("v_1", "absence:b", T0 + 20)]
    for timer in due:
        await store.finish(timer)
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


async def test_an_unfinished_claim_is_claimed_again_after_its_lease(store):
    """The node that claimed a timer died before finishing it: another claims it once the lease
    (30 s here) ran out — and only then."""
    if store.cluster("test", _ignore).alone:
        pytest.skip("one process: a claim cannot outlive its node")
    await store.schedule("pk", "v_1", "absence:a", T0 + 10)
    [timer] = await store.claim_due(T0 + 10)
    assert await store.claim_due(T0 + 39) == []
    assert await store.next_due() == T0 + 40
    assert await store.claim_due(T0 + 40) == [DueTimer("pk", "v_1", "absence:a", T0 + 10)]
    await store.finish(timer)
    assert await store.claim_due(T0 + 1000) == []
    assert await store.next_due() is None


async def test_queued_messages_are_taken_once_and_expire(store):
    await store.enqueue("pk", "v_1", {"campaign": "a"}, expires_at=T0 + 100)
    await store.enqueue("pk", "v_1", {"campaign": "b"}, expires_at=T0 + 10)
    assert await store.take_queued("pk", "v_1", T0 + 50) == [{"campaign": "a"}]
    assert await store.take_queued("pk", "v_1", T0 + 50) == []
    assert await store.take_queued("pk", "v_2", T0) == []


async def test_one_campaigns_queued_messages_are_taken_and_the_others_stay(store):
    await store.enqueue("pk", "v_1", {"campaign": "a", "n": 1}, expires_at=T0 + 100)
    await store.enqueue("pk", "v_1", {"campaign": "b"}, expires_at=T0 + 100)
    await store.enqueue("pk", "v_1", {"campaign": "a", "n": 2}, expires_at=T0 + 10)
    assert await store.take_queued_of("pk", "v_1", "a", T0 + 50) == [({"campaign": "a", "n": 1}, T0 + 100)]
    assert await store.take_queued_of("pk", "v_1", "a", T0 + 50) == []
    assert await store.take_queued("pk", "v_1", T0 + 50) == [{"campaign": "b"}]


async def test_queued_messages_stay_until_acknowledged_by_id(store):
    await store.enqueue("pk", "v_1", {"campaign": "a", "id": "m1"}, expires_at=T0 + 100)
    await store.enqueue("pk", "v_1", {"campaign": "b", "id": "m2"}, expires_at=T0 + 100)
    await store.enqueue("pk", "v_1", {"campaign": "c", "id": "m3"}, expires_at=T0 + 10)
    assert await store.queued("pk", "v_1", T0 + 50) == [{"campaign": "a", "id": "m1"}, {"campaign": "b", "id": "m2"}]
    assert await store.queued("pk", "v_1", T0 + 50) == [{"campaign": "a", "id": "m1"}, {"campaign": "b", "id": "m2"}]  # read, not taken
    await store.ack_queued("pk", "v_1", ["m1", "nope"])
    await store.ack_queued("pk", "v_2", ["m2"])  # another visitor's ack removes nothing here
    await store.ack_queued("pk", "v_1", [])
    assert await store.queued("pk", "v_1", T0 + 50) == [{"campaign": "b", "id": "m2"}]
    assert await store.take_queued("pk", "v_1", T0 + 50) == [{"campaign": "b", "id": "m2"}]


async def test_a_show_queued_with_its_cap_count_is_durable_and_a_second_try_is_a_duplicate(store):
    check = CapCheck("a", per_day=5)
    message = {"campaign": "a", "id": "absence:a@1"}
    assert await store.confirm_show("pk", "v_1", check, T0, once="absence:a@1", queue=(message, T0 + 3600)) is None
    assert await store.confirm_show("pk", "v_1", check, T0 + 3, once="absence:a@1", queue=(message, T0 + 3600)) == "duplicate"
    assert await store.queued("pk", "v_1", T0 + 5) == [message]  # once: the retry queued nothing more


async def test_queue_is_bounded(store):
    for i in range(50):
        await store.enqueue("pk", "v_1", {"n": i}, expires_at=T0 + 100)
    queued = await store.take_queued("pk", "v_1", T0)
    assert len(queued) == 20 and queued[-1] == {"n": 49}


async def test_caps_are_checked_and_counted_in_one_step(store):
    check = CapCheck("a", per_day=2, limit_per_day=None, cooldown=0.0)
    assert await store.confirm_show("pk", "v_1", check, T0) is None
    assert await store.confirm_show("pk", "v_1", check, T0 + 1) is None
    assert await store.confirm_show("pk", "v_1", check, T0 + 2) == "cap:per_day"
    assert await store.confirm_show("pk", "v_1", check, T0 + 86_401) is None  # a day later
    assert await store.confirm_show("pk", "v_2", check, T0) is None  # another visitor


async def test_caps_per_user_are_shared_by_their_devices_and_kept_apart_from_visitors(store):
    check = CapCheck("a", per_day=2, lifetime=3, limit_per_day=None, cooldown=0.0)
    assert await store.confirm_user_show("pk", "u42", check, T0) is None  # phone
    assert await store.confirm_user_show("pk", "u42", check, T0 + 1) is None  # laptop
    assert await store.confirm_user_show("pk", "u42", check, T0 + 2) == "cap:per_day"
    assert await store.confirm_user_show("pk", "u43", check, T0 + 2) is None  # another user
    assert await store.confirm_user_show("pk", "u42", check, T0 + 86_401) is None
    assert await store.confirm_user_show("pk", "u42", check, T0 + 2 * 86_401) == "cap:lifetime"
    # A visitor id's own caps are another thing, even one that looks like the user's subject.
    assert await store.confirm_show("pk", "u42", check, T0 + 2) is None
    assert await store.confirm_show("pk", "v_1", check, T0 + 2) is None
    limits = CapCheck("b", limit_per_hour=1, cooldown=60.0)
    assert await store.confirm_user_show("pk", "u44", limits, T0) is None
    assert await store.confirm_user_show("pk", "u44", CapCheck("c", limit_per_hour=1), T0 + 10) == "limit:per_hour"
    assert await store.confirm_user_show("pk", "u44", CapCheck("c", cooldown=60.0), T0 + 30) == "cooldown"


async def test_erase_user_forgets_their_caps_and_nobody_elses(store):
    check = CapCheck("a", per_day=1)
    for user in ("u42", "u43"):
        assert await store.confirm_user_show("pk", user, check, T0) is None
    assert await store.confirm_show("pk", "v_1", check, T0) is None
    assert await store.erase_user("pk", "u42") >= 2
    assert await store.confirm_user_show("pk", "u42", check, T0 + 1) is None
    assert await store.confirm_user_show("pk", "u43", check, T0 + 1) == "cap:per_day"
    assert await store.confirm_show("pk", "v_1", check, T0 + 1) == "cap:per_day"


async def test_daily_limit_and_cooldown_span_campaigns(store):
    a = CapCheck("a", per_day=None, limit_per_day=2, cooldown=60.0)
    b = CapCheck("b", per_day=None, limit_per_day=2, cooldown=60.0)
    assert await store.confirm_show("pk", "v_1", a, T0) is None
    assert await store.confirm_show("pk", "v_1", b, T0 + 30) == "cooldown"
    assert await store.confirm_show("pk", "v_1", b, T0 + 60) is None
    assert await store.confirm_show("pk", "v_1", a, T0 + 200) == "limit:per_day"


async def test_weekly_lifetime_and_spacing_caps_and_the_hourly_limit(store):
    week = CapCheck("w", per_week=2)
    assert await store.confirm_show("pk", "v_1", week, T0) is None
    assert await store.confirm_show("pk", "v_1", week, T0 + 2 * 86_400) is None
    assert await store.confirm_show("pk", "v_1", week, T0 + 6 * 86_400) == "cap:per_week"
    assert await store.confirm_show("pk", "v_1", week, T0 + 7 * 86_400 + 1) is None

    ever = CapCheck("l", lifetime=1)
    assert await store.confirm_show("pk", "v_2", ever, T0) is None
    assert await store.confirm_show("pk", "v_2", ever, T0 + 365 * 86_400) == "cap:lifetime"

    spaced = CapCheck("e", every=3 * 86_400.0)
    assert await store.confirm_show("pk", "v_3", spaced, T0) is None
    assert await store.confirm_show("pk", "v_3", spaced, T0 + 2 * 86_400) == "cap:every"
    assert await store.confirm_show("pk", "v_3", spaced, T0 + 3 * 86_400) is None

    hourly = CapCheck("h", limit_per_hour=1)
    assert await store.confirm_show("pk", "v_4", hourly, T0) is None
    assert await store.confirm_show("pk", "v_4", CapCheck("other", limit_per_hour=1), T0 + 60) == "limit:per_hour"
    assert await store.confirm_show("pk", "v_4", hourly, T0 + 3601) is None


async def test_a_decision_carried_out_once_and_queued_with_it(store):
    check = CapCheck("a", per_day=None, limit_per_day=None, cooldown=0.0)
    queue = ({"campaign": "a"}, T0 + 100)
    assert await store.confirm_show("pk", "v_1", check, T0, once="absence:a@1", queue=queue) is None
    assert await store.confirm_show("pk", "v_1", check, T0, once="absence:a@1", queue=queue) == "duplicate"
    assert await store.take_queued("pk", "v_1", T0) == [{"campaign": "a"}]


async def test_results_over_time_add_up_per_campaign_variant_counter_and_hour(store):
    hour = 1_700_000_000 // 3600 * 3600
    await store.add_series({("offer", "a", "shown", hour): 2, ("offer", "b", "shown", hour): 1, ("other", "-", "sent", hour): 5})
    await store.add_series({("offer", "a", "shown", hour): 3, ("offer", "a", "clicked", hour + 3600): 1})
    assert await store.load_series("offer") == {("a", "shown", hour): 5, ("b", "shown", hour): 1, ("a", "clicked", hour + 3600): 1}
    assert await store.load_series("other") == {("-", "sent", hour): 5}
    assert await store.load_series("nothing") == {}
    await store.add_series({})


def test_state_codec_tolerates_added_and_removed_fields():
    visitor = VisitorState("pk", "v_1", first_seen=T0)
    visitor.cart.add("mug", "Mug", 3.0, 1)
    plain = codec.to_plain(visitor)
    plain["from_a_newer_version"] = {"x": 1}  # unknown: ignored
    del plain["traits"]  # missing: its default
    loaded = codec.from_plain(VisitorState, plain)
    assert loaded.cart.items["mug"].price == 3.0 and loaded.traits == {}
    assert codec.loads(VisitorState, codec.dumps(visitor)) == visitor


def test_state_codec_round_trips_every_kind_of_field():
    session = SessionState("s_1", "pk", "v_1", T0, page="/a", showing=("offer", T0 + 8))
    session.waiting.append(("later", T0 + 60))
    session.met.update({"x", "y"})
    session.scroll["/a"] = 40
    session.outbox.append({"t": "show", "seq": 1, "campaign": "offer", "cta": {"label": "Go"}})
    assert codec.loads(SessionState, codec.dumps(session)) == session
    visitor = VisitorState("pk", "v_1", first_seen=T0, last_shown_at=T0 + 1)
    visitor.shown["offer"] = [T0, T0 + 1]
    visitor.traits["plan"] = "pro"
    assert codec.loads(VisitorState, codec.dumps(visitor)) == visitor


async def test_memory_snapshot_survives_a_graceful_stop(tmp_path):
    path = tmp_path / "nudge.msgpack"
    store = open_store(f"memory://{path}")
    await store.save_visitor(VisitorState("pk", "v_1", first_seen=T0))
    await store.save_session(SessionState("s_1", "pk", "v_1", T0, last_event_seq=3), ttl=300)
    await store.schedule("pk", "v_1", "absence:a", T0 + 10)
    await store.enqueue("pk", "v_1", {"campaign": "a"}, T0 + 100)
    check = CapCheck("a", per_day=1, limit_per_day=None, cooldown=0.0)
    assert await store.confirm_show("pk", "v_1", check, T0) is None
    await store.add_series({("a", "-", "shown", 3600): 4})
    await store.hold_for_user("pk", "u1", {"name": "purchase"}, T0, 600)
    await store.disable_endpoint("crm https://crm.example/h")
    await store.close()

    again = open_store(f"memory://{path}")
    assert await again.disabled_endpoints() == {"crm https://crm.example/h"}
    assert await again.take_for_user("pk", "u1", T0) == [{"name": "purchase"}]
    assert (await again.load_visitor("pk", "v_1")).first_seen == T0
    assert (await again.load_session("pk", "s_1")).last_event_seq == 3
    assert await again.next_due() == T0 + 10
    assert await again.take_queued("pk", "v_1", T0) == [{"campaign": "a"}]
    assert await again.confirm_show("pk", "v_1", check, T0 + 1) == "cap:per_day"
    assert await again.load_series("a") == {("-", "shown", 3600): 4}


async def test_memory_store_forgets_what_was_last_written_a_retention_ago():
    """As keys expire in Redis: a visitor (with their queued messages) and a user id's visitors
    go ``retention`` seconds after their last write; a later write keeps them longer. The store
    learns the time from the scheduler's claims."""
    store = open_store("memory://")
    store.retention = 1000.0
    await store.claim_due(T0)
    for name in ("v_old", "v_new"):
        await store.save_visitor(VisitorState("pk", name, first_seen=T0))
        await store.enqueue("pk", name, {"campaign": "a"}, T0 + 5000)
    await store.link_user("pk", "u1", "v_old")
    await store.claim_due(T0 + 600)
    again = await store.load_visitor("pk", "v_new")
    again.last_seen = T0 + 600
    await store.save_visitor(again)  # written again: its retention starts over
    await store.claim_due(T0 + 999)
    assert await store.load_visitor("pk", "v_old") is not None  # not yet
    await store.claim_due(T0 + 1000)
    assert await store.load_visitor("pk", "v_old") is None
    assert await store.take_queued("pk", "v_old", T0 + 1000) == []
    assert await store.user_visitors("pk", "u1") == []
    assert await store.load_visitor("pk", "v_new") is again
    await store.claim_due(T0 + 1600)
    assert await store.load_visitor("pk", "v_new") is None and store.sizes()["visitor_writes"] == 0


async def test_memory_store_timer_heap_stays_near_the_pending_timers():
    store = open_store("memory://")
    for i in range(5000):  # an absence window moved on at every cart add
        await store.schedule("pk", "v_1", "absence:a", T0 + 600 + i)
    await store.schedule("pk", "v_1", "absence:b", T0 + 10)
    assert store.sizes()["timer_heap"] <= 2 * 2 + 512 + 1
    assert [(t.key, t.due) for t in await store.claim_due(T0 + 10_000)] == [("absence:b", T0 + 10), ("absence:a", T0 + 5599)]


async def test_memory_store_keeps_everything_without_a_retention():
    store = open_store("memory://")
    await store.save_visitor(VisitorState("pk", "v_1", first_seen=T0))
    await store.claim_due(T0 + 10 * 365 * 86400)
    assert await store.load_visitor("pk", "v_1") is not None


async def test_memory_snapshot_sessions_end_their_grace_after_the_restart(tmp_path):
    """A session read back from the snapshot that nobody resumes ends its ttl after the new
    process starts (the hub of the new process never held it, so nothing else would drop it);
    visitors keep their retention counted from their own last activity."""
    path = tmp_path / "nudge.msgpack"
    store = open_store(f"memory://{path}")
    visitor = VisitorState("pk", "v_1", first_seen=T0, last_seen=T0 + 50)
    await store.save_visitor(visitor)
    await store.save_session(SessionState("s_1", "pk", "v_1", T0, last_event_seq=3), ttl=300)
    await store.close()

    again = open_store(f"memory://{path}")
    again.retention = 86400.0
    later = T0 + 7200  # the restart came two hours on
    await again.claim_due(later)
    assert (await again.load_session("pk", "s_1")).last_event_seq == 3  # resumable for its grace
    await again.claim_due(later + 299)
    assert await again.load_session("pk", "s_1") is not None
    await again.claim_due(later + 300)
    assert await again.load_session("pk", "s_1") is None
    await again.claim_due(T0 + 50 + 86399)
    assert await again.load_visitor("pk", "v_1") is not None
    await again.claim_due(T0 + 50 + 86400)
    assert await again.load_visitor("pk", "v_1") is None


def test_state_codec_writes_what_the_plain_form_packs_to():
    """The fast encoder writes the same bytes as packing the plain form (what every node wrote
    before it), so nodes of either version read each other's states."""
    session = SessionState("s_1", "pk", "v_1", T0, page="/a", showing=("offer", T0 + 8))
    session.met.update({"z", "a", "m"})
    session.waiting.append(("later", T0 + 60))
    session.outbox.append({"t": "show", "seq": 1, "campaign": "offer", "cta": {"label": "Go"}})
    visitor = VisitorState("pk", "v_1", first_seen=T0)
    visitor.cart.add("mug", "Mug", 3.0, 2)
    visitor.exposures["offer"] = ["b", T0, False]
    for state in (session, visitor):
        assert codec.dumps(state) == msgpack.packb(codec.to_plain(state), use_bin_type=True)


def test_state_codec_refuses_what_it_cannot_store():
    session = SessionState("s_1", "pk", "v_1", T0)
    session.outbox.append({"t": "show", "seq": 1, "at": object()})
    with pytest.raises(TypeError, match="cannot store a object"):
        codec.dumps(session)


@pytest.mark.redis
async def test_a_write_behind_larger_than_one_pipeline_is_written_whole():
    """A write-behind of many sessions goes in several pipelines (the loop serves sockets in
    between); every state lands, sessions and visitors alike."""
    from nudge.store.redis import WRITE_BATCH

    url = redis_store_url()
    store = open_store(url)
    try:
        count = 2 * WRITE_BATCH + 7  # sessions and visitors: more than four pipelines' worth
        visitors = [VisitorState("pk", f"v_{i}", first_seen=T0 + i) for i in range(count)]
        sessions = [(SessionState(f"s_{i}", "pk", f"v_{i}", T0, last_event_seq=i + 1), 300.0) for i in range(count)]
        await store.save_visitors(visitors, sessions)
        for i in (0, WRITE_BATCH - 1, WRITE_BATCH, count - 1):
            assert (await store.load_visitor("pk", f"v_{i}")).first_seen == T0 + i
            assert (await store.load_session("pk", f"s_{i}")).last_event_seq == i + 1
    finally:
        await store.close()
        await drop_keys(url)


async def _named_clients(store, name: str) -> list[dict]:
    """The connections the Redis server has open under ``name`` (CLIENT LIST)."""
    return [client for client in await store.redis.client_list() if client.get("name") == name]


@pytest.mark.redis
async def test_a_burst_beyond_the_pool_waits_for_a_connection():
    """Many more operations at once than the pool holds connections: each waits for a free one
    (redis-py's default pool would refuse them with "Too many connections", which the hub takes
    for an outage), and the node never opens more connections than the limit."""
    name = f"nudge-test-{secrets.token_hex(4)}"
    url = redis_store_url(max_connections=4, client_name=name)
    store = open_store(url)
    try:
        visitors = [VisitorState("pk", f"v_{i}", first_seen=T0 + i) for i in range(200)]
        await asyncio.gather(*(store.save_visitor(v) for v in visitors))
        loaded = await asyncio.gather(*(store.load_visitor("pk", v.id) for v in visitors))
        assert [v.first_seen for v in loaded] == [v.first_seen for v in visitors]
        assert 1 <= len(await _named_clients(store, name)) <= 4
    finally:
        await store.close()
        await drop_keys(url)


@pytest.mark.redis
async def test_the_wait_for_a_connection_is_bounded():
    """With every connection held longer than ``pool_timeout``, an operation fails with an
    error the hub reads as "store unreachable" (degraded mode), rather than waiting forever."""
    name = f"nudge-test-{secrets.token_hex(4)}"
    url = redis_store_url(max_connections=1, pool_timeout=0.05, client_name=name)
    store = open_store(url)
    blocked = asyncio.create_task(store.redis.blpop([store.keys.prefix + "never"], timeout=1))
    try:
        async def inside() -> bool:  # until the one connection is inside its BLPOP
            return any(c.get("cmd") == "blpop" for c in await _other_clients(name))

        await eventually(inside, "the connection inside its BLPOP")
        with pytest.raises(store.unavailable):
            await store.ping()
        assert await blocked is None  # the connection comes back after the BLPOP ...
        assert await store.ping()  # ... and serves again
    finally:
        blocked.cancel()
        await store.close()
        await drop_keys(url)


async def _other_clients(name: str) -> list[dict]:
    """CLIENT LIST seen from a connection of its own (the store's only one is busy)."""
    import redis.asyncio as aioredis

    from ..conftest import REDIS_URL

    client = aioredis.from_url(REDIS_URL)
    try:
        return [c for c in await client.client_list() if c.get("name") == name]
    finally:
        await client.aclose()


@pytest.mark.parametrize("query, message", [
    ("max_connections=0", "max_connections must be a whole number of at least 1, not '0'"),
    ("max_connections=many", "max_connections must be a whole number of at least 1, not 'many'"),
    ("pool_timeout=-1", "pool_timeout must be a number of seconds of at least 0, not '-1'"),
    ("lease=soon", "lease must be a number of seconds, not 'soon'"),
])
def test_bad_redis_store_settings_are_refused_clearly(query, message):
    with pytest.raises(ValueError, match=message):
        open_store(f"redis://127.0.0.1:6379/0?{query}")


def test_redis_store_pool_defaults():
    """A blocking pool of a bounded size by default; the URL sets both."""
    from nudge.store.redis import MAX_CONNECTIONS, POOL_TIMEOUT

    pool = open_store("redis://127.0.0.1:6379/0").redis.connection_pool
    assert (type(pool).__name__, pool.max_connections, pool.timeout) == ("BlockingConnectionPool", MAX_CONNECTIONS, POOL_TIMEOUT)
    pool = open_store("redis://127.0.0.1:6379/0?max_connections=512&pool_timeout=0.5").redis.connection_pool
    assert (pool.max_connections, pool.timeout) == (512, 0.5)


def test_unknown_store_url():
    with pytest.raises(ValueError, match="unsupported store URL"):
        open_store("postgres://x")



async def test_erase_removes_one_visitor_and_nothing_of_anyone_else(store):
    for visitor in ("v_gone", "v_kept"):
        state = VisitorState("pk", visitor, first_seen=T0)
        state.traits["user_id"] = "u1"
        await store.save_visitor(state)
        await store.save_session(SessionState(f"s_{visitor}", "pk", visitor, T0), 300.0)
        await store.schedule("pk", visitor, "absence:x", T0 + 60)
        await store.confirm_show("pk", visitor, CapCheck("c", lifetime=5), T0, once="t@1", queue=({"campaign": "c"}, T0 + 3600))
        await store.link_user("pk", "u1", visitor)
    assert await store.user_visitors("pk", "u1") == ["v_gone", "v_kept"]
    assert await store.erase("pk", "v_gone") >= 5
    assert await store.load_visitor("pk", "v_gone") is None and await store.load_session("pk", "s_v_gone") is None
    assert await store.take_queued("pk", "v_gone", T0) == []
    assert [t.visitor for t in await store.claim_due(T0 + 61)] == ["v_kept"]
    assert await store.confirm_show("pk", "v_gone", CapCheck("c", lifetime=1), T0 + 1) is None  # counts forgotten
    assert await store.user_visitors("pk", "u1") == ["v_kept"]
    assert (await store.load_visitor("pk", "v_kept")).id == "v_kept"
    assert len(await store.take_queued("pk", "v_kept", T0)) == 1


# --- the campaign document -------------------------------------------------------------------


async def test_the_campaign_document_is_changed_by_compare_and_set(store):
    assert await store.load_campaigns() == (0, None)
    assert await store.campaigns_revision() == 0
    first = {"settings": {}, "campaigns": [{"id": "a"}], "versions": {"a": 1}, "file_hash": "f1"}
    assert await store.swap_campaigns(0, first) == 1
    assert await store.load_campaigns() == (1, first)
    second = {**first, "campaigns": [{"id": "b"}], "versions": {"b": 1}}
    assert await store.swap_campaigns(0, second) == -1  # made from revision 0: another change won
    assert await store.load_campaigns() == (1, first)
    assert await store.swap_campaigns(1, second) == 2
    assert await store.campaigns_revision() == 2
    assert (await store.load_campaigns())[1] == second


# --- backend event ids -----------------------------------------------------------------------


async def test_an_event_id_is_seen_once_until_it_is_forgotten(store):
    assert await store.first_sighting("pk", "ev_1", T0, ttl=86400) is True
    assert await store.first_sighting("pk", "ev_1", T0 + 1, ttl=86400) is False
    assert await store.first_sighting("pk_other", "ev_1", T0 + 1, ttl=86400) is True  # per site
    await store.forget_sighting("pk", "ev_1")
    assert await store.first_sighting("pk", "ev_1", T0 + 2, ttl=86400) is True


async def test_an_event_id_is_forgotten_after_its_time(store):
    assert await store.first_sighting("pk", "ev_1", T0, ttl=0.05) is True
    if store.name == "redis":  # Redis expires the id by its own clock: wait until it did
        assert await store.first_sighting("pk", "ev_1", T0, ttl=0.05) is False
        async with asyncio.timeout(5):
            while not await store.first_sighting("pk", "ev_1", T0 + 1, ttl=0.05):
                await asyncio.sleep(0.02)
        return
    assert await store.first_sighting("pk", "ev_1", T0 + 1, ttl=0.05) is True


# --- the webhook delivery queue --------------------------------------------------------------


def _delivery(ident: str, due: float, visitor: str = "v_1") -> dict:
    body = json.dumps({"type": "decision", "campaign": "c", "visitor": visitor}, separators=(",", ":"))
    return {"id": ident, "endpoint": "crm", "type": "decision", "body": body, "attempt": 0, "first_at": due, "due": due, "error": None}


async def test_deliveries_are_claimed_when_due_and_finished(store):
    assert await store.next_delivery_due() is None
    await store.put_delivery(_delivery("d_late", T0 + 20))
    await store.put_delivery(_delivery("d_soon", T0 + 10))
    assert await store.count_deliveries() == 2
    assert await store.next_delivery_due() == T0 + 10
    assert await store.claim_deliveries(T0 + 5, lease=60, limit=10) == []
    [soon] = await store.claim_deliveries(T0 + 10, lease=60, limit=10)
    assert soon["id"] == "d_soon" and soon["body"] == _delivery("d_soon", 0)["body"]
    await store.finish_delivery("d_soon")
    assert await store.count_deliveries() == 1
    assert [d["id"] for d in await store.claim_deliveries(T0 + 30, lease=60, limit=10)] == ["d_late"]
    assert await store.claim_deliveries(T0 + 31, lease=60, limit=10) == []  # claimed: not due again yet


async def test_a_delivery_put_back_is_due_at_its_new_time(store):
    await store.put_delivery(_delivery("d_1", T0))
    [delivery] = await store.claim_deliveries(T0, lease=60, limit=10)
    delivery = {**delivery, "attempt": 1, "due": T0 + 5}
    await store.put_delivery(delivery)  # a retry
    assert await store.next_delivery_due() == T0 + 5
    [again] = await store.claim_deliveries(T0 + 5, lease=60, limit=10)
    assert again["attempt"] == 1


async def test_claims_take_at_most_the_limit(store):
    for i in range(5):
        await store.put_delivery(_delivery(f"d_{i}", T0 + i))
    assert [d["id"] for d in await store.claim_deliveries(T0 + 10, lease=60, limit=3)] == ["d_0", "d_1", "d_2"]
    assert [d["id"] for d in await store.claim_deliveries(T0 + 10, lease=60, limit=3)] == ["d_3", "d_4"]


async def test_an_unfinished_delivery_is_claimed_again_after_its_lease(store):
    if store.cluster("test", _ignore).alone:
        pytest.skip("one process: a claim cannot outlive its node")
    await store.put_delivery(_delivery("d_1", T0))
    assert len(await store.claim_deliveries(T0, lease=60, limit=10)) == 1
    assert await store.claim_deliveries(T0 + 59, lease=60, limit=10) == []
    assert [d["id"] for d in await store.claim_deliveries(T0 + 60, lease=60, limit=10)] == ["d_1"]


async def test_buried_deliveries_are_the_dead_letters_newest_first_and_capped(store):
    for i in range(4):
        await store.put_delivery(_delivery(f"d_{i}", T0))
    for i in range(4):
        await store.bury_delivery({**_delivery(f"d_{i}", T0), "error": "HTTP 400"}, kept=3)
    assert await store.count_deliveries() == 0
    assert await store.claim_deliveries(T0 + 100, lease=60, limit=10) == []
    dead = await store.dead_deliveries(10)
    assert [d["id"] for d in dead] == ["d_3", "d_2", "d_1"] and dead[0]["error"] == "HTTP 400"
    assert [d["id"] for d in await store.dead_deliveries(2)] == ["d_3", "d_2"]


async def test_erasing_deliveries_removes_those_naming_the_visitor(store):
    await store.put_delivery(_delivery("d_gone", T0, visitor="v_gone"))
    await store.put_delivery(_delivery("d_kept", T0, visitor="v_kept"))
    await store.bury_delivery(_delivery("d_dead_gone", T0, visitor="v_gone"), kept=10)
    await store.bury_delivery(_delivery("d_dead_kept", T0, visitor="v_kept"), kept=10)
    assert await store.erase_deliveries("v_gone") == 2
    assert [d["id"] for d in await store.claim_deliveries(T0, lease=60, limit=10)] == ["d_kept"]
    assert [d["id"] for d in await store.dead_deliveries(10)] == ["d_dead_kept"]
    assert await store.erase_deliveries("v_gone") == 0


# --- the event log's copy --------------------------------------------------------------------


async def test_the_event_log_copy_is_appended_to_and_erased_from(store):
    from nudge.calibrate.recording import Erasing

    lines = [
        '{"k":"config","v":1,"grace":300.0,"campaigns":null,"t":null}',
        '{"k":"ev","t":1.0,"visitor":"v_gone","session":"s_1","name":"click","props":{}}',
        '{"k":"ev","t":2.0,"visitor":"v_kept","session":"s_2","name":"click","props":{}}',
        '{"k":"ev","t":3.0,"visitor":"v_kept","session":"s_2","name":"identify","props":{"user_id":"u_gone"}}',
    ]
    await store.append_log(lines)
    kept = await store.log_lines()
    # The memory store keeps no copy (each node's files are the log); Redis keeps every record
    # but the files' headers.
    assert kept == ([] if store.cluster("test", _ignore).alone else lines[1:])
    removed = await store.erase_log(Erasing(["v_gone"], ["u_gone"]))
    assert removed == len(kept) - len(await store.log_lines())
    assert await store.log_lines() == ([] if store.cluster("test", _ignore).alone else [lines[2]])


# --- health and the cluster ------------------------------------------------------------------


async def test_a_store_says_what_it_raises_while_unreachable(store):
    assert isinstance(store.unavailable, tuple) and all(issubclass(e, BaseException) for e in store.unavailable)
    assert store.name in ("memory", "redis")
    assert await store.ping() is True


async def test_the_cluster_knows_where_sessions_are_held_and_carries_records(store):
    heard: list[dict] = []

    async def hear(record: dict) -> None:
        heard.append(record)

    a, b = store.cluster("n_a", hear), store.cluster("n_b", _ignore)
    await a.start()
    await b.start()
    try:
        assert await a.hold("pk", "v_1", "s_1", ttl=60) is None
        if a.alone:
            # One node: every session is its own, no other node hears anything.
            assert await a.holders("pk", "v_1") == {}
            assert await b.send("n_a", {"op": "take"}) is False and await b.broadcast({"op": "erase_log"}) == 0
            assert await a.release("pk", "v_1", "s_1") is True and await a.check() is True
            return
        assert await a.holders("pk", "v_1") == {"s_1": "n_a"}
        assert await b.hold("pk", "v_1", "s_1", ttl=60) == "n_a"  # taken over
        assert await a.release("pk", "v_1", "s_1") is False  # not a's any more
        assert await b.release("pk", "v_1", "s_1") is True
        assert await a.holders("pk", "v_1") == {}
        assert await b.send("n_a", {"op": "take", "session": "s_1"}) is True
        assert await b.send("n_nobody", {"op": "take"}) is False
        assert await b.broadcast({"op": "erase_log"}) == 2  # both listeners
        await eventually(lambda: len(heard) == 2, "both records heard")
        assert [r["op"] for r in heard] == ["take", "erase_log"]
        assert await a.check() is True and a.healthy
    finally:
        await a.stop()
        await b.stop()


async def test_the_memory_store_keeps_at_most_max_visitors_the_least_recently_written_going_first():
    from nudge.store.memory import MemoryStore

    store = MemoryStore()
    store.max_visitors = 3
    for i in range(5):
        await store.schedule("pk", f"v_{i}", "absence:c", T0 + 60)
        await store.save_visitor(VisitorState("pk", f"v_{i}", first_seen=T0 + i, timers={"absence:c": T0 + 60}))
        await store.enqueue("pk", f"v_{i}", {"campaign": "c"}, T0 + 3600)
    await store.save_visitor(VisitorState("pk", "v_2", first_seen=T0 + 2))  # written again: newest
    await store.save_visitor(VisitorState("pk", "v_5", first_seen=T0 + 5))
    kept = [i for i in range(6) if await store.load_visitor("pk", f"v_{i}") is not None]
    assert kept == [2, 4, 5] and store.evicted == 3
    assert await store.take_queued("pk", "v_0", T0) == []  # their queued messages went with them
    assert await store.take_queued("pk", "v_4", T0) == [{"campaign": "c"}]
    # Timers stay (the hub may still hold a visitor whose record went): each goes when it fires.
    assert len(await store.claim_due(T0 + 61)) == 5


async def test_events_held_for_a_user_are_taken_once_whole_and_expire(store: Store):
    await store.hold_for_user("pk", "u1", {"name": "purchase", "n": 1}, T0, 600)
    await store.hold_for_user("pk", "u1", {"name": "identify", "n": 2}, T0 + 10, 60)
    await store.hold_for_user("pk", "u2", {"name": "purchase", "n": 3}, T0, 600)
    # the second expired by now: only the first is handed over, and only once
    assert await store.take_for_user("pk", "u1", T0 + 100) == [{"name": "purchase", "n": 1}]
    assert await store.take_for_user("pk", "u1", T0 + 100) == []
    assert await store.take_for_user("pk", "u2", T0 + 601) == []  # past its time
    assert await store.take_for_user("other", "u1", T0) == []  # per site


async def test_events_held_for_a_user_keep_the_newest(store: Store):
    from nudge.store.base import MAX_HELD_FOR_USER

    for n in range(MAX_HELD_FOR_USER + 5):
        await store.hold_for_user("pk", "u1", {"n": n}, T0 + n, 600)
    taken = await store.take_for_user("pk", "u1", T0 + 100)
    assert [e["n"] for e in taken] == list(range(5, MAX_HELD_FOR_USER + 5))


async def test_disabled_webhook_endpoints_are_kept_by_name(store: Store):
    assert await store.disabled_endpoints() == set()
    await store.disable_endpoint("crm https://crm.example/hooks")
    await store.disable_endpoint("crm https://crm.example/hooks")
    assert await store.disabled_endpoints() == {"crm https://crm.example/hooks"}


async def test_pending_timers_are_counted_by_key_claimed_ones_too(store: Store):
    assert await store.count_timers() == {}
    await store.schedule("pk", "v_1", "absence:cart", T0 + 60)
    await store.schedule("pk", "v_2", "absence:cart", T0 + 120)
    await store.schedule("pk", "v_2", "absence:cart", T0 + 130)  # moved, still one
    await store.schedule("pk", "v_1", "delay:welcome", T0 + 5)
    assert await store.count_timers() == {"absence:cart": 2, "delay:welcome": 1}
    (claimed,) = await store.claim_due(T0 + 10)
    # Leased and not finished, a timer may still count (Redis: its node may die before finishing).
    assert (await store.count_timers()).get("absence:cart") == 2
    await store.finish(claimed)
    assert await store.count_timers() == {"absence:cart": 2}
    await store.cancel("pk", "v_1", "absence:cart")
    assert await store.count_timers() == {"absence:cart": 1}
