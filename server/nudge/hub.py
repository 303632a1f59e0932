"""The runtime around the pure engine: live sessions, their sockets, the store and the timers.

Frame in → state updated → rules evaluated → message out happens in :meth:`Hub.on_frame`, in the
connection's own receive loop: no task per event, no store round trip unless a decision needs one
(a cart-abandonment window opening, say), and the resulting ``show`` frame is written in the same
turn of the event loop.
"""

from __future__ import annotations

import logging
import secrets
from collections import deque
from dataclasses import dataclass, field

from . import events, protocol
from .audience import device_class
from .campaigns import CampaignSet
from .clock import Clock
from .config import Settings, Site
from .connection import Connection
from .decisions import Cancel, Converted, Decision, Defer, Schedule, Show, Suppress, Wake
from .engine import Engine, assign
from .errors import (
    CLOSE_SESSION_TAKEN,
    BadEvent,
    FrameError,
    MalformedFrame,
    ProtocolViolation,
    RateLimited,
)
from .protocol import Hello
from .results import Results
from .scheduler import LocalTimer, Scheduler
from .state import SessionState, State, VisitorState, start_session
from .store import DueTimer, Store

log = logging.getLogger("nudge.hub")

TRACE_LENGTH = 50  # decisions remembered per session, for "why did (not) it show?"


@dataclass(slots=True)
class Visitor:
    """A visitor with at least one session on this node."""

    state: VisitorState
    sessions: list[LiveSession] = field(default_factory=list)  # oldest first


class LiveSession:
    """A session this node holds: connected, or detached and resumable until its grace ends."""

    __slots__ = ("state", "visitor", "view", "conn", "wake", "expiry", "trace")

    def __init__(self, state: SessionState, visitor: Visitor) -> None:
        self.state = state  # the session's plain state
        self.visitor = visitor  # shared with the visitor's other tabs on this node
        self.view = State(visitor.state, state)  # what the engine is handed, built once
        self.conn: Connection | None = None  # None while detached
        self.wake: LocalTimer | None = None  # the next dwell/idle check
        self.expiry: LocalTimer | None = None  # the end of the grace period, while detached
        self.trace: deque[tuple[float, str, str | None, str]] = deque(maxlen=TRACE_LENGTH)  # (when, campaign, variant, outcome)


@dataclass(slots=True)
class Stats:
    connections: int = 0  # open sockets
    events: int = 0  # events applied
    duplicates: int = 0  # resent events acknowledged without applying them again
    refused: int = 0  # frames answered with an error
    shown: int = 0  # show messages decided (sent, or queued for a later visit)
    suppressed: int = 0
    timers_fired: int = 0


def _not_before(visitor: VisitorState, due: float) -> float:
    """A timer runs as of its due time, but never before something already recorded for the
    visitor (time as the engine sees it only moves forward)."""
    latest = max(visitor.last_seen, visitor.last_shown_at or 0.0)
    return due if due >= latest else latest


def new_session_id() -> str:
    return "s_" + secrets.token_urlsafe(16)


def new_visitor_id() -> str:
    return "v_" + secrets.token_urlsafe(16)


class Hub:
    def __init__(self, settings: Settings, campaign_set: CampaignSet, store: Store, clock: Clock) -> None:
        self.settings = settings
        self.engine = Engine(campaign_set)  # replaced whole on reload
        self.store = store
        self.clock = clock
        self.sites: dict[str, Site] = settings.sites()  # publishable key -> site
        self.sessions: dict[str, LiveSession] = {}  # session id -> session held by this node
        self.visitors: dict[tuple[str, str], Visitor] = {}  # (site, visitor id) -> visitor
        self.scheduler = Scheduler(clock, store, self._on_due)
        self.stats = Stats()
        self.results = Results()  # per campaign and variant

    async def start(self) -> None:
        self.scheduler.start()

    async def stop(self) -> None:
        await self.scheduler.stop()
        for live in list(self.sessions.values()):
            await self.store.save_session(live.state, self.settings.grace)
        for visitor in self.visitors.values():
            await self.store.save_visitor(visitor.state)
        await self.store.close()

    def reload(self, campaign_set: CampaignSet) -> None:
        """Run new campaigns from the next event on; sessions and timers stay."""
        self.engine = Engine(campaign_set)

    # --- sessions ---------------------------------------------------------------------------

    async def attach(self, site: Site, hello: Hello, conn: Connection, user_agent: str | None = None) -> LiveSession:
        """Bind a socket to a session: resume the one named in ``hello`` or start a new one."""
        now = self.clock.now()
        visitor_id = hello.visitor or new_visitor_id()
        live = self.sessions.get(hello.session) if hello.session else None
        if live is not None and (live.state.site != site.key or live.state.visitor != visitor_id):
            live = None  # not theirs to resume
        if live is None and hello.session:
            stored = await self.store.load_session(site.key, hello.session)
            if stored is not None and stored.visitor == visitor_id:
                live = self._hold(stored, await self._visitor(site.key, visitor_id, now))
        resumed = live is not None
        if live is not None:
            if live.conn is not None and live.conn is not conn:
                live.conn.close_soon(CLOSE_SESSION_TAKEN, "session resumed by another connection")
            if live.expiry is not None:
                live.expiry.cancel()
                live.expiry = None
            live.state.detached_at = None
        else:
            visitor = await self._visitor(site.key, visitor_id, now)
            session = start_session(visitor.state, new_session_id(), now, device_class(user_agent))
            live = self._hold(session, visitor)
        live.conn = conn
        self.stats.connections += 1
        session = live.state
        conn.push(protocol.welcome(session.id, visitor_id, resumed, session.last_event_seq, self.settings.grace))
        if session.outbox:
            session.outbox = [frame for frame in session.outbox if frame["seq"] > hello.rx]
            for frame in session.outbox:
                conn.push(frame)
        for message in await self.store.take_queued(site.key, visitor_id, now):
            self._deliver(live, message)
        await self._carry_out(live, live.visitor, self.engine.on_resume(live.view, now), now)
        return live

    async def detach(self, live: LiveSession, conn: Connection) -> None:
        """The socket closed: keep the session resumable for the grace period."""
        if live.conn is not conn:
            return  # another connection took the session over already
        self.stats.connections -= 1
        live.conn = None
        now = self.clock.now()
        live.state.detached_at = now
        if live.wake is not None:
            live.wake.cancel()
            live.wake = None
        live.expiry = self.scheduler.call_at(now + self.settings.grace, self._expire, live)
        await self.store.save_session(live.state, self.settings.grace)
        await self.store.save_visitor(live.visitor.state)

    def _hold(self, state: SessionState, visitor: Visitor) -> LiveSession:
        live = LiveSession(state, visitor)
        self.sessions[state.id] = live
        visitor.sessions.append(live)
        return live

    async def _visitor(self, site: str, visitor_id: str, now: float) -> Visitor:
        key = (site, visitor_id)
        visitor = self.visitors.get(key)
        if visitor is None:
            state = await self.store.load_visitor(site, visitor_id)
            visitor = self.visitors.get(key)  # another tab may have loaded it meanwhile
            if visitor is None:
                visitor = Visitor(state or VisitorState(site, visitor_id, first_seen=now))
                self.visitors[key] = visitor
        return visitor

    async def _expire(self, live: LiveSession, now: float) -> None:
        """The grace period ended: the session is over. Messages it never acknowledged wait for
        the visitor's next session instead of being lost."""
        live.expiry = None
        if live.conn is not None:
            return
        state = live.state
        self.sessions.pop(state.id, None)
        for frame in state.outbox:
            campaign = self.engine.by_id.get(frame.get("campaign"))
            expires = campaign.expires if campaign else 86400.0
            message = {k: v for k, v in frame.items() if k not in ("t", "seq")}
            await self.store.enqueue(state.site, state.visitor, message, now + expires)
        state.outbox.clear()
        await self.store.drop_session(state.site, state.id)
        visitor = live.visitor
        if live in visitor.sessions:
            visitor.sessions.remove(live)
        if not visitor.sessions:
            await self.store.save_visitor(visitor.state)
            self.visitors.pop((state.site, state.visitor), None)

    # --- frames -----------------------------------------------------------------------------

    async def on_frame(self, live: LiveSession, conn: Connection, data: str | bytes) -> None:
        """Handle one frame from the session's socket; replies are queued on ``conn``.

        Raises :class:`RateLimited` when the event budget is exhausted (the socket is closed)."""
        try:
            frame = conn.codec.decode(data)
            if not isinstance(frame, dict):
                raise MalformedFrame("a frame must be a map with a 't' field")
            kind = frame.get("t")
            if kind == "ev":
                await self._on_event(live, conn, frame)
            elif kind == "ack":
                self._on_ack(live, frame)
            elif kind == "ping":
                conn.push(protocol.PONG)
            elif kind == "hello":
                raise ProtocolViolation("hello was already received on this connection")
            else:
                raise MalformedFrame(f"unknown frame type {kind!r}; expected ev, ack or ping")
        except FrameError as exc:
            self.stats.refused += 1
            conn.push(protocol.error(exc.code, exc.reason, exc.seq))

    async def _on_event(self, live: LiveSession, conn: Connection, frame: dict) -> None:
        session = live.state
        seq = frame.get("seq")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
            raise BadEvent("seq must be a whole number ≥ 1")
        if seq <= session.last_event_seq:
            self.stats.duplicates += 1
            conn.push(protocol.ack(session.last_event_seq))
            return
        now = self.clock.now()
        if not conn.take_token(now):
            raise RateLimited(f"more than {self.settings.events_per_second:g} events per second")
        engine = self.engine
        try:
            event = events.validate(frame.get("name"), frame.get("props"), seq, engine.custom_events)
        except FrameError as exc:
            # Refused for good: acknowledged so that the client does not resend it forever.
            session.last_event_seq = seq
            self.stats.refused += 1
            conn.push(protocol.error(exc.code, exc.reason, seq))
            conn.push(protocol.ack(seq))
            return
        decisions = engine.on_event(live.view, event, now)
        session.last_event_seq = seq
        self.stats.events += 1
        if event.name in ("shown", "clicked", "dismissed"):
            self._count_outcome(event, live.visitor.state)
        if decisions:
            await self._carry_out(live, live.visitor, decisions, now)
        conn.push(protocol.ack(seq))

    def _on_ack(self, live: LiveSession, frame: dict) -> None:
        seq = frame.get("seq")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise MalformedFrame("ack.seq must be a whole number ≥ 0")
        outbox = live.state.outbox
        if outbox and outbox[0]["seq"] <= seq:
            live.state.outbox = [frame for frame in outbox if frame["seq"] > seq]

    def _count_outcome(self, event: events.Event, visitor: VisitorState) -> None:
        campaign = self.engine.by_id.get(event.props.get("campaign"))
        if campaign is not None:
            variant = assign(campaign, visitor.id)  # sticky: the variant it was shown in
            self.results.count(campaign.id, variant.id if variant else None, event.name)

    # --- decisions --------------------------------------------------------------------------

    async def _carry_out(self, live: LiveSession | None, visitor: Visitor, decisions: list[Decision], now: float) -> None:
        state = visitor.state
        results = self.results
        for decision in decisions:
            if isinstance(decision, Show):
                self.stats.shown += 1
                results.count(decision.campaign, decision.variant, "sent")
                message = {"campaign": decision.campaign, **decision.content}
                if decision.variant is not None:
                    message["variant"] = decision.variant
                if decision.queued or live is None:
                    await self.store.enqueue(state.site, state.id, message, decision.expires_at or 0.0)
                else:
                    live.trace.append((now, decision.campaign, decision.variant, "sent"))
                    self._deliver(live, message)
            elif isinstance(decision, Schedule):
                await self.store.schedule(state.site, state.id, decision.key, decision.due)
                self.scheduler.poke(decision.due)
            elif isinstance(decision, Cancel):
                await self.store.cancel(state.site, state.id, decision.key)
            elif isinstance(decision, Suppress):
                self.stats.suppressed += 1
                results.count(decision.campaign, decision.variant, f"suppressed:{decision.reason}")
                if live is not None:
                    live.trace.append((now, decision.campaign, decision.variant, f"suppressed:{decision.reason}"))
            elif isinstance(decision, Defer):
                results.count(decision.campaign, decision.variant, f"deferred:{decision.reason}")
                if live is not None:
                    live.trace.append((now, decision.campaign, decision.variant, f"deferred:{decision.reason}"))
            elif isinstance(decision, Converted):
                results.count(decision.campaign, decision.variant, "converted")
                if live is not None:
                    live.trace.append((now, decision.campaign, decision.variant, "converted"))
            elif isinstance(decision, Wake) and live is not None:
                if live.wake is not None:
                    live.wake.cancel()
                live.wake = self.scheduler.call_at(decision.at, self._on_wake, live) if decision.at is not None else None

    def _deliver(self, live: LiveSession, message: dict) -> None:
        """Give a message the session's next seq, keep it until acknowledged, and send it."""
        session = live.state
        session.last_message_seq += 1
        frame = {"t": "show", "seq": session.last_message_seq, **message}
        session.outbox.append(frame)
        if len(session.outbox) > self.settings.outbox_limit:
            del session.outbox[0]
        conn = live.conn
        if conn is not None:
            conn.push(frame)
            conn.kick()

    # --- timers -----------------------------------------------------------------------------

    async def _on_wake(self, live: LiveSession, now: float) -> None:
        live.wake = None
        if live.conn is None:
            return
        now = _not_before(live.visitor.state, now)
        await self._carry_out(live, live.visitor, self.engine.on_wake(live.view, now), now)

    async def _on_due(self, timer: DueTimer) -> None:
        """A durable timer fell due: decide with the visitor's latest session on this node, or
        with none (the message is then queued for their next visit, or dropped, as the campaign
        says)."""
        self.stats.timers_fired += 1
        visitor = self.visitors.get((timer.site, timer.visitor))
        live = None
        if visitor is not None:
            connected = [s for s in visitor.sessions if s.conn is not None]
            live = (connected or visitor.sessions or [None])[-1]
        else:
            state = await self.store.load_visitor(timer.site, timer.visitor)
            if state is None:
                return
            visitor = Visitor(state)
        view = live.view if live is not None else State(visitor.state, None)
        now = _not_before(visitor.state, timer.due)
        await self._carry_out(live, visitor, self.engine.on_timer(view, timer.key, now), now)
        if not visitor.sessions:
            await self.store.save_visitor(visitor.state)

    # --- for operators and tests ------------------------------------------------------------

    def explain(self, session_id: str, campaign_id: str) -> dict | None:
        """Why a campaign did or did not show in a session this node holds: its conditions as
        they stand now, and the session's recorded decisions about it."""
        live = self.sessions.get(session_id)
        if live is None:
            return None
        now = self.clock.now()
        report = self.engine.explain(live.view, campaign_id, now)
        report["session"] = session_id
        report["visitor"] = live.state.visitor
        report["decisions"] = [
            {"at": at, "variant": variant, "outcome": outcome}
            for at, campaign, variant, outcome in live.trace if campaign == campaign_id
        ]
        return report

    def snapshot(self) -> dict:
        stats = self.stats
        return {
            "connections": stats.connections,
            "sessions": len(self.sessions),
            "visitors": len(self.visitors),
            "events": stats.events,
            "duplicates": stats.duplicates,
            "refused": stats.refused,
            "shown": stats.shown,
            "suppressed": stats.suppressed,
            "timers_fired": stats.timers_fired,
        }
