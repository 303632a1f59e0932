"""Soak: thousands of connections coming and going, and whether the server's memory levels off.

Two ways to look, because RSS alone cannot prove a plateau on a shared machine (other processes'
load moves the timing, and glibc's malloc keeps freed memory mapped):

``python bench/soak.py rounds [--rounds 10] [--connections 1000]``
    Deterministic, in one process: a server on a fake clock, and churn in rounds. Each round opens
    ``connections`` sockets of returning visitors, streams a few events on each (a cart add that
    shows a toast and opens an absence window, page views, one of which sets a dwell wake-up ten
    minutes ahead), closes them all, waits until the server has seen every close, then moves the
    clock past the grace period and counts the sessions still alive anywhere in the process (none
    may be), then on to a day later: the absence windows close (their messages are queued for the
    next visit, which takes them), and the caps' 24-hour windows roll over. With ``--fresh``,
    every round brings new visitors instead, whose records the store keeps for ``--retention``.
    After each round: Python's live objects and
    tracemalloc's traced bytes (after ``gc.collect()``), and the server's held sessions, visitors,
    local timers, open sockets, per-address and per-key counts and store records. A plateau is
    what :func:`plateau_problems` checks: every round from the third on within a small bound of
    the second, and every per-connection count back to its baseline. The process's RSS after
    ``malloc_trim(0)`` is reported too (not asserted). tests/runtime/test_soak.py runs this.

``python bench/soak.py rss [--connections 3000] [--seconds 300] [--churn 50]``
    ``nudge serve`` in its own process on the real clock (memory store, grace 5 s), ``connections``
    sockets that stay open and idle (a ping now and then), and every second ``churn`` of them
    closed and as many new ones opened, each sending a few events first. Visitors come back: ids
    are drawn from the first crowd's. The server's RSS is sampled every second, and every
    ``--trim-every`` seconds the server runs ``gc.collect()`` and ``malloc_trim(0)`` (on SIGUSR1,
    through a launcher; Linux/glibc) and writes its live object count: RSS after the trim is the
    heap glibc could give back. Reported: the slope of each over the second half of the run (the
    plateau part), in KiB per minute, and the plateau level.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import json
import os
import random
import secrets
import signal
import socket
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import websockets

KEY, ORIGIN = "pk_soak", "http://soak.test"
DAY = 86400.0
# The cart add shows a toast in the tab (a show, its ack) and opens an absence window whose
# message is queued for the visitor's next visit (a durable timer, a queued message); the dwell
# trigger keeps a wake-up timer pending while the tab is open. The per-day caps keep each
# visitor's show history as long as the caps need (a day's worth of shows otherwise: state the
# product keeps, not a leak, and it grows with the rate of shows until the window rolls over).
CAMPAIGNS = """
version: 1
campaigns:
  - id: mug
    trigger: {event: add_to_cart}
    caps: {per_session: 1, per_day: 3}
    message: {kind: toast, title: "Nice"}
  - id: cart-left
    trigger: {event: add_to_cart, absent: purchase, within: 10m}
    caps: {per_day: 1}
    offline: queue
    expires: 2d
    message: {kind: banner, title: "Your cart is waiting"}
  - id: lingering
    trigger: {path: /p2, dwell: 10m}
    message: {kind: toast, title: "Still there?"}
"""
# Rounds past the baseline may move by this much and still count as the plateau. Measured: live
# objects stay within ±2 of it; traced bytes creep by about 1 KiB a round (the standard library's
# and uvicorn's own: the Date header of each handshake), and step once or twice when the tables
# kept per connection or session (the hub's, the store's, the event loop's) are resized as keys
# come and go: about 170 bytes per connection of a round at 1,000 connections. A leak of one
# object per connection is over these at once; one of ~125 bytes per connection within three
# rounds of 300.
TRACED_SLACK = 64 * 1024  # bytes, at least
TRACED_SLACK_PER_CONNECTION = 256  # bytes per connection of a round
OBJECTS_SLACK = 100  # live objects


def rss_kib(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


LIBC = _libc()  # loaded once: each CDLL() makes classes of its own


def malloc_trim() -> bool:
    """Give freed heap back to the system (glibc only): RSS then shows what is in use."""
    trim = getattr(LIBC, "malloc_trim", None)
    return bool(trim(0)) if trim is not None else False


def slope(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (t, value) samples, per minute."""
    n = len(samples)
    if n < 2:
        return 0.0
    mt = sum(t for t, _ in samples) / n
    mr = sum(r for _, r in samples) / n
    num = sum((t - mt) * (r - mr) for t, r in samples)
    den = sum((t - mt) ** 2 for t, _ in samples) or 1.0
    return num / den * 60


# --- rounds: deterministic, in one process, on a fake clock ----------------------------------


async def visit(url: str, visitor: str, events: int, key: str = KEY) -> int:
    """One tab: hello, ``events`` events (a cart add, then page views), every ack and show
    received (shows acknowledged, as the snippet does), then closed. Returns the shows it got."""
    async with websockets.connect(url, subprotocols=["nudge.v1.json"], origin=ORIGIN, compression=None, open_timeout=30) as ws:
        await ws.send(json.dumps({"t": "hello", "v": 1, "key": key, "visitor": visitor}))
        welcome = json.loads(await ws.recv())
        if welcome.get("t") != "welcome":
            raise RuntimeError(f"no welcome: {welcome}")
        for seq in range(1, events + 1):
            name, props = ("add_to_cart", {"id": "m", "name": "Mug", "price": 3}) if seq == 1 else ("page_view", {"path": f"/p{seq}"})
            await ws.send(json.dumps({"t": "ev", "seq": seq, "name": name, "props": props}))
        acked = shows = 0
        while acked < events:
            frame = json.loads(await ws.recv())
            if frame["t"] == "ack":
                acked = frame["seq"]
            elif frame["t"] == "show":
                shows += 1
                await ws.send(json.dumps({"t": "ack", "seq": frame["seq"]}))
    return shows


@contextlib.asynccontextmanager
async def in_process_server(grace: float, retention: float, key: str = KEY):
    """A server in this process on a fake clock: (url, app, clock)."""
    import uvicorn
    from nudge.ops.app import create_app
    from nudge.rules.campaigns import load_text
    from nudge.runtime.clock import FakeClock
    from nudge.runtime.config import Settings

    clock = FakeClock()
    settings = Settings(host="127.0.0.1", port=0, site_keys=[key], origins=[ORIGIN], grace=grace, retention=retention, max_connections_per_ip=0,
                        max_pending_connections_per_ip=0, max_pending_connections=0, new_connections_per_ip=0)
    app = create_app(settings, clock=clock, campaign_set=load_text(CAMPAIGNS, "soak.yaml"))
    config = uvicorn.Config(app, host="127.0.0.1", port=0, ws=settings.ws, lifespan="on", log_level="warning")
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None
    task = asyncio.get_running_loop().create_task(server.serve())
    try:
        async with asyncio.timeout(20):
            while not server.started:
                await asyncio.sleep(0.005)  # polling a condition, bounded by the timeout
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}/ws", app, clock
    finally:
        server.should_exit = True
        await task


def held(app) -> dict[str, int]:
    """What the server holds that connections and sessions create: each must come back to its
    baseline once they are gone (visitors stay in the store: the product keeps them)."""
    hub, gateway = app.state.hub, app.state.gateway
    store = hub.store
    return {
        "connections": hub.stats.connections,
        "open_sockets": len(gateway.open),
        "sessions": len(hub.sessions),
        "visitors_held": len(hub.visitors),
        "local_timers": hub.scheduler.local_entries,
        "per_address_counts": len(gateway.limits.by_ip),
        "per_key_counts": len(gateway.limits.by_key),
        **{f"stored_{table}": n for table, n in store.sizes().items() if table not in ("visitor_writes", "deliveries")},
        "tasks": sum(1 for task in asyncio.all_tasks() if not task.done()),
    }


async def rounds(
    rounds: int = 10, connections: int = 1000, events: int = 5, grace: float = 5.0,
    fresh: bool = False, retention: float = 30 * DAY, leak=None, progress=None,
) -> dict:
    """Churn in ``rounds`` rounds (see the module docstring); the figures after each. With
    ``fresh``, every round's visitors are new ones (each adds a record the store keeps for the
    ``retention``: a plateau only once the first ones expire). ``leak``, if given, is called
    with the app before the first round (the test that shows a leak is caught plants one)."""
    started = time.monotonic()
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    try:
        key = KEY + secrets.token_hex(4)  # sessions of this run only are counted (the process may hold others)
        async with in_process_server(grace, retention, key) as (url, app, clock):
            if leak is not None:
                leak(app)
            hub, gateway = app.state.hub, app.state.gateway
            from nudge.rules.state import SessionState
            from nudge.runtime.hub import LiveSession

            pool = ["v_soak" + secrets.token_hex(10) for _ in range(connections)]
            figures = []
            for number in range(rounds):
                if fresh:
                    pool = ["v_soak" + secrets.token_hex(10) for _ in range(connections)]
                random.shuffle(pool)
                shows = await asyncio.gather(*(visit(url, visitor, events, key) for visitor in pool))
                async with asyncio.timeout(60):
                    while gateway.open or hub.stats.connections or any(live.conn is not None for live in hub.sessions.values()):
                        await asyncio.sleep(0.01)  # every close seen by the server (a condition, bounded)
                clock.advance(grace + 1.0)  # the grace period ends: every session with it
                await hub.scheduler.settled()
                gc.collect()
                alive = sum(1 for o in gc.get_objects() if (type(o) is LiveSession and o.state.site == key) or (type(o) is SessionState and o.site == key))
                clock.advance(DAY - grace - 1.0)  # the absence windows and the caps' windows end
                await hub.scheduler.settled()
                gc.collect()
                malloc_trim()
                traced, _ = tracemalloc.get_traced_memory()
                figures.append({
                    "round": number + 1, "traced_bytes": traced, "objects": len(gc.get_objects()),
                    "rss_kib": rss_kib(), "shows": sum(shows), "sessions_alive_after_grace": alive, **held(app),
                })
                if progress:
                    progress(figures[-1])
    finally:
        if not tracing:
            tracemalloc.stop()
    rss = [(f["round"], f["rss_kib"]) for f in figures[1:]]
    return {
        "rounds": rounds, "connections_per_round": connections, "events_per_connection": events,
        "fresh_visitors": fresh, "retention": retention,
        "seconds": round(time.monotonic() - started, 1), "figures": figures,
        # per round, not per minute: rounds take as long as the machine lets them
        "rss_kib_per_round_after_trim": round(slope(rss) / 60, 1) if len(rss) > 1 else 0.0,
    }


def plateau_problems(result: dict, baseline: int = 2, traced_slack: int | None = None, objects_slack: int = OBJECTS_SLACK) -> list[str]:
    """Why the run did not level off: empty when every round after the ``baseline`` one is within
    the slack of it, and everything connections and sessions hold is back to its baseline. The
    second round is the first to find every structure as a round leaves it (the first fills the
    store, the caches and the tables); with fresh visitors it is the third (the first whose day
    ends with a round's visitors leaving the store as another's arrive)."""
    figures = result["figures"]
    if len(figures) <= baseline:
        return [f"more than {baseline} rounds are needed (round {baseline} is the baseline)"]
    base = figures[baseline - 1]
    if traced_slack is None:
        traced_slack = max(TRACED_SLACK, TRACED_SLACK_PER_CONNECTION * result["connections_per_round"])
    problems = []
    for f in figures[baseline:]:
        if f["traced_bytes"] - base["traced_bytes"] > traced_slack:
            problems.append(f"round {f['round']}: traced memory {f['traced_bytes'] - base['traced_bytes']:+,} bytes over round {baseline}")
        if f["objects"] - base["objects"] > objects_slack:
            problems.append(f"round {f['round']}: {f['objects'] - base['objects']:+,} live objects over round {baseline}")
        for name in ("sessions_alive_after_grace", "connections", "open_sockets", "sessions", "visitors_held", "per_address_counts",
                     "per_key_counts", "stored_sessions", "stored_timers"):
            if f[name] != 0:
                problems.append(f"round {f['round']}: {name} = {f[name]} once every connection is gone")
        for name in ("local_timers", "stored_timer_heap", "stored_queues", "stored_visitors", "tasks"):
            if f[name] > base[name]:
                problems.append(f"round {f['round']}: {name} = {f[name]}, over round {baseline}'s {base[name]}")
    return problems


# --- rss: the real server, the real clock ------------------------------------------------------


# Runs ``nudge serve``; on SIGUSR1, collects garbage, trims the heap and writes the number of
# live objects to the file named by NUDGE_SOAK_STATUS.
LAUNCHER = """
import ctypes, gc, os, signal, sys
def trim(*_):
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open(os.environ["NUDGE_SOAK_STATUS"] + ".tmp", "w") as out:
        out.write(str(len(gc.get_objects())))
    os.replace(os.environ["NUDGE_SOAK_STATUS"] + ".tmp", os.environ["NUDGE_SOAK_STATUS"])
signal.signal(signal.SIGUSR1, trim)
from nudge.cli import main
sys.exit(main(sys.argv[1:]))
"""


async def tab(url: str, visitor: str, events: int, hold: asyncio.Event) -> None:
    async with websockets.connect(url, subprotocols=["nudge.v1.json"], origin=ORIGIN, compression=None, open_timeout=20) as ws:
        await ws.send(json.dumps({"t": "hello", "v": 1, "key": KEY, "visitor": visitor}))
        await ws.recv()
        for seq in range(1, events + 1):
            name, props = ("add_to_cart", {"id": "m", "name": "Mug", "price": 3}) if seq == 1 else ("page_view", {"path": f"/p{seq}"})
            await ws.send(json.dumps({"t": "ev", "seq": seq, "name": name, "props": props}))
        while not hold.is_set():
            try:
                await asyncio.wait_for(hold.wait(), 20)
            except TimeoutError:
                await ws.send('{"t":"ping"}')  # what the snippet does, so the idle timeout does not apply


async def soak(connections: int, seconds: float, churn: int, trim_every: float = 10.0, progress=None) -> dict:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        campaigns = Path(tmp) / "c.yaml"
        campaigns.write_text(CAMPAIGNS)
        status = Path(tmp) / "objects"
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", LAUNCHER, "serve", "--port", str(port), "--campaigns", str(campaigns),
            "--site-key", KEY, "--origin", ORIGIN, "--grace", "5", "--max-connections-per-ip", "0", "--max-pending-connections-per-ip", "0", "--max-pending-connections", "0", "--new-connections-per-ip", "0",
            "--log-level", "warning", env={**os.environ, "NUDGE_SOAK_STATUS": str(status)},
        )
        samples: list[tuple[float, int]] = []  # (t, RSS KiB)
        trimmed: list[tuple[float, int, int]] = []  # (t, RSS KiB after gc + malloc_trim, live objects)
        lost = 0
        try:
            url = f"ws://127.0.0.1:{port}/ws"
            await wait_listening(port)
            open_tabs: list[tuple[asyncio.Event, asyncio.Task]] = []

            # Returning visitors: the crowd's ids come back. (Every new visitor adds a record the
            # store keeps for the retention period, which no plateau can absorb.)
            pool = ["v_soak" + secrets.token_hex(10) for _ in range(connections)]

            def start_tab(events: int, visitor: str | None = None) -> None:
                hold = asyncio.Event()
                open_tabs.append((hold, asyncio.create_task(tab(url, visitor or random.choice(pool), events, hold))))

            for i in range(connections):
                start_tab(3, pool[i])
                if i % 200 == 199:
                    await asyncio.sleep(0.05)
            began = time.monotonic()
            next_trim = trim_every
            while time.monotonic() - began < seconds:
                await asyncio.sleep(1.0)
                random.shuffle(open_tabs)
                for hold, _ in open_tabs[:churn]:
                    hold.set()
                del open_tabs[:churn]
                for _, task in open_tabs:
                    if task.done():  # closed before its time: the load generator fell behind
                        lost += 1
                        task.exception()
                open_tabs[:] = [(hold, task) for hold, task in open_tabs if not task.done()]
                for _ in range(churn):
                    start_tab(5)
                now = time.monotonic() - began
                samples.append((now, rss_kib(process.pid)))
                if progress:
                    progress(samples[-1])
                if now >= next_trim:
                    next_trim += trim_every
                    before = status.stat().st_mtime_ns if status.exists() else 0
                    process.send_signal(signal.SIGUSR1)
                    async with asyncio.timeout(10):
                        while not status.exists() or status.stat().st_mtime_ns == before:
                            await asyncio.sleep(0.01)  # the server wrote its count (a condition, bounded)
                    trimmed.append((now, rss_kib(process.pid), int(status.read_text())))
            for hold, _ in open_tabs:
                hold.set()
            await asyncio.gather(*(task for _, task in open_tabs), return_exceptions=True)
        finally:
            process.terminate()
            await process.wait()
    half = samples[len(samples) // 2:]
    trimmed_half = trimmed[len(trimmed) // 2:]
    return {
        "connections": connections, "seconds": seconds, "churn_per_second": churn,
        "connections_opened": connections + churn * len(samples), "tabs_lost": lost,
        "rss_start_kib": samples[0][1], "rss_end_kib": samples[-1][1], "rss_max_kib": max(r for _, r in samples),
        "rss_plateau_kib": round(statistics.median(r for _, r in half)),
        "slope_second_half_kib_per_min": round(slope(half), 1), "samples": len(samples),
        "trimmed_rss_plateau_kib": round(statistics.median(r for _, r, _ in trimmed_half)) if trimmed_half else None,
        "trimmed_slope_second_half_kib_per_min": round(slope([(t, r) for t, r, _ in trimmed_half]), 1),
        "objects_plateau": round(statistics.median(o for _, _, o in trimmed_half)) if trimmed_half else None,
        "objects_slope_second_half_per_min": round(slope([(t, o) for t, _, o in trimmed_half]), 1),
        "trimmed": trimmed,
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def wait_listening(port: int) -> None:
    async with asyncio.timeout(20):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                return
            except OSError:
                await asyncio.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    modes = parser.add_subparsers(dest="mode", required=True)
    by_rounds = modes.add_parser("rounds", help="deterministic: churn in rounds on a fake clock, in this process")
    by_rounds.add_argument("--rounds", type=int, default=10)
    by_rounds.add_argument("--connections", type=int, default=1000)
    by_rounds.add_argument("--events", type=int, default=5)
    by_rounds.add_argument("--fresh", action="store_true", help="new visitors every round")
    by_rounds.add_argument("--retention", type=float, default=30 * DAY, help="the store's retention, seconds")
    by_rss = modes.add_parser("rss", help="the real server's RSS over minutes, on the real clock")
    by_rss.add_argument("--connections", type=int, default=3000)
    by_rss.add_argument("--seconds", type=float, default=300)
    by_rss.add_argument("--churn", type=int, default=50)
    by_rss.add_argument("--trim-every", type=float, default=10.0)
    args = parser.parse_args()
    server = str(Path(__file__).resolve().parent.parent / "server")
    os.environ.setdefault("PYTHONPATH", server)
    sys.path.insert(0, server)
    if args.mode == "rounds":
        result = asyncio.run(rounds(args.rounds, args.connections, args.events, fresh=args.fresh, retention=args.retention, progress=lambda f: print(json.dumps(f), file=sys.stderr)))
        result["problems"] = plateau_problems(result, baseline=3 if args.fresh else 2)
    else:
        result = asyncio.run(soak(args.connections, args.seconds, args.churn, args.trim_every,
                                  progress=lambda s: print(f"{s[0]:6.1f} s  RSS {s[1]} KiB", file=sys.stderr)))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
