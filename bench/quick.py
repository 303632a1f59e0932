"""A rough, side-by-side throughput figure: Nudge (memory store, demo campaigns) against a bare
echo server on the same stack, same flags, same load, one after the other in one run.

    .venv/bin/python bench/quick.py [--connections 50] [--seconds 5]

Each server runs in its own process pinned to core 0; the load runs pinned to core 1. Each
connection sends an event, waits for its ack, and repeats (events acked one by one).
The figure that means something is the ratio, not the absolute number.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(kind: str, port: int) -> subprocess.Popen:
    env = dict(os.environ, NUDGE_EVENTS_PER_SECOND="1000000", NUDGE_EVENT_BURST="1000000", NUDGE_LOG_LEVEL="warning")
    common = ["--ws", "websockets-sansio", "--port", str(port)]
    if kind == "echo":
        cmd = [PYTHON, "-m", "uvicorn", "bench.echo_server:app", "--no-access-log", "--log-level", "warning", "--ws-per-message-deflate", "false", *common]
    else:
        cmd = [PYTHON, "-m", "nudge", "serve", "--demo", *common]
    return subprocess.Popen(["taskset", "-c", "0", *cmd], cwd=ROOT, env=env)


async def wait_ready(port: int) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError(f"server on {port} did not start")


async def visitor(url: str, origin: str, n: int, stop_at: float, counts: list[int], latencies: list[float]) -> None:
    async with websockets.connect(url, subprotocols=["nudge.v1.json"], origin=origin, compression=None) as ws:
        await ws.send(json.dumps({"t": "hello", "v": 1, "key": "pk_demo", "visitor": f"v_bench{n:08d}"}))
        await ws.recv()
        seq = 0
        names = ["page_view", "scroll", "click", "scroll", "click"]
        while time.monotonic() < stop_at:
            seq += 1
            name = names[seq % len(names)]
            props = {"path": "/article.html"} if name == "page_view" else {"depth": (seq * 7) % 100} if name == "scroll" else {"target": "x"}
            sent = time.perf_counter()
            await ws.send(json.dumps({"t": "ev", "seq": seq, "name": name, "props": props}))
            while True:
                frame = json.loads(await ws.recv())
                if frame["t"] == "ack":
                    break
            latencies.append(time.perf_counter() - sent)
            counts[n] += 1


async def load(port: int, connections: int, seconds: float) -> tuple[float, float, float]:
    url = f"ws://127.0.0.1:{port}/ws"
    origin = f"http://127.0.0.1:{port}"
    counts = [0] * connections
    latencies: list[float] = []
    stop_at = time.monotonic() + seconds
    started = time.monotonic()
    await asyncio.gather(*(visitor(url, origin, i, stop_at, counts, latencies) for i in range(connections)))
    elapsed = time.monotonic() - started
    latencies.sort()
    return sum(counts) / elapsed, latencies[len(latencies) // 2] * 1000, latencies[int(len(latencies) * 0.99)] * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5)
    args = parser.parse_args()
    os.sched_setaffinity(0, {1})
    results = {}
    for kind in ("echo", "nudge"):
        port = free_port()
        proc = start(kind, port)
        try:
            asyncio.run(wait_ready(port))
            results[kind] = asyncio.run(load(port, args.connections, args.seconds))
        finally:
            proc.terminate()
            proc.wait(10)
    echo = results["echo"][0]
    print(f"{'server':8} {'events/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'vs echo':>8}")
    for kind, (rate, p50, p99) in results.items():
        print(f"{kind:8} {rate:10.0f} {p50:8.2f} {p99:8.2f} {rate / echo:8.2f}")


if __name__ == "__main__":
    main()
