"""The Redis store: state shared by every node of a deployment (redis-py asyncio).

``redis://host:port/db?prefix=nudge:&lease=30&max_connections=64&pool_timeout=2`` — ``prefix``
goes before every key (see :mod:`.keys`), ``lease`` is how many seconds a node may hold a claimed
timer before another node claims it again, ``max_connections`` how many connections to Redis the
node opens at most and ``pool_timeout`` how many seconds a command waits for one of them when all
are busy (a burst of handshakes queues for a moment instead of failing; past the wait the store
counts as unreachable). Other query parameters go to redis-py as they are. Every read-modify-write
two nodes could race on is one Lua script (:mod:`.scripts`), headed by the keys and arguments it
takes and what it returns, registered once; every key is named in :mod:`nudge.store.keys`; the
pub/sub between nodes is :mod:`.cluster`.

Nothing here is called per event: the hub writes sessions behind, in batches, and touches Redis
on decisions only (a show, a timer set or cancelled).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from collections import defaultdict
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgpack
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from nudge.rules.state import SessionState, VisitorState
from nudge.store import codec
from nudge.store.base import (
    DAY_MS,
    MAX_HELD_FOR_USER,
    MAX_QUEUED,
    CapCheck,
    DueTimer,
    Handler,
    LogErasure,
)
from nudge.store.keys import SEP, Keys, split_timer_member, timer_member
from nudge.store.redis.cluster import RedisCluster
from nudge.store.redis.replies import raw, scored, text
from nudge.store.redis.scripts import (
    ACK_QUEUED,
    CLAIM_DELIVERIES,
    CLAIM_DUE,
    COMPARE_AND_SET,
    CONFIRM_SHOW,
    ENQUEUE,
    ERASE_LOG_PAGE,
    HOLD_FOR_USER,
    OWN_SESSION,
    SAVE_SESSIONS,
    SAVE_VISITORS,
    TAKE_QUEUED,
    TAKE_QUEUED_OF,
)

log = logging.getLogger("nudge.store")

# How long a visitor's queue key lives after its last message was added.
QUEUE_TTL_MS = 7 * DAY_MS
SERIES_KEPT = 400 * 86400  # seconds a campaign's results over time outlive its last count
# States per script call of a write-behind: well under 1 ms of the loop's time each (encoding,
# sending, reading the answer) on the benchmark's machine; bench/RESULTS-redis.md.
WRITE_BATCH = 64
# Connections to Redis one node opens at most. Every command holds one only for its round trip
# (the relay's subscription holds one for good), so 64 carry tens of thousands of commands a
# second, more than one Redis runs Lua scripts at; a burst beyond waits in line for one.
MAX_CONNECTIONS = 64
# Seconds a command waits for a free connection before the store counts as unreachable: as long
# as a command may take to answer (``socket_timeout``), so only a stalled Redis runs out of it.
POOL_TIMEOUT = 2.0


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _batches(items: list[Any]) -> Iterator[list[Any]]:
    """``items`` in slices of ``WRITE_BATCH``: one script call each."""
    for start in range(0, len(items), WRITE_BATCH):
        yield items[start:start + WRITE_BATCH]


def _numbers(*values: int | None) -> str:
    """Optional whole numbers for a script argument: space-separated, -1 for none."""
    return " ".join("-1" if v is None else str(int(v)) for v in values)


# Entries kept in the event log's stream (trimmed approximately).
STREAM_MAXLEN = 10_000_000
# Entries of the stream one call of ERASE_LOG_PAGE looks at.
STREAM_PAGE = 1000


class RedisStore:
    name = "redis"
    # What a call raises while Redis is unreachable: the hub then runs degraded.
    unavailable: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)

    def __init__(self, url: str, *, node: str = "", retention: float | None = None) -> None:
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        self.keys = Keys(query.pop("prefix", "nudge:"))  # every key name
        self.lease = _setting(query, "lease", 30.0, float)  # seconds a claimed timer stays ours
        # Seconds a visitor's state and lifetime counts outlive their last write (the hub sets
        # it from ``--retention``); every other key has a shorter time to live of its own.
        self.retention = _setting(query, "retention", 30 * 86400.0, float)
        if retention is not None:
            self.retention = retention
        self.max_connections = _setting(query, "max_connections", MAX_CONNECTIONS, int, least=1)  # the pool's size
        self.pool_timeout = _setting(query, "pool_timeout", POOL_TIMEOUT, float, least=0.0)  # seconds to wait for a connection
        redis_url = urlunsplit(parts._replace(query=urlencode(query)))
        self.url = redis_url
        # Short timeouts: a Redis outage must not stall a socket's receive loop for long. A
        # blocking pool: redis-py's default one raises "Too many connections" at once when a
        # burst needs more than it holds, which the hub would take for an outage.
        pool = aioredis.BlockingConnectionPool.from_url(
            redis_url, max_connections=self.max_connections, timeout=self.pool_timeout,
            socket_timeout=2.0, socket_connect_timeout=1.0, health_check_interval=10,
        )
        self.redis = aioredis.Redis.from_pool(pool)
        self._claim = self.redis.register_script(CLAIM_DUE)
        self._confirm = self.redis.register_script(CONFIRM_SHOW)
        self._enqueue = self.redis.register_script(ENQUEUE)
        self._take = self.redis.register_script(TAKE_QUEUED)
        self._hold = self.redis.register_script(HOLD_FOR_USER)
        self._take_of = self.redis.register_script(TAKE_QUEUED_OF)
        self._ack_queued = self.redis.register_script(ACK_QUEUED)
        self._save_sessions = self.redis.register_script(SAVE_SESSIONS)
        self._save_visitors = self.redis.register_script(SAVE_VISITORS)
        self._own_session = self.redis.register_script(OWN_SESSION)
        self._swap_campaigns = self.redis.register_script(COMPARE_AND_SET)
        self._claim_deliveries = self.redis.register_script(CLAIM_DELIVERIES)
        self._erase_log_page = self.redis.register_script(ERASE_LOG_PAGE)
        self.node = node  # the node this store writes sessions for
        # kind (visitor, session, message) -> records left out because they cannot be encoded
        self.refused: dict[str, int] = defaultdict(int)
        self.evicted = 0  # Redis expires keys by their time to live; it never evicts for a cap here

    def _encode(self, kind: str, ident: str, state: object) -> bytes | None:
        """A state's bytes, or None (counted and logged) when it holds what cannot be stored."""
        try:
            return codec.dumps(state)
        except codec.Unstorable as exc:
            codec.left_out(self.refused, kind, ident, exc)
            return None

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    async def add_results(self, deltas: dict[tuple[str, str, str], int]) -> None:
        """One pipeline of HINCRBY for every counter that moved since the last flush."""
        if not deltas:
            return
        key = self.keys.results()
        async with self.redis.pipeline(transaction=False) as pipe:
            for ident, n in deltas.items():
                pipe.hincrby(key, SEP.join(ident), n)
            await pipe.execute()

    async def add_series(self, deltas: dict[tuple[str, str, str, int], int]) -> None:
        """One pipeline of HINCRBY, a hash per campaign; each hash outlives its last count by
        ``SERIES_KEPT`` seconds."""
        if not deltas:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for (campaign, variant, counter, hour), n in deltas.items():
                pipe.hincrby(self.keys.series(campaign), SEP.join((variant, counter, str(hour))), n)
            for campaign in {ident[0] for ident in deltas}:
                pipe.expire(self.keys.series(campaign), SERIES_KEPT)
            await pipe.execute()

    async def load_series(self, campaign: str) -> dict[tuple[str, str, int], int]:
        found = await self.redis.hgetall(self.keys.series(campaign))
        out = {}
        for field, n in found.items():
            parts = text(field).split(SEP, 2)
            if len(parts) == 3 and parts[2].isdigit():
                out[(parts[0], parts[1], int(parts[2]))] = int(n)
        return out

    async def load_results(self) -> dict[tuple[str, str, str], int]:
        found = await self.redis.hgetall(self.keys.results())
        out: dict[tuple[str, str, str], int] = {}
        for field, n in found.items():
            parts = text(field).split(SEP, 2)
            if len(parts) == 3:
                out[(parts[0], parts[1], parts[2])] = int(n)
        return out

    async def pending_timers(self, limit: int = 500) -> list[tuple[str, str, str, float]]:
        found = await self.redis.zrange(self.keys.timers(), 0, limit - 1, withscores=True)
        return [(*split_timer_member(member.decode()), score / 1000) for member, score in scored(found)]

    async def count_timers(self) -> dict[str, int]:
        """ZSCAN of both timer sets, a page at a time (Redis serves others in between)."""
        counts: dict[str, int] = {}
        async for member, _ in self.redis.zscan_iter(self.keys.timers(), count=1000):
            key = split_timer_member(member.decode())[2]
            counts[key] = counts.get(key, 0) + 1
        async for claim, _ in self.redis.zscan_iter(self.keys.claimed(), count=1000):
            key = split_timer_member(claim.decode().split(SEP, 2)[2])[2]
            counts[key] = counts.get(key, 0) + 1
        return counts

    async def load_visitor(self, site: str, visitor: str) -> VisitorState | None:
        data = await self.redis.get(self.keys.visitor(site, visitor))
        return codec.loads(VisitorState, raw(data)) if data is not None else None

    async def save_visitor(self, state: VisitorState) -> None:
        data = self._encode("visitor", f"{state.site}/{state.id}", state)
        if data is not None:
            await self.redis.set(self.keys.visitor(state.site, state.id), data, px=_ms(self.retention))

    async def save_visitors(self, states: list[VisitorState], sessions: list[tuple[SessionState, float]]) -> None:
        """Write many states (the hub's write-behind): ``WRITE_BATCH`` states per script call,
        each batch encoded just before it is sent. One command and one answer per batch, not per
        state: redis-py's packing of each command and parsing of each answer were most of the
        write-behind's CPU (bench/RESULTS-redis.md). The event loop serves sockets while Redis
        answers one, so a flush of thousands of sessions never holds the loop for more than about
        a millisecond at a time. A failure leaves the batches before it written. A state that
        cannot be encoded is left out alone (counted in ``refused``, logged)."""
        retention = _ms(self.retention)
        for batch in _batches(states):
            keys: list[str] = []
            args: list[Any] = [retention]
            for state in batch:
                data = self._encode("visitor", f"{state.site}/{state.id}", state)
                if data is not None:
                    keys.append(self.keys.visitor(state.site, state.id))
                    args.append(data)
            if keys:
                await self._save_visitors(keys=keys, args=args)
        for batch in _batches(sessions):
            keys = []
            args = [self.node]
            for session, ttl in batch:
                data = self._encode("session", f"{session.site}/{session.id}", session)
                if data is not None:
                    keys.append(self.keys.session(session.site, session.id))
                    args += (data, session.last_event_seq, _ms(ttl), session.visitor)
            if keys:
                await self._save_sessions(keys=keys, args=args)

    async def load_session(self, site: str, session: str) -> SessionState | None:
        data = await self.redis.hget(self.keys.session(site, session), "state")
        return codec.loads(SessionState, raw(data)) if data is not None else None

    async def save_session(self, state: SessionState, ttl: float) -> None:
        data = self._encode("session", f"{state.site}/{state.id}", state)
        if data is None:
            return
        await self._save_sessions(
            keys=[self.keys.session(state.site, state.id)],
            args=[self.node, data, state.last_event_seq, _ms(ttl), state.visitor],
        )

    async def own_session(self, site: str, session: str, visitor: str, ttl: float) -> str | None:
        """Take the session over for this node before reading it: a write the previous node
        still has in flight is refused from now on. Returns the node that owned it before
        (None: none), or "!" when the session belongs to another visitor (nothing changed)."""
        before = await self._own_session(
            keys=[self.keys.session(site, session)], args=[self.node or "-", _ms(ttl), visitor],
        )
        return before.decode() or None

    async def drop_session(self, site: str, session: str) -> None:
        await self.redis.delete(self.keys.session(site, session))

    async def schedule(self, site: str, visitor: str, key: str, due: float) -> None:
        await self.redis.zadd(self.keys.timers(), {timer_member(site, visitor, key): _ms(due)})

    async def cancel(self, site: str, visitor: str, key: str) -> None:
        await self.redis.zrem(self.keys.timers(), timer_member(site, visitor, key))

    async def claim_due(self, now: float, limit: int = 100) -> list[DueTimer]:
        flat = await self._claim(
            keys=[self.keys.timers(), self.keys.claimed()],
            args=[_ms(now), limit, _ms(self.lease), SEP, self.node or "-"],
        )
        timers = []
        for i in range(0, len(flat), 3):
            site, visitor, key = split_timer_member(flat[i + 1].decode())
            timers.append(DueTimer(site, visitor, key, int(flat[i]) / 1000, claim=flat[i + 2].decode()))
        timers.sort(key=lambda t: t.due)
        return timers

    async def finish(self, timer: DueTimer) -> None:
        await self.redis.zrem(self.keys.claimed(), timer.claim)

    async def next_due(self) -> float | None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrange(self.keys.timers(), 0, 0, withscores=True)
            pipe.zrange(self.keys.claimed(), 0, 0, withscores=True)
            pending, claimed = await pipe.execute()
        found = [score for _, score in pending + claimed]
        return min(found) / 1000 if found else None

    async def confirm_show(
        self, site: str, visitor: str, check: CapCheck, now: float, *,
        once: str | None = None, queue: tuple[dict[str, Any], float] | None = None,
    ) -> str | None:
        keys = self.keys
        entry = b""
        if queue is not None:
            try:
                entry = codec.pack([queue[1], queue[0]])
            except codec.Unstorable as exc:  # the show is counted; the message cannot be kept
                codec.left_out(self.refused, "message", f"{site}/{visitor}", exc)
        reason = await self._confirm(
            keys=[
                keys.shown(site, visitor, check.campaign), keys.recent(site, visitor),
                keys.once(site, visitor, once or "-"), keys.queue(site, visitor),
                keys.shown_total(site, visitor, check.campaign),
            ],
            args=[
                _ms(now),
                _numbers(check.per_day, check.per_week, check.lifetime,
                         None if check.every is None else _ms(check.every), _ms(check.history)),
                _numbers(check.limit_per_hour, check.limit_per_day), _ms(check.cooldown),
                f"{_ms(now)}:{_unique()}", "1" if once else "", entry, MAX_QUEUED, QUEUE_TTL_MS,
                _ms(self.retention),
            ],
        )
        return reason.decode() or None

    async def confirm_user_show(self, site: str, user: str, check: CapCheck, now: float) -> str | None:
        keys = self.keys
        unused = keys.user_unused(site, user)
        reason = await self._confirm(
            keys=[keys.user_shown(site, user, check.campaign), keys.user_recent(site, user), unused, unused,
                  keys.user_shown_total(site, user, check.campaign)],
            args=[
                _ms(now),
                _numbers(check.per_day, check.per_week, check.lifetime,
                         None if check.every is None else _ms(check.every), _ms(check.history)),
                _numbers(check.limit_per_hour, check.limit_per_day), _ms(check.cooldown),
                f"{_ms(now)}:{_unique()}", "", b"", MAX_QUEUED, QUEUE_TTL_MS, _ms(self.retention),
            ],
        )
        return reason.decode() or None

    async def erase_user(self, site: str, user: str) -> int:
        doomed = [key async for key in self.redis.scan_iter(match=_glob(self.keys.user_caps_pattern(site, user)) + "*", count=500)]
        if doomed:
            await self.redis.delete(*doomed)
        return len(doomed)

    async def enqueue(self, site: str, visitor: str, message: dict[str, Any], expires_at: float) -> None:
        try:
            entry = codec.pack([expires_at, message])
        except codec.Unstorable as exc:
            codec.left_out(self.refused, "message", f"{site}/{visitor}", exc)
            return
        # Entries past their own expiry are skipped when taken; the key itself goes after a week.
        await self._enqueue(keys=[self.keys.queue(site, visitor)], args=[entry, MAX_QUEUED, QUEUE_TTL_MS])

    async def take_queued(self, site: str, visitor: str, now: float) -> list[dict[str, Any]]:
        return _unexpired(await self._take(keys=[self.keys.queue(site, visitor)]), now)

    async def queued(self, site: str, visitor: str, now: float) -> list[dict[str, Any]]:
        return _unexpired([raw(entry) for entry in await self.redis.lrange(self.keys.queue(site, visitor), 0, -1)], now)

    async def ack_queued(self, site: str, visitor: str, ids: list[str]) -> None:
        if ids:
            await self._ack_queued(keys=[self.keys.queue(site, visitor)], args=list(ids))

    async def take_queued_of(self, site: str, visitor: str, campaign: str, now: float) -> list[tuple[dict[str, Any], float]]:
        entries = await self._take_of(keys=[self.keys.queue(site, visitor)], args=[campaign])
        return [(message, expires_at) for expires_at, message in map(_unpack_entry, entries) if expires_at > now]

    async def link_user(self, site: str, user: str, visitor: str) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.sadd(self.keys.user(site, user), visitor)
            pipe.pexpire(self.keys.user(site, user), _ms(self.retention))
            await pipe.execute()

    async def user_visitors(self, site: str, user: str) -> list[str]:
        return sorted(text(v) for v in await self.redis.smembers(self.keys.user(site, user)))

    async def hold_for_user(self, site: str, user: str, event: dict[str, Any], now: float, keep: float) -> None:
        entry = msgpack.packb([now + keep, event], use_bin_type=True)
        # Each entry carries its own expiry; the key lives as long as the newest.
        ttl = max(1, _ms(keep))
        await self._hold(keys=[self.keys.held_for_user(site, user)], args=[entry, MAX_HELD_FOR_USER, ttl])

    async def disable_endpoint(self, name: str) -> None:
        await self.redis.sadd(self.keys.webhook_disabled(), name)

    async def disabled_endpoints(self) -> set[str]:
        return {text(name) for name in await self.redis.smembers(self.keys.webhook_disabled())}

    async def take_for_user(self, site: str, user: str, now: float) -> list[dict[str, Any]]:
        entries = await self._take(keys=[self.keys.held_for_user(site, user)])  # the same take-all script
        events = []
        for data in entries:
            expires_at, event = msgpack.unpackb(data, raw=False)
            if expires_at > now:
                events.append(event)
        return events

    async def erase(self, site: str, visitor: str) -> int:
        """Every key tagged with the visitor, every session of theirs (found by a SCAN of the
        site's sessions: erasure is rare, so no index is kept for it), their timers, and their
        entry in the set of the user they were identified as."""
        redis, keys = self.redis, self.keys
        state = await self.load_visitor(site, visitor)
        user = state.traits.get("user_id") if state is not None else None
        if isinstance(user, str):
            await redis.srem(keys.user(site, user), visitor)
        doomed = [key async for key in redis.scan_iter(match=_glob(keys.visitor_pattern(site, visitor)) + "*", count=500)]
        sessions = [key async for key in redis.scan_iter(match=_glob(keys.session_pattern(site)) + "*", count=1000)]
        for start in range(0, len(sessions), 500):
            batch = sessions[start:start + 500]
            async with redis.pipeline(transaction=False) as pipe:
                for key in batch:
                    pipe.hget(key, "visitor")
                owners = await pipe.execute()
            doomed += [key for key, owner in zip(batch, owners, strict=True) if owner is not None and owner.decode() == visitor]
        member = timer_member(site, visitor, "")
        timers = [m async for m, _ in redis.zscan_iter(keys.timers(), match=_glob(member) + "*")]
        claims = [m async for m, _ in redis.zscan_iter(keys.claimed(), match="*" + _glob(member) + "*")]
        async with redis.pipeline(transaction=False) as pipe:
            if doomed:
                pipe.delete(*doomed)
            if timers:
                pipe.zrem(keys.timers(), *timers)
            if claims:
                pipe.zrem(keys.claimed(), *claims)
            await pipe.execute()
        return len(doomed) + len(timers) + len(claims)

    # --- the campaign document -----------------------------------------------------------------

    async def load_campaigns(self) -> tuple[int, dict[str, Any] | None]:
        raw, revision = await self.redis.mget(self.keys.campaigns(), self.keys.campaigns_revision())
        return int(revision or 0), json.loads(raw) if raw else None

    async def campaigns_revision(self) -> int:
        return int(await self.redis.get(self.keys.campaigns_revision()) or 0)

    async def swap_campaigns(self, revision: int, document: dict[str, Any]) -> int:
        body = json.dumps(document, separators=(",", ":"))
        keys = [self.keys.campaigns(), self.keys.campaigns_revision()]
        return int(await self._swap_campaigns(keys=keys, args=[revision, body]))

    # --- backend event ids ----------------------------------------------------------------------

    async def first_sighting(self, site: str, event_id: str, now: float, ttl: float) -> bool:
        return bool(await self.redis.set(self.keys.event_id(site, event_id), b"1", nx=True, px=int(ttl * 1000)))

    async def forget_sighting(self, site: str, event_id: str) -> None:
        await self.redis.delete(self.keys.event_id(site, event_id))

    # --- the webhook delivery queue ---------------------------------------------------------------

    async def put_delivery(self, delivery: dict[str, Any]) -> None:
        keys = self.keys
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.webhook_deliveries(), delivery["id"], json.dumps(delivery))
            pipe.zadd(keys.webhook_due(), {delivery["id"]: round(delivery["due"] * 1000)})
            await pipe.execute()

    async def claim_deliveries(self, now: float, lease: float, limit: int) -> list[dict[str, Any]]:
        keys = self.keys
        found = await self._claim_deliveries(
            keys=[keys.webhook_due(), keys.webhook_deliveries()], args=[round(now * 1000), round(lease * 1000), limit],
        )
        return [json.loads(raw) for raw in found]

    async def finish_delivery(self, ident: str) -> None:
        keys = self.keys
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(keys.webhook_deliveries(), ident)
            pipe.zrem(keys.webhook_due(), ident)
            await pipe.execute()

    async def bury_delivery(self, delivery: dict[str, Any], kept: int) -> None:
        await self.finish_delivery(delivery["id"])
        keys = self.keys
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lpush(keys.webhook_dead(), json.dumps(delivery))
            pipe.ltrim(keys.webhook_dead(), 0, kept - 1)
            await pipe.execute()

    async def next_delivery_due(self) -> float | None:
        found = await self.redis.zrange(self.keys.webhook_due(), 0, 0, withscores=True)
        return scored(found)[0][1] / 1000 if found else None

    async def count_deliveries(self) -> int:
        return int(await self.redis.zcard(self.keys.webhook_due()))

    async def dead_deliveries(self, limit: int) -> list[dict[str, Any]]:
        return [json.loads(raw) for raw in await self.redis.lrange(self.keys.webhook_dead(), 0, limit - 1)]

    async def erase_deliveries(self, visitor: str) -> int:
        """The waiting deliveries and dead letters whose body names the visitor (a scan of the
        queue: erasure is rare)."""
        redis, keys = self.redis, self.keys
        doomed = [ident async for ident, body in redis.hscan_iter(keys.webhook_deliveries()) if visitor.encode() in body]
        dead = [entry for entry in await redis.lrange(keys.webhook_dead(), 0, -1) if visitor.encode() in entry]
        async with redis.pipeline(transaction=True) as pipe:
            if doomed:
                pipe.hdel(keys.webhook_deliveries(), *doomed)
                pipe.zrem(keys.webhook_due(), *doomed)
            for entry in dead:
                # redis-py types LREM's value as str; it sends any encodable value, and the
                # entry must go back byte for byte to match.
                pipe.lrem(keys.webhook_dead(), 0, raw(entry))  # type: ignore[arg-type]
            await pipe.execute()
        return len(doomed) + len(dead)

    # --- the event log's stream -------------------------------------------------------------------

    async def append_log(self, lines: list[str]) -> None:
        """Append encoded records to the stream (one pipeline, capped length)."""
        if not lines:
            return
        pipe = self.redis.pipeline(transaction=False)
        for line in lines:
            if '"k":"config"' in line:
                continue  # the stream is one log: its settings are the node's, not per file
            pipe.xadd(self.keys.events(), {"r": line}, maxlen=STREAM_MAXLEN, approximate=True)
        await pipe.execute()

    async def erase_log(self, erasing: LogErasure, page: int = STREAM_PAGE) -> int:
        """Delete the stream entries the erasure removes. Redis searches the stream itself,
        ``page`` entries per script call (a millisecond or two each), so neither this process's
        memory nor its event loop carries the stream; only entries that may name a user come
        back, to be parsed here. Returns the entries deleted."""
        key = self.keys.events()
        needles = [*erasing.needles(), *erasing.user_needles()]
        start, removed = "-", 0
        while True:
            last, deleted, candidates = await self._erase_log_page(
                keys=[key], args=[start, page, len(erasing.visitors), *needles],
            )
            removed += int(deleted)
            doomed = [candidates[i] for i in range(0, len(candidates), 2) if erasing(candidates[i + 1])]
            if doomed:
                removed += await self.redis.xdel(key, *doomed)
            if not last:
                return removed
            start = "(" + (last.decode() if isinstance(last, bytes) else last)

    async def log_lines(self) -> list[str]:
        return [text(fields[b"r"]) for _, fields in await self.redis.xrange(self.keys.events()) or () if fields]

    # --- the other nodes --------------------------------------------------------------------------

    def cluster(self, node: str, handler: Handler) -> RedisCluster:
        return RedisCluster(self.redis, self.keys, node, handler)

    async def close(self) -> None:
        await self.redis.aclose()


def read_log(url: str) -> Iterator[dict[str, Any]]:
    """Every record of the event-log stream of the Redis store at ``url`` (its ``prefix``), read
    with a blocking client (``nudge replay``, outside the server's event loop)."""
    import redis as sync_redis

    base, _, query = url.partition("?")
    params = dict(part.split("=", 1) for part in query.split("&") if "=" in part)
    client = sync_redis.Redis.from_url(base, decode_responses=True)
    key = Keys(params.get("prefix", "nudge:")).events()
    start = "-"
    try:
        while True:
            batch = client.xrange(key, min=start, count=5000) or []
            for _entry, fields in batch:
                if fields:
                    yield json.loads(fields["r"])
            if len(batch) < 5000:
                return
            start = "(" + text(batch[-1][0] or "")
    finally:
        client.close()


def _setting(query: dict[str, str], name: str, default: Any, kind: type, least: float | None = None) -> Any:
    """One of the store's own URL parameters, taken out of ``query`` (they are not redis-py's)."""
    text = query.pop(name, None)
    if text is None:
        return default
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or value != value or (least is not None and value < least):
        need = "a whole number" if kind is int else "a number of seconds"
        at_least = f" of at least {least:g}" if least is not None else ""
        raise ValueError(f"Redis store URL: {name} must be {need}{at_least}, not {text!r}")
    return value


def _glob(text: str) -> str:
    """``text`` as a literal in a SCAN pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


_counter = itertools.count()


def _unique() -> str:
    """Unique across the nodes' processes (a member of the shown-times sets)."""
    return f"{_PROCESS}.{next(_counter)}"


_PROCESS = f"{os.getpid()}-{os.urandom(4).hex()}"


def _unexpired(entries: list[bytes], now: float) -> list[dict[str, Any]]:
    """The messages of packed queue entries, without those past their expiry."""
    return [message for expires_at, message in map(_unpack_entry, entries) if expires_at > now]


def _unpack_entry(data: bytes) -> tuple[float, dict[str, Any]]:
    expires_at, message = msgpack.unpackb(data, raw=False)
    return expires_at, message
