"""The only code that waits for time.

Two kinds of timers fall due here: durable visitor timers kept by the store (absence windows,
delays: they must survive the session) and local ones kept in a heap in this process (a session's
dwell/idle wake-up, the end of a detached session's grace period). The loop sleeps through the
injected clock until the earliest of both, or until poked because a sooner timer was added.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from nudge.runtime.clock import Clock
from nudge.store import DueTimer, Store

log = logging.getLogger("nudge.scheduler")


class LocalTimer:
    """A handle on a local timer; ``cancel()`` it when it is no longer wanted."""

    __slots__ = ("due", "callback", "args", "cancelled")

    def __init__(self, due: float, callback: Callable[..., Any], args: tuple) -> None:
        self.due = due
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        """A cancelled timer stays in the heap until it reaches the top or the heap is compacted
        (see :meth:`Scheduler.call_at`); what it would have been called with is let go now (a
        session's dwell wake-up, say, may be minutes away while the session ended long ago)."""
        self.cancelled = True
        self.callback = _cancelled
        self.args = ()


def _cancelled(*args: Any) -> None:
    """What a cancelled timer would call: nothing."""


# The local heap is rebuilt without its cancelled timers once this many timers were added since
# the last rebuild, and at least as many as half the heap: linear work every so many additions,
# so constant per timer, and the heap stays within about twice the live timers.
COMPACT_AFTER = 512


class Scheduler:
    def __init__(
        self,
        clock: Clock,
        store: Store,
        on_due: Callable[[DueTimer], Awaitable[None]],
        poll_interval: float | None = None,
        before_claim: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.clock = clock
        self.store = store
        self.on_due = on_due  # called for each durable timer claimed
        self.poll_interval = poll_interval  # for shared stores, where other nodes add timers
        self.before_claim = before_claim  # awaited before each claim; raising skips the pass
        self._local: list[tuple[float, int, LocalTimer]] = []
        self._added = 0  # local timers added since the heap was last rebuilt without cancelled ones
        self._order = itertools.count()
        self._wake = asyncio.Event()  # set when a sooner timer is added
        self._task: asyncio.Task | None = None
        self._in_pass = False  # run_due is running (it is not re-entered)
        self._target: float | None = None  # what the loop sleeps until (None: until poked)
        self._passes_started = 0  # passes over due timers begun ...
        self._passes_done = asyncio.Condition()  # ... and notified as each one ends
        self._passes_finished = 0
        self.fired = 0  # timers fired so far, durable and local

    def call_at(self, due: float, callback: Callable[..., Any], *args: Any) -> LocalTimer:
        """Call ``callback(*args, due)`` (a plain function or a coroutine function) at ``due``."""
        timer = LocalTimer(due, callback, args)
        if not self._local or due < self._local[0][0]:
            self._wake.set()
        heapq.heappush(self._local, (due, next(self._order), timer))
        self._added += 1
        if self._added >= COMPACT_AFTER and 2 * self._added >= len(self._local):
            self._compact()
        return timer

    def _compact(self) -> None:
        """Drop cancelled timers from the heap, in place (a pass in progress holds the list)."""
        self._added = 0
        heap = self._local
        live = [entry for entry in heap if not entry[2].cancelled]
        if len(live) < len(heap):
            heap[:] = live
            heapq.heapify(heap)

    def poke(self, due: float) -> None:
        """A durable timer due at ``due`` was added: look at the store again if it is sooner
        than what the loop is sleeping until."""
        if self._target is None or due < self._target:
            self._wake.set()

    @property
    def local_entries(self) -> int:
        """Entries in the local timers' heap, cancelled ones not yet dropped included."""
        return len(self._local)

    @property
    def pending_local(self) -> int:
        return sum(1 for _, _, timer in self._local if not timer.cancelled)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="nudge-scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def settled(self) -> None:
        """Wait until everything due at the current time has run (for tests and shutdown)."""
        target = self._passes_started + 1
        self._wake.set()
        async with self._passes_done:
            await self._passes_done.wait_for(lambda: self._passes_finished >= target)

    async def run_due(self, now: float | None = None) -> None:
        """Run every timer due by ``now`` (default: the clock's), local and durable, one at a
        time, earliest first, a local one first at a tie.

        Each runs as of its own due time (local callbacks get ``due`` as their last argument;
        durable ones carry it), not as of the moment the loop got to it: a loop that wakes late,
        or a test that moves the clock a long way at once, sees the same decisions as one that
        woke exactly on time — and a replay of the event log sees them too. A timer that one of
        these creates, due by ``now``, runs in its turn within the same call."""
        if self._in_pass:
            return  # already running (the hub catching a visitor up from inside a timer)
        self._in_pass = True
        try:
            await self._run_due(self.clock.now() if now is None else now)
        finally:
            self._in_pass = False

    async def _run_due(self, now: float) -> None:
        heap = self._local
        durable: deque[DueTimer] = deque()
        exhausted = False  # the store had nothing more due by now at the last look
        while True:
            if not durable and not exhausted:
                if self.before_claim is not None:
                    await self.before_claim()
                claimed = await self.store.claim_due(now)
                durable.extend(sorted(claimed, key=lambda t: t.due))
                exhausted = len(claimed) < 100
            while heap and heap[0][2].cancelled:
                heapq.heappop(heap)
            local_due = heap[0][0] if heap and heap[0][0] <= now else None
            if local_due is not None and (not durable or local_due <= durable[0].due):
                timer = heapq.heappop(heap)[2]
                self.fired += 1
                try:
                    result = timer.callback(*timer.args, timer.due)
                    if asyncio.iscoroutine(result):
                        await result
                except Exception:
                    log.exception("local timer %s failed", getattr(timer.callback, "__name__", timer.callback))
            elif durable:
                item = durable.popleft()
                self.fired += 1
                try:
                    await self.on_due(item)
                except Exception:
                    log.exception("timer %s for %s/%s failed", item.key, item.site, item.visitor)
                if not durable:
                    exhausted = False  # one it ran may have made another due by now: look again
            else:
                return

    async def _run(self) -> None:
        unavailable = self.store.unavailable
        while True:
            self._wake.clear()
            self._passes_started += 1
            number = self._passes_started
            try:
                await self.run_due()
            except unavailable as exc:  # the hub reports the outage; retried at the next pass
                log.debug("scheduler pass skipped: store unreachable (%s)", exc)
            except Exception:
                log.exception("scheduler pass failed")
            async with self._passes_done:
                self._passes_finished = number
                self._passes_done.notify_all()
            while self._local and self._local[0][2].cancelled:
                heapq.heappop(self._local)
            candidates = [self._local[0][0]] if self._local else []
            try:
                durable = await self.store.next_due()
            except unavailable:
                durable = self.clock.now() + 1.0
            except Exception:
                log.exception("store unavailable for timers")
                durable = self.clock.now() + 1.0
            if durable is not None:
                candidates.append(durable)
            if self.poll_interval is not None:
                candidates.append(self.clock.now() + self.poll_interval)
            if self._wake.is_set():
                continue
            self._target = min(candidates) if candidates else None
            await self.clock.sleep_until(self._target, self._wake)
            self._target = None
