"""Where time comes from: the only two ways Nudge code may learn the time or wait for it.

The engine never reads a clock: it is handed ``now``. The scheduler is the only code that sleeps,
and it sleeps through a :class:`Clock`, so tests drive time with :class:`FakeClock` instead of
sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""

    async def sleep_until(self, when: float | None, wake: asyncio.Event) -> None:
        """Return once ``now() >= when`` or ``wake`` is set (``when=None``: only ``wake``)."""


class SystemClock:
    """Wall-clock time."""

    def now(self) -> float:
        return time.time()

    async def sleep_until(self, when: float | None, wake: asyncio.Event) -> None:
        timeout = None if when is None else max(0.0, when - time.time())
        if timeout == 0.0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout)


class FakeClock:
    """A clock that moves only when told to: ``advance(seconds)`` or ``set(t)``."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start  # the current fake time
        self._changed = asyncio.Event()  # set on every move, so sleepers re-check

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self.set(self._now + seconds)

    def set(self, when: float) -> None:
        if when < self._now:
            raise ValueError("a clock never goes back")
        self._now = when
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def sleep_until(self, when: float | None, wake: asyncio.Event) -> None:
        while (when is None or self._now < when) and not wake.is_set():
            changed = asyncio.ensure_future(self._changed.wait())
            woken = asyncio.ensure_future(wake.wait())
            try:
                await asyncio.wait({changed, woken}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                changed.cancel()
                woken.cancel()
