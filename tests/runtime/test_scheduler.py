"""The scheduler, driven by a fake clock: timers fire when time reaches them, never before."""

from __future__ import annotations

import asyncio

from nudge.runtime.clock import FakeClock
from nudge.runtime.scheduler import Scheduler
from nudge.store.memory import MemoryStore


async def make(on_due=None):
    clock = FakeClock(1000.0)
    store = MemoryStore()
    fired = []

    async def record(timer):
        fired.append((timer.key, clock.now()))

    scheduler = Scheduler(clock, store, on_due or record)
    scheduler.start()
    return clock, store, scheduler, fired


async def test_durable_timer_fires_at_its_time():
    clock, store, scheduler, fired = await make()
    await store.schedule("pk", "v", "absence:a", 1060.0)
    scheduler.poke(1060.0)
    clock.advance(59)
    await scheduler.settled()
    assert fired == []
    clock.advance(1)
    await scheduler.settled()
    assert fired == [("absence:a", 1060.0)]
    await scheduler.stop()


async def test_local_timers_fire_in_order_and_can_be_cancelled():
    clock, store, scheduler, _ = await make()
    calls = []

    def record(name, due):
        calls.append((name, due))

    scheduler.call_at(1010.0, record, "b")
    cancelled = scheduler.call_at(1005.0, record, "x")
    scheduler.call_at(1001.0, record, "a")
    cancelled.cancel()
    clock.advance(20)
    await scheduler.settled()
    assert calls == [("a", 1001.0), ("b", 1010.0)]  # each as of its own due time
    assert scheduler.pending_local == 0
    await scheduler.stop()


async def test_cancelled_timers_let_go_of_their_arguments_and_leave_the_heap():
    """A session's wake-up may be due long after the session ended: cancelling it must not keep
    the session alive until then, nor may timers set and cancelled over and over pile up."""
    import gc
    import weakref

    clock, store, scheduler, _ = await make()
    calls = []

    def record(what, due):
        calls.append((what, due))

    class Session:
        pass

    session = Session()
    gone = weakref.ref(session)
    timer = scheduler.call_at(1000.0 + 600, record, session)
    del session
    timer.cancel()
    gc.collect()
    assert gone() is None  # not held until 600 s from now
    scheduler.call_at(1000.0 + 700, record, "kept")
    for i in range(10_000):
        scheduler.call_at(1000.0 + 600 + i, record, i).cancel()
    assert scheduler.local_entries <= 2 * 512 + 2  # rebuilt as it went, not 10,002 entries
    assert scheduler.pending_local == 1
    clock.advance(20_000)
    await scheduler.settled()
    assert calls == [("kept", 1700.0)]
    await scheduler.stop()


async def test_coroutine_callbacks_are_awaited_and_failures_do_not_stop_the_loop():
    clock, store, scheduler, fired = await make()
    done = asyncio.Event()

    async def boom(due):
        raise RuntimeError("a timer failed")

    async def fine(due):
        done.set()

    scheduler.call_at(1001.0, boom)
    scheduler.call_at(1002.0, fine)
    clock.advance(5)
    async with asyncio.timeout(5):
        await done.wait()
    await scheduler.stop()


async def test_a_sooner_timer_wakes_a_sleeping_loop():
    clock, store, scheduler, fired = await make()
    await store.schedule("pk", "v", "absence:late", 5000.0)
    scheduler.poke(5000.0)
    await scheduler.settled()
    await store.schedule("pk", "v", "absence:soon", 1010.0)
    scheduler.poke(1010.0)
    clock.advance(10)
    await scheduler.settled()
    assert fired == [("absence:soon", 1010.0)]
    await scheduler.stop()


async def test_local_and_durable_timers_run_together_in_due_order():
    clock, store, scheduler, fired = await make()
    order = []

    async def durable(timer):
        order.append((timer.key, timer.due))

    scheduler.on_due = durable
    await store.schedule("pk", "v", "absence:b", 1030.0)
    scheduler.call_at(1004.0, lambda due: order.append(("wake", due)))
    scheduler.call_at(1040.0, lambda due: order.append(("late", due)))
    clock.advance(60)  # one long jump
    await scheduler.settled()
    assert order == [("wake", 1004.0), ("absence:b", 1030.0), ("late", 1040.0)]
    await scheduler.stop()
