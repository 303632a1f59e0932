"""The in-memory store: one process. The default.

With a snapshot file (``memory:///var/lib/nudge/state.msgpack``), everything it holds (visitors,
resumable sessions, pending timers, caps, queued messages) is written there when the server stops
gracefully (SIGTERM, Ctrl-C) and read back when it starts. A crash (SIGKILL, power loss) loses
whatever happened since the last start: nothing is written in between.

Retention (``retention`` seconds, the server's ``--retention``): a visitor's state, with the
messages queued for them and their recent show times, goes once it was last written that long
ago, and a user id's set of visitors once it was last added to that long ago — as the same records
expire in Redis. Without it a long-running process would keep every visitor it ever saw. The
store has no clock of its own: "now" is the latest time it was handed (each pass of the
scheduler claims due timers with it), and a write counts as of that time, or as of the visitor's
own latest activity if that is later. Expired records are found oldest-written first (two
insertion-ordered maps): a pass stops at the first record still kept, so it never scans them.
With ``max_visitors`` (the server's ``--max-visitors``), at most that many visitors are kept: past
it the least recently written go first, as retention would take them (counted in ``evicted``).
Timers need none of this (each goes when it fires or is cancelled), nor do sessions: the hub
drops each when its grace period ends — except those read back from a snapshot, which the new
process does not hold until a client resumes them. Each of those ends its own time to live (the
grace period) after the first time the store is handed; one resumed meanwhile is saved again by
the hub when its socket closes.

The campaign document is in the snapshot too; the webhook queue and the backend event ids
already applied are not (a restart forgets them), and no copy of the event log is kept here (each
node's files are the log). One process is the whole deployment: its :class:`OneNode` cluster
holds every session here and relays nothing.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
from collections import Counter, OrderedDict, defaultdict
from pathlib import Path
from typing import Any, TypeVar

import msgpack

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

log = logging.getLogger("nudge.store")
K = TypeVar("K")  # a table's key

SNAPSHOT_VERSION = 1
HEAP_SLACK = 512  # stale timer entries tolerated beyond the live ones' number
MAX_SIGHTINGS = 200_000  # backend event ids remembered at most (the oldest go first)


class OneNode:
    """The cluster of a deployment of one node (:class:`nudge.store.base.Cluster`): every session
    is held here, no other node hears anything."""

    alone = True
    healthy = True
    resubscribed = 0

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def hold(self, site: str, visitor: str, session: str, ttl: float) -> str | None:
        return None

    async def release(self, site: str, visitor: str, session: str) -> bool:
        return True

    async def holders(self, site: str, visitor: str) -> dict[str, str]:
        return {}

    async def send(self, node: str, record: dict[str, Any]) -> bool:
        return False

    async def broadcast(self, record: dict[str, Any]) -> int:
        return 0

    async def check(self) -> bool:
        return True


class MemoryStore:
    name = "memory"
    unavailable: tuple[type[BaseException], ...] = ()  # one process: never unreachable

    def __init__(self, snapshot: str | Path | None = None, *, node: str = "", retention: float | None = None) -> None:
        self.node = node  # one node owns every session: only named, for the contract
        self._visitors: dict[tuple[str, str], VisitorState] = {}  # (site, visitor) -> state
        self._sessions: dict[tuple[str, str], tuple[SessionState, float]] = {}  # -> (state, ttl)
        self._timers: dict[tuple[str, str, str], float] = {}  # (site, visitor, key) -> due
        self._heap: list[tuple[float, int, tuple[str, str, str]]] = []  # may hold stale entries
        self._order = itertools.count()  # ties in the heap break by insertion
        self._queued: dict[tuple[str, str], list[tuple[float, dict[str, Any]]]] = {}  # -> [(expires, msg)]
        self._shown: dict[tuple[str, str, str], list[int]] = {}  # (site, visitor, campaign) -> ms
        self._recent: dict[tuple[str, str], list[int]] = {}  # (site, visitor) -> ms, any campaign
        self._once: dict[tuple[str, str, str], int] = {}  # (site, visitor, token) -> expires ms
        self._total: dict[tuple[str, str, str], int] = {}  # (site, visitor, campaign) -> shown ever
        self._users: dict[tuple[str, str], set[str]] = {}  # (site, user id) -> visitor ids
        self._disabled: set[str] = set()  # webhook endpoints disabled by a 410, "id url"
        self._held: dict[tuple[str, str], list[tuple[float, dict[str, Any]]]] = {}  # (site, user id) -> [(expires, event)]
        # Caps per signed-in user live in _shown, _recent and _total too, under the subject
        # "u:<user id>" where a visitor id would be (no visitor id holds a ":").
        self._results: dict[tuple[str, str, str], int] = {}  # (campaign, variant, counter) -> n
        self._series: dict[str, dict[tuple[str, str, int], int]] = {}  # campaign -> (variant, counter, hour) -> n
        self.campaign_document: dict[str, Any] | None = None  # the admin API's campaign document (admin.py)
        self.campaigns_version = 0  # its revision, bumped by each change
        self._sightings: OrderedDict[tuple[str, str], float] = OrderedDict()  # (site, event id) -> until
        self._deliveries: dict[str, dict[str, Any]] = {}  # webhook delivery id -> delivery
        self._delivery_due: dict[str, float] = {}  # -> when it is due (or its lease ends)
        self._delivery_heap: list[tuple[float, int, str]] = []  # (due, order, id), may hold stale entries
        self._dead: list[dict[str, Any]] = []  # deliveries given up, newest first
        self.retention = retention  # seconds records outlive their last write (None: forever)
        self.max_visitors: int | None = None  # visitors kept at most; the least recently written go first
        self.evicted = 0  # visitors dropped for the cap, before their retention ran out
        self._now = 0.0  # the latest time the store was handed
        self._visitor_writes: dict[tuple[str, str], float] = {}  # (site, visitor) -> written at, oldest first
        self._user_writes: dict[tuple[str, str], float] = {}  # (site, user id) -> written at, oldest first
        self._restored: list[tuple[tuple[str, str], float]] = []  # sessions from the snapshot, with their ttl
        self._restored_ends: dict[tuple[str, str], float] = {}  # -> when they end, once the time is known
        self.snapshot_path = Path(snapshot) if snapshot else None  # written on close, read now
        # kind -> records left out of the snapshot because they cannot be encoded (logged)
        self.refused: dict[str, int] = defaultdict(int)
        if self.snapshot_path is not None and self.snapshot_path.exists():
            self._restore(self.snapshot_path)

    async def load_visitor(self, site: str, visitor: str) -> VisitorState | None:
        return self._visitors.get((site, visitor))

    async def save_visitor(self, state: VisitorState) -> None:
        key = (state.site, state.id)
        self._visitors[key] = state
        _written(self._visitor_writes, key, max(self._now, _activity(state)))
        if self.max_visitors is not None and len(self._visitors) > self.max_visitors:
            self._evict(self.max_visitors)

    def _evict(self, cap: int) -> None:
        """Keep at most ``cap`` visitors: the least recently written go first, with what retention
        would take with them (queued messages, recent show times). Oldest first, as ``expire``
        finds them: constant work per visitor stored. Their durable timers stay: each goes when it
        fires (within the longest ``within``/``delay`` of a campaign), and one whose visitor the
        hub still holds (written again when their session ends) runs as it would have."""
        writes = self._visitor_writes
        while len(self._visitors) > cap and writes:
            key = next(iter(writes))
            del writes[key]
            for table in (self._visitors, self._queued, self._recent):
                table.pop(key, None)
            self.evicted += 1

    async def save_visitors(self, states: list[VisitorState], sessions: list[tuple[SessionState, float]]) -> None:
        for state in states:
            await self.save_visitor(state)
        for session, ttl in sessions:
            await self.save_session(session, ttl)

    async def ping(self) -> bool:
        return True

    async def add_results(self, deltas: dict[tuple[str, str, str], int]) -> None:
        for key, n in deltas.items():
            self._results[key] = self._results.get(key, 0) + n

    async def load_results(self) -> dict[tuple[str, str, str], int]:
        return dict(self._results)

    async def add_series(self, deltas: dict[tuple[str, str, str, int], int]) -> None:
        for (campaign, variant, counter, hour), n in deltas.items():
            kept = self._series.setdefault(campaign, {})
            kept[(variant, counter, hour)] = kept.get((variant, counter, hour), 0) + n

    async def load_series(self, campaign: str) -> dict[tuple[str, str, int], int]:
        return dict(self._series.get(campaign, {}))

    async def pending_timers(self, limit: int = 500) -> list[tuple[str, str, str, float]]:
        soonest = heapq.nsmallest(limit, self._timers.items(), key=lambda item: item[1])
        return [(*ident, due) for ident, due in soonest]

    def sizes(self) -> dict[str, int]:
        """How many entries each of its tables holds (a soak watches them stay bounded)."""
        return {
            "sessions": len(self._sessions), "timers": len(self._timers), "timer_heap": len(self._heap),
            "queues": sum(1 for queue in self._queued.values() if queue), "visitors": len(self._visitors),
            "visitor_writes": len(self._visitor_writes), "deliveries": len(self._deliveries),
        }

    def delivery_bodies(self) -> list[str]:
        """The bodies of the webhook deliveries waiting (first tries and retries)."""
        return [delivery["body"] for delivery in self._deliveries.values()]

    async def count_timers(self) -> dict[str, int]:
        return dict(Counter(key for _, _, key in self._timers))

    async def load_session(self, site: str, session: str) -> SessionState | None:
        found = self._sessions.get((site, session))
        return found[0] if found else None

    async def save_session(self, state: SessionState, ttl: float) -> None:
        found = self._sessions.get((state.site, state.id))
        if found is not None and found[0] is not state and found[0].last_event_seq > state.last_event_seq:
            return  # never move a session backwards
        self._sessions[(state.site, state.id)] = (state, ttl)

    async def own_session(self, site: str, session: str, visitor: str, ttl: float) -> str | None:
        return None  # one node owns every session

    async def drop_session(self, site: str, session: str) -> None:
        self._sessions.pop((site, session), None)

    async def schedule(self, site: str, visitor: str, key: str, due: float) -> None:
        ident = (site, visitor, key)
        self._timers[ident] = due
        heapq.heappush(self._heap, (due, next(self._order), ident))
        if len(self._heap) > 2 * len(self._timers) + HEAP_SLACK:
            # Rescheduled and cancelled timers leave entries behind until they reach the top (an
            # absence window moved on at every cart add, say): rebuilt without them, which costs
            # linear work every so many additions, so constant per timer.
            self._heap = [entry for entry in self._heap if self._timers.get(entry[2]) == entry[0]]
            heapq.heapify(self._heap)

    async def cancel(self, site: str, visitor: str, key: str) -> None:
        self._timers.pop((site, visitor, key), None)

    async def claim_due(self, now: float, limit: int = 100) -> list[DueTimer]:
        if now > self._now:
            self._now = now
        if self._restored or self._restored_ends:
            self._end_restored(now)
        if self.retention is not None:
            self.expire(now)
        claimed: list[DueTimer] = []
        heap = self._heap
        while heap and heap[0][0] <= now and len(claimed) < limit:
            due, _, ident = heapq.heappop(heap)
            if self._timers.get(ident) != due:
                continue  # cancelled or rescheduled: a stale entry
            del self._timers[ident]
            claimed.append(DueTimer(ident[0], ident[1], ident[2], due))
        return claimed

    async def finish(self, timer: DueTimer) -> None:
        pass  # one process: a claimed timer cannot outlive the node that claimed it

    async def next_due(self) -> float | None:
        heap = self._heap
        while heap and self._timers.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    async def confirm_show(
        self, site: str, visitor: str, check: CapCheck, now: float, *,
        once: str | None = None, queue: tuple[dict[str, Any], float] | None = None,
    ) -> str | None:
        now_ms = round(now * 1000)
        if once is not None and self._once.get((site, visitor, once), 0) > now_ms:
            return "duplicate"
        shown = _window(self._shown.setdefault((site, visitor, check.campaign), []), now_ms, round(check.history * 1000))
        recent = _window(self._recent.setdefault((site, visitor), []), now_ms, DAY_MS)
        total = self._total.get((site, visitor, check.campaign), 0)
        reason = _blocked(check, now_ms, shown, recent, total)
        if reason is not None:
            return reason
        shown.append(now_ms)
        recent.append(now_ms)
        self._total[(site, visitor, check.campaign)] = total + 1
        if once is not None:
            self._once[(site, visitor, once)] = now_ms + DAY_MS
        if queue is not None:
            await self.enqueue(site, visitor, queue[0], queue[1])
        return None

    async def confirm_user_show(self, site: str, user: str, check: CapCheck, now: float) -> str | None:
        reason = await self.confirm_show(site, _user_subject(user), check, now)
        if reason is None:
            _written(self._user_writes, (site, user), max(self._now, now))
        return reason

    async def erase_user(self, site: str, user: str) -> int:
        subject = _user_subject(user)
        removed = 0
        for table in (self._shown, self._total):
            for ident in [i for i in table if i[0] == site and i[1] == subject]:
                del table[ident]
                removed += 1
        if self._recent.pop((site, subject), None) is not None:
            removed += 1
        return removed

    async def enqueue(self, site: str, visitor: str, message: dict[str, Any], expires_at: float) -> None:
        queue = self._queued.setdefault((site, visitor), [])
        queue.append((expires_at, message))
        del queue[:-MAX_QUEUED]

    async def take_queued(self, site: str, visitor: str, now: float) -> list[dict[str, Any]]:
        queue = self._queued.pop((site, visitor), [])
        return [message for expires_at, message in queue if expires_at > now]

    async def queued(self, site: str, visitor: str, now: float) -> list[dict[str, Any]]:
        return [message for expires_at, message in self._queued.get((site, visitor), ()) if expires_at > now]

    async def ack_queued(self, site: str, visitor: str, ids: list[str]) -> None:
        queue = self._queued.get((site, visitor))
        if queue:
            gone = set(ids)
            queue[:] = [entry for entry in queue if entry[1].get("id") not in gone]

    async def take_queued_of(self, site: str, visitor: str, campaign: str, now: float) -> list[tuple[dict[str, Any], float]]:
        queue = self._queued.get((site, visitor), [])
        taken = [entry for entry in queue if entry[1].get("campaign") == campaign]
        queue[:] = [entry for entry in queue if entry[1].get("campaign") != campaign]
        return [(message, expires_at) for expires_at, message in taken if expires_at > now]

    async def link_user(self, site: str, user: str, visitor: str) -> None:
        self._users.setdefault((site, user), set()).add(visitor)
        state = self._visitors.get((site, visitor))
        _written(self._user_writes, (site, user), max(self._now, _activity(state) if state is not None else 0.0))

    def expire(self, now: float) -> int:
        """Forget what was last written ``retention`` seconds before ``now`` (see the module
        docstring); returns how many visitors and user ids went."""
        if self.retention is None:
            return 0
        cutoff = now - self.retention
        gone = 0
        for writes, tables in ((self._visitor_writes, (self._visitors, self._queued, self._recent)), (self._user_writes, (self._users,))):
            while writes:
                key, written_at = next(iter(writes.items()))
                if written_at > cutoff:
                    break  # written in order: everything after it was written later
                del writes[key]
                for table in tables:
                    table.pop(key, None)
                if writes is self._user_writes:  # and the user's caps, kept under their subject
                    self._recent.pop((key[0], _user_subject(key[1])), None)
                gone += 1
        return gone

    def _end_restored(self, now: float) -> None:
        for key, ttl in self._restored:
            self._restored_ends[key] = now + ttl
        self._restored.clear()
        for key in [key for key, end in self._restored_ends.items() if end <= now]:
            del self._restored_ends[key]
            self._sessions.pop(key, None)

    async def user_visitors(self, site: str, user: str) -> list[str]:
        return sorted(self._users.get((site, user), ()))

    async def hold_for_user(self, site: str, user: str, event: dict[str, Any], now: float, keep: float) -> None:
        key = (site, user)
        held = self._held.pop(key, [])
        held.append((now + keep, event))
        del held[:-MAX_HELD_FOR_USER]
        self._held[key] = held  # written last: the map stays ordered oldest-written first
        while self._held:  # what expired goes with a later write, found oldest first
            oldest, entries = next(iter(self._held.items()))
            if entries[-1][0] > now:
                break
            del self._held[oldest]

    async def take_for_user(self, site: str, user: str, now: float) -> list[dict[str, Any]]:
        held = self._held.pop((site, user), [])
        return [event for expires_at, event in held if expires_at > now]

    async def disable_endpoint(self, name: str) -> None:
        self._disabled.add(name)

    async def disabled_endpoints(self) -> set[str]:
        return set(self._disabled)

    async def erase(self, site: str, visitor: str) -> int:
        removed = 0
        for ident in [i for i, visitors in self._users.items() if i[0] == site and visitor in visitors]:
            self._users[ident].discard(visitor)
            if not self._users[ident]:
                del self._users[ident]
                self._user_writes.pop(ident, None)
            removed += 1
        for table in (self._visitors, self._queued, self._recent):
            if table.pop((site, visitor), None) is not None:
                removed += 1
        self._visitor_writes.pop((site, visitor), None)
        for counted in (self._timers, self._shown, self._once, self._total):
            for key in [i for i in counted if i[0] == site and i[1] == visitor]:
                del counted[key]
                removed += 1
        for ident in [i for i, (s, _) in self._sessions.items() if s.site == site and s.visitor == visitor]:
            del self._sessions[ident]
            removed += 1
        self._heap = [entry for entry in self._heap if entry[2][:2] != (site, visitor)]
        heapq.heapify(self._heap)
        return removed

    # --- the campaign document -------------------------------------------------------------------

    async def load_campaigns(self) -> tuple[int, dict[str, Any] | None]:
        return self.campaigns_version, self.campaign_document

    async def campaigns_revision(self) -> int:
        return self.campaigns_version

    async def swap_campaigns(self, revision: int, document: dict[str, Any]) -> int:
        if revision != self.campaigns_version:
            return -1
        self.campaign_document = document
        self.campaigns_version += 1
        return self.campaigns_version

    # --- backend event ids ---------------------------------------------------------------------

    async def first_sighting(self, site: str, event_id: str, now: float, ttl: float) -> bool:
        seen = self._sightings
        while seen:
            oldest, until = next(iter(seen.items()))
            if until > now and len(seen) < MAX_SIGHTINGS:
                break
            del seen[oldest]
        if (site, event_id) in seen:
            return False
        seen[(site, event_id)] = now + ttl
        return True

    async def forget_sighting(self, site: str, event_id: str) -> None:
        self._sightings.pop((site, event_id), None)

    # --- the webhook delivery queue ------------------------------------------------------------

    def _due_delivery(self, ident: str, due: float) -> None:
        self._delivery_due[ident] = due
        heapq.heappush(self._delivery_heap, (due, next(self._order), ident))

    async def put_delivery(self, delivery: dict[str, Any]) -> None:
        self._deliveries[delivery["id"]] = delivery
        self._due_delivery(delivery["id"], delivery["due"])

    async def claim_deliveries(self, now: float, lease: float, limit: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        heap = self._delivery_heap
        while heap and heap[0][0] <= now and len(out) < limit:
            due, _, ident = heapq.heappop(heap)
            if self._delivery_due.get(ident) != due:
                continue  # finished, or due at another time now: a stale entry
            # Not leased: one process, so a claim cannot outlive the node that holds it; the
            # delivery waits, claimed, until it is finished, buried or put back.
            del self._delivery_due[ident]
            out.append(self._deliveries[ident])
        return out

    async def finish_delivery(self, ident: str) -> None:
        self._deliveries.pop(ident, None)
        self._delivery_due.pop(ident, None)

    async def bury_delivery(self, delivery: dict[str, Any], kept: int) -> None:
        await self.finish_delivery(delivery["id"])
        self._dead.insert(0, delivery)
        del self._dead[kept:]

    async def next_delivery_due(self) -> float | None:
        heap = self._delivery_heap
        while heap and self._delivery_due.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    async def count_deliveries(self) -> int:
        return len(self._deliveries)

    async def dead_deliveries(self, limit: int) -> list[dict[str, Any]]:
        return self._dead[:limit]

    async def erase_deliveries(self, visitor: str) -> int:
        doomed = [ident for ident, d in self._deliveries.items() if visitor in d["body"]]
        for ident in doomed:
            await self.finish_delivery(ident)  # its heap entry is skipped as stale
        before = len(self._dead)
        self._dead[:] = [d for d in self._dead if visitor not in d["body"]]
        return len(doomed) + before - len(self._dead)

    # --- the event log: no copy here -----------------------------------------------------------

    async def append_log(self, lines: list[str]) -> None:
        pass  # the node's own files are the whole log

    async def erase_log(self, erasing: LogErasure) -> int:
        return 0

    async def log_lines(self) -> list[str]:
        return []

    def cluster(self, node: str, handler: Handler) -> OneNode:
        return OneNode()

    async def close(self) -> None:
        if self.snapshot_path is not None:
            self._write_snapshot(self.snapshot_path)

    # --- snapshot -----------------------------------------------------------------------------

    def _write_snapshot(self, path: Path) -> None:
        """Write everything to ``path`` atomically (a temporary file renamed over it).

        Each record is encoded on its own: one that cannot be (a state holding what MessagePack
        cannot, see ``codec.Unstorable``) is left out, counted in ``refused`` and logged, and
        every other record is written. The bytes are those of packing the whole document."""
        sections: dict[str, tuple[str, list[tuple[tuple[Any, ...], object]]]] = {
            "visitors": ("visitor", [((v.site, v.id), codec.to_plain(v)) for v in self._visitors.values()]),
            "sessions": ("session", [((s.site, s.id), [codec.to_plain(s), ttl]) for s, ttl in self._sessions.values()]),
            "timers": ("timer", [(ident, [*ident, due]) for ident, due in self._timers.items()]),
            "queued": ("message", [(ident, [*ident, [[e, m] for e, m in q]]) for ident, q in self._queued.items() if q]),
            "shown": ("shown", [(ident, [*ident, times]) for ident, times in self._shown.items() if times]),
            "recent": ("shown", [(ident, [*ident, times]) for ident, times in self._recent.items() if times]),
            "once": ("once", [(ident, [*ident, until]) for ident, until in self._once.items()]),
            "total": ("shown", [(ident, [*ident, count]) for ident, count in self._total.items()]),
            "users": ("user", [(ident, [*ident, sorted(visitors)]) for ident, visitors in self._users.items()]),
            "results": ("results", [(ident, [*ident, count]) for ident, count in self._results.items()]),
            "series": ("results", [((campaign, *ident), [campaign, *ident, count]) for campaign, kept in self._series.items() for ident, count in kept.items()]),
            "held": ("event", [(ident, [*ident, [[e, event] for e, event in held]]) for ident, held in self._held.items() if held]),
            "disabled": ("endpoint", [((url,), url) for url in sorted(self._disabled)]),
        }
        packer = msgpack.Packer(use_bin_type=True)
        out = [packer.pack_map_header(3 + len(sections)), packer.pack("version"), packer.pack(SNAPSHOT_VERSION),
               packer.pack("campaigns_revision"), packer.pack(self.campaigns_version)]
        for name, (kind, records) in sections.items():
            packed = []
            for ident, record in records:
                try:
                    packed.append(codec.pack(record))
                except codec.Unstorable as exc:
                    codec.left_out(self.refused, kind, "/".join(map(str, ident)), exc)
            out += [packer.pack(name), packer.pack_array_header(len(packed)), *packed]
        try:
            campaigns = codec.pack(self.campaign_document)
        except codec.Unstorable as exc:
            codec.left_out(self.refused, "campaigns", "document", exc)
            campaigns = packer.pack(None)
        out += [packer.pack("campaigns"), campaigns]
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = path.with_name(path.name + ".tmp")
        with open(scratch, "wb") as out_file:
            out_file.write(b"".join(out))
            out_file.flush()
            os.fsync(out_file.fileno())
        os.replace(scratch, path)
        log.info("memory store: snapshot of %d visitors, %d sessions, %d timers written to %s%s",
                 len(self._visitors), len(self._sessions), len(self._timers), path,
                 f" ({sum(self.refused.values())} records that cannot be encoded left out)" if self.refused else "")

    def _restore(self, path: Path) -> None:
        document = msgpack.unpackb(path.read_bytes(), raw=False, strict_map_key=False)
        if document.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"{path}: unknown snapshot version {document.get('version')!r}")
        for state in sorted((codec.from_plain(VisitorState, plain) for plain in document["visitors"]), key=_activity):
            self._visitors[(state.site, state.id)] = state
            _written(self._visitor_writes, (state.site, state.id), _activity(state))
        # When a user id was linked is not in the snapshot; no later than the latest activity
        # of any visitor in it (the link came with an event): kept a little longer, never less.
        latest = next(reversed(self._visitor_writes.values()), 0.0)
        for plain, ttl in document["sessions"]:
            session = codec.from_plain(SessionState, plain)
            self._sessions[(session.site, session.id)] = (session, ttl)
            self._restored.append(((session.site, session.id), ttl))
        for site, visitor, key, due in document["timers"]:
            self._timers[(site, visitor, key)] = due
            heapq.heappush(self._heap, (due, next(self._order), (site, visitor, key)))
        for site, visitor, queue in document["queued"]:
            self._queued[(site, visitor)] = [(e, m) for e, m in queue]
        for site, visitor, campaign, times in document["shown"]:
            self._shown[(site, visitor, campaign)] = times
        for site, visitor, times in document["recent"]:
            self._recent[(site, visitor)] = times
        for site, visitor, token, until in document["once"]:
            self._once[(site, visitor, token)] = until
        for site, visitor, campaign, count in document.get("total", ()):
            self._total[(site, visitor, campaign)] = count
        for site, user, visitors in document.get("users", ()):
            self._users[(site, user)] = set(visitors)
            self._user_writes[(site, user)] = latest
        for site, user, held in document.get("held", ()):
            self._held[(site, user)] = [(e, event) for e, event in held]
        self._disabled = set(document.get("disabled", ()))
        self.campaign_document = document.get("campaigns")
        self.campaigns_version = document.get("campaigns_revision", 1 if self.campaign_document else 0)
        for campaign, variant, counter, count in document.get("results", ()):
            self._results[(campaign, variant, counter)] = count
        for campaign, variant, counter, hour, count in document.get("series", ()):
            self._series.setdefault(campaign, {})[(variant, counter, int(hour))] = count
        log.info("memory store: restored %d visitors, %d sessions, %d timers from %s",
                 len(self._visitors), len(self._sessions), len(self._timers), path)


def _user_subject(user: str) -> str:
    return "u:" + user


def _activity(state: VisitorState) -> float:
    """The visitor's latest activity the state records."""
    return max(state.first_seen, state.last_seen, state.last_shown_at or 0.0)


def _written(writes: dict[K, float], key: K, at: float) -> None:
    """Record a write at ``at``, moving the key to the end (the newest). A write that counts as
    older than the newest one (a visitor whose own activity is behind the store's "now") is put
    at the end all the same, stamped with the newest time: kept a little longer, never less."""
    writes.pop(key, None)
    if writes:
        newest = next(reversed(writes.values()))
        if at < newest:
            at = newest
    writes[key] = at


def _window(times: list[int], now_ms: int, window_ms: int) -> list[int]:
    """Drop times older than the window, in place."""
    cut = 0
    while cut < len(times) and times[cut] <= now_ms - window_ms:
        cut += 1
    if cut:
        del times[:cut]
    return times


def _since(times: list[int], since_ms: int) -> int:
    return sum(1 for at in times if at > since_ms)


def _blocked(check: CapCheck, now_ms: int, shown: list[int], recent: list[int], total: int) -> str | None:
    """The same checks, in the same order, as the Redis script CONFIRM_SHOW (and the engine)."""
    if check.lifetime is not None and total >= check.lifetime:
        return "cap:lifetime"
    if check.every is not None and shown and now_ms - shown[-1] < check.every * 1000:
        return "cap:every"
    if check.per_day is not None and _since(shown, now_ms - DAY_MS) >= check.per_day:
        return "cap:per_day"
    if check.per_week is not None and _since(shown, now_ms - 7 * DAY_MS) >= check.per_week:
        return "cap:per_week"
    if check.limit_per_hour is not None and _since(recent, now_ms - 3_600_000) >= check.limit_per_hour:
        return "limit:per_hour"
    if check.limit_per_day is not None and _since(recent, now_ms - DAY_MS) >= check.limit_per_day:
        return "limit:per_day"
    if check.cooldown and recent and now_ms - recent[-1] < check.cooldown * 1000:
        return "cooldown"
    return None
