"""Events/s with the Redis store as a ratio of the memory store: same server, same load, one run.

    .venv/bin/python bench/redis_ratio.py [--connections 50] [--seconds 5]

The load is bench/quick.py's (each connection sends an event of the demo's kinds, waits for its
ack, repeats). For the Redis run this starts a redis-server of its own on a free port, so that
its command counter shows how many Redis commands the whole run cost per event: the hot path
makes none (sessions are written behind in batches; only shows, and timers set or cancelled,
touch Redis).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import tempfile
import time

import redis
from quick import PYTHON, ROOT, free_port, load, wait_ready


def start_nudge(port: int, store: str) -> subprocess.Popen:
    env = dict(os.environ, NUDGE_EVENTS_PER_SECOND="1000000", NUDGE_EVENT_BURST="1000000", NUDGE_LOG_LEVEL="warning")
    cmd = [PYTHON, "-m", "nudge", "serve", "--demo", "--ws", "websockets-sansio", "--port", str(port), "--store", store]
    return subprocess.Popen(["taskset", "-c", "0", *cmd], cwd=ROOT, env=env)


def commands(client: redis.Redis) -> int:
    return int(client.info("stats")["total_commands_processed"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="memory and Redis runs, alternated")
    args = parser.parse_args()
    os.sched_setaffinity(0, {1})
    redis_port = free_port()
    workdir = tempfile.mkdtemp(prefix="nudge-bench-")
    redis_proc = subprocess.Popen(
        ["taskset", "-c", "1", shutil.which("redis-server") or "redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL,
    )
    results: list[tuple[str, tuple[float, float, float, float]]] = []
    runs = [("memory", "memory://"), ("redis", f"redis://127.0.0.1:{redis_port}/0")] * args.rounds
    try:
        asyncio.run(wait_ready(redis_port))
        probe = redis.Redis(port=redis_port)
        for kind, store in runs:
            port = free_port()
            proc = start_nudge(port, store)
            try:
                asyncio.run(wait_ready(port))
                before = commands(probe)
                started = time.monotonic()
                rate, p50, p99 = asyncio.run(load(port, args.connections, args.seconds))
                events = rate * (time.monotonic() - started)
                used = commands(probe) - before - 2  # less the two INFO calls
                results.append((kind, (rate, p50, p99, used / events if kind == "redis" else 0.0)))
            finally:
                proc.terminate()
                proc.wait(10)
    finally:
        redis_proc.terminate()
        redis_proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"{'round':5} {'store':8} {'events/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'vs memory':>10} {'Redis cmds/event':>17}")
    ratios = []
    for i in range(0, len(results), 2):
        memory = results[i][1][0]
        for kind, (rate, p50, p99, per_event) in results[i:i + 2]:
            print(f"{i // 2 + 1:5} {kind:8} {rate:10.0f} {p50:8.2f} {p99:8.2f} {rate / memory:10.2f} {per_event:17.3f}")
        ratios.append(results[i + 1][1][0] / memory)
    print(f"Redis / memory events/s, median of {len(ratios)} rounds: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
