"""The store contract every implementation fulfils (and the contract tests check).

Everything Nudge keeps goes through here: visitors, sessions, timers, caps and queued messages
(:class:`Store`), the campaign document the admin API edits, the webhook delivery queue, the
backend event ids already applied, the event log's copy every node reads, and the messages nodes
send each other (:class:`Cluster`, opened by :meth:`Store.cluster`). Code outside ``nudge.store``
calls these methods and never asks which implementation it has: a difference between one node and
several is the cluster's to answer (:attr:`Cluster.alone`).

May import: ``nudge.rules`` (the plain state it keeps), ``nudge.errors``; and, in the
implementations, msgpack and redis.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from nudge.rules.state import SessionState, VisitorState

DAY_MS = 86_400_000
# Messages queued for one visitor at most; the oldest goes first.
MAX_QUEUED = 20
# Backend events kept for a user id no visitor is linked to yet, at most; the oldest goes first.
MAX_HELD_FOR_USER = 50


@dataclass(frozen=True, slots=True)
class DueTimer:
    site: str
    visitor: str
    key: str  # "absence:<campaign>" or "delay:<campaign>"
    due: float
    claim: str = field(default="", compare=False)  # the shared store's name for this claim

    @property
    def token(self) -> str:
        """Names this firing of this timer, so that carrying it out twice is detectable."""
        return f"{self.key}@{round(self.due * 1000)}"


@dataclass(frozen=True, slots=True)
class CapCheck:
    """What a Show must pass, counted atomically where every node sees it (the engine already
    checked the same caps against its own copy of the visitor). Per-session caps are not here:
    one node holds a session at a time, so its own count is exact."""

    campaign: str
    per_day: int | None = None  # the campaign's cap per visitor in any 24 h
    per_week: int | None = None  # ... in any 7 days
    lifetime: int | None = None  # ... ever
    every: float | None = None  # seconds after the campaign last showed before it may again
    limit_per_hour: int | None = None  # messages of any campaign per visitor in any hour
    limit_per_day: int | None = None  # ... in any 24 h
    cooldown: float = 0.0  # seconds after any message

    @property
    def history(self) -> float:
        """Seconds of this campaign's show times worth keeping."""
        return max(DAY_MS / 1000, 7 * DAY_MS / 1000 if self.per_week else 0.0, self.every or 0.0)


class LogErasure(Protocol):
    """Which event-log records an erasure removes (``nudge.calibrate.recording.Erasing``)."""

    visitors: list[str]

    def needles(self) -> list[bytes]: ...  # in every record naming one of the visitors
    def user_needles(self) -> list[bytes]: ...  # in the records that may name one of the users
    def __call__(self, line: str | bytes) -> bool: ...  # whether the record goes


# A record another node sent this one (``Cluster.send``, ``Cluster.broadcast``).
Handler = Callable[[dict[str, Any]], Awaitable[None]]


class Cluster(Protocol):
    """The nodes of a deployment as one node sees them: where each visitor's sessions are held,
    and records sent between nodes. One node alone (the memory store) has a cluster that holds
    nothing elsewhere and hears nothing; with Redis, pub/sub channels and a hash per visitor."""

    alone: bool  # True when no other node can share this store (no relaying, no write-behind)
    healthy: bool  # its listener is subscribed and heard its last probe
    resubscribed: int  # how many times its listener was found dead and replaced

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    # Whereabouts: which node holds each of a visitor's sessions.
    async def hold(self, site: str, visitor: str, session: str, ttl: float) -> str | None: ...
    async def release(self, site: str, visitor: str, session: str) -> bool: ...
    async def holders(self, site: str, visitor: str) -> dict[str, str]: ...
    # Records to one node (True when it heard), or every node (how many heard).
    async def send(self, node: str, record: dict[str, Any]) -> bool: ...
    async def broadcast(self, record: dict[str, Any]) -> int: ...
    async def check(self) -> bool: ...  # probe the listener, replace it when dead; healthy after


class Store(Protocol):
    # What a call raises while the store is unreachable (the hub then runs degraded); empty for
    # a store that is never unreachable.
    unavailable: tuple[type[BaseException], ...]
    # Seconds a visitor's records outlive their last write (``--retention``); None: forever.
    retention: float | None
    name: str  # what /healthz calls it: "memory", "redis"
    node: str  # the node whose sessions this store writes; a session another node took over
    # (``own_session``) refuses this node's writes from then on
    # kind (visitor, session, message, ...) -> records left out of a write because they cannot be
    # encoded (codec.Unstorable: each logged; the other records of the same write are written)
    refused: dict[str, int]
    evicted: int  # visitors dropped to keep within a cap before their retention ran out (memory)

    # Visitors: what outlives a tab (cart, caps, traits, timers' keys).
    async def load_visitor(self, site: str, visitor: str) -> VisitorState | None: ...
    async def save_visitor(self, state: VisitorState) -> None: ...
    # Many visitors and sessions in one round trip (the hub's write-behind of a shared store).
    async def save_visitors(self, states: list[VisitorState], sessions: list[tuple[SessionState, float]]) -> None: ...

    # Sessions: saved (written behind in shared stores) so they can be resumed within the grace
    # period, on any node. A save never moves a session's last applied event seq backwards.
    async def load_session(self, site: str, session: str) -> SessionState | None: ...
    async def save_session(self, state: SessionState, ttl: float) -> None: ...
    async def own_session(self, site: str, session: str, visitor: str, ttl: float) -> str | None: ...
    async def drop_session(self, site: str, session: str) -> None: ...

    # Durable timers, each fired once: scheduling again replaces the due time. A claimed timer is
    # leased: unless ``finish`` is called within the lease, it is claimed again (its node died).
    async def schedule(self, site: str, visitor: str, key: str, due: float) -> None: ...
    async def cancel(self, site: str, visitor: str, key: str) -> None: ...
    async def claim_due(self, now: float, limit: int = 100) -> list[DueTimer]: ...
    async def finish(self, timer: DueTimer) -> None: ...
    async def next_due(self) -> float | None: ...

    # Caps, checked and counted in one step: None when the message may show (and it is counted),
    # else why not (the engine's reasons: "cap:lifetime", "cap:every", "cap:per_day",
    # "cap:per_week", "limit:per_hour", "limit:per_day", "cooldown"; or "duplicate" for a ``once``
    # token already used). With ``queue``, the message is queued in the same step.
    async def confirm_show(
        self, site: str, visitor: str, check: CapCheck, now: float, *,
        once: str | None = None, queue: tuple[dict[str, Any], float] | None = None,
    ) -> str | None: ...

    # The same caps per signed-in user (a proven user id), across all their devices: checked and
    # counted in one step, with the same reasons (no ``once``, no queue: the visitor's own
    # confirm_show does those). Forgotten ``retention`` after the last show, or by erase_user.
    async def confirm_user_show(self, site: str, user: str, check: CapCheck, now: float) -> str | None: ...
    async def erase_user(self, site: str, user: str) -> int: ...

    # Messages decided while the visitor was away, delivered on their next visit.
    async def enqueue(self, site: str, visitor: str, message: dict[str, Any], expires_at: float) -> None: ...
    async def take_queued(self, site: str, visitor: str, now: float) -> list[dict[str, Any]]: ...
    # Messages with an ``id`` stay queued until a tab acknowledges them: ``queued`` reads them
    # (delivered to each tab that attaches until one acknowledges; the client skips an id it has
    # processed), ``ack_queued`` removes them by id. This is what makes a message a timer fires
    # durable before it leaves: a node that dies between counting it and the tab's ack leaves it
    # here, for the next tab on any node (docs/protocol.md, "Delivery").
    async def queued(self, site: str, visitor: str, now: float) -> list[dict[str, Any]]: ...
    async def ack_queued(self, site: str, visitor: str, ids: list[str]) -> None: ...
    # One campaign's queued messages with their expiry, taken (the others stay): the offline rule
    # applied to what a visitor who went offline never took (rules/timeline.py).
    async def take_queued_of(self, site: str, visitor: str, campaign: str, now: float) -> list[tuple[dict[str, Any], float]]: ...

    # Which visitors a proven user id was seen with (erasure by user), kept for the retention.
    async def link_user(self, site: str, user: str, visitor: str) -> None: ...
    async def user_visitors(self, site: str, user: str) -> list[str]: ...
    # Backend events addressed to a user id no visitor is linked to yet (``POST /api/events``
    # with ``user_id``, the CDP endpoints): each kept ``keep`` seconds from ``now`` (the last
    # ``MAX_HELD_FOR_USER``), then taken whole, atomically, by the first visitor linked to them.
    async def hold_for_user(self, site: str, user: str, event: dict[str, Any], now: float, keep: float) -> None: ...
    async def take_for_user(self, site: str, user: str, now: float) -> list[dict[str, Any]]: ...

    # Webhook endpoints whose receiver answered 410 Gone, named "<id> <url>" (so that a new url in
    # the file enables the endpoint again): every node stops sending to them.
    async def disable_endpoint(self, name: str) -> None: ...
    async def disabled_endpoints(self) -> set[str]: ...

    # Everything about one visitor — state, sessions, timers, caps, once markers, queued
    # messages, whereabouts — removed (erasure, docs/security.md). Returns how many records went.
    async def erase(self, site: str, visitor: str) -> int: ...
    # Results counts, (campaign, variant, counter) -> count: added to in batches, read at start
    # (and, with Redis, for a report over every node).
    async def add_results(self, deltas: dict[tuple[str, str, str], int]) -> None: ...
    async def load_results(self) -> dict[tuple[str, str, str], int]: ...
    # Results over time, (campaign, variant, counter, hour) -> count, the hour as the epoch second
    # it starts: added to with the results; read one campaign at a time (the editor's charts).
    async def add_series(self, deltas: dict[tuple[str, str, str, int], int]) -> None: ...
    async def load_series(self, campaign: str) -> dict[tuple[str, str, int], int]: ...

    # The soonest pending durable timers, (site, visitor, key, due), soonest first (the dashboard).
    async def pending_timers(self, limit: int = 500) -> list[tuple[str, str, str, float]]: ...
    # How many durable timers wait (claimed ones included), by timer key: a walk of every timer,
    # for /metrics at most every few seconds, never on the hot path.
    async def count_timers(self) -> dict[str, int]: ...

    # The campaign document the admin API edits, with a revision bumped by every change:
    # (revision, document or None), the revision alone (polled), and a compare-and-set that
    # writes ``document`` only when the revision is still ``revision`` (the new one, else -1).
    async def load_campaigns(self) -> tuple[int, dict[str, Any] | None]: ...
    async def campaigns_revision(self) -> int: ...
    async def swap_campaigns(self, revision: int, document: dict[str, Any]) -> int: ...

    # Backend event ids already applied (``POST /api/events``), each remembered ``ttl`` seconds
    # from ``now``: True the first time an id is seen, False while it is remembered.
    async def first_sighting(self, site: str, event_id: str, now: float, ttl: float) -> bool: ...
    async def forget_sighting(self, site: str, event_id: str) -> None: ...

    # The webhook delivery queue: deliveries (dicts with ``id`` and ``due``, and a ``body`` that
    # names the visitor) put, claimed when due — leased: a delivery not finished within ``lease``
    # seconds is due again —, finished, or given up (buried, onto the dead letters, newest first,
    # the last ``kept``). ``erase_deliveries`` drops the waiting and dead ones naming a visitor.
    async def put_delivery(self, delivery: dict[str, Any]) -> None: ...
    async def claim_deliveries(self, now: float, lease: float, limit: int) -> list[dict[str, Any]]: ...
    async def finish_delivery(self, ident: str) -> None: ...
    async def bury_delivery(self, delivery: dict[str, Any], kept: int) -> None: ...
    async def next_delivery_due(self) -> float | None: ...
    async def count_deliveries(self) -> int: ...
    async def dead_deliveries(self, limit: int) -> list[dict[str, Any]]: ...
    async def erase_deliveries(self, visitor: str) -> int: ...

    # The event log's copy every node reads (``--record``; the files are each node's own): lines
    # appended, erased (how many went), read back. The memory store keeps no copy.
    async def append_log(self, lines: list[str]) -> None: ...
    async def erase_log(self, erasing: LogErasure) -> int: ...
    async def log_lines(self) -> list[str]: ...

    # The deployment's nodes as this one sees them, ``handler`` awaited for each record sent to it.
    def cluster(self, node: str, handler: Handler) -> Cluster: ...

    async def ping(self) -> bool: ...  # raises while the store is unreachable
    async def close(self) -> None: ...
