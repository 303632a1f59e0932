"""Soak: thousands of idle connections with churn, and the server's RSS over time.

    python bench/soak.py [--connections 3000] [--seconds 300] [--churn 50]

Starts ``nudge serve`` (memory store, a short grace so ended sessions are let go), opens
``connections`` sockets that sit idle (a ping now and then), and every second closes ``churn`` of
them and opens as many new ones, each of which sends a few events first. Visitors come back: ids
are those of the first crowd, drawn at random. The server's RSS is
sampled every second; the slope over the second half of the run (after the plateau is reached)
is printed in KiB per minute. tests/test_soak.py runs the same thing briefly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import socket
import sys
import tempfile
import time
from pathlib import Path

import websockets

KEY, ORIGIN = "pk_soak", "http://soak.test"
CAMPAIGNS = """
version: 1
campaigns:
  - id: mug
    trigger: {event: add_to_cart}
    caps: {per_session: 1}
    message: {kind: toast, title: "Nice"}
"""


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def slope(samples: list[tuple[float, int]]) -> float:
    """Least-squares slope of RSS over time, in KiB per minute."""
    n = len(samples)
    if n < 2:
        return 0.0
    mt = sum(t for t, _ in samples) / n
    mr = sum(r for _, r in samples) / n
    num = sum((t - mt) * (r - mr) for t, r in samples)
    den = sum((t - mt) ** 2 for t, _ in samples) or 1.0
    return num / den * 60


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


async def soak(connections: int, seconds: float, churn: int, progress=None) -> dict:
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        campaigns = Path(tmp) / "c.yaml"
        campaigns.write_text(CAMPAIGNS)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "nudge", "serve", "--port", str(port), "--campaigns", str(campaigns),
            "--site-key", KEY, "--origin", ORIGIN, "--grace", "5", "--max-connections-per-ip", "0",
            "--log-level", "warning",
        )
        try:
            url = f"ws://127.0.0.1:{port}/ws"
            await _wait_listening(port)
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
            samples: list[tuple[float, int]] = []
            began = time.monotonic()
            while time.monotonic() - began < seconds:
                await asyncio.sleep(1.0)
                random.shuffle(open_tabs)
                for hold, _ in open_tabs[:churn]:
                    hold.set()
                del open_tabs[:churn]
                for _ in range(churn):
                    start_tab(5)
                samples.append((time.monotonic() - began, rss_kib(process.pid)))
                if progress:
                    progress(samples[-1])
            for hold, _ in open_tabs:
                hold.set()
            await asyncio.gather(*(task for _, task in open_tabs), return_exceptions=True)
        finally:
            process.terminate()
            await process.wait()
    half = samples[len(samples) // 2:]
    return {
        "connections": connections, "seconds": seconds, "churn_per_second": churn,
        "rss_start_kib": samples[0][1], "rss_end_kib": samples[-1][1], "rss_max_kib": max(r for _, r in samples),
        "slope_second_half_kib_per_min": round(slope(half), 1), "samples": len(samples),
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _wait_listening(port: int) -> None:
    async with asyncio.timeout(20):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                return
            except OSError:
                await asyncio.sleep(0.05)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--churn", type=int, default=50)
    args = parser.parse_args()
    os.environ.setdefault("PYTHONPATH", str(Path(__file__).resolve().parent.parent / "server"))
    result = asyncio.run(soak(args.connections, args.seconds, args.churn, progress=lambda s: print(f"{s[0]:6.1f} s  RSS {s[1]} KiB", file=sys.stderr)))
    print(json.dumps(result, indent=2))
