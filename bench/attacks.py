"""A neighbour's p99 event -> ack while a stranger attacks the node, against quiet: issue 13's
attacks 1 (one costly frame before anything is proven), 2 (values the store cannot encode),
3 (connections that never finish a request), 4 (a template that fails at render) and 5 (visitor
churn).

    python bench/attacks.py [--server DIR] [--pairs 3] [--sessions 20] [--rounds 30]
                            [--only depth,beacon,idle,values,plain,template,churn] [--store URL] [--new-per-ip N]

Starts ``nudge serve`` from ``--server`` (a directory holding the ``nudge`` package; default this
tree's ``server/``, so that an older tree exported with ``git archive`` gives the "before"
figures) pinned to core 0, with at most 1,024 file descriptors (a common default), and runs
``--sessions`` well-behaved sessions on core 1 that send events one after another. Phases
alternate, quiet then attacked, ``--pairs`` times; each reports the p99 (and the slowest) of
every event -> ack in it.

- ``depth``: a text frame of 64 KB before ``hello`` — ``"`` then 32,000 escaped quotes then ten
  ``[`` — on a new connection, then again once the server closed it, one a second.
- ``beacon``: the same body posted to ``/beacon``, one a second.
- ``values`` (item 2): one socket sending, flat out, events whose props hold a lone surrogate and
  a whole number past 64 bits (``identify``-like traits too); with ``--store redis://…`` the
  neighbours' sessions are written behind to Redis beside them.
- ``plain``: the control for ``values``, the same socket flat out with ordinary text and numbers.
- ``template`` (item 4): one socket sending clicks on an empty cart, flat out: the ``average``
  campaign's template divides by ``cart.count`` and fails at render each time.
- ``churn`` (item 5): a new visitor id every connection — hello, one event, close — 20 at a time,
  again at once when the server closes one as it opens (``--new-connections-per-ip``; run the
  bench with ``--new-per-ip 0`` to see churn unbounded).
- ``idle``: 1,100 connections from 127.0.0.2 that send nothing and 100 that trickle a request
  header a byte every 0.5 s, opened at the start of the phase. Besides the neighbours' latency:
  whether a new visitor gets a ``welcome`` and ``/healthz`` answers while they are open (each
  given 10 s), and how many descriptors the server holds 2 s into the attack and 15 s into it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parent.parent
KEY, ORIGIN = "pk_attacks", "http://attacks.test"
SERVER_CORE, CLIENT_CORE = "0", "1"
DESCRIPTORS = 1024
CAMPAIGNS = """
version: 1
campaigns:
  - id: mug
    trigger: {event: add_to_cart}
    message: {kind: toast, title: "Nice {{ event.name }}"}
  - id: average
    trigger: {event: click}
    message: {kind: toast, title: "{{ cart.value / cart.count }} an item"}
"""
ESCAPED_QUOTES = ('"' + '\\"' * 32_000 + "[" * 10).encode()
ATTACKER = "127.0.0.2"


def free_port() -> int:
    import socket

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
                await asyncio.sleep(0.05)  # polling for the server to listen, bounded above


async def session(url: str, timeout: float = 20) -> websockets.ClientConnection:
    # No keepalive pings of the client library: a stalled server would have them close the sessions.
    ws = await websockets.connect(
        url, subprotocols=["nudge.v1.json"], origin=ORIGIN, compression=None, open_timeout=timeout, ping_interval=None,
    )
    await ws.send(json.dumps({"t": "hello", "v": 1, "key": KEY, "visitor": "v_attacks" + os.urandom(10).hex()}))
    async with asyncio.timeout(timeout):
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


def loop_lag(path: Path, offset: int) -> tuple[float | None, int]:
    """The worst p99 of the server loop's lag (ms) in the lagmon lines written since ``offset``,
    and the offset after them."""
    with path.open() as f:
        f.seek(offset)
        text = f.read()
    p99s = [float(line.split()[3]) for line in text.splitlines() if line.startswith("lag ")]
    return (max(p99s) if p99s else None), offset + len(text.encode())


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# --- the attacks: each runs until ``stop`` and reports what it saw -----------------------------

async def depth_frames(port: int, stop: asyncio.Event, report: dict) -> None:
    """The 64 KB frame before hello, on a new connection each second."""
    while not stop.is_set():
        began = time.perf_counter()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            key = base64.b64encode(os.urandom(16)).decode()
            writer.write((
                f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: http://evil.test\r\n\r\n"
            ).encode())
            await reader.readuntil(b"\r\n\r\n")
            header = bytes([0x81, 0x80 | 126]) + len(ESCAPED_QUOTES).to_bytes(2, "big") + b"\0\0\0\0"
            writer.write(header + ESCAPED_QUOTES)  # mask key zero: the payload as is
            with contextlib.suppress(ConnectionError):
                answer = await reader.read(65536)  # the close frame (4400), not waiting for ours
                if answer[:1] == b"\x88" and len(answer) >= 4:
                    report.setdefault("close_codes", set()).add(int.from_bytes(answer[2:4], "big"))
            writer.close()
        except (OSError, asyncio.IncompleteReadError):
            report["failed"] = report.get("failed", 0) + 1
        report.setdefault("answered_after_s", []).append(round(time.perf_counter() - began, 3))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


async def depth_beacons(port: int, stop: asyncio.Event, report: dict) -> None:
    """The same body posted to /beacon each second."""
    def post() -> int:
        request = urllib.request.Request(
            # The page's own key and origin (both in its source): a beacon's body is read only then.
            f"http://127.0.0.1:{port}/beacon?key={KEY}", data=ESCAPED_QUOTES, headers={"Origin": ORIGIN, "Content-Type": "text/plain"},
        )
        try:
            return urllib.request.urlopen(request, timeout=120).status
        except urllib.error.HTTPError as exc:
            return exc.code

    while not stop.is_set():
        began = time.perf_counter()
        status = await asyncio.to_thread(post)
        report.setdefault("statuses", []).append(status)
        report.setdefault("answered_after_s", []).append(round(time.perf_counter() - began, 3))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


async def idle_connections(port: int, stop: asyncio.Event, report: dict, pid: int, url: str) -> None:
    """1,100 silent and 100 trickling connections, a newcomer and /healthz beside them."""
    held: list[asyncio.StreamWriter] = []
    began = time.perf_counter()

    async def open_one() -> asyncio.StreamWriter | None:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, local_addr=(ATTACKER, 0)), 5)
        except (OSError, TimeoutError):
            return None
        held.append(writer)
        return writer

    async def trickle(writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000:
                if stop.is_set() or writer.is_closing():
                    return
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.5)  # the attacker's pace

    for _ in range(11):
        await asyncio.gather(*(open_one() for _ in range(100)))
    tricklers = [w for w in await asyncio.gather(*(open_one() for _ in range(100))) if w is not None]
    trickling = [asyncio.create_task(trickle(w)) for w in tricklers]
    report["opened"] = len(held)
    await asyncio.sleep(max(0.0, began + 2 - time.perf_counter()))  # the attack's clock
    report["server_descriptors_at_2s"] = descriptors(pid)

    def healthz() -> str:
        try:
            return str(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10).status)
        except (OSError, urllib.error.URLError) as exc:
            return f"failed: {exc}"[:60]

    t = time.perf_counter()
    report["healthz"] = await asyncio.to_thread(healthz)
    report["healthz_s"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    try:
        newcomer = await session(url, timeout=10)
        await newcomer.close()
        report["newcomer"] = "welcome"
    except (OSError, TimeoutError, websockets.WebSocketException) as exc:
        report["newcomer"] = f"failed: {type(exc).__name__}"
    report["newcomer_s"] = round(time.perf_counter() - t, 3)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), max(0.0, began + 15 - time.perf_counter()))
    report["server_descriptors_at_15s"] = descriptors(pid)
    await stop.wait()
    for task in trickling:
        task.cancel()
    for writer in held:
        writer.close()


async def hostile_values(url: str, stop: asyncio.Event, report: dict) -> None:
    """Events with a lone surrogate and a whole number past 64 bits, flat out on one socket."""
    ws = await session(url)
    seq, sent = 0, 0
    while not stop.is_set():
        seq += 1
        frame = {"t": "ev", "seq": seq, "name": "identify", "props": {"note": "cut \ud800", "n": 98765432109876543210}}
        if seq % 2:
            frame = {"t": "ev", "seq": seq, "name": "page_view", "props": {"path": "/x", "title": "half \udbff"}}
        await ws.send(json.dumps(frame, ensure_ascii=True))  # the surrogates as \\u escapes, as a page sends them
        while json.loads(await ws.recv()).get("t") != "ack":
            pass
        sent += 1
    report["frames"] = sent
    await ws.close()


async def plain_values(url: str, stop: asyncio.Event, report: dict) -> None:
    """The control for ``values``: the same two events, flat out on one socket, with ordinary
    text and numbers in place of the lone surrogates and the number past 64 bits."""
    ws = await session(url)
    seq, sent = 0, 0
    while not stop.is_set():
        seq += 1
        frame = {"t": "ev", "seq": seq, "name": "identify", "props": {"note": "cut ok", "n": 98765432109}}
        if seq % 2:
            frame = {"t": "ev", "seq": seq, "name": "page_view", "props": {"path": "/x", "title": "half ok"}}
        await ws.send(json.dumps(frame, ensure_ascii=True))
        while json.loads(await ws.recv()).get("t") != "ack":
            pass
        sent += 1
    report["frames"] = sent
    await ws.close()


async def failing_templates(url: str, stop: asyncio.Event, report: dict) -> None:
    """Clicks on an empty cart, flat out: each fires a campaign whose template fails at render."""
    ws = await session(url)
    seq, closed = 0, None
    try:
        while not stop.is_set():
            seq += 1
            await ws.send(json.dumps({"t": "ev", "seq": seq, "name": "click", "props": {"target": "b"}}))
            while json.loads(await ws.recv()).get("t") != "ack":
                pass
    except websockets.ConnectionClosed as exc:
        closed = exc.rcvd.code if exc.rcvd else None
    report["frames"], report["closed"] = seq, closed
    await ws.close()


async def visitor_churn(url: str, stop: asyncio.Event, report: dict) -> None:
    """A new visitor id each connection (hello, one event, close), 20 at a time."""
    count, refused = [0], [0]

    async def one() -> None:
        while not stop.is_set():
            try:
                ws = await session(url)
            except (OSError, EOFError, websockets.WebSocketException):  # past --new-connections-per-ip
                refused[0] += 1
                continue
            await ws.send(json.dumps({"t": "ev", "seq": 1, "name": "page_view", "props": {"path": "/"}}))
            with contextlib.suppress(websockets.ConnectionClosed):
                await ws.recv()
            await ws.close()
            count[0] += 1

    await asyncio.gather(*(one() for _ in range(20)))
    report["visitors"], report["refused"] = count[0], refused[0]


async def phase_with(attack, sockets, seqs, rounds: int, minimum: float) -> tuple[list[float], dict]:
    """Round trips beside ``attack``, for at least ``minimum`` seconds of it."""
    stop, report = asyncio.Event(), {}
    task = asyncio.create_task(attack(stop, report))
    began, times = time.perf_counter(), []
    await asyncio.sleep(0.2)  # the attack's first bytes are on their way
    while True:
        times += await round_trips(sockets, seqs, rounds)
        if time.perf_counter() - began >= minimum:
            break
    stop.set()
    await task
    return sorted(times), report


async def measure(server_dir: Path, kind: str, pairs: int, sessions: int, rounds: int, store: str = "memory://",
                  extra: tuple[str, ...] = ()) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        campaigns = Path(tmp) / "c.yaml"
        campaigns.write_text(CAMPAIGNS)
        port = free_port()
        # The sessions send flat out: the event budget is raised out of the way (the frame budget follows).
        env = {**os.environ, "PYTHONPATH": str(server_dir), "NUDGE_EVENTS_PER_SECOND": "100000", "NUDGE_EVENT_BURST": "100000"}

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (DESCRIPTORS, DESCRIPTORS))

        # Through bench/lagmon.py: each second, how late the server's loop woke (its own cost,
        # apart from the clients' core, which the attacker's client shares with the neighbours).
        lag_file = Path(tmp) / "lag.txt"
        server = subprocess.Popen(
            ["taskset", "-c", SERVER_CORE, sys.executable, str(ROOT / "bench" / "lagmon.py"), "serve", "--port", str(port),
             "--campaigns", str(campaigns), "--site-key", KEY, "--origin", ORIGIN,
             "--max-connections-per-ip", "0", "--log-level", "error", "--store", store, *extra],
            env=env, cwd=tmp, preexec_fn=limit, stderr=lag_file.open("w"),
        )
        url = f"ws://127.0.0.1:{port}/ws"
        attacks = {
            "depth": lambda stop, report: depth_frames(port, stop, report),
            "beacon": lambda stop, report: depth_beacons(port, stop, report),
            "idle": lambda stop, report: idle_connections(port, stop, report, server.pid, url),
            "values": lambda stop, report: hostile_values(url, stop, report),
            "plain": lambda stop, report: plain_values(url, stop, report),
            "template": lambda stop, report: failing_templates(url, stop, report),
            "churn": lambda stop, report: visitor_churn(url, stop, report),
        }
        minimum = 16.0 if kind == "idle" else 3.0
        try:
            await wait_listening(port)
            sockets = [await session(url) for _ in range(sessions)]
            seqs = [0] * sessions
            await round_trips(sockets, seqs, rounds)  # warm up
            out = {"quiet_p99_ms": [], "attack_p99_ms": [], "attack_max_ms": [], "ratio": [], "reports": [],
                   "loop_lag_p99_ms": []}
            for _ in range(pairs):
                quiet = []
                began = time.perf_counter()
                mark = lag_file.stat().st_size
                while not quiet or time.perf_counter() - began < 2.0:
                    quiet += await round_trips(sockets, seqs, rounds)
                quiet.sort()
                quiet_lag, mark = loop_lag(lag_file, mark)
                loud, report = await phase_with(attacks[kind], sockets, seqs, rounds, minimum)
                loud_lag, _ = loop_lag(lag_file, mark)
                out["loop_lag_p99_ms"].append([quiet_lag, loud_lag])  # the worst second's p99, quiet / attacked
                out["quiet_p99_ms"].append(round(p99(quiet) * 1000, 2))
                out["attack_p99_ms"].append(round(p99(loud) * 1000, 2))
                out["attack_max_ms"].append(round(loud[-1] * 1000, 2))
                out["ratio"].append(round(p99(loud) / p99(quiet), 2))
                if "answered_after_s" in report:
                    answered = report.pop("answered_after_s")
                    report["attacks"] = len(answered)
                    report["answered_after_s"] = [min(answered), max(answered)]
                if "close_codes" in report:
                    report["close_codes"] = sorted(report["close_codes"])
                if "statuses" in report:
                    report["statuses"] = sorted(set(report["statuses"]))
                out["reports"].append(report)
            for ws in sockets:
                await ws.close()
        finally:
            server.terminate()
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", type=Path, default=ROOT / "server", help="directory holding the nudge package")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--only", default="depth,beacon,idle,values,plain,template,churn")
    parser.add_argument("--store", default="memory://", help="the server's store URL (redis://… for the write-behind)")
    parser.add_argument("--new-per-ip", help="the server's --new-connections-per-ip (default its own)")
    args = parser.parse_args()
    os.sched_setaffinity(0, {int(CLIENT_CORE)})
    results = {}
    for kind in args.only.split(","):
        extra = ("--new-connections-per-ip", args.new_per_ip) if args.new_per_ip is not None else ()
        results[kind] = asyncio.run(measure(args.server.resolve(), kind, args.pairs, args.sessions, args.rounds, args.store, extra))
        print(kind, json.dumps(results[kind]), file=sys.stderr, flush=True)
    print(json.dumps({"server": str(args.server), "sessions": args.sessions, "results": results}, indent=2))


if __name__ == "__main__":
    main()
