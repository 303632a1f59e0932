"""Carrying out the engine's decisions: a show sent to the session's socket (or queued for the
visitor's next tab, handed off to a webhook or dropped, where the timeline places it —
:mod:`nudge.rules.timeline`), timers set and cancelled, suppressions and
conversions counted, wake-ups armed — and each outcome noted once (the event log, the
dashboard's latest decisions, a JSON log line).

With several nodes a show is first confirmed against the caps in the store (one script that
checks and counts), so that nodes racing for one visitor never exceed a cap, and a timer's show
is queued for the visitor in that same step and kept there until a tab acknowledges it (durable
delivery); a signed-in user's caps are confirmed per user in any store. With the store
unreachable, this node's own view of the caps (the engine's) stands.

May import: ``nudge.rules``, ``nudge.store``, ``nudge.runtime`` (the hub it works for).
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING

from nudge.rules import timeline
from nudge.rules.decisions import (
    Cancel,
    Converted,
    Decision,
    Defer,
    Schedule,
    Show,
    Suppress,
    Wake,
    outcome_of,
)
from nudge.rules.state import VisitorState
from nudge.rules.timeline import Presence
from nudge.runtime.sessions import signed_in
from nudge.runtime.writes import CancelTimer, Enqueue, SetTimer
from nudge.store import CapCheck

if TYPE_CHECKING:
    from nudge.runtime.hub import Hub
    from nudge.runtime.sessions import LiveSession, Visitor

log = logging.getLogger("nudge.hub")
decision_log = logging.getLogger("nudge.decision")  # one line per decision (JSON logs)


class Executor:
    """Carries out the decisions of the hub's engine for one visitor, in order."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub  # its engine (replaced on reload), store, counters and sockets
        self.render_failed: set[str] = set()  # campaigns whose render failure was logged since the last reload

    async def carry_out(
        self, live: LiveSession | None, visitor: Visitor, decisions: list[Decision], now: float,
        once: str | None = None,
    ) -> None:
        """``once`` names the timer firing these decisions come from, so that a firing carried out
        twice (its node died before finishing it, and another node claimed it again) shows once."""
        state = visitor.state
        results = self.hub.results
        self._remember(live, state, decisions, now)
        for decision in decisions:
            if isinstance(decision, Show):
                # Every message has an id: the client skips one it has processed (docs/protocol.md).
                # A timer's firing names its message, so a firing carried out twice names it alike.
                message = {"id": once or "m_" + secrets.token_urlsafe(9), "campaign": decision.campaign, **decision.content}
                if decision.variant is not None:
                    message["variant"] = decision.variant
                placement = self._place(decision, live, visitor, now)
                queued_by_store = False
                kept = False  # the visitor's queue keeps it until a tab acknowledges it
                shared = not self.hub.alone  # another node may show to the visitor at the same moment
                if shared or signed_in(state) is not None:
                    queue = None
                    if shared and (placement.route == timeline.QUEUE or (once is not None and placement.route == timeline.TAB)):
                        # A timer's show is durable before it leaves: queued with its cap count in one
                        # step, so that a node dying before the tab acknowledges it loses nothing.
                        queue = (message, decision.expires_at or now + self._expires(decision.campaign))
                        kept = placement.route == timeline.TAB
                    reason = await self._confirm(state, decision.campaign, now, once, queue)
                    if reason == "duplicate" and await self._redeliver(live, state, message["id"], now):
                        continue
                    if reason is not None:  # another node showed it first: a suppression
                        self.hub.stats.lost_races += 1
                        self._count_suppressed(live, state, decision.campaign, decision.variant, reason, now)
                        if live is not None:
                            showing = live.state.showing
                            if showing is not None and showing[0] == decision.campaign:
                                live.state.showing = None  # nothing went on screen
                        continue
                    queued_by_store = queue is not None and not kept  # the confirming script queued it already
                self.hub.stats.shown += 1
                results.count(decision.campaign, decision.variant, "sent")
                if self.hub.webhooks is not None:
                    self.emit("decision", state, decision.campaign, decision.variant, outcome="sent", message=message)
                if placement.route == timeline.HAND_OFF:
                    self.emit("offline", state, decision.campaign, decision.variant, message=message,
                               traits=state.traits, expires_at=decision.expires_at)
                elif placement.route == timeline.QUEUE:
                    if not queued_by_store:
                        await self.hub.store.enqueue(state.site, state.id, message, decision.expires_at or 0.0)
                    if shared:
                        await self.tell_holders(state.site, state.id)
                    if placement.check_at is not None:
                        self.hub.scheduler.call_at(placement.check_at, self.on_offline, state.site, state.id, decision.campaign)
                elif live is not None:  # TAB: placed so only with a live session here
                    live.trace.append((now, decision.campaign, decision.variant, "sent"))
                    self.deliver(live, message, kept=kept)
            elif isinstance(decision, Schedule):
                await self.hub.write(SetTimer(state.site, state.id, decision.key, decision.due))
                self.hub.scheduler.poke(decision.due)
            elif isinstance(decision, Cancel):
                await self.hub.write(CancelTimer(state.site, state.id, decision.key))
            elif isinstance(decision, Suppress):
                if decision.detail is not None and decision.campaign not in self.render_failed:
                    # Logged once per campaign and reload (one broken template fails for many
                    # visitors); each failure is counted, as suppressed:template, in the results.
                    self.render_failed.add(decision.campaign)
                    log.warning("campaign %s: its message failed to render (%s); suppressed for this visitor "
                                "and counted as suppressed:template (nudge check warns about such templates)",
                                decision.campaign, decision.detail)
                self._count_suppressed(live, state, decision.campaign, decision.variant, decision.reason, now)
            elif isinstance(decision, Defer):
                results.count(decision.campaign, decision.variant, f"deferred:{decision.reason}")
                if live is not None:
                    live.trace.append((now, decision.campaign, decision.variant, f"deferred:{decision.reason}"))
            elif isinstance(decision, Converted):
                results.count(decision.campaign, decision.variant, "converted")
                if self.hub.webhooks is not None:
                    self.emit("converted", state, decision.campaign, decision.variant)
                if live is not None:
                    live.trace.append((now, decision.campaign, decision.variant, "converted"))
            elif isinstance(decision, Wake) and live is not None:
                if live.wake is not None:
                    live.wake.cancel()
                live.wake = self.hub.scheduler.call_at(decision.at, self.hub.on_wake, live) if decision.at is not None else None

    def _count_suppressed(
        self, live: LiveSession | None, state: VisitorState, campaign: str, variant: str | None, reason: str, now: float,
    ) -> None:
        """Count a show that did not happen, the same whether the engine suppressed it or another
        node's show beat it to a cap: the results, the webhook-out decision, the session's trace."""
        outcome = f"suppressed:{reason}"
        self.hub.stats.suppressed += 1
        self.hub.results.count(campaign, variant, outcome)
        if self.hub.webhooks is not None:
            self.emit("decision", state, campaign, variant, outcome=outcome)
        if live is not None:
            live.trace.append((now, campaign, variant, outcome))

    def _remember(self, live: LiveSession | None, state: VisitorState, decisions: list[Decision], now: float) -> None:
        """Each decision's outcome: in the event log (``--record``), among the latest decisions
        the dashboard shows and, with JSON logs, a line each."""
        session = live.state.id if live is not None else None
        recorder = self.hub.recorder
        for decision in decisions:
            found = outcome_of(decision)
            if found is not None:
                campaign, variant, outcome = found
                if recorder is not None:
                    recorder.record("d", now, visitor=state.id, session=session, campaign=campaign, variant=variant, outcome=outcome)
                self.hub.recent.append((now, session, state.id, campaign, variant, outcome))
                if self.hub.log_lines:
                    decision_log.info("decision %s %s", campaign, outcome, extra={
                        "session": session, "visitor": state.id, "campaign": campaign, "variant": variant, "outcome": outcome,
                    })

    def _expires(self, campaign_id: str) -> float:
        campaign = self.hub.engine.by_id.get(campaign_id)
        return campaign.expires if campaign is not None else 86400.0

    def _offline_rule(self, campaign_id: str) -> str:
        """The campaign's ``offline:`` as the timeline applies it: the webhook hand-off only when an
        endpoint takes the campaign's ``offline`` events (else it is queued)."""
        campaign = self.hub.engine.by_id.get(campaign_id)
        offline = campaign.offline if campaign is not None else "queue"
        takes = self.hub.webhooks is not None and self.hub.webhooks.takes("offline", campaign_id)
        return timeline.offline_rule(offline, takes)

    def _place(self, decision: Show, live: LiveSession | None, visitor: Visitor, now: float) -> timeline.Placement:
        """Where a show goes (:func:`timeline.place`)."""
        if live is not None and not decision.queued:
            return timeline.Placement(timeline.TAB)
        whereabouts = self.hub.looking(visitor, now)[0]
        return timeline.place(False, whereabouts, self._offline_rule(decision.campaign), now)

    async def _redeliver(self, live: LiveSession | None, state: VisitorState, message_id: str, now: float) -> bool:
        """A timer's firing carried out a second time (its node died before finishing it): its
        message was kept in the visitor's queue with its count. Still there (no tab acknowledged
        it): sent to the attached tab again, if there is one here (the client skips an id it has
        processed), else left for the next tab. True when it was found."""
        try:
            waiting = await self.hub.store.queued(state.site, state.id, now)
        except self.hub.store.unavailable as exc:
            self.hub.store_failed(exc)
            return False
        message = next((m for m in waiting if m.get("id") == message_id), None)
        if message is None:
            return False
        if live is not None:
            if all(frame.get("id") != message_id for frame in live.state.outbox):
                self.deliver(live, message, kept=True)
        elif not await self.tell_holders(state.site, state.id):
            # Nobody is looking now: the campaign's offline rule, as for a message first decided so.
            await self.on_offline(state.site, state.id, message.get("campaign", ""), now)
        return True

    async def on_offline(self, site: str, visitor_id: str, campaign_id: str, now: float) -> None:
        """A show queued while the visitor was away: if they are offline now and it is still
        queued, it goes by the campaign's offline rule (handed off or dropped)."""
        hub = self.hub
        visitor = hub.visitors.get((site, visitor_id))
        whereabouts = hub.looking(visitor, now)[0] if visitor is not None else Presence(None, now)
        placement = timeline.at_check(whereabouts, self._offline_rule(campaign_id), now)
        if placement.check_at is not None:
            hub.scheduler.call_at(placement.check_at, self.on_offline, site, visitor_id, campaign_id)
            return
        if placement.route not in (timeline.HAND_OFF, timeline.DROP):
            return
        try:
            messages = await hub.store.take_queued_of(site, visitor_id, campaign_id, now)
        except hub.store.unavailable as exc:
            hub.store_failed(exc)
            return  # it stays queued for the next visit
        state = visitor.state if visitor is not None else VisitorState(site, visitor_id, first_seen=now)
        if messages and placement.route == timeline.HAND_OFF and visitor is None:
            state = await hub.store.load_visitor(site, visitor_id) or state
        for message, expires_at in messages:
            if placement.route == timeline.HAND_OFF:
                self.emit("offline", state, campaign_id, message.get("variant"), message=message, traits=state.traits,
                          expires_at=expires_at)

    async def deliver_queued(self, live: LiveSession, now: float) -> None:
        """Send the attached session what the visitor's queue holds and it was not sent yet; kept
        there until the session acknowledges it (the store contract's ``queued``)."""
        site, visitor_id = live.state.site, live.state.visitor
        store = self.hub.store
        try:
            queued = await store.queued(site, visitor_id, now)
            if any("id" not in message for message in queued):  # queued before messages had ids
                queued = await store.take_queued(site, visitor_id, now)
        except store.unavailable as exc:
            self.hub.store_failed(exc)
            return  # they stay queued for the next visit
        sent = {frame.get("id") for frame in live.state.outbox}
        for message in queued:
            if message.get("id") not in sent:  # a resumed session re-sent it already
                self.deliver(live, message, kept=True)

    async def tell_holders(self, site: str, visitor_id: str) -> bool:
        """A message was queued for a visitor with no tab attached when it was decided: a tab
        that attached meanwhile — here, or on the node holding it — is sent it now rather than at
        the next attach. The holder is written before that node reads the queue, and read here
        after the message was queued: one of the two sees the other. True when a tab was told."""
        hub = self.hub
        visitor = hub.visitors.get((site, visitor_id))
        live = hub.looking(visitor, hub.clock.now())[1] if visitor is not None else None
        if live is not None:  # a tab attached here while this message was decided with none
            await self.deliver_queued(live, hub.clock.now())
            return True
        try:
            holders = await hub.cluster.holders(site, visitor_id)
            return await hub.relaying.to_holder(holders, {"op": "queued", "site": site, "visitor": visitor_id})
        except hub.store.unavailable as exc:
            hub.store_failed(exc)
            return False

    def emit(self, kind: str, state: VisitorState, campaign: str, variant: str | None, **extra) -> None:
        """A webhook-out event about ``campaign`` for this visitor (see :mod:`nudge.ops.webhooks`)."""
        webhooks = self.hub.webhooks
        if webhooks is not None:
            webhooks.emit(kind, campaign, {"site": state.site, "visitor": state.id, "variant": variant, **extra})

    def deliver(self, live: LiveSession, message: dict, kept: bool = False) -> None:
        """Give a message the session's next seq, keep it until acknowledged, and send it.
        ``kept``: the visitor's queue holds it too, until this session's ack removes it."""
        if kept and "id" in message:
            live.kept.add(message["id"])
        session = live.state
        session.last_message_seq += 1
        frame = {"t": "show", "seq": session.last_message_seq, **message}
        if session.showing is not None and session.showing[0] == message.get("campaign"):
            session.showing_msg = frame["seq"]
        session.outbox.append(frame)
        if len(session.outbox) > self.hub.settings.outbox_limit:
            del session.outbox[0]
        self.hub.persistence.changed(live)
        conn = live.conn
        if conn is not None:
            self.hub.metrics.messages[message.get("kind", "")] += 1
            self.hub.metrics.pushed += 1
            conn.push(frame)
            conn.kick()

    async def _confirm(
        self, state: VisitorState, campaign_id: str, now: float, once: str | None,
        queue: tuple[dict, float] | None,
    ) -> str | None:
        """Check and count a show's caps in the shared store, and a signed-in user's caps (all
        their devices) in any store; the reason it lost, or None. With the store unreachable,
        this node's own view of the caps (the engine's) stands."""
        campaign = self.hub.engine.by_id.get(campaign_id)
        limits = self.hub.engine.limits
        caps = campaign.caps if campaign is not None else None
        check = CapCheck(
            campaign_id,
            per_day=caps.per_day if caps else None, per_week=caps.per_week if caps else None,
            lifetime=caps.lifetime if caps else None, every=caps.every if caps else None,
            limit_per_hour=limits.per_hour, limit_per_day=limits.per_day, cooldown=limits.cooldown,
        )
        try:
            if not self.hub.alone:
                reason = await self.hub.store.confirm_show(state.site, state.id, check, now, once=once, queue=queue)
                if reason is not None:
                    return reason
            user = signed_in(state)
            return None if user is None else await self.hub.store.confirm_user_show(state.site, user, check, now)
        except self.hub.store.unavailable as exc:
            self.hub.store_failed(exc)
            if queue is not None:
                self.hub.backlog.keep(Enqueue(state.site, state.id, *queue))
            return None
