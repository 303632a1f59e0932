"""How the hub keeps what it holds in the store, and whether the store answers.

One node alone (:class:`WriteThrough`, the memory store) writes a session and its visitor when
the socket closes and everything it holds when it stops: a write there costs nothing, and no
other node reads it meanwhile. Several nodes (:class:`WriteBehind`, Redis) mark each changed
session and write the changed ones, with their visitors, in one batch every ``write_behind``
seconds and when a socket closes: no round trip per event. :class:`StoreHealth` says when the
store stopped answering (degraded mode) and when it answered again.

May import: ``nudge.store`` (the contract written to), ``nudge.runtime.sessions``,
``nudge.runtime.clock``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nudge.runtime.clock import Clock
    from nudge.runtime.sessions import LiveSession, Sessions
    from nudge.store import Store

log = logging.getLogger("nudge.hub")


class StoreHealth:
    """Whether the store answers: degraded from its first failure until it answers again."""

    __slots__ = ("clock", "since", "errors")

    def __init__(self, clock: Clock) -> None:
        self.clock = clock  # the hub's
        self.since: float | None = None  # when the store became unreachable (None: it answers)
        self.errors = 0  # store calls that failed

    def failed(self, exc: BaseException) -> None:
        """A store call failed (it is unreachable): counted, and degraded mode begins."""
        self.errors += 1
        if self.since is None:
            self.since = self.clock.now()
            log.warning(
                "store unreachable (%s): degraded mode — connected sessions go on with this node's "
                "state and caps; timer and queue writes are kept and replayed when it answers", exc,
            )

    def answered(self, replayed: int) -> None:
        """The store answered: degraded mode, if it was on, ends."""
        if self.since is not None:
            log.warning(
                "store reachable again after %.1f s; %d writes replayed so far",
                self.clock.now() - self.since, replayed,
            )
            self.since = None


class WriteThrough:
    """One node alone: a session and its visitor are written when the socket closes, and every
    session and visitor when the node stops; nothing is marked or batched."""

    alone = True
    dirty: frozenset[LiveSession] = frozenset()  # never anything waiting

    def __init__(self, store: Store, sessions: Sessions, grace: float) -> None:
        self.store = store
        self.sessions = sessions
        self.grace = grace  # how long a saved session stays resumable

    def changed(self, live: LiveSession) -> None:
        pass  # what the hub holds is written when it detaches

    def changed_all(self, lives: list[LiveSession]) -> None:
        pass

    def discard(self, live: LiveSession) -> None:
        pass

    async def detached(self, live: LiveSession) -> None:
        await self.store.save_session(live.state, self.grace)
        await self.store.save_visitor(live.visitor.state)

    async def flush(self) -> None:
        pass

    async def final(self) -> None:
        """The node stops: every session and visitor it holds, written."""
        for live in list(self.sessions.by_id.values()):
            await self.store.save_session(live.state, self.grace)
        for visitor in self.sessions.visitors.values():
            await self.store.save_visitor(visitor.state)


class WriteBehind:
    """Several nodes: changed sessions are marked, and written with their visitors in batches."""

    alone = False

    def __init__(self, store: Store, sessions: Sessions, grace: float) -> None:
        self.store = store
        self.sessions = sessions
        self.ttl = grace + 3600.0  # a session written outlives this node by at least the grace period
        self.dirty: set[LiveSession] = set()  # sessions changed since the last write-behind
        self._writing = asyncio.Lock()  # one write-behind at a time: a later one never lands first

    def changed(self, live: LiveSession) -> None:
        self.dirty.add(live)

    def changed_all(self, lives: list[LiveSession]) -> None:
        self.dirty.update(lives)

    def discard(self, live: LiveSession) -> None:
        self.dirty.discard(live)

    async def detached(self, live: LiveSession) -> None:
        self.dirty.add(live)
        await self.flush()  # kept marked if it fails: written once the store answers

    async def flush(self) -> None:
        """Write every session changed since the last time (and its visitor) in one batch.

        The store writes a large batch in slices, encoding each just before it goes, with the
        loop free for sockets in between; a write-behind asked for meanwhile (a socket closing)
        waits for this one, so that states never land in Redis older than what is there."""
        if not self.dirty:
            return
        async with self._writing:
            if not self.dirty:
                return
            dirty, self.dirty = self.dirty, set()
            held = self.sessions.by_id
            sessions = [(live.state, self.ttl) for live in dirty if held.get(live.state.id) is live]
            visitors = list({id(live.visitor): live.visitor.state for live in dirty}.values())
            try:
                await self.store.save_visitors(visitors, sessions)
            except BaseException:
                self.dirty |= dirty  # written with the next batch
                raise

    async def final(self) -> None:
        await self.flush()


Persistence = WriteThrough | WriteBehind
