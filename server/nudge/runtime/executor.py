"""Carrying out the engine's decisions: a show sent to the session's socket (or queued for the
visitor's next visit, or handed off to a webhook), timers set and cancelled, suppressions and
conversions counted, wake-ups armed — and each outcome noted once (the event log, the
dashboard's latest decisions, a JSON log line).

With several nodes a show is first confirmed against the caps in the store (one script that
checks and counts), so that nodes racing for one visitor never exceed a cap; with the store
unreachable, this node's own view of the caps (the engine's) stands.

May import: ``nudge.rules``, ``nudge.store``, ``nudge.runtime`` (the hub it works for).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

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
from nudge.runtime.writes import CancelTimer, Enqueue, SetTimer
from nudge.store import CapCheck

if TYPE_CHECKING:
    from nudge.runtime.hub import Hub
    from nudge.runtime.sessions import LiveSession, Visitor

decision_log = logging.getLogger("nudge.decision")  # one line per decision (JSON logs)


class Executor:
    """Carries out the decisions of the hub's engine for one visitor, in order."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub  # its engine (replaced on reload), store, counters and sockets

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
                message = {"campaign": decision.campaign, **decision.content}
                if decision.variant is not None:
                    message["variant"] = decision.variant
                hand_off = self._hand_off(decision, live)
                queued_by_store = False
                if not self.hub.alone:  # another node may show to the visitor at the same moment
                    queue = None
                    if (decision.queued or live is None) and not hand_off:
                        queue = (message, decision.expires_at or now + 86400.0)
                    reason = await self._confirm(state, decision.campaign, now, once, queue)
                    if reason is not None:  # another node showed it first: a suppression
                        self.hub.stats.lost_races += 1
                        self._count_suppressed(live, state, decision.campaign, decision.variant, reason, now)
                        if live is not None:
                            showing = live.state.showing
                            if showing is not None and showing[0] == decision.campaign:
                                live.state.showing = None  # nothing went on screen
                        continue
                    queued_by_store = queue is not None  # the confirming script queued it already
                self.hub.stats.shown += 1
                results.count(decision.campaign, decision.variant, "sent")
                if self.hub.webhooks is not None:
                    self.emit("decision", state, decision.campaign, decision.variant, outcome="sent", message=message)
                if hand_off:
                    self.emit("offline", state, decision.campaign, decision.variant, message=message,
                               traits=state.traits, expires_at=decision.expires_at)
                elif decision.queued or live is None:
                    if not queued_by_store:
                        await self.hub.store.enqueue(state.site, state.id, message, decision.expires_at or 0.0)
                else:
                    live.trace.append((now, decision.campaign, decision.variant, "sent"))
                    self.deliver(live, message)
            elif isinstance(decision, Schedule):
                await self.hub.write(SetTimer(state.site, state.id, decision.key, decision.due))
                self.hub.scheduler.poke(decision.due)
            elif isinstance(decision, Cancel):
                await self.hub.write(CancelTimer(state.site, state.id, decision.key))
            elif isinstance(decision, Suppress):
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

    def _hand_off(self, decision: Show, live: LiveSession | None) -> bool:
        """Whether this show goes out as the ``offline`` webhook event: the visitor is away, the
        campaign says ``offline: webhook``, and an endpoint takes it (else it is queued)."""
        if self.hub.webhooks is None or not (decision.queued or live is None):
            return False
        campaign = self.hub.engine.by_id.get(decision.campaign)
        return campaign is not None and campaign.offline == "webhook" and self.hub.webhooks.takes("offline", campaign.id)

    def emit(self, kind: str, state: VisitorState, campaign: str, variant: str | None, **extra) -> None:
        """A webhook-out event about ``campaign`` for this visitor (see :mod:`nudge.ops.webhooks`)."""
        self.hub.webhooks.emit(kind, campaign, {"site": state.site, "visitor": state.id, "variant": variant, **extra})

    def deliver(self, live: LiveSession, message: dict) -> None:
        """Give a message the session's next seq, keep it until acknowledged, and send it."""
        session = live.state
        session.last_message_seq += 1
        frame = {"t": "show", "seq": session.last_message_seq, **message}
        session.outbox.append(frame)
        if len(session.outbox) > self.hub.settings.outbox_limit:
            del session.outbox[0]
        self.hub.persistence.changed(live)
        conn = live.conn
        if conn is not None:
            self.hub.metrics.messages[message.get("kind", "")] += 1
            conn.push(frame)
            conn.kick()

    async def _confirm(
        self, state: VisitorState, campaign_id: str, now: float, once: str | None,
        queue: tuple[dict, float] | None,
    ) -> str | None:
        """Check and count a show's caps in the shared store; the reason it lost, or None. With
        the store unreachable, this node's own view of the caps (the engine's) stands."""
        campaign = self.hub.engine.by_id.get(campaign_id)
        limits = self.hub.engine.limits
        caps = campaign.caps if campaign is not None else None
        check = CapCheck(
            campaign_id,
            per_day=caps and caps.per_day, per_week=caps and caps.per_week,
            lifetime=caps and caps.lifetime, every=caps and caps.every,
            limit_per_hour=limits.per_hour, limit_per_day=limits.per_day, cooldown=limits.cooldown,
        )
        try:
            return await self.hub.store.confirm_show(state.site, state.id, check, now, once=once, queue=queue)
        except self.hub.store.unavailable as exc:
            self.hub.store_failed(exc)
            if queue is not None:
                self.hub.backlog.keep(Enqueue(state.site, state.id, *queue))
            return None
