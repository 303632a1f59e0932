"""The store contract every implementation fulfils (and the contract tests check)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from nudge.rules.state import SessionState, VisitorState

DAY_MS = 86_400_000
# Messages queued for one visitor at most; the oldest goes first.
MAX_QUEUED = 20


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


class Store(Protocol):
    shared: bool  # True when other nodes see the same data (Redis); False for memory
    node: str  # the node whose sessions this store writes; a session another node took over
    # (``own_session``) refuses this node's writes from then on

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
        once: str | None = None, queue: tuple[dict, float] | None = None,
    ) -> str | None: ...

    # The same caps per signed-in user (a proven user id), across all their devices: checked and
    # counted in one step, with the same reasons (no ``once``, no queue: the visitor's own
    # confirm_show does those). Forgotten ``retention`` after the last show, or by erase_user.
    async def confirm_user_show(self, site: str, user: str, check: CapCheck, now: float) -> str | None: ...
    async def erase_user(self, site: str, user: str) -> int: ...

    # Messages decided while the visitor was away, delivered on their next visit.
    async def enqueue(self, site: str, visitor: str, message: dict, expires_at: float) -> None: ...
    async def take_queued(self, site: str, visitor: str, now: float) -> list[dict]: ...
    # Messages with an ``id`` stay queued until a tab acknowledges them: ``queued`` reads them
    # (delivered to each tab that attaches until one acknowledges; the client skips an id it has
    # processed), ``ack_queued`` removes them by id. This is what makes a message a timer fires
    # durable before it leaves: a node that dies between counting it and the tab's ack leaves it
    # here, for the next tab on any node (docs/protocol.md, "Delivery").
    async def queued(self, site: str, visitor: str, now: float) -> list[dict]: ...
    async def ack_queued(self, site: str, visitor: str, ids: list[str]) -> None: ...
    # One campaign's queued messages with their expiry, taken (the others stay): the offline rule
    # applied to what a visitor who went offline never took (rules/timeline.py).
    async def take_queued_of(self, site: str, visitor: str, campaign: str, now: float) -> list[tuple[dict, float]]: ...

    # Which visitors a proven user id was seen with (erasure by user), kept for the retention.
    async def link_user(self, site: str, user: str, visitor: str) -> None: ...
    async def user_visitors(self, site: str, user: str) -> list[str]: ...

    # Everything about one visitor — state, sessions, timers, caps, once markers, queued
    # messages, whereabouts — removed (erasure, docs/security.md). Returns how many records went.
    async def erase(self, site: str, visitor: str) -> int: ...
    # Results counts, (campaign, variant, counter) -> count: added to in batches, read at start
    # (and, with Redis, for a report over every node).
    async def add_results(self, deltas: dict[tuple[str, str, str], int]) -> None: ...
    async def load_results(self) -> dict[tuple[str, str, str], int]: ...

    # The soonest pending durable timers, (site, visitor, key, due), soonest first (the dashboard).
    async def pending_timers(self, limit: int = 500) -> list[tuple[str, str, str, float]]: ...

    async def ping(self) -> bool: ...  # raises while the store is unreachable
    async def close(self) -> None: ...
