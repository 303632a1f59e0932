"""The cross-node relay as the hub uses it: which node holds a visitor's sessions, and the
records nodes send each other through the store's cluster (``nudge.store.base.Cluster``).

Before a node acts for a visitor it does not hold — a durable timer it claimed, a backend event
— it hands the work to the node holding one of the visitor's sessions; when a session is
resumed here, the node that held it is told to let go. The records (``nudge.store.redis.cluster``
lists them): ``ev`` (a backend event to apply), ``due`` (a timer to run and finish), ``queued`` (a message was queued for
the visitor: send it to their open tab), ``take``
(let go of a session), ``erase`` (forget a visitor), ``erase_log`` (broadcast: remove records
from this node's event log). One node alone has a cluster that holds nothing elsewhere, so none
of this sends anything.

May import: ``nudge.rules``, ``nudge.store``, ``nudge.runtime`` (the hub it works for).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from nudge.rules import events
from nudge.store import DueTimer

if TYPE_CHECKING:
    from nudge.runtime.hub import Hub
    from nudge.runtime.sessions import LiveSession

log = logging.getLogger("nudge.hub")


class Relaying:
    """What the hub sends other nodes, and what it does for the records they send it."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub  # its sessions, cluster and handlers

    async def hold(self, live: LiveSession) -> None:
        """Record that this node holds the session; tell the node that held it to let go."""
        state = live.state
        try:
            before = await self.hub.cluster.hold(state.site, state.visitor, state.id, self.hub.settings.grace + 86400.0)
            if before is not None:
                await self.hub.cluster.send(before, {"op": "take", "site": state.site, "session": state.id})
        except self.hub.store.unavailable as exc:
            self.hub.store_failed(exc)
        self.hub.persistence.changed(live)

    async def timer_to_holder(self, timer: DueTimer) -> bool:
        """Hand the timer to another node holding one of the visitor's sessions; True when one
        heard it (it finishes the timer; if it dies first, the lease runs out and the timer is
        claimed again, and its once-token keeps the message from showing twice)."""
        try:
            holders = await self.hub.cluster.holders(timer.site, timer.visitor)
        except self.hub.store.unavailable:
            return False
        record = {
            "op": "due", "site": timer.site, "visitor": timer.visitor, "key": timer.key,
            "due": timer.due, "claim": timer.claim,
        }
        if await self.to_holder(holders, record):
            self.hub.stats.timers_relayed += 1
            return True
        return False

    async def to_holder(self, holders: dict[str, str], record: dict) -> bool:
        """Publish ``record`` to the other nodes holding the visitor's sessions (``holders``:
        session -> node, as :meth:`Cluster.holders` answers), the most recently held first, until
        one hears it; True when one did. Errors of the store are the caller's to handle."""
        for node in dict.fromkeys(reversed(holders.values())):
            if node != self.hub.node and await self.hub.cluster.send(node, record):
                return True
        return False

    async def on_record(self, record: dict) -> None:
        """A record another node sent this one (see :mod:`nudge.store.redis.cluster`)."""
        op = record.get("op")
        if op == "ev":
            at = record.get("at")
            event = events.Event(record["name"], record.get("props") or {}, trusted=True,  # a backend's
                                 at=at if isinstance(at, (int, float)) else None)
            await self.hub.on_visitor_event(record["site"], record["visitor"], event, forwarded=True)
        elif op == "due":
            timer = DueTimer(record["site"], record["visitor"], record["key"], record["due"], record.get("claim", ""))
            await self.hub.on_due(timer, forwarded=True)
        elif op == "queued":  # a message was queued for a visitor this node has a tab of
            visitor = self.hub.visitors.get((record.get("site", ""), record.get("visitor", "")))
            live = self.hub.looking(visitor, self.hub.clock.now())[1] if visitor is not None else None
            if live is not None:
                await self.hub.executor.deliver_queued(live, self.hub.clock.now())
        elif op == "take":
            live = self.hub.sessions.get(record.get("session", ""))
            if live is not None and live.state.site == record.get("site"):
                self.hub.let_go(live, "session resumed on another node")
        elif op == "erase":  # another node erases the visitor: forget them here too
            site, visitor = record.get("site"), record.get("visitor")
            if isinstance(site, str) and isinstance(visitor, str):
                self.hub.forget_visitor(site, visitor)
                if self.hub.webhooks is not None:
                    self.hub.webhooks.forget_decided(visitor)
        elif op == "erase_log":  # broadcast: every node removes the records from its own files
            await self._erase_log(record)

    async def _erase_log(self, record: dict) -> None:
        recorder = self.hub.recorder
        if record.get("node") == self.hub.node or recorder is None:
            return  # the erasing node did its own
        visitors, users = record.get("visitors") or [], record.get("users") or []
        if not all(isinstance(v, str) for v in (*visitors, *users)):
            log.warning("relay: erase_log record with ids that are not strings, ignored")
            return
        files, records = await recorder.erase_records(visitors, users)
        log.info("erased %d records from %d event log files of this node", records, files)
