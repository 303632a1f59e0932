"""The runtime around the pure engine: live sessions, their sockets, the store and the timers.

Frame in → state updated → rules evaluated → message out happens in ``Hub.on_frame`` (:class:`~nudge.runtime.frames.Frames`), in the
connection's own receive loop: no task per event, no store round trip unless a decision needs one
(a cart-abandonment window opening, say), and the resulting ``show`` frame is written in the same
turn of the event loop.

With a shared store (Redis, several nodes), three things are added around that path, none of them
a round trip per event: changed sessions are written behind in batches every ``write_behind``
seconds; a ``show`` is confirmed against the caps in Redis (one script that checks and counts)
before it is sent, so nodes racing for one visitor never exceed a cap; and a durable timer
claimed by a node that does not hold the visitor is relayed to the node that does. When Redis is
unreachable the hub keeps serving connected sessions from what it holds (degraded: caps are this
node's own, timers and queued messages wait in a backlog replayed in order once Redis answers).
"""

from __future__ import annotations

import logging
import secrets
from collections import deque
from collections.abc import Iterable
from typing import Any, Protocol

from nudge.errors import (
    CLOSE_SESSION_TAKEN,
    StoreUnavailable,
)
from nudge.protocol import codec as protocol
from nudge.protocol.codec import Hello
from nudge.rules import events, timeline
from nudge.rules.audience import device_class
from nudge.rules.campaigns import CampaignSet
from nudge.rules.engine import Engine
from nudge.rules.state import SessionState, State, VisitorState, start_session
from nudge.rules.timeline import Presence
from nudge.runtime.clock import Clock
from nudge.runtime.config import Settings, Site
from nudge.runtime.connection import Connection
from nudge.runtime.executor import Executor
from nudge.runtime.frames import Frames
from nudge.runtime.metrics import Metrics, Stats
from nudge.runtime.persistence import Persistence, StoreHealth, WriteBehind, WriteThrough
from nudge.runtime.relaying import Relaying
from nudge.runtime.results import Results, from_totals
from nudge.runtime.scheduler import LocalTimer, Scheduler
from nudge.runtime.sessions import (
    LiveSession,
    Sessions,
    Visitor,
    looking,
    new_session_id,
    new_visitor_id,
)
from nudge.runtime.writes import (
    Backlog,
    DropSession,
    Enqueue,
    LinkUser,
    SaveVisitor,
    Write,
)
from nudge.store import DueTimer, Store

log = logging.getLogger("nudge.hub")
connection_log = logging.getLogger("nudge.connection")  # one line per connection (JSON logs)
decision_log = logging.getLogger("nudge.decision")  # one line per decision (JSON logs)

RECENT = 200  # decisions remembered by the hub, for the dashboard
# Seconds a backend event for a user id no visitor is linked to yet is kept (docs/operate.md).
HELD_FOR_USER = 7 * 86400.0


class WebhooksOut(Protocol):
    """What the hub hands webhooks out (``nudge.ops.webhooks.Webhooks``)."""

    def takes(self, kind: str, campaign: str) -> bool: ...
    def emit(self, kind: str, campaign: str, payload: dict[str, Any]) -> None: ...
    def forget_decided(self, visitor: str) -> int: ...
    async def dead_letters(self, limit: int) -> list[dict[str, Any]]: ...

    queued: int  # deliveries waiting, as of the last pump
    sent: int  # delivered (2xx) by this node
    retried: int  # failed tries rescheduled
    failed: int  # given up by this node


class EventLog(Protocol):
    """What the hub records into the event log (``nudge.calibrate.recording.Recorder``)."""

    def record(self, kind: str, at: float, **fields: Any) -> None: ...
    def flush(self) -> list[str]: ...
    async def erase_records(self, visitors: Iterable[str], users: Iterable[str] = ()) -> tuple[int, int]: ...


def new_node_id() -> str:
    return "n_" + secrets.token_hex(4)


class Hub:
    """The sessions this node holds, each socket's frames and each backend event handed to the
    engine, and its decisions carried out (:class:`~nudge.runtime.executor.Executor`); what it
    holds is kept in the store (:mod:`nudge.runtime.persistence`), and other nodes are reached
    through the relay (:class:`~nudge.runtime.relaying.Relaying`)."""

    def __init__(
        self, settings: Settings, campaign_set: CampaignSet, store: Store, clock: Clock, *,
        health: StoreHealth | None = None, webhooks: WebhooksOut | None = None, recorder: EventLog | None = None,
    ) -> None:
        """``health`` is shared with the other users of the store (the webhooks); ``webhooks``
        sends what happens to campaigns out (``--webhooks``); ``recorder`` keeps the event log
        (``--record``)."""
        self.settings = settings
        self.engine = Engine(campaign_set)  # replaced whole on reload
        self.store = store
        self.clock = clock
        self.sites: dict[str, Site] = settings.sites()  # publishable key -> site
        self.registry = Sessions()  # the sessions this node holds, and their visitors
        self.sessions = self.registry.by_id  # session id -> session held by this node
        self.visitors = self.registry.visitors  # (site, visitor id) -> visitor
        self.node = store.node or settings.node or new_node_id()  # this node's id among them
        self.relaying = Relaying(self)  # what this node sends other nodes, and does for them
        # The other nodes sharing the store, and where they hold sessions (none: one node alone).
        self.cluster = store.cluster(self.node, self.relaying.on_record)
        # One node alone writes every change through at once; with several, sessions are
        # written behind in batches, shows confirmed in the store, timers relayed.
        self.alone = self.cluster.alone
        self._unavailable: tuple[type[BaseException], ...] = store.unavailable
        # Written through at once (one node alone), or behind in batches (several).
        self.persistence: Persistence = (WriteThrough if self.alone else WriteBehind)(store, self.registry, settings.grace)
        self.backlog = Backlog()  # store writes that failed, kept in order until the store answers
        self._tick: LocalTimer | None = None  # the next write-behind and health check
        self._probed_at = 0.0  # when the relay was last probed
        self.store_health = health or StoreHealth(clock)  # whether the store answers (degraded mode)
        poll = None if self.alone else settings.timer_poll
        self.scheduler = Scheduler(clock, store, self.on_due, poll_interval=poll, before_claim=self._replay)
        self.stats = Stats()
        self.results = Results(clock)  # per campaign and variant, and per hour
        self.metrics = Metrics()  # for /metrics: events by name, latencies
        self.webhooks = webhooks  # webhooks out and the offline hand-off, when configured
        self.log_lines = settings.log_format == "json"  # a line per connection and per decision
        self.executor = Executor(self)  # carries out the engine's decisions
        self.recent: deque[tuple] = deque(maxlen=RECENT)  # (at, session, visitor, campaign, variant, outcome), for the dashboard
        self.recorder = recorder  # the event log, when it is on (--record); None once it stopped
        self.frames = Frames(self)  # each frame of a session's socket (or beacon)
        self.on_frame = self.frames.on_frame  # the socket's receive loop calls this
        self.write_error: str | None = None  # why the last write-behind failed, other than unreachable

    async def start(self) -> None:
        try:
            self.results.restore(await self.store.load_results())
        except self._unavailable as exc:
            self.store_failed(exc)  # counted from zero here; the store keeps adding up
        await self.cluster.start()
        if not self.alone:
            self._tick = self.scheduler.call_at(self.clock.now() + self.settings.write_behind, self._on_tick)
        self.scheduler.start()

    async def stop(self) -> None:
        await self.scheduler.stop()
        if not self.alone:
            if self._tick is not None:
                self._tick.cancel()
            try:
                await self.persistence.final()
                await self._replay()
                await self.flush_results()
            except Exception:
                log.exception("final write to the store failed")
            await self.cluster.stop()
            try:
                await self.store.close()
            except Exception:
                log.debug("store close failed", exc_info=True)
            return
        await self.persistence.final()
        await self.flush_results()
        await self.store.close()

    def reload(self, campaign_set: CampaignSet) -> None:
        """Run new campaigns from the next event on; sessions and timers stay."""
        self.engine = Engine(campaign_set)
        self.executor.render_failed.clear()

    # --- sessions ---------------------------------------------------------------------------

    async def attach(self, site: Site, hello: Hello, conn: Connection, user_agent: str | None = None) -> LiveSession:
        """Bind a socket to a session: resume the one named in ``hello`` or start a new one."""
        now = self.clock.now()
        visitor_id = hello.visitor or new_visitor_id()
        live = self.sessions.get(hello.session) if hello.session else None
        if live is not None and (live.state.site != site.key or live.state.visitor != visitor_id):
            live = None  # not theirs to resume
        if hello.session:
            # Own the session before reading it: writes the previous node may still send are
            # refused from now on. If another node owned it since this node last held it, this
            # node's copy is out of date.
            before = await self._load(self.store.own_session(
                site.key, hello.session, visitor_id, self.settings.grace + 3600.0,
            ))
            if before == "!":
                live = None  # another visitor's session: not theirs to resume
            elif live is not None and before not in (None, self.node):
                self.let_go(live, "session resumed by another connection")
                live = None
        if live is None and hello.session:
            stored = await self._load(self.store.load_session(site.key, hello.session))
            if stored is not None and stored.visitor == visitor_id:
                # A node that died may have sent messages it never wrote down: never reuse a seq
                # the client has already seen.
                stored.last_message_seq = max(stored.last_message_seq, hello.rx)
                live = self._hold(stored, await self._visitor(site.key, visitor_id, now))
        resumed = live is not None
        if live is not None:
            if live.conn is not None and live.conn is not conn:
                live.conn.close_soon(CLOSE_SESSION_TAKEN, "session resumed by another connection")
            if live.expiry is not None:
                live.expiry.cancel()
                live.expiry = None
            self.registry.detached.pop(live, None)
            live.state.detached_at = None
        else:
            visitor = await self._visitor(site.key, visitor_id, now)
            session = start_session(visitor.state, new_session_id(), now, device_class(user_agent))
            live = self._hold(session, visitor)
        live.conn = conn
        self.stats.connections += 1
        session = live.state
        if self.recorder is not None:
            if resumed:
                self.recorder.record("resume", now, visitor=visitor_id, session=session.id)
            else:
                self.recorder.record("start", now, site=site.key, visitor=visitor_id, session=session.id, device=session.device)
        if self.log_lines:
            connection_log.info("connection %s", "resumed" if resumed else "opened", extra={
                "session": session.id, "visitor": visitor_id, "site": site.key, "resumed": resumed, "node": self.node,
            })
        conn.push(protocol.welcome(session.id, visitor_id, resumed, session.last_event_seq, self.settings.grace))
        if session.outbox:
            session.outbox = [frame for frame in session.outbox if frame["seq"] > hello.rx]
            for frame in session.outbox:
                conn.push(frame)
        if not self.alone:
            await self.relaying.hold(live)
        await self.executor.deliver_queued(live, now)
        await self.executor.carry_out(live, live.visitor, self.engine.on_resume(live.view, now), now)
        return live

    async def identified(self, live: LiveSession, user: str, now: float) -> None:
        """The session proved (a signed token) that it shows ``user``: remember which visitor
        they were seen as, and hand this session what is waiting for them on their other devices.

        Messages are queued per visitor (one device's browser). Once a signed-in user comes
        back on any device, the messages queued for the other visitors they were proven to be
        take the same way as their own at a visit: each queue is taken whole, atomically, so
        two devices coming back at once never both receive it. A campaign queued on several
        devices is shown once (the newest)."""
        site, visitor_id = live.state.site, live.state.visitor
        live.visitor.state.traits["user_id"] = user
        live.visitor.state.trusted["user_id"] = user  # proven: a signed token, or the backend's word
        await self.write(LinkUser(site, visitor_id, user))
        try:
            others = [v for v in await self.store.user_visitors(site, user) if v != visitor_id]
            waiting = [message for other in others for message in await self.store.take_queued(site, other, now)]
        except self._unavailable as exc:
            self.store_failed(exc)
            return  # they stay queued for the next visit
        await self._apply_held_for_user(site, user, visitor_id, now)
        if not waiting:
            return
        on_screen = {frame.get("campaign") for frame in live.state.outbox}
        newest: dict[str | None, dict[str, Any]] = {}
        for message in waiting:
            newest[message.get("campaign")] = message  # later queues and entries win
        for campaign, message in newest.items():
            if campaign in on_screen:
                continue
            self.executor.deliver(live, message)
        if self.recorder is not None:
            self.recorder.record("handover", now, visitor=visitor_id, session=live.state.id, user=user, count=len(newest))

    async def locate(self, site: str, visitor_id: str, session_id: str) -> LiveSession | None:
        """The session a request other than its socket names (a beacon): held by this node, or,
        with a shared store, taken over from it (owned, then read, as a resume would; the node
        that held it lets go). None when there is no such session of that visitor."""
        live = self.sessions.get(session_id)
        if live is not None:
            return live if live.state.site == site and live.state.visitor == visitor_id else None
        if self.alone:
            return None  # every session of this deployment is held here
        now = self.clock.now()
        before = await self._load(self.store.own_session(site, session_id, visitor_id, self.settings.grace + 3600.0))
        stored = await self._load(self.store.load_session(site, session_id)) if before != "!" else None
        live = self.sessions.get(session_id)
        if live is not None:  # a socket resumed it here meanwhile
            return live if live.state.site == site and live.state.visitor == visitor_id else None
        if stored is None or stored.visitor != visitor_id:
            return None
        live = self._hold(stored, await self._visitor(site, visitor_id, now))
        stored.detached_at = stored.detached_at or now  # no socket here: resumable for the grace
        live.expiry = self.scheduler.call_at(timeline.session_ends_at(now, self.settings.grace), self._expire, live)
        self.registry.detached[live] = None
        await self.relaying.hold(live)
        return live

    async def _load(self, pending):
        """Await a store read needed to accept a connection; refuse the connection (1013: retry)
        when the shared store is unreachable rather than start from a blank state."""
        try:
            return await pending
        except self._unavailable as exc:
            self.store_failed(exc)
            raise StoreUnavailable("the shared store is unreachable; reconnect shortly") from None

    async def detach(self, live: LiveSession, conn: Connection) -> None:
        """The socket closed: keep the session resumable for the grace period."""
        if live.conn is not conn:
            return  # another connection took the session over already
        self.stats.connections -= 1
        live.conn = None
        now = self.clock.now()
        live.state.detached_at = now
        if self.recorder is not None:
            self.recorder.record("detach", now, visitor=live.state.visitor, session=live.state.id)
        if self.log_lines:
            connection_log.info("connection closed", extra={"session": live.state.id, "visitor": live.state.visitor, "node": self.node})
        if live.wake is not None:
            live.wake.cancel()
            live.wake = None
        live.expiry = self.scheduler.call_at(timeline.session_ends_at(now, self.settings.grace), self._expire, live)
        self.registry.detached[live] = None
        try:
            await self.persistence.detached(live)
        except self._unavailable as exc:
            self.store_failed(exc)  # kept marked: written once the store answers

    def _hold(self, state: SessionState, visitor: Visitor) -> LiveSession:
        return self.registry.hold(state, visitor)

    async def _visitor(self, site: str, visitor_id: str, now: float) -> Visitor:
        key = (site, visitor_id)
        visitor = self.visitors.get(key)
        if visitor is None:
            state = await self._load(self.store.load_visitor(site, visitor_id))
            visitor = self.visitors.get(key)  # another tab may have loaded it meanwhile
            if visitor is None:
                if self.settings.max_visitors and len(self.visitors) >= self.settings.max_visitors:
                    await self._make_room(now)
                visitor = self.visitors.get(key) or Visitor(state or VisitorState(site, visitor_id, first_seen=now))
                self.visitors[key] = visitor
        return visitor

    async def _make_room(self, now: float) -> None:
        """Over ``max_visitors`` held: end the oldest detached sessions now rather than at the
        end of their grace, as that end would (their visitor written to the store, messages they
        never acknowledged queued for the next visit), until there is room or none is left. A
        stream of new visitor ids then costs a bounded amount of memory; a visitor whose session
        went this way and comes back starts a new session, with their visitor state."""
        cap = self.settings.max_visitors
        detached = self.registry.detached
        while detached and len(self.visitors) >= cap:
            live = next(iter(detached))
            if live.expiry is not None:
                live.expiry.cancel()
            self.stats.evicted += 1
            await self._expire(live, now)

    async def _expire(self, live: LiveSession, now: float) -> None:
        """The grace period ended: the session is over. Messages it never acknowledged wait for
        the visitor's next session instead of being lost."""
        live.expiry = None
        self.registry.detached.pop(live, None)
        if live.conn is not None:
            return
        state = live.state
        self.persistence.discard(live)
        try:
            ours = await self.cluster.release(state.site, state.visitor, state.id)
        except self._unavailable as exc:
            self.store_failed(exc)
            ours = True
        if not ours:  # resumed on another node meanwhile: that node has it now
            self._forget(live)
            return
        self.sessions.pop(state.id, None)
        self.registry.detached.pop(live, None)
        for frame in state.outbox:
            if frame.get("id") in live.kept:
                continue  # still in the visitor's queue: the next tab gets it from there
            campaign = self.engine.by_id.get(frame.get("campaign", ""))
            expires = campaign.expires if campaign else 86400.0
            message = {k: v for k, v in frame.items() if k not in ("t", "seq")}
            await self.write(Enqueue(state.site, state.visitor, message, now + expires))
        state.outbox.clear()
        await self.write(DropSession(state.site, state.visitor, state.id))
        visitor = live.visitor
        if live in visitor.sessions:
            visitor.sessions.remove(live)
        if not visitor.sessions:
            await self.write(SaveVisitor(visitor.state))
            self.visitors.pop((state.site, state.visitor), None)

    def let_go(self, live: LiveSession, reason: str) -> None:
        """Close the session's socket, if it has one (``4409`` with ``reason``), and forget the
        session without writing anything: it is held elsewhere now, or erased."""
        conn = live.conn
        if conn is not None:
            live.conn = None
            self.stats.connections -= 1
            conn.close_soon(CLOSE_SESSION_TAKEN, reason)
        self._forget(live)

    def forget_visitor(self, site: str, visitor: str) -> int:
        """Erasure: drop the visitor from this node — their sockets closed (4409: the snippet does
        not reconnect on this page), their sessions, wake-ups and grace timers dropped, the store
        writes kept for them while the store was unreachable discarded, and the dashboard's
        latest decisions about them. Returns how many sessions were dropped."""
        held = self.visitors.get((site, visitor))
        dropped = 0
        if held is not None:
            for live in list(held.sessions):
                self.let_go(live, "visitor erased")
                dropped += 1
            self.visitors.pop((site, visitor), None)
        for live in [live for live in self.sessions.values() if live.state.site == site and live.state.visitor == visitor]:
            self._forget(live)  # not reachable through the visitor (should not happen): dropped anyway
            dropped += 1
        if self.recent:
            kept = [entry for entry in self.recent if entry[2] != visitor]
            self.recent.clear()
            self.recent.extend(kept)
        self.backlog.forget(site, visitor)
        return dropped

    def _forget(self, live: LiveSession) -> None:
        """Let go of a session without writing anything: another node holds it now."""
        for timer in (live.wake, live.expiry):
            if timer is not None:
                timer.cancel()
        live.wake = live.expiry = None
        self.persistence.discard(live)
        self.registry.drop(live)

    def looking(self, visitor: Visitor, now: float) -> tuple[Presence, LiveSession | None]:
        """Who of the visitor is looking, as the timeline sees their sessions on this node: the
        presence, and the attached session decisions are made in (None when no tab is attached)."""
        return looking(visitor, now, offline_after=self.settings.offline_after, grace=self.settings.grace)

    # --- events from a backend --------------------------------------------------------------

    async def on_user_event(self, site: str, user: str, event: events.Event) -> dict[str, str]:
        """Apply an event a backend reported about one of the site's users (``user_id``) to each
        visitor that user was linked to — by a signed identity token on a page, or a backend
        ``identify`` naming the visitor — as :meth:`on_visitor_event` does. Returns where it was
        applied, per visitor; empty when no visitor is linked yet: then the event is kept (for
        ``HELD_FOR_USER`` seconds) and applied to the first visitor linked to the user, never to
        a visitor made up for it."""
        now = self.clock.now()
        try:
            visitors = await self.store.user_visitors(site, user)
            if not visitors:
                record = {"name": event.name, "props": event.props, "at": event.at}
                await self.store.hold_for_user(site, user, record, now, HELD_FOR_USER)
                return {}
        except self._unavailable as exc:
            self.store_failed(exc)
            raise StoreUnavailable("the shared store is unreachable; retry shortly") from None
        applied = {}
        for visitor_id in visitors:
            copy = events.Event(event.name, dict(event.props), trusted=event.trusted, at=event.at)
            applied[visitor_id] = await self.on_visitor_event(site, visitor_id, copy)
        return applied

    async def _apply_held_for_user(self, site: str, user: str, visitor_id: str, now: float) -> None:
        """The events kept for ``user`` (none of their visitors was known when they came),
        applied now that ``visitor_id`` is linked to them."""
        try:
            held = await self.store.take_for_user(site, user, now)
        except self._unavailable as exc:
            self.store_failed(exc)
            return  # they stay kept for the next link
        for record in held:
            event = events.Event(record["name"], record.get("props") or {}, trusted=True, at=record.get("at"))  # a backend's
            await self.on_visitor_event(site, visitor_id, event)

    async def on_visitor_event(
        self, site: str, visitor_id: str, event: events.Event, forwarded: bool = False, *, known_only: bool = False,
    ) -> str:
        """Apply an event a backend reported about a visitor (``POST /api/events``): the same
        engine, with no session (``State(visitor, None)``), so a purchase closes the cart
        reminder's window and counts as a conversion. Returns where it was applied: ``held``
        (the visitor has a session on this node), ``relayed`` (to the node holding one, with a
        shared store) or ``stored`` (loaded from the store, applied, written back).

        Decisions are carried out as for a timer: a show goes to the visitor's open tab on this
        node (the event is applied within that tab's session), or waits for their next visit (or
        the offline webhook), as the campaign says.

        ``known_only``: a visitor neither held nor in the store (never seen, or forgotten after
        the retention) is left alone and ``unknown`` returned, rather than made up for the event."""
        visitor = self.visitors.get((site, visitor_id))
        if visitor is None and not forwarded:
            try:
                holders = await self.cluster.holders(site, visitor_id)
            except self._unavailable as exc:
                self.store_failed(exc)
                raise StoreUnavailable("the shared store is unreachable; retry shortly") from None
            record = {"op": "ev", "site": site, "visitor": visitor_id, "name": event.name, "props": event.props, "at": event.at}
            if await self.relaying.to_holder(holders, record):
                return "relayed"
            visitor = self.visitors.get((site, visitor_id))  # a tab may have come meanwhile
        held = visitor is not None
        now = self.clock.now()
        if visitor is None:
            state = await self._load(self.store.load_visitor(site, visitor_id))
            visitor = self.visitors.get((site, visitor_id))
            held = visitor is not None
            if visitor is None:
                if state is None and known_only:
                    return "unknown"
                visitor = Visitor(state or VisitorState(site, visitor_id, first_seen=now))
        now = timeline.not_before(visitor.state, now)
        whereabouts, live = self.looking(visitor, now)
        # With a tab open the event lands in its session, as the tab's own events do: a message
        # it triggers shows there and then (never over another one on screen), rather than waiting
        # for a next visit while the visitor is looking at the page.
        view = live.view if live is not None else State(visitor.state, None, whereabouts.offline(now))
        if self.recorder is not None:
            extra = {} if event.at is None else {"happened": event.at}
            self.recorder.record("ev", now, visitor=visitor_id, session=live.state.id if live else None, name=event.name, props=event.props, backend=True, **extra)
        decisions = self.engine.on_event(view, event, now)
        self.stats.events += 1
        self.metrics.events[event.name] += 1
        if decisions:
            await self.executor.carry_out(live, visitor, decisions, now)
        user = event.props.get("user_id") if event.name == "identify" else None
        if isinstance(user, str):  # a backend's word proves a user id (POST /api/events checked it)
            if live is not None:
                await self.identified(live, user, now)
                user = None  # identified() applied what was held for them
            else:
                await self.write(LinkUser(site, visitor_id, user))
        if not held:
            await self.write(SaveVisitor(visitor.state))
        else:
            self.persistence.changed_all(visitor.sessions)  # the visitor is written with its sessions
        if isinstance(user, str):  # once this event is written, so they apply on top of it
            await self._apply_held_for_user(site, user, visitor_id, now)
        return "held" if held else "stored"

    # --- timers -----------------------------------------------------------------------------

    async def on_wake(self, live: LiveSession, now: float) -> None:
        live.wake = None
        if live.conn is None:
            return
        now = timeline.not_before(live.visitor.state, now)
        await self.executor.carry_out(live, live.visitor, self.engine.on_wake(live.view, now), now)

    async def on_due(self, timer: DueTimer, forwarded: bool = False) -> None:
        """A durable timer fell due: decide in the tab the timeline says (the visitor's latest
        attached session on this node), or with none (the message is then queued for the visitor,
        handed off or dropped, as :func:`timeline.place` says).

        With a shared store, a timer for a visitor this node has no open socket for is relayed to
        the node that holds their session, which decides and finishes it; when no node answers,
        it is decided here. The claim in the store is what says the timer is still wanted (a
        purchase removed it there), so it stands even when this node's copy of the visitor was
        written before the timer was set."""
        visitor = self.visitors.get((timer.site, timer.visitor))
        live = self.looking(visitor, self.clock.now())[1] if visitor is not None else None
        if not forwarded and live is None and await self.relaying.timer_to_holder(timer):
            return
        self.stats.timers_fired += 1
        lateness = self.clock.now() - timer.due
        self.stats.lateness_total += lateness
        self.metrics.timer_lag.observe(lateness)
        if lateness > self.stats.lateness_max:
            self.stats.lateness_max = lateness
        if self.alone:
            await self._run_timer(timer, visitor)
            return
        try:
            await self._run_timer(timer, visitor)
        except self._unavailable:
            raise  # left claimed: claimed again when its lease ends, once Redis answers
        except Exception:  # a timer that fails for good must not come back every lease
            log.exception("timer %s for %s/%s failed; dropped", timer.key, timer.site, timer.visitor)
        await self.store.finish(timer)

    async def _run_timer(self, timer: DueTimer, visitor: Visitor | None) -> None:
        if visitor is None:
            state = await self.store.load_visitor(timer.site, timer.visitor)
            if state is None:
                return
            visitor = Visitor(state)
        if not self.alone:
            if self.backlog.holds_timer(timer.site, timer.visitor, timer.key):
                return  # cancelled or moved meanwhile, not yet written to Redis
            visitor.state.timers.setdefault(timer.key, timer.due)
        now = timeline.not_before(visitor.state, timer.due)
        whereabouts, live = self.looking(visitor, now)
        view = live.view if live is not None else State(visitor.state, None, whereabouts.offline(now))
        once = None if self.alone else timer.token
        await self.executor.carry_out(live, visitor, self.engine.on_timer(view, timer.key, now), now, once)
        if not visitor.sessions:
            await self.write(SaveVisitor(visitor.state))
        else:
            self.persistence.changed_all(visitor.sessions)  # the visitor is written with its sessions

    # --- shared store: relay, write-behind, outage --------------------------------------------

    async def write(self, write: Write) -> None:
        """A store write that must not be lost: carried out now, or, while the store is
        unreachable, kept in order and replayed when it answers again."""
        if not self.backlog:
            try:
                await write.apply(self.store)
                return
            except self._unavailable as exc:
                self.store_failed(exc)
        self.backlog.keep(write)

    async def _replay(self) -> None:
        """Carry out the backlog in order. Run before every claim of due timers too: a timer is
        never claimed while a cancel or a new due time for it may still be waiting here."""
        if self.backlog:
            try:
                await self.backlog.replay(self.store)
            finally:
                self.stats.replayed = self.backlog.replayed

    async def _on_tick(self, now: float) -> None:
        """Every ``write_behind`` seconds: write changed sessions, replay the backlog, probe the
        relay (every ``heartbeat``), and tell whether the store is reachable.

        The next tick is due ``write_behind`` seconds after this one began, not after it ended:
        a write-behind that takes a while under load (it is written in slices, with sockets
        served in between) does not stretch what a crash can lose beyond that interval."""
        self._tick = None
        began = self.clock.now()
        try:
            answered = bool(self.persistence.dirty or self.backlog)  # then Redis answers below, or raises
            await self.persistence.flush()
            await self._replay()
            await self.flush_results()
            probe = self.degraded_since is not None or self.clock.now() - self._probed_at >= self.settings.heartbeat
            if probe:
                self._probed_at = self.clock.now()
                if not await self.cluster.check():
                    raise ConnectionError("relay unhealthy")
                await self.store.ping()
            if answered or probe:
                self.store_health.answered(self.stats.replayed)
            self.write_error = None
        except self._unavailable + (ConnectionError,) as exc:
            self.store_failed(exc)
        except Exception as exc:  # not an outage: a fault that would fail every write from now on
            self.store_health.errors += 1
            if self.write_error is None:
                log.exception("writing to the store failed")
            self.write_error = f"{type(exc).__name__}: {exc}"
        finally:
            due = max(began + self.settings.write_behind, self.clock.now())
            self._tick = self.scheduler.call_at(due, self._on_tick)

    async def every_nodes_results(self) -> dict:
        """The results counts of every node, by campaign and variant: this node's own when it is
        alone, else flushed to the store and read back (this node's own while it is unreachable)."""
        if self.alone:
            return self.results.snapshot()
        try:
            await self.flush_results()
            return from_totals(await self.store.load_results())
        except self._unavailable:
            return self.results.snapshot()

    async def flush_results(self) -> None:
        """Add the results counted since the last flush to the store, in one call."""
        pending, series = self.results.take_pending(), self.results.take_series()
        if not pending and not series:
            return
        try:
            await self.store.add_results(pending)
        except BaseException:
            self.results.give_back(pending)  # added with the next flush
            self.results.give_back_series(series)
            raise
        try:
            await self.store.add_series(series)
        except BaseException:
            self.results.give_back_series(series)
            raise

    def store_failed(self, exc: BaseException) -> None:
        """A store call failed (it is unreachable): counted, and degraded mode begins."""
        self.store_health.failed(exc)

    def stop_recording(self) -> None:
        """The event log is closed: nothing more is recorded."""
        self.recorder = None

    @property
    def degraded_since(self) -> float | None:
        """When the store became unreachable (None while it answers)."""
        return self.store_health.since

    @degraded_since.setter
    def degraded_since(self, since: float | None) -> None:
        self.store_health.since = since

    # --- for operators and tests ------------------------------------------------------------

    @property
    def next_tick_at(self) -> float | None:
        """When the next write-behind and health check runs (None before start and after stop)."""
        return self._tick.due if self._tick is not None else None

    def health(self) -> dict[str, Any]:
        """What /healthz reports about the store: ``ok``, or ``degraded`` while it is unreachable."""
        if self.alone and self.degraded_since is None:
            return {"status": "ok", "store": self.store.name}
        report: dict[str, Any] = {
            "status": "degraded" if self.degraded_since is not None else "ok",
            "store": self.store.name, "node": self.node, "backlog": len(self.backlog),
            "relay": {"healthy": self.cluster.healthy, "resubscribed": self.cluster.resubscribed},
        }
        if self.degraded_since is not None:
            report["degraded_for"] = round(self.clock.now() - self.degraded_since, 3)
        return report

    def explain(self, session_id: str, campaign_id: str) -> dict | None:
        """Why a campaign did or did not show in a session this node holds: its conditions as
        they stand now, and the session's recorded decisions about it."""
        live = self.sessions.get(session_id)
        if live is None:
            return None
        now = self.clock.now()
        report = self.engine.explain(live.view, campaign_id, now)
        if "error" in report:
            return report
        report["session"] = session_id
        report["now"] = now  # the server's clock: the decisions' times are read against it
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
            "timers_relayed": stats.timers_relayed,
            "timer_lateness_max": round(stats.lateness_max, 3),
            "timer_lateness_mean": round(stats.lateness_total / stats.timers_fired, 3) if stats.timers_fired else 0.0,
            "lost_races": stats.lost_races,
            "store_errors": self.store_health.errors,
            "replayed": stats.replayed,
        }
