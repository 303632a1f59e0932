"""Erasure (nudge.ops.erasure): after ``DELETE /api/visitors/{id}``, no key in Redis, no entry in
any node's memory and no record of the event log (files and stream) mentions the visitor; and
every key Nudge writes to Redis has a time to live."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest
from nudge.calibrate import recording, replay
from nudge.rules.campaigns import load_text

from ..conftest import KEY, Client, drop_keys, eventually, redis_store_url, run_server, visitor_id

pytestmark = pytest.mark.integration

SECRET = "sk_test_erasure"
CAMPAIGNS = """
version: 1
campaigns:
  - id: mug
    trigger: {event: add_to_cart}
    caps: {lifetime: 5}
    message: {kind: toast, title: "Nice {{ event.name }}"}
  - id: cart
    trigger: {event: add_to_cart, absent: purchase, within: 15m}
    offline: queue
    message: {kind: modal, title: "Your cart"}
"""
MUG = {"id": "mug", "name": "Blue Mug", "price": 12.5}


async def delete(server, visitor: str, key: str | None = SECRET, what: str = "visitors") -> tuple[int, dict]:
    def call():
        request = urllib.request.Request(f"{server.http}/api/{what}/{visitor}?site={KEY}", method="DELETE")
        if key:
            request.add_header("Authorization", f"Bearer {key}")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    return await asyncio.to_thread(call)


def mentions(obj, needle: str) -> bool:
    """Whether ``needle`` appears anywhere in the object's reachable plain data."""
    seen = set()

    def walk(value) -> bool:
        if isinstance(value, (str, bytes)):
            return needle in (value if isinstance(value, str) else value.decode("latin-1"))
        if id(value) in seen or value is None or isinstance(value, (int, float, bool)):
            return False
        seen.add(id(value))
        if isinstance(value, dict):
            return any(walk(k) or walk(v) for k, v in value.items())
        if isinstance(value, (list, tuple, set, frozenset)) or type(value).__name__ == "deque":
            return any(walk(v) for v in value)
        slots = getattr(type(value), "__slots__", ())
        fields = [getattr(value, s, None) for s in slots] + list(getattr(value, "__dict__", {}).values())
        return any(walk(f) for f in fields)

    return walk(obj)


async def visit(server) -> Client:
    """A visitor with state, caps, a timer, a queued message, and a resumable session."""
    client = await Client.connect(server.url)
    await client.track("add_to_cart", MUG)  # shows mug (caps counted), arms the cart timer
    await client.close()
    await eventually(lambda: server.hub.stats.connections == 0, "the socket to detach")
    return client


def log_lines_in(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as file:
        return [line for line in file.read().splitlines() if line]


def log_lines(*directories: Path) -> list[str]:
    """Every line of the event log files in the directories, in file-name order."""
    return [line for directory in directories for path in sorted(directory.glob(f"*{recording.SUFFIX}")) for line in log_lines_in(path)]


def replays_exactly(records: list[dict]) -> set[str]:
    """Replay the log; assert every visitor's decisions are the ones the server made; return
    the visitors replayed (the log replays after an erasure as it did before)."""
    live, replayed = defaultdict(list), defaultdict(list)
    for r in records:
        if r["k"] == "d":
            live[r["visitor"]].append((round(r["t"], 6), r["session"], r["campaign"], r["outcome"]))
    (result,) = replay.run(records, [load_text(CAMPAIGNS, "test.yaml")], keep_outcomes=True, drain=False)
    for o in result.outcomes:
        replayed[o.visitor].append((round(o.at, 6), o.session, o.campaign, o.outcome))
    assert live and dict(replayed) == dict(live)
    return set(result.visitors)


async def test_erasure_needs_a_secret_key(start_server):
    server = await start_server(CAMPAIGNS, secret_keys=[SECRET])
    assert (await delete(server, "v_anyone", key=None))[0] == 401
    assert (await delete(server, "v_anyone", key="pk_test"))[0] == 401


async def test_erasure_in_memory_leaves_nothing(start_server):
    server = await start_server(CAMPAIGNS, secret_keys=[SECRET])
    gone = await visit(server)
    await server.advance(16 * 60)  # the cart message is queued for their next visit
    kept = await visit(server)  # another visitor, who must stay
    hub, store = server.hub, server.hub.store
    assert mentions(store, gone.visitor)
    live = await Client.connect(server.url, visitor=gone.visitor)  # and a tab open right now
    assert mentions(hub.sessions, gone.visitor) and live.welcome
    await live.expect("show", campaign="cart")  # the queued message, delivered; caps counted

    status, report = await delete(server, gone.visitor)
    assert status == 200 and report["sessions"] == 1 and report["records"] >= 1
    assert (await live.closed())[0] == 4409
    await eventually(lambda: not mentions(hub.sessions, gone.visitor), "the socket to be let go")
    for where in (store, hub.sessions, hub.visitors, hub.persistence.dirty, hub.backlog, server.app.state.gateway.open):
        assert not mentions(where, gone.visitor), where
    assert mentions(store, kept.visitor)
    back = await Client.connect(server.url, visitor=gone.visitor)  # the same id starts afresh
    assert [f for f in await back.track("page_view", {"path": "/"}) if f["t"] == "show"] == []


@pytest.mark.redis
async def test_erasure_in_redis_and_on_every_node_leaves_nothing(tmp_path):
    url = redis_store_url(lease=30)
    try:
        async with contextlib.AsyncExitStack() as stack:
            # Recording on: the event log's Redis stream and every node's files are erased from too.
            a = await stack.enter_async_context(run_server(CAMPAIGNS, store=url, secret_keys=[SECRET], record=tmp_path / "a"))
            b = await stack.enter_async_context(run_server(CAMPAIGNS, store=url, secret_keys=[SECRET], record=tmp_path / "b"))
            gone = await visit(a)
            kept = await visit(a)
            on_b = await Client.connect(b.url, visitor=gone.visitor)  # another tab, on node B
            await on_b.track("add_to_cart", {"id": "towel", "name": "Towel", "price": 3})
            await a.hub.persistence.flush()
            await b.hub.persistence.flush()
            for node in (a, b):
                await node.advance(2)  # the event log is flushed to its stream every second
            redis, prefix = a.hub.store.redis, a.hub.store.keys.prefix

            async def keys_mentioning(visitor: str) -> list[bytes]:
                found = []
                async for key in redis.scan_iter(match=prefix + "*"):
                    kind = (await redis.type(key)).decode()
                    if kind == "string":
                        values = [await redis.get(key)]
                    elif kind == "hash":
                        values = [x for pair in (await redis.hgetall(key)).items() for x in pair]
                    elif kind == "zset":
                        values = await redis.zrange(key, 0, -1)
                    elif kind == "list":
                        values = await redis.lrange(key, 0, -1)
                    elif kind == "stream":
                        values = [fields[b"r"] for _, fields in await redis.xrange(key)]
                    else:
                        values = []
                    if visitor.encode() in key or any(visitor.encode() in v for v in values if v):
                        found.append(key)
                return found

            before = await keys_mentioning(gone.visitor)
            assert len(before) >= 5 and any(key.endswith(b"events") for key in before)
            # Every key about a visitor has a time to live, but the two timer sets (their members
            # go when due) and the event log (capped in length). (Keys about no one — results,
            # the campaign document — are not personal data and are kept.)
            for key in before:
                if not key.endswith((b"{timers}:due", b"{timers}:claimed", b"events")):
                    assert await redis.pttl(key) > 0, key

            logs = (tmp_path / "a", tmp_path / "b")
            lines = log_lines(*logs)
            assert any(gone.visitor in line for line in log_lines(logs[0])) and any(gone.visitor in line for line in log_lines(logs[1]))

            status, report = await delete(a, gone.visitor)
            assert status == 200 and report["nodes"] == [b.hub.node]
            assert report["log"]["nodes"] == 1 and report["log"]["stream"] >= 5 and report["log"]["records"] >= 3
            # Node B rewrites its own files when it hears of the erasure.
            await eventually(lambda: not any(gone.visitor in line for line in log_lines(*logs)), "node B's files to be rewritten")
            assert log_lines(*logs) == [line for line in lines if gone.visitor not in line]
            streamed = list(recording.read([url]))  # the stream still reads (nudge replay)
            assert any(r.get("visitor") == kept.visitor for r in streamed)
            assert not any(gone.visitor in json.dumps(r) for r in streamed)
            assert (await on_b.closed())[0] == 4409
            await eventually(lambda: not mentions(b.hub.sessions, gone.visitor) and not mentions(b.hub.visitors, gone.visitor), "node B to forget")
            assert await keys_mentioning(gone.visitor) == []
            for hub in (a.hub, b.hub):
                for where in (hub.sessions, hub.visitors, hub.persistence.dirty, hub.backlog):
                    assert not mentions(where, gone.visitor)
            assert await keys_mentioning(kept.visitor) != []
    finally:
        await drop_keys(url)


async def identified(server, user: str) -> Client:
    """A visitor proven to be ``user`` (hello), who also identifies again by event."""
    from nudge import identity

    token = identity.sign(SECRET, KEY, user, 2_000_000_000)
    client = await Client.connect(server.url, hello=False)
    await client.send({"t": "hello", "v": 1, "key": KEY, "visitor": visitor_id(), "user_id": user, "user_token": token})
    welcome = await client.recv()
    client.visitor, client.session = welcome["visitor"], welcome["session"]
    await client.track("identify", {"user_id": user, "user_token": token, "plan": "pro"})
    await client.track("add_to_cart", MUG)
    return client


@pytest.mark.parametrize("store", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def test_erasure_by_user_reaches_every_visitor_they_were(store, tmp_path):
    url = redis_store_url() if store == "redis" else "memory://"
    try:
        async with run_server(CAMPAIGNS, store=url, secret_keys=[SECRET]) as server:
            phone, laptop = await identified(server, "u42"), await identified(server, "u42")
            other = await identified(server, "u43")
            await phone.close()  # one away, one connected
            await eventually(lambda: server.hub.stats.connections == 2, "the phone to detach")
            if store == "redis":
                await server.hub.persistence.flush()
            status, report = await delete(server, "u42", what="users")
            assert status == 200
            assert sorted(r["visitor"] for r in report["visitors"]) == sorted([phone.visitor, laptop.visitor])
            assert (await laptop.closed())[0] == 4409
            await eventually(lambda: not mentions(server.hub.sessions, laptop.visitor), "the laptop to be let go")
            hub = server.hub
            for visitor in (phone.visitor, laptop.visitor):
                for where in (hub.sessions, hub.visitors, hub.backlog):
                    assert not mentions(where, visitor)
                if store == "memory":
                    assert not mentions(hub.store, visitor)
            if store == "memory":
                assert not mentions(hub.store, "u42") and mentions(hub.store, other.visitor)
            else:
                redis, prefix = hub.store.redis, hub.store.keys.prefix
                names = [key async for key in redis.scan_iter(match=prefix + "*")]
                assert not any(v.encode() in k for k in names for v in (phone.visitor, laptop.visitor, "u42"))
                assert await hub.store.user_visitors(KEY, "u43") == [other.visitor]
    finally:
        if store == "redis":
            await drop_keys(url)


@pytest.mark.parametrize("store", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def test_erasure_by_user_drops_the_backend_events_kept_for_them(store, tmp_path):
    url = redis_store_url() if store == "redis" else "memory://"
    try:
        async with run_server(CAMPAIGNS, store=url, secret_keys=[SECRET]) as server:
            from .test_server_events import post

            code, _ = await post(f"{server.http}/api/events", {"id": "crm-1", "user_id": "u99", "name": "identify", "props": {"plan": "pro"}}, SECRET)
            assert code == 202
            status, report = await delete(server, "u99", what="users")
            assert status == 200 and report["held_events"] == 1
            assert await server.hub.store.take_for_user(KEY, "u99", 0.0) == []
            if store == "memory":
                assert not mentions(server.hub.store, "u99")
    finally:
        if store == "redis":
            await drop_keys(url)


@pytest.mark.parametrize("store", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def test_erasure_removes_the_visitors_webhook_deliveries(store, tmp_path):
    from .test_webhooks import Receiver, endpoints_file, settle

    url = redis_store_url() if store == "redis" else "memory://"
    try:
        async with Receiver(failures=99, status=500) as receiver:  # every delivery waits for a retry
            hooks = endpoints_file(tmp_path, receiver.url, events=["decision"])
            async with run_server(CAMPAIGNS, store=url, webhooks=hooks, secret_keys=[SECRET]) as server:
                gone, kept = await Client.connect(server.url), await Client.connect(server.url)
                for client in (gone, kept):
                    await client.track("add_to_cart", MUG)
                await settle(server, 0)  # tried once, refused: queued for a retry
                hub = server.hub
                if store == "redis":
                    bodies = (await hub.store.redis.hgetall(hub.store.keys.webhook_deliveries())).values()
                    queued = [b.decode() for b in bodies]
                else:
                    queued = hub.store.delivery_bodies()
                assert any(gone.visitor in b for b in queued) and any(kept.visitor in b for b in queued)
                status, _ = await delete(server, gone.visitor)
                assert status == 200
                if store == "redis":
                    bodies = (await hub.store.redis.hgetall(hub.store.keys.webhook_deliveries())).values()
                    queued = [b.decode() for b in bodies]
                else:
                    queued = hub.store.delivery_bodies()
                assert not any(gone.visitor in b for b in queued) and any(kept.visitor in b for b in queued)
                tried = sum(receiver.tries.values())
                await settle(server, 3600)  # the retries: none for the erased visitor
                assert sum(receiver.tries.values()) > tried
                assert not mentions(hub.webhooks, gone.visitor)  # and the hub it points to
    finally:
        if store == "redis":
            await drop_keys(url)


async def test_erasure_removes_the_visitor_from_every_event_log_file(tmp_path):
    async with run_server(CAMPAIGNS, secret_keys=[SECRET], record=tmp_path) as server:
        server.hub.recorder.rotate_records = 2  # several files: the visitor's records are in many
        gone = await visit(server)
        await server.advance(1.5)  # written: the log is flushed every second
        kept = await visit(server)
        await server.advance(1.5)
        await server.advance(16 * 60)  # the cart messages are decided (queued)
        await server.advance(1.5)
        again = await Client.connect(server.url, visitor=gone.visitor)  # in the file being written
        await again.track("page_view", {"path": "/"})
        await server.advance(1.5)
        await again.track("page_view", {"path": "/again"})  # and still in the buffer
        sessions = {gone.session, again.session}
        before = log_lines(tmp_path)
        files = sorted(tmp_path.glob(f"*{recording.SUFFIX}"))
        mtimes = {path: path.stat().st_mtime_ns for path in files}
        holding = [path for path in files if any(gone.visitor in line for line in log_lines_in(path))]
        assert len(files) >= 3 and sum(gone.visitor in line for line in before) >= 6
        assert all(any(s in line for line in before) for s in sessions)

        status, report = await delete(server, gone.visitor)
        assert status == 200
        after = log_lines(tmp_path)
        assert not any(gone.visitor in line or any(s in line for s in sessions) for line in after)
        assert after == [line for line in before if gone.visitor not in line]  # the others' intact, in order
        removed = sum(gone.visitor in line for line in before) + 1  # + the buffered page view
        assert report["log"] == {"files": len(holding), "records": removed, "stream": 0, "nodes": 0}
        assert 1 < len(holding) < len(files)
        for path in files:  # rewritten or not, every file keeps its age (its retention is unchanged)
            assert path.stat().st_mtime_ns == mtimes[path]
        assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(recording.SUFFIX)] == []

        await kept.close()
        back = await Client.connect(server.url, visitor=kept.visitor)  # the log goes on after it
        await back.track("add_to_cart", MUG)
        await server.advance(16 * 60)
        await server.advance(1.5)
    records = list(recording.read([tmp_path]))  # the server stopped: the log is complete
    assert not any(gone.visitor in json.dumps(r) for r in records)
    assert kept.visitor in replays_exactly(records)


@pytest.mark.parametrize("store", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def test_erasure_by_user_removes_their_records_and_identify_events_from_the_log(store, tmp_path):
    url = redis_store_url() if store == "redis" else "memory://"
    try:
        async with run_server(CAMPAIGNS, store=url, secret_keys=[SECRET], record=tmp_path) as server:
            phone, laptop, other = await identified(server, "u42"), await identified(server, "u42"), await identified(server, "u43")
            await server.advance(1.5)  # flushed: to the files, and with Redis to the stream
            lines = log_lines(tmp_path)
            named = [phone.visitor, laptop.visitor, phone.session, laptop.session, '"u42"']
            assert all(any(n in line for line in lines) for n in named)
            status, report = await delete(server, "u42", what="users")
            assert status == 200 and report["log"]["records"] >= 6
            after = log_lines(tmp_path)
            assert not any(n in line for line in after for n in named)
            assert after == [line for line in lines if not any(n in line for n in named)]
            assert any(other.visitor in line and '"u43"' in line for line in after)
            if store == "redis":
                assert report["log"]["stream"] >= 6
                stream = await server.hub.store.redis.xrange(server.hub.store.keys.events())
                entries = [fields[b"r"].decode() for _, fields in stream]
                assert entries and not any(n in e for e in entries for n in named)
                assert any(other.visitor in e for e in entries)
    finally:
        if store == "redis":
            await drop_keys(url)


def test_a_file_rewrite_streams_and_keeps_a_damaged_files_readable_part(tmp_path):
    recorder = recording.Recorder(tmp_path, grace=300)
    for i in range(3000):
        recorder.record("ev", 1.0 + i, visitor=f"v_{i % 3:020d}", session=f"s_{i % 3:020d}", name="click", props={"n": i})
        if i % 1000 == 999:
            recorder.flush()
    (path,) = tmp_path.glob(f"*{recording.SUFFIX}")
    path.write_bytes(path.read_bytes()[:-20])  # a crash in the middle of the last write
    readable = list(recording.read([path]))  # up to the damage
    assert 2000 <= len(readable) < 3001
    gone = f"v_{1:020d}"
    files, removed = recording.erase_from_files([path], recording.Erasing([gone]))
    assert (files, removed) == (1, sum(r.get("visitor") == gone for r in readable))
    assert log_lines(tmp_path) == [json.dumps(r, separators=(",", ":")) for r in readable if r.get("visitor") != gone]
    assert recording.erase_from_files([path], recording.Erasing([gone])) == (0, 0)  # nothing left: only read


def test_a_short_user_id_only_matches_the_identify_events_that_prove_it():
    erasing = recording.Erasing([], ["42"])
    assert erasing('{"k":"ev","visitor":"v_a","name":"identify","props":{"user_id":"42","plan":"pro"}}')
    assert not erasing('{"k":"ev","visitor":"v_b","name":"add_to_cart","props":{"id":"42","user_id":"420"}}')
    assert not erasing('{"k":"d","visitor":"v_c","campaign":"42"}')


@pytest.mark.redis
async def test_the_stream_is_erased_from_a_page_at_a_time():
    from nudge.store.redis import RedisStore

    url = redis_store_url()
    store = RedisStore(url)
    try:
        gone, kept = visitor_id(), visitor_id()
        lines = []
        for i in range(25):
            visitor = gone if i % 3 == 0 else kept
            props = {"user_id": "42"} if i == 7 else {"id": "42"}  # one identify of a short user id
            lines.append(json.dumps({"visitor": visitor, "session": "s_" + visitor, "name": "identify" if i == 7 else "click", "props": props, "k": "ev", "t": float(i)}))
        await store.append_log(lines)
        erasing = recording.Erasing([gone], ["42"])
        assert await store.erase_log(erasing, page=4) == 9 + 1
        left = await store.log_lines()
        assert left == [line for i, line in enumerate(lines) if i % 3 != 0 and i != 7]
        assert await store.erase_log(erasing, page=4) == 0
    finally:
        await store.close()
        await drop_keys(url)


async def test_a_log_that_cannot_be_rewritten_is_a_clear_error(start_server, tmp_path, monkeypatch):
    import errno

    server = await start_server(CAMPAIGNS, secret_keys=[SECRET], record=tmp_path)
    gone = await visit(server)
    await server.advance(1.5)

    def disk_full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(recording.os, "replace", disk_full)
        status, report = await delete(server, gone.visitor)
    assert status == 500 and "event log could not be rewritten" in report["error"] and "No space" in report["error"]
    assert not mentions(server.hub.store, gone.visitor)  # the rest was erased
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(recording.SUFFIX)] == []  # no temporary file left
    assert any(gone.visitor in line for line in log_lines(tmp_path))
    status, report = await delete(server, gone.visitor)  # trying again finishes it
    assert status == 200 and report["log"]["records"] >= 3
    assert not any(gone.visitor in line for line in log_lines(tmp_path))
