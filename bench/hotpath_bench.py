"""Nudge's own work per event, without a socket: the frames ``nudge loadtest`` sends, fed to the hub.

    .venv/bin/python bench/hotpath_bench.py [--events 200000] [--repeat 5] [--profile]

A hub on the system clock with bench/campaigns.yaml and the memory store, as ``nudge serve``
runs it for bench/run.py; 100 sessions attached, each playing loadtest's visits one ``ev`` frame
at a time (decode → validate → engine → decisions → ack queued and written to a send that
drops it). It prints microseconds per event, the best of ``--repeat`` runs; with ``--profile``
a cProfile of one run, by own time. This is the part of bench/run.py's per-frame cost that is
Nudge's rather than the stack's (uvicorn, websockets, the event loop), measured without the
noise of the socket; the ratio that counts is still bench/run.py's.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import platform
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "server"))

from nudge import loadtest  # noqa: E402
from nudge.protocol import codec as protocol  # noqa: E402
from nudge.rules.campaigns import load_file  # noqa: E402
from nudge.runtime.clock import SystemClock  # noqa: E402
from nudge.runtime.config import Settings, Site  # noqa: E402
from nudge.runtime.connection import Connection  # noqa: E402
from nudge.runtime.hub import Hub  # noqa: E402
from nudge.store.memory import MemoryStore  # noqa: E402

SESSIONS = 100


def frames(n: int, seed: int = 1) -> list[tuple[int, bytes]]:
    """(session index, frame) for ``n`` events: each session plays whole visits, round robin."""
    rng = random.Random(seed)
    names = list(loadtest.VISITS)
    weights = [share for share, _ in loadtest.VISITS.values()]
    compiled = {name: loadtest.compile_visit(events) for name, (_, events) in loadtest.VISITS.items()}
    plans: list[list[bytes]] = [[] for _ in range(SESSIONS)]
    seqs = [0] * SESSIONS
    out = []
    while len(out) < n:
        for i in range(SESSIONS):
            if not plans[i]:
                plans[i] = list(compiled[rng.choices(names, weights)[0]])
            seqs[i] += 1
            out.append((i, b'{"t":"ev","seq":%d%s' % (seqs[i], plans[i].pop(0))))
    return out[:n]


async def play(stream: list[tuple[int, bytes]]) -> float:
    """Seconds per event of one run, on a fresh hub."""
    settings = Settings(events_per_second=1e9, event_burst=10**9)
    hub = Hub(settings, load_file(ROOT / "bench" / "campaigns.yaml"), MemoryStore(), SystemClock())
    await hub.start()

    async def send(message: dict) -> None:
        pass

    site = Site("pk_demo", frozenset({"*"}))
    sessions = []
    for i in range(SESSIONS):
        conn = Connection(send, protocol.JsonCodec(), limit=256, rate=1e9, burst=10**9, now=time.time(), origin=None)
        hello = protocol.Hello("pk_demo", f"v_hotpath{i:08d}abcdef", None, 0)
        live = await hub.attach(site, hello, conn)
        await conn.flush()
        sessions.append((live, conn))
    texts = [(sessions[i], data.decode()) for i, data in stream]
    on_frame = hub.on_frame
    gc.collect()
    started = time.perf_counter()
    for (live, conn), text in texts:
        conn.in_handler = True
        await on_frame(live, conn, text)
        conn.in_handler = False
        if conn.queue:
            await conn.flush()
    elapsed = time.perf_counter() - started
    await hub.stop()
    return elapsed / len(texts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="a cProfile of one run instead")
    args = parser.parse_args()
    stream = frames(args.events)
    if args.profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.enable()
        asyncio.run(play(stream))
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        return
    gc.freeze()
    gc.set_threshold(5000, 20, 50)  # as nudge serve runs
    best = min(asyncio.run(play(stream)) for _ in range(args.repeat))
    print(f"python {platform.python_version()}, {args.events} events over {SESSIONS} sessions, best of {args.repeat}: "
          f"{best * 1e6:.2f} µs per event")


if __name__ == "__main__":
    main()
