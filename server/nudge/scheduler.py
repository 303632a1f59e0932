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
from collections.abc import Awaitable, Callable
from typing import Any

from .clock import Clock
from .store import DueTimer, Store

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
        self.cancelled = True


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
        self._order = itertools.count()
        self._wake = asyncio.Event()  # set when a sooner timer is added
        self._task: asyncio.Task | None = None
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
        return timer

    def poke(self, due: float) -> None:
        """A durable timer due at ``due`` was added: look at the store again if it is sooner
        than what the loop is sleeping until."""
        if self._target is None or due < self._target:
            self._wake.set()

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

    async def run_due(self) -> None:
        """Run every timer due by now, local and durable, in order of due time.

        Each runs as of its own due time (local callbacks get ``due`` as their last argument;
        durable ones carry it), not as of the moment the loop got to it: a loop that wakes late,
        or a test that moves the clock a long way at once, sees the same decisions as one that
        woke exactly on time."""
        now = self.clock.now()
        while True:
            if self.before_claim is not None:
                await self.before_claim()
            durable = await self.store.claim_due(now)
            local: list[LocalTimer] = []
            heap = self._local
            while heap and heap[0][0] <= now:
                timer = heapq.heappop(heap)[2]
                if not timer.cancelled:
                    local.append(timer)
            if not durable and not local:
                return
            work: list[tuple[float, int, LocalTimer | DueTimer]] = [(t.due, 0, t) for t in local]
            work.extend((t.due, 1, t) for t in durable)
            work.sort(key=lambda item: (item[0], item[1]))
            for _, _, item in work:
                if isinstance(item, LocalTimer):
                    if item.cancelled:  # an earlier timer in this pass cancelled it
                        continue
                    self.fired += 1
                    try:
                        result = item.callback(*item.args, item.due)
                        if asyncio.iscoroutine(result):
                            await result
                    except Exception:
                        log.exception("local timer %s failed", getattr(item.callback, "__name__", item.callback))
                else:
                    self.fired += 1
                    try:
                        await self.on_due(item)
                    except Exception:
                        log.exception("timer %s for %s/%s failed", item.key, item.site, item.visitor)

    async def _run(self) -> None:
        unavailable: tuple[type[BaseException], ...] = getattr(self.store, "unavailable", ())
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
