"""A session's frames, as the hub handles them: ``ev`` (one event), ``evs`` (a batch, one
cumulative ``ack``), ``ack`` (messages the client has, dropped from the outbox) and ``ping``.

Each event's seq is checked (a resent one is acknowledged, not applied again), its budget taken,
its name and props validated, and it is handed to the engine; the decisions are carried out
(:class:`~nudge.runtime.executor.Executor`) before the ``ack`` is queued, so a show an event
causes goes out ahead of it. This is the hot path: no store round trip, no task per event.

May import: ``nudge.rules``, ``nudge.protocol``, ``nudge.identity``, ``nudge.errors``,
``nudge.runtime`` (the hub it works for).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from nudge import identity
from nudge.errors import BadEvent, FrameError, MalformedFrame, ProtocolViolation, RateLimited
from nudge.protocol import codec as protocol
from nudge.rules import events
from nudge.rules.engine import assign
from nudge.runtime.writes import AckQueued

if TYPE_CHECKING:
    from nudge.rules.state import SessionState
    from nudge.runtime.connection import Connection
    from nudge.runtime.hub import Hub
    from nudge.runtime.sessions import LiveSession


class Frames:
    """Handles each frame of the sessions the hub holds (:meth:`on_frame`)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub  # its engine (replaced on reload), event log and webhooks, read per event
        # The hub's collaborators that never change, held here: read on every event.
        self.stats = hub.stats
        self.metrics = hub.metrics
        self.results = hub.results
        self.settings = hub.settings
        self.clock = hub.clock
        self.scheduler = hub.scheduler
        self.persistence = hub.persistence
        self.executor = hub.executor
        self.alone = hub.alone

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
            elif kind == "evs":
                await self._on_events(live, conn, frame)
            elif kind == "ack":
                acknowledged = self._on_ack(live, frame)
                if acknowledged:  # no longer kept in the visitor's queue for the next tab
                    await self.hub.write(AckQueued(live.state.site, live.state.visitor, tuple(acknowledged)))
                if not self.alone:  # one node alone writes at detach: no mark needed (hot path)
                    self.persistence.changed(live)
            elif kind == "ping":
                conn.push(protocol.PONG)
            elif kind == "hello":
                raise ProtocolViolation("hello was already received on this connection")
            else:
                raise MalformedFrame(f"unknown frame type {kind!r}; expected ev, evs, ack or ping")
        except FrameError as exc:
            self.stats.refused += 1
            conn.push(protocol.error(exc.code, exc.reason, exc.seq))

    async def _on_events(self, live: LiveSession, conn: Connection, frame: dict) -> None:
        """A batch: each event handled as if it had come in its own ``ev`` frame, in order, then
        one cumulative ``ack`` for them all (shows they caused go out before it)."""
        batch = frame.get("events")
        if not isinstance(batch, list) or not batch:
            raise MalformedFrame("evs.events must be a non-empty list of events")
        if len(batch) > protocol.MAX_BATCH:
            raise MalformedFrame(f"evs.events has {len(batch)} events, at most {protocol.MAX_BATCH} allowed")
        for item in batch:
            try:
                if not isinstance(item, dict):
                    raise BadEvent("each event of evs.events must be a map")
                await self._on_event(live, conn, item, ack=False)
            except FrameError as exc:
                self.stats.refused += 1
                conn.push(protocol.error(exc.code, exc.reason, exc.seq))
        conn.push_ack(live.state.last_event_seq)

    async def _on_event(self, live: LiveSession, conn: Connection, frame: dict, ack: bool = True) -> None:
        session = live.state
        seq = frame.get("seq")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
            raise BadEvent("seq must be a whole number ≥ 1")
        if seq <= session.last_event_seq:
            self.stats.duplicates += 1
            if ack:
                conn.push_ack(session.last_event_seq)
            return
        now = self.clock.now()
        if not conn.events.take(now):
            raise RateLimited(f"more than {self.settings.events_per_second:g} events per second")
        engine = self.hub.engine
        try:
            event = events.validate(frame.get("name"), frame.get("props"), seq, engine.custom_events)
            proven = event.name == "identify" and identity.check_identify(
                event.props, session.site, now, self.settings.secret_keys, seq,
            )
        except FrameError as exc:
            # Refused for good: acknowledged so that the client does not resend it forever.
            session.last_event_seq = seq
            self.stats.refused += 1
            conn.push(protocol.error(exc.code, exc.reason, seq))
            if ack:
                conn.push_ack(seq)
            return
        if event.name in ("shown", "clicked", "dismissed") and event.props.get("campaign") is None:
            _name_the_campaign(session, event.props)
        if self.alone and live.due_by(now):
            # Whatever fell due before this event happens before it, as it would have if the
            # loop had not been busy: the decisions then do not depend on when the loop woke.
            await self.scheduler.run_due(now)
        if self.hub.recorder is not None:
            self.hub.recorder.record("ev", now, visitor=session.visitor, session=session.id, name=event.name, props=event.props)
        metrics = self.metrics
        pushed = metrics.pushed
        started = time.perf_counter()
        decisions = engine.on_event(live.view, event, now)
        session.last_event_seq = seq
        self.stats.events += 1
        self.metrics.events[event.name] += 1
        if event.name in ("shown", "clicked", "dismissed"):
            self._count_outcome(event, live, now)
        if decisions:
            await self.executor.carry_out(live, live.visitor, decisions, now)
        if proven:
            await self.hub.identified(live, event.props["user_id"], now)
        took = time.perf_counter() - started
        metrics.event_seconds.observe(took)
        if metrics.pushed != pushed:  # it put a message on the socket: event -> push
            metrics.push_seconds.observe(took)
        if not self.alone:  # one node alone writes at detach: no call per event for nothing
            self.persistence.changed(live)  # written behind, with the others changed meanwhile
        if ack:
            conn.push_ack(seq)

    def _on_ack(self, live: LiveSession, frame: dict) -> list[str]:
        """Trim the outbox up to the acknowledged seq; the ids of messages the visitor's queue kept
        until now, to be removed from it."""
        seq = frame.get("seq")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise MalformedFrame("ack.seq must be a whole number ≥ 0")
        outbox = live.state.outbox
        acknowledged: list[str] = []
        if outbox and outbox[0]["seq"] <= seq:
            if live.kept:
                for sent in outbox:
                    if sent["seq"] <= seq and sent.get("id") in live.kept:
                        live.kept.discard(sent["id"])
                        acknowledged.append(sent["id"])
            live.state.outbox = [frame for frame in outbox if frame["seq"] > seq]
        return acknowledged

    def _count_outcome(self, event: events.Event, live: LiveSession, now: float) -> None:
        campaign = self.hub.engine.by_id.get(event.props.get("campaign", ""))
        if campaign is not None:
            variant = assign(campaign, live.visitor.state.id)  # sticky: the variant it was shown in
            self.results.count(campaign.id, variant.id if variant else None, event.name)
            if self.hub.webhooks is not None:
                self.executor.emit(event.name, live.visitor.state, campaign.id, variant.id if variant else None, session=live.state.id)
            if event.name == "shown":  # decision → on screen, from the session's trace
                for at, cid, _variant, outcome in reversed(live.trace):
                    if cid == campaign.id and outcome == "sent":
                        self.metrics.show_seconds.observe(max(0.0, now - at))
                        break


def _name_the_campaign(session: SessionState, props: dict) -> None:
    """A ``shown``, ``clicked`` or ``dismissed`` carrying only ``msg`` (as docs/protocol.md
    lists them) is about the message of that seq: name its campaign, from the messages not yet
    acknowledged or the one on screen, so the engine frees the screen and the results count it."""
    msg = props["msg"]
    for frame in session.outbox:
        if frame["seq"] == msg and frame.get("campaign") is not None:
            props["campaign"] = frame["campaign"]
            return
    if session.showing is not None and session.showing_msg == msg:
        props["campaign"] = session.showing[0]
