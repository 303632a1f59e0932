"""The sessions a node holds and their visitors: the registry, and what each entry carries.

A visitor may have several tabs (sessions) open on one node; they share one :class:`Visitor`
(its plain state and the list of its sessions here). A :class:`LiveSession` is connected, or
detached and resumable until its grace period ends. :class:`Sessions` finds them by session id
and by (site, visitor id) and is the one place they are added and removed.

May import: ``nudge.rules`` (the plain state), ``nudge.runtime.connection`` and
``nudge.runtime.scheduler`` (the socket and timers a session holds).
"""

from __future__ import annotations

import secrets
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from nudge.rules import timeline
from nudge.rules.state import SessionState, State, VisitorState
from nudge.rules.timeline import Presence

if TYPE_CHECKING:
    from nudge.runtime.connection import Connection
    from nudge.runtime.scheduler import LocalTimer
    from nudge.runtime.trials import Trial

TRACE_LENGTH = 50  # decisions remembered per session, for "why did (not) it show?"


@dataclass(slots=True)
class Visitor:
    """A visitor with at least one session on this node."""

    state: VisitorState
    sessions: list[LiveSession] = field(default_factory=list)  # oldest first
    # The trial of a test visitor (nudge.runtime.trials.Trial): its engine and executor decide
    # for it. None for everyone else.
    trial: Trial | None = None


class LiveSession:
    """A session this node holds: connected, or detached and resumable until its grace ends."""

    __slots__ = ("state", "visitor", "view", "conn", "wake", "expiry", "trace", "kept")

    def __init__(self, state: SessionState, visitor: Visitor) -> None:
        self.state = state  # the session's plain state
        self.visitor = visitor  # shared with the visitor's other tabs on this node
        self.view = State(visitor.state, state)  # what the engine is handed, built once
        self.conn: Connection | None = None  # None while detached
        self.wake: LocalTimer | None = None  # the next dwell/idle check
        self.expiry: LocalTimer | None = None  # the end of the grace period, while detached
        self.trace: deque[tuple[float, str, str | None, str]] = deque(maxlen=TRACE_LENGTH)  # (when, campaign, variant, outcome)
        self.kept: set[str] = set()  # ids of messages sent here that the visitor's queue keeps until acknowledged

    def belongs_to(self, site: str, visitor: str) -> bool:
        """Whether this is a session of that visitor of that site (who may resume it)."""
        return self.state.site == site and self.state.visitor == visitor

    def due_by(self, now: float) -> bool:
        """Whether a timer of this visitor or a wake-up of this session is due by ``now``."""
        wake = self.wake
        if wake is not None and not wake.cancelled and wake.due <= now:
            return True
        timers = self.visitor.state.timers
        return bool(timers) and min(timers.values()) <= now


class Sessions:
    """The sessions this node holds, by id, and their visitors, by (site, visitor id)."""

    __slots__ = ("by_id", "visitors", "detached")

    def __init__(self) -> None:
        self.by_id: dict[str, LiveSession] = {}  # session id -> session held by this node
        self.visitors: dict[tuple[str, str], Visitor] = {}  # (site, visitor id) -> visitor
        self.detached: dict[LiveSession, None] = {}  # resumable sessions, oldest detached first

    def hold(self, state: SessionState, visitor: Visitor) -> LiveSession:
        """Hold ``state`` as a session of ``visitor`` here, from now on."""
        live = LiveSession(state, visitor)
        self.by_id[state.id] = live
        visitor.sessions.append(live)
        return live

    def drop(self, live: LiveSession) -> None:
        """Hold the session no longer; its visitor goes too once it has no session here."""
        state = live.state
        self.detached.pop(live, None)
        if self.by_id.get(state.id) is live:
            del self.by_id[state.id]
        visitor = live.visitor
        if live in visitor.sessions:
            visitor.sessions.remove(live)
        if not visitor.sessions:
            self.visitors.pop((state.site, state.visitor), None)

    def of_visitor(self, site: str, visitor: str) -> list[LiveSession]:
        """Every session of the visitor held here, through the visitor or not."""
        held = self.visitors.get((site, visitor))
        found = list(held.sessions) if held is not None else []
        return found + [live for live in self.by_id.values() if live.belongs_to(site, visitor) and live not in found]


def looking(visitor: Visitor, now: float, *, offline_after: float, grace: float) -> tuple[Presence, LiveSession | None]:
    """Who of the visitor is looking, as the timeline sees their sessions on this node: the
    presence, and the attached session decisions are made in (None when no tab is attached)."""
    tabs = [timeline.Tab(s.state.id, None if s.conn is not None else (s.state.detached_at or now)) for s in visitor.sessions]
    whereabouts = timeline.presence(tabs, now, offline_after=offline_after, grace=grace)
    live = next((s for s in visitor.sessions if s.state.id == whereabouts.tab), None) if whereabouts.tab else None
    return whereabouts, live


def signed_in(state: VisitorState) -> str | None:
    """The user id the visitor was proven to be (a signed token, or the backend's word): their
    caps and limits count per user, across devices, as well as per browser."""
    user = state.trusted.get("user_id")
    return user if isinstance(user, str) else None


def new_session_id() -> str:
    return "s_" + secrets.token_urlsafe(16)


def new_visitor_id() -> str:
    return "v_" + secrets.token_urlsafe(16)
