"""One write-behind of many sessions to Redis: its CPU, and the longest the event loop is held.

    .venv/bin/python bench/write_behind.py [--sessions 1000] [--repeat 5] [--redis redis://127.0.0.1:6379/0]
    PYTHONPATH=/tmp/before/server .venv/bin/python bench/write_behind.py   # another source tree

``RedisStore.save_visitors`` (what the hub's write-behind calls) writes ``--sessions`` sessions and
their visitors, shaped like the load test's (a page, a scroll depth, counters, a cart item), while
a ticker task yields to the loop over and over. *Held* is the most CPU time the thread spent
between two turns of the ticker: how long a socket's frame could wait behind the write-behind
(CPU time, so that another process taking the core away does not count). *CPU* is the process's
CPU time for another write-behind without the ticker (whose turns would count otherwise). Keys go under a prefix
of the run's own, deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

from nudge.rules.state import SessionState, VisitorState
from nudge.store.redis import RedisStore

T0 = 1_700_000_000.0


def states(count: int) -> tuple[list[VisitorState], list[tuple[SessionState, float]]]:
    visitors, sessions = [], []
    for i in range(count):
        visitor = VisitorState("pk_demo", f"v_{i:020d}", T0, last_seen=T0, sessions=3)
        visitor.cart.add("mug", "Mug", 12.5, 1)
        visitor.shown = {"c1": [T0]}
        session = SessionState(f"s_{i:020d}", "pk_demo", visitor.id, T0, page="/blog/post-1", page_started_at=T0, url="https://shop.example/blog/post-1")
        session.scroll = {"/blog/post-1": 55}
        session.counters = {"page_view": 3, "scroll": 20}
        session.last_event_seq = 40
        visitors.append(visitor)
        sessions.append((session, 3600.0))
    return visitors, sessions


async def once(store: RedisStore, visitors, sessions) -> tuple[float, float, float]:
    """(wall, CPU, longest hold): CPU from a write-behind alone (the thread idles while Redis
    answers), the hold from another beside a task that yields over and over (whose own turns
    would otherwise count as CPU)."""
    wall, cpu = time.perf_counter(), time.process_time()
    await store.save_visitors(visitors, sessions)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    held: list[float] = []

    async def ticker() -> None:
        while True:
            before = time.thread_time()
            await asyncio.sleep(0)
            held.append(time.thread_time() - before)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    await store.save_visitors(visitors, sessions)
    task.cancel()
    return wall, cpu, max(held)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    store = RedisStore(f"{args.redis}?prefix=nudgebench-wb:{os.getpid()}:")
    store.node = "bench"
    visitors, sessions = states(args.sessions)
    try:
        await store.save_visitors(visitors[:10], sessions[:10])  # connections and scripts ready
        runs = [await once(store, visitors, sessions) for _ in range(args.repeat)]
        for wall, cpu, held in runs:
            print(f"{args.sessions} sessions and visitors: wall {wall * 1000:6.1f} ms  CPU {cpu * 1000:6.1f} ms  loop held at most {held * 1000:5.1f} ms")
        print(f"median: CPU {statistics.median(r[1] for r in runs) * 1000:.1f} ms, loop held at most {statistics.median(r[2] for r in runs) * 1000:.1f} ms")
    finally:
        keys = [key async for key in store.redis.scan_iter(match=store.keys.prefix + "*", count=1000)]
        for start in range(0, len(keys), 500):
            await store.redis.delete(*keys[start:start + 500])
        await store.close()


if __name__ == "__main__":
    asyncio.run(main())
