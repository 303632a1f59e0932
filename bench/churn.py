"""Visitor churn: how much memory each new visitor id costs a node, and whether a cap holds it.

``python bench/churn.py [--visitors 20000] [--concurrency 32] [--grace 2] [--max-visitors N]``

``nudge serve`` in its own process (memory store, the real clock, ``--grace`` short so that the
sessions end during the run). Each visitor is new — a random id, as a script hammering the
socket with fresh ids would send — and does what a shopper's first page does: ``hello``, a page
view, a cart add, then the socket closes. Measured, from the server's ``/proc/PID/status``:

- RSS before (after a warm-up of 500 visitors, so that allocator arenas and caches are there);
- RSS once every visitor has been through (their sessions detached, resumable for the grace);
- RSS once the grace is over (``/healthz`` holds no session): what is left is the store's records
  of the visitors, kept for ``--retention`` (30 days by default) — or up to ``--max-visitors``.

Also the evictions for the cap (``nudge_visitors_evicted_total``). Figures: bench/RESULTS-hostile.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import websockets

KEY, ORIGIN = "pk_churn", "http://churn.test"
CAMPAIGNS = """
version: 1
campaigns:
  - id: cart
    trigger: {event: add_to_cart, absent: purchase, within: 1h}
    offline: drop
    message: {kind: toast, title: "Still thinking about {{ cart.names | first }}?"}
"""


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name) and not line.startswith("#"))


async def one_visitor(url: str, n: int) -> None:
    async with websockets.connect(url, subprotocols=["nudge.v1.json"], origin=ORIGIN, compression=None) as ws:
        await ws.send(json.dumps({"t": "hello", "v": 1, "key": KEY, "visitor": "v_" + secrets.token_urlsafe(16), "rx": 0}))
        json.loads(await ws.recv())
        await ws.send(json.dumps({"t": "evs", "events": [
            {"seq": 1, "name": "page_view", "props": {"path": f"/product/{n % 500}", "title": "A product", "url": f"https://shop.example/product/{n % 500}"}},
            {"seq": 2, "name": "add_to_cart", "props": {"id": f"sku{n % 500}", "name": "Blue Mug", "price": 12.5, "quantity": 1}},
        ]}))
        while True:
            frame = json.loads(await ws.recv())
            if frame["t"] == "ack" and frame["seq"] >= 2:
                break


async def churn(url: str, visitors: int, concurrency: int) -> float:
    started = time.monotonic()
    queue = iter(range(visitors))

    async def worker() -> None:
        for n in queue:
            for _ in range(3):
                try:
                    await one_visitor(url, n)
                    break
                except (OSError, websockets.WebSocketException):
                    await asyncio.sleep(0.05)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.monotonic() - started


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--visitors", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--grace", type=float, default=2.0)
    parser.add_argument("--max-visitors", type=int, default=None, help="the server's --max-visitors (default: its own)")
    args = parser.parse_args()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        campaigns = Path(tmp) / "campaigns.yaml"
        campaigns.write_text(CAMPAIGNS)
        command = [sys.executable, "-m", "nudge", "serve", "--port", str(port), "--store", "memory://",
                   "--campaigns", str(campaigns), "--site-key", KEY, "--origin", ORIGIN, "--grace", str(args.grace),
                   "--log-level", "warning", "--max-connections-per-ip", "0", "--new-connections-per-ip", "0"]
        if args.max_visitors is not None:
            command += ["--max-visitors", str(args.max_visitors)]
        env = {**os.environ, "NUDGE_EVENTS_PER_SECOND": "1000", "NUDGE_EVENT_BURST": "1000"}
        server = await asyncio.create_subprocess_exec(*command, env=env)
        http, url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/ws"
        try:
            for _ in range(200):
                try:
                    await asyncio.to_thread(get, http + "/healthz")
                    break
                except OSError:
                    await asyncio.sleep(0.05)

            async def settled() -> dict:
                while True:  # the grace is over: no session held
                    health = json.loads(await asyncio.to_thread(get, http + "/healthz"))
                    if health["sessions"] == 0:
                        return health
                    await asyncio.sleep(0.25)

            await churn(url, 500, args.concurrency)
            await settled()
            before = rss_kib(server.pid)
            took = await churn(url, args.visitors, args.concurrency)
            held = json.loads(await asyncio.to_thread(get, http + "/healthz"))
            during = rss_kib(server.pid)
            await settled()
            after = rss_kib(server.pid)
            text = await asyncio.to_thread(get, http + "/metrics")
            evicted = {where: metric(text, f'nudge_visitors_evicted_total{{from="{where}"}}') for where in ("sessions", "store")}
        finally:
            server.terminate()
            await server.wait()
    n = args.visitors
    print(json.dumps({
        "visitors": n, "seconds": round(took, 1), "per_second": round(n / took),
        "max_visitors": args.max_visitors, "sessions_held_at_end_of_churn": held["sessions"],
        "rss_mib": {"before": round(before / 1024, 1), "after_churn": round(during / 1024, 1), "after_grace": round(after / 1024, 1)},
        "added_mib": {"after_churn": round((during - before) / 1024, 1), "after_grace": round((after - before) / 1024, 1)},
        "kib_per_visitor_after_grace": round((after - before) / n, 2),
        "evicted": evicted,
    }, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
