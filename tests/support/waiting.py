"""Awaiting a condition: the one place the tests poll.

Plain state (a dict in the hub, a key in Redis, a line in a log) cannot be awaited, so a test that
needs it polls, bounded by ``WAIT``: a passing test returns as soon as the condition holds and never
waits the whole bound; a failing one names what it waited for.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

WAIT = 5.0  # upper bound for awaiting a condition; a passing test never waits this long


async def eventually(
    condition: Callable[[], object | Awaitable[object]],
    what: str = "a condition",
    *,
    timeout: float = WAIT,
    every: float = 0.005,
) -> None:
    """Return once ``condition()`` is true (it may be a coroutine function), within ``timeout``."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                held = condition()
                if inspect.isawaitable(held):
                    held = await held
                if held:
                    return
                await asyncio.sleep(every)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}") from None
