"""One socket flooding 10,000 frames a second beside 100 well-behaved sessions.

    python bench/flood.py [--pairs 6] [--rounds 30] [--rate 10000]

Starts ``nudge serve`` (real clock, default limits: 100 frames/s per socket with a burst of 400)
pinned to core 0; this process, pinned to core 1, runs 100 sessions that each send events one
after another (event -> ack), in phases that alternate: quiet, then beside a flood, quiet, flood...
The ratio of p99 event -> ack is taken per pair of neighbouring phases (so that whatever else the
shared machine does weighs on both alike) and its median reported.

The flood costs this process almost nothing: a raw socket writes pre-masked ``ping`` frames, a
hundred per write, paced to ``--rate`` frames a second, and reconnects whenever the server closes
it; the pongs it gets back are counted, which is how many frames the server accepted from each
flooding socket (it must stay within the budget: burst + rate x the socket's lifetime).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import websockets
from soak import free_port, wait_listening  # bench/soak.py: loopback helpers

ROOT = Path(__file__).resolve().parent.parent
KEY, ORIGIN = "pk_flood", "http://flood.test"
SERVER_CORE, CLIENT_CORE = "0", "1"
CAMPAIGNS = """
version: 1
campaigns:
  - id: mug
    trigger: {event: add_to_cart}
    message: {kind: toast, title: "Nice {{ event.name }}"}
"""
PING = b'{"t":"ping"}'
# A masked text frame (mask key zero: the payload goes as is), as a browser would send it.
PING_FRAME = bytes([0x81, 0x80 | len(PING)]) + b"\0\0\0\0" + PING


async def session(url: str) -> websockets.ClientConnection:
    ws = await websockets.connect(url, subprotocols=["nudge.v1.json"], origin=ORIGIN, compression=None, open_timeout=20)
    await ws.send(json.dumps({"t": "hello", "v": 1, "key": KEY, "visitor": "v_flood" + os.urandom(10).hex()}))
    assert json.loads(await ws.recv())["t"] == "welcome"
    return ws


async def round_trips(sockets: list, seqs: list[int], rounds: int) -> list[float]:
    times: list[float] = []

    async def one(i: int) -> None:
        ws = sockets[i]
        for _ in range(rounds):
            seqs[i] += 1
            began = time.perf_counter()
            await ws.send(json.dumps({"t": "ev", "seq": seqs[i], "name": "page_view", "props": {"path": "/"}}))
            while True:
                frame = json.loads(await ws.recv())
                if frame["t"] == "ack" and frame["seq"] >= seqs[i]:
                    break
            times.append(time.perf_counter() - began)

    await asyncio.gather(*(one(i) for i in range(len(sockets))))
    return sorted(times)


def p99(times: list[float]) -> float:
    return times[max(0, int(len(times) * 0.99) - 1)]


async def flood_socket(port: int, rate: float, stop: asyncio.Event) -> tuple[int, int, float, int | None]:
    """One flooding connection until the server closes it: (frames written, pongs read, seconds
    it lived, close code)."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return 0, 0, 0.0, None
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: nudge.v1.json\r\n"
        f"Origin: {ORIGIN}\r\n\r\n"
    ).encode())
    try:
        await reader.readuntil(b"\r\n\r\n")
    except (OSError, asyncio.IncompleteReadError):
        writer.close()
        return 0, 0, 0.0, None
    hello = json.dumps({"t": "hello", "v": 1, "key": KEY, "visitor": "v_flooder" + os.urandom(10).hex()}).encode()
    writer.write(bytes([0x81, 0x80 | len(hello)]) + b"\0\0\0\0" + hello)
    pongs, code = 0, None
    closed = asyncio.Event()

    async def read() -> None:
        nonlocal pongs, code
        buf = b""
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                buf += chunk
                while len(buf) >= 2:
                    length = buf[1] & 0x7F
                    head = 2 + (2 if length == 126 else 8 if length == 127 else 0)
                    if length >= 126:
                        if len(buf) < head:
                            break
                        length = int.from_bytes(buf[2:head], "big")
                    if len(buf) < head + length:
                        break
                    opcode, payload, buf = buf[0] & 0x0F, buf[head:head + length], buf[head + length:]
                    if opcode == 0x8:
                        code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005
                        return
                    if b'"pong"' in payload:
                        pongs += 1
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            closed.set()

    reading = asyncio.create_task(read())
    began, written, chunk = time.perf_counter(), 0, PING_FRAME * 100
    try:
        while not closed.is_set() and not stop.is_set():
            writer.write(chunk)
            written += 100
            await asyncio.sleep(max(0.0, began + written / rate - time.perf_counter()))
    except ConnectionError:
        pass
    lived = time.perf_counter() - began
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(closed.wait(), 5)
    reading.cancel()
    writer.close()
    return written, pongs, lived, code


async def flood(port: int, rate: float, stop: asyncio.Event, report: list) -> None:
    while not stop.is_set():
        report.append(await flood_socket(port, rate, stop))


async def measure(pairs: int, rounds: int, rate: float, sessions: int = 100) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        campaigns = Path(tmp) / "c.yaml"
        campaigns.write_text(CAMPAIGNS)
        port = free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT / "server")}
        server = subprocess.Popen(
            ["taskset", "-c", SERVER_CORE, sys.executable, "-m", "nudge", "serve", "--port", str(port),
             "--campaigns", str(campaigns), "--site-key", KEY, "--origin", ORIGIN,
             "--max-connections-per-ip", "0", "--new-connections-per-ip", "0", "--log-level", "warning"],
            env=env, cwd=ROOT,
        )
        try:
            await wait_listening(port)
            url = f"ws://127.0.0.1:{port}/ws"
            sockets = [await session(url) for _ in range(sessions)]
            seqs = [0] * sessions
            await round_trips(sockets, seqs, rounds)  # warm up
            ratios, quiet_p99, loud_p99, floods = [], [], [], []
            all_quiet, all_loud = [], []
            gc.collect()
            gc.freeze()
            gc.disable()  # this process's collections would land in one phase or the other
            for _ in range(pairs):
                quiet_times = await round_trips(sockets, seqs, rounds)
                stop, report = asyncio.Event(), []
                flooding = asyncio.create_task(flood(port, rate, stop, report))
                loud_times = await round_trips(sockets, seqs, rounds)
                stop.set()
                await flooding
                quiet, loud = p99(quiet_times), p99(loud_times)
                all_quiet += quiet_times
                all_loud += loud_times
                quiet_p99.append(quiet)
                loud_p99.append(loud)
                ratios.append(loud / quiet)
                floods += report
            gc.enable()
            for ws in sockets:
                await ws.close()
        finally:
            server.terminate()
            server.wait(20)
    closed = [f for f in floods if f[3] is not None]
    over_budget = [f for f in closed if f[1] > 400 + 100 * f[2] + 1]
    return {
        "sessions": sessions, "rounds_per_phase": rounds, "pairs": pairs, "flood_rate": rate,
        "p99_quiet_ms": [round(t * 1000, 2) for t in quiet_p99],
        "p99_flood_ms": [round(t * 1000, 2) for t in loud_p99],
        "ratios": [round(r, 3) for r in ratios], "median_ratio": round(statistics.median(ratios), 3),
        "pooled_p99_ms": {"quiet": round(p99(sorted(all_quiet)) * 1000, 2), "flood": round(p99(sorted(all_loud)) * 1000, 2)},
        "pooled_ratio": round(p99(sorted(all_loud)) / p99(sorted(all_quiet)), 3),
        "flood_sockets": len(floods), "closed_by_server": len(closed),
        "close_codes": sorted({f[3] for f in closed}),
        "accepted_per_socket": [min(f[1] for f in floods), max(f[1] for f in floods)],
        "written_per_socket": [min(f[0] for f in floods), max(f[0] for f in floods)],
        "accepted_over_budget": len(over_budget),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--rate", type=float, default=10_000)
    args = parser.parse_args()
    os.sched_setaffinity(0, {int(CLIENT_CORE)})
    print(json.dumps(asyncio.run(measure(args.pairs, args.rounds, args.rate)), indent=2))
