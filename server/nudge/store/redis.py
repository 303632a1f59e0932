"""The Redis store: state shared by every node of a deployment (redis-py asyncio).

``redis://host:port/db?prefix=nudge:&lease=30&max_connections=64&pool_timeout=2`` — ``prefix``
goes before every key (see :mod:`.keys`), ``lease`` is how many seconds a node may hold a claimed
timer before another node claims it again, ``max_connections`` how many connections to Redis the
node opens at most and ``pool_timeout`` how many seconds a command waits for one of them when all
are busy (a burst of handshakes queues for a moment instead of failing; past the wait the store
counts as unreachable). Other query parameters go to redis-py as they are. Every read-modify-write
two nodes could race on is one Lua script below, headed by the keys and arguments it takes and
what it returns, registered once.

Nothing here is called per event: the hub writes sessions behind, in batches, and touches Redis
on decisions only (a show, a timer set or cancelled).
"""

from __future__ import annotations

import itertools
import logging
import os
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgpack
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from nudge.rules.state import SessionState, VisitorState
from nudge.store import codec
from nudge.store.base import DAY_MS, MAX_QUEUED, CapCheck, DueTimer
from nudge.store.keys import SEP, Keys, split_timer_member, timer_member

log = logging.getLogger("nudge.store")

CLAIM_DUE = """
-- KEYS[1]: pending timers (sorted set: member -> due ms)
-- KEYS[2]: claimed timers (sorted set: "due_ms SEP node SEP member" -> lease end ms)
-- ARGV[1]: now in ms
-- ARGV[2]: most timers to claim
-- ARGV[3]: lease in ms
-- ARGV[4]: SEP
-- ARGV[5]: the claiming node
-- returns a flat list due_ms, member, claim, due_ms, member, claim, ... of the timers now leased
--   to the caller: claims whose lease ran out first (their node died), then timers that fell due
local now, limit, lease, sep = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local out = {}
local function lease_to_me(ms, member)
  local claim = ms .. sep .. ARGV[5] .. sep .. member
  redis.call('ZADD', KEYS[2], now + lease, claim)
  out[#out + 1] = ms
  out[#out + 1] = member
  out[#out + 1] = claim
end
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, limit)
for _, entry in ipairs(stale) do
  redis.call('ZREM', KEYS[2], entry)
  local first = string.find(entry, sep, 1, true)
  local second = string.find(entry, sep, first + 1, true)
  lease_to_me(string.sub(entry, 1, first - 1), string.sub(entry, second + 1))
end
local room = limit - #stale
if room > 0 then
  local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, room)
  for i = 1, #due, 2 do
    redis.call('ZREM', KEYS[1], due[i])
    lease_to_me(string.format('%d', tonumber(due[i + 1])), due[i])
  end
end
return out
"""

CONFIRM_SHOW = """
-- KEYS[1]: when this campaign was shown to the visitor (sorted set of ms)
-- KEYS[2]: when any campaign was shown to the visitor (sorted set of ms, the last day)
-- KEYS[3]: the once marker of this decision (string; unused when ARGV[6] is "")
-- KEYS[4]: the visitor's queue (list; unused when ARGV[7] is "")
-- KEYS[5]: how many times this campaign was ever shown to the visitor (counter)
-- ARGV[1]: now in ms
-- ARGV[2]: the campaign's caps, "per_day per_week lifetime every_ms history_ms" (-1: none)
-- ARGV[3]: the limits across campaigns, "per_hour per_day" (-1: none)
-- ARGV[4]: cooldown in ms (0: none)
-- ARGV[5]: a member unique to this show
-- ARGV[6]: "1" when KEYS[3] must not exist yet, else ""
-- ARGV[7]: a message to queue (packed [expires_s, message]) or ""
-- ARGV[8]: the queue's length limit; ARGV[9]: the queue's time to live in ms
-- ARGV[10]: the lifetime counter's time to live in ms (the retention setting)
-- returns "" when the show may go ahead (it is counted, and queued if asked), else the reason,
--   checked in the engine's order
local now, day, week, hour = tonumber(ARGV[1]), 86400000, 604800000, 3600000
if ARGV[6] ~= '' and redis.call('EXISTS', KEYS[3]) == 1 then return 'duplicate' end
local caps, limits = {}, {}
for n in string.gmatch(ARGV[2], '%S+') do caps[#caps + 1] = tonumber(n) end
for n in string.gmatch(ARGV[3], '%S+') do limits[#limits + 1] = tonumber(n) end
local per_day, per_week, lifetime, every, history = caps[1], caps[2], caps[3], caps[4], caps[5]
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - history)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - day)
if lifetime >= 0 and tonumber(redis.call('GET', KEYS[5]) or '0') >= lifetime then return 'cap:lifetime' end
if every >= 0 then
  local last = redis.call('ZREVRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if #last > 0 and now - tonumber(last[2]) < every then return 'cap:every' end
end
if per_day >= 0 and redis.call('ZCOUNT', KEYS[1], '(' .. (now - day), '+inf') >= per_day then return 'cap:per_day' end
if per_week >= 0 and redis.call('ZCOUNT', KEYS[1], '(' .. (now - week), '+inf') >= per_week then return 'cap:per_week' end
if limits[1] >= 0 and redis.call('ZCOUNT', KEYS[2], '(' .. (now - hour), '+inf') >= limits[1] then return 'limit:per_hour' end
if limits[2] >= 0 and redis.call('ZCARD', KEYS[2]) >= limits[2] then return 'limit:per_day' end
local cooldown = tonumber(ARGV[4])
if cooldown > 0 then
  local last = redis.call('ZREVRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  if #last > 0 and now - tonumber(last[2]) < cooldown then return 'cooldown' end
end
redis.call('ZADD', KEYS[1], now, ARGV[5])
redis.call('ZADD', KEYS[2], now, ARGV[5])
redis.call('PEXPIRE', KEYS[1], history)
redis.call('PEXPIRE', KEYS[2], day)
redis.call('INCR', KEYS[5])
redis.call('PEXPIRE', KEYS[5], ARGV[10])
if ARGV[6] ~= '' then redis.call('SET', KEYS[3], '1', 'PX', day) end
if ARGV[7] ~= '' then
  redis.call('RPUSH', KEYS[4], ARGV[7])
  redis.call('LTRIM', KEYS[4], -tonumber(ARGV[8]), -1)
  if redis.call('PTTL', KEYS[4]) < tonumber(ARGV[9]) then redis.call('PEXPIRE', KEYS[4], ARGV[9]) end
end
return ''
"""

ENQUEUE = """
-- KEYS[1]: the visitor's queue (list of packed [expires_s, message])
-- ARGV[1]: the packed entry
-- ARGV[2]: the queue's length limit
-- ARGV[3]: the entry's time to live in ms
-- returns the queue's length
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return redis.call('LLEN', KEYS[1])
"""

TAKE_QUEUED = """
-- KEYS[1]: the visitor's queue
-- returns every entry, oldest first, and empties the queue (so only one node delivers them)
local entries = redis.call('LRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1])
return entries
"""

ACK_QUEUED = """
-- KEYS[1]: the visitor's queue
-- ARGV[1..n]: message ids a tab acknowledged
-- returns how many entries were removed
local gone = {}
for i = 1, #ARGV do gone[ARGV[i]] = true end
local removed = 0
for _, entry in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local decoded = cmsgpack.unpack(entry)
  if type(decoded[2]) == 'table' and gone[decoded[2]['id']] then
    removed = removed + redis.call('LREM', KEYS[1], 1, entry)
  end
end
return removed
"""

TAKE_QUEUED_OF = """
-- KEYS[1]: the visitor's queue
-- ARGV[1]: a campaign id
-- returns that campaign's entries, oldest first, removed from the queue (the others stay)
local taken = {}
for _, entry in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local decoded = cmsgpack.unpack(entry)
  if type(decoded[2]) == 'table' and decoded[2]['campaign'] == ARGV[1] then
    redis.call('LREM', KEYS[1], 1, entry)
    taken[#taken + 1] = entry
  end
end
return taken
"""

SAVE_SESSION = """
-- KEYS[1]: the session (hash: seq, state, owner)
-- ARGV[1]: the packed session state
-- ARGV[2]: its last applied event seq
-- ARGV[3]: time to live in ms
-- ARGV[4]: the writing node ("" for none)
-- ARGV[5]: the session's visitor id
-- returns 1 when written; 0 when another node owns the session now (it was resumed there) or
--   the stored session has applied later events (a stale writer)
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and ARGV[4] ~= '' and owner ~= ARGV[4] then return 0 end
local stored = tonumber(redis.call('HGET', KEYS[1], 'seq') or '-1')
if stored > tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'seq', ARGV[2], 'state', ARGV[1], 'visitor', ARGV[5])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'owner', ARGV[4]) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

OWN_SESSION = """
-- KEYS[1]: the session (hash: seq, state, owner, visitor)
-- ARGV[1]: the node taking the session over; ARGV[2]: time to live in ms (if it has none)
-- ARGV[3]: the visitor asking for it
-- returns the previous owner ("" for none), or "!" when the session is another visitor's (and
--   nothing changes); from now on only the new owner's writes land
local visitor = redis.call('HGET', KEYS[1], 'visitor')
if visitor and visitor ~= ARGV[3] then return '!' end
local before = redis.call('HGET', KEYS[1], 'owner') or ''
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'visitor', ARGV[3])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return before
"""

# How long a visitor's queue key lives after its last message was added.
QUEUE_TTL_MS = 7 * DAY_MS
# Commands per pipeline of a write-behind: about 1 ms of the loop's time each (encoding,
# sending, reading the answers) on the benchmark's machine; bench/RESULTS-redis.md.
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


def _numbers(*values: int | None) -> str:
    """Optional whole numbers for a script argument: space-separated, -1 for none."""
    return " ".join("-1" if v is None else str(int(v)) for v in values)


class RedisStore:
    shared = True
    # What a call raises while Redis is unreachable: the hub then runs degraded.
    unavailable = (RedisError, OSError, TimeoutError)

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        self.keys = Keys(query.pop("prefix", "nudge:"))  # every key name
        self.lease = _setting(query, "lease", 30.0, float)  # seconds a claimed timer stays ours
        # Seconds a visitor's state and lifetime counts outlive their last write (the hub sets
        # it from ``--retention``); every other key has a shorter time to live of its own.
        self.retention = _setting(query, "retention", 30 * 86400.0, float)
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
        self._take_of = self.redis.register_script(TAKE_QUEUED_OF)
        self._ack_queued = self.redis.register_script(ACK_QUEUED)
        self._save_session = self.redis.register_script(SAVE_SESSION)
        self._own_session = self.redis.register_script(OWN_SESSION)
        self.node = ""  # the node this store writes sessions for (set by the hub)

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

    async def load_results(self) -> dict[tuple[str, str, str], int]:
        found = await self.redis.hgetall(self.keys.results())
        out = {}
        for field, n in found.items():
            parts = field.decode().split(SEP, 2)
            if len(parts) == 3:
                out[tuple(parts)] = int(n)
        return out

    async def pending_timers(self, limit: int = 500) -> list[tuple[str, str, str, float]]:
        found = await self.redis.zrange(self.keys.timers(), 0, limit - 1, withscores=True)
        return [(*split_timer_member(member.decode()), score / 1000) for member, score in found]

    async def load_visitor(self, site: str, visitor: str) -> VisitorState | None:
        data = await self.redis.get(self.keys.visitor(site, visitor))
        return codec.loads(VisitorState, data) if data is not None else None

    async def save_visitor(self, state: VisitorState) -> None:
        await self.redis.set(self.keys.visitor(state.site, state.id), codec.dumps(state), px=_ms(self.retention))

    async def save_visitors(self, states: list[VisitorState], sessions: list[tuple[SessionState, float]]) -> None:
        """Write many states (the hub's write-behind) in pipelines of at most ``WRITE_BATCH``
        commands, each encoded just before it is sent: the event loop serves sockets while
        Redis answers one, so a flush of thousands of sessions never holds the loop for more than
        about a millisecond at a time. A failure leaves the batches before it written."""
        retention = _ms(self.retention)
        async with self.redis.pipeline(transaction=False) as pipe:
            for state in states:
                pipe.set(self.keys.visitor(state.site, state.id), codec.dumps(state), px=retention)
                if len(pipe) >= WRITE_BATCH:
                    await pipe.execute()
            for session, ttl in sessions:
                await self._save_session(
                    keys=[self.keys.session(session.site, session.id)],
                    args=[codec.dumps(session), session.last_event_seq, _ms(ttl), self.node, session.visitor],
                    client=pipe,
                )
                if len(pipe) >= WRITE_BATCH:
                    await pipe.execute()
            if len(pipe):
                await pipe.execute()

    async def load_session(self, site: str, session: str) -> SessionState | None:
        data = await self.redis.hget(self.keys.session(site, session), "state")
        return codec.loads(SessionState, data) if data is not None else None

    async def save_session(self, state: SessionState, ttl: float) -> None:
        await self._save_session(
            keys=[self.keys.session(state.site, state.id)],
            args=[codec.dumps(state), state.last_event_seq, _ms(ttl), self.node, state.visitor],
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
        once: str | None = None, queue: tuple[dict, float] | None = None,
    ) -> str | None:
        keys = self.keys
        entry = b""
        if queue is not None:
            entry = msgpack.packb([queue[1], queue[0]], use_bin_type=True)
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

    async def enqueue(self, site: str, visitor: str, message: dict, expires_at: float) -> None:
        entry = msgpack.packb([expires_at, message], use_bin_type=True)
        # Entries past their own expiry are skipped when taken; the key itself goes after a week.
        await self._enqueue(keys=[self.keys.queue(site, visitor)], args=[entry, MAX_QUEUED, QUEUE_TTL_MS])

    async def take_queued(self, site: str, visitor: str, now: float) -> list[dict]:
        return _unexpired(await self._take(keys=[self.keys.queue(site, visitor)]), now)

    async def queued(self, site: str, visitor: str, now: float) -> list[dict]:
        return _unexpired(await self.redis.lrange(self.keys.queue(site, visitor), 0, -1), now)

    async def ack_queued(self, site: str, visitor: str, ids: list[str]) -> None:
        if ids:
            await self._ack_queued(keys=[self.keys.queue(site, visitor)], args=list(ids))

    async def take_queued_of(self, site: str, visitor: str, campaign: str, now: float) -> list[tuple[dict, float]]:
        entries = await self._take_of(keys=[self.keys.queue(site, visitor)], args=[campaign])
        return [(message, expires_at) for expires_at, message in map(_unpack_entry, entries) if expires_at > now]

    async def link_user(self, site: str, user: str, visitor: str) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.sadd(self.keys.user(site, user), visitor)
            pipe.pexpire(self.keys.user(site, user), _ms(self.retention))
            await pipe.execute()

    async def user_visitors(self, site: str, user: str) -> list[str]:
        return sorted(v.decode() for v in await self.redis.smembers(self.keys.user(site, user)))

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

    async def close(self) -> None:
        await self.redis.aclose()


def _setting(query: dict[str, str], name: str, default, kind: type, least: float | None = None):
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


def _unexpired(entries: list[bytes], now: float) -> list[dict]:
    """The messages of packed queue entries, without those past their expiry."""
    return [message for expires_at, message in map(_unpack_entry, entries) if expires_at > now]


def _unpack_entry(data: bytes) -> tuple[float, dict]:
    expires_at, message = msgpack.unpackb(data, raw=False)
    return expires_at, message
