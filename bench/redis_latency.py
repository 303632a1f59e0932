"""Latency in Redis mode, before and after a change, side by side in one run → bench/RESULTS-redis.md.

    .venv/bin/python bench/redis_latency.py --before 97f2e19 [--rounds 3] [--seconds 15]

The load is the benchmark's latency row (bench/run.py): ``nudge loadtest`` with 1,000 browsers and
5,000 events/s between them, pinned to core 1, against one server pinned to core 0 with
bench/campaigns.yaml. Three servers take turns, each started fresh for each round:

- ``memory``: this tree, memory store (the figure Redis mode is compared with);
- ``redis before``: the source tree of ``--before`` (``git archive``), Redis store;
- ``redis after``: this tree, Redis store.

The Redis server is one of the benchmark's own (a free port, core 1 with the load, no
persistence), so that neither other users of a shared Redis nor its commands show in the figures.
Each server runs under bench/lagmon.py, which reports how late its event loop wakes from a 5 ms
sleep: the worst stall of the loop in each second. Reported per round and as medians over rounds:
event→ack and trigger→show p50/p99 (from the load generator), the worst loop stall, and the
server's CPU.

``--before`` runs with ``max_connections=512`` in its store URL: with redis-py's default pool (100,
raising "Too many connections" beyond) it cannot take 1,000 handshakes. The after tree runs with
its defaults.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import redis
from run import BENCH, PYTHON, ROOT, Target, free_port, load, raise_fd_limit

ENV = {
    "NUDGE_EVENTS_PER_SECOND": "1000000", "NUDGE_EVENT_BURST": "1000000", "NUDGE_LOG_LEVEL": "warning",
    "NUDGE_GRACE": "30", "NUDGE_MAX_CONNECTIONS_PER_IP": "0",
    # every browser of the load comes from 127.0.0.1: the budgets before a request are lifted
    "NUDGE_MAX_PENDING_CONNECTIONS_PER_IP": "0", "NUDGE_MAX_PENDING_CONNECTIONS": "0", "NUDGE_NEW_CONNECTIONS_PER_IP": "0",
}


class Watched(Target):
    """A server under bench/lagmon.py whose stderr (the lag lines) goes to a file."""

    def __init__(self, name: str, store: str, source: Path | None = None) -> None:
        command = [
            PYTHON, str(BENCH / "lagmon.py"), "serve", "--campaigns", str(BENCH / "campaigns.yaml"),
            "--site-key", "pk_demo", "--origin", "*", "--port", "{port}", "--ws", "websockets-sansio",
            "--store", store,
        ]
        env = dict(ENV)
        if source is not None:
            env["PYTHONPATH"] = str(source / "server")
        super().__init__(name, "nudge", command, "/ws", env)
        self.errors = Path(tempfile.mkstemp(prefix="nudge-lag-", suffix=".log")[1])  # the server's stderr
        self.hung = False  # did not exit within 10 s of SIGTERM

    def start(self) -> bool:
        self.port = free_port()
        command = [part.format(port=self.port) for part in self.command]
        with self.errors.open("wb") as errors:
            self.proc = subprocess.Popen(
                ["taskset", "-c", "0", *command], cwd=ROOT, env=dict(os.environ, **self.env),
                stdout=subprocess.DEVNULL, stderr=errors,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                time.sleep(0.3)
                return True
            except OSError:
                time.sleep(0.1)
        return False

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.hung = True
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def lag_lines(self) -> list[tuple[int, float, float, float]]:
        lines = self.errors.read_text(errors="replace").splitlines()
        return [(int(p[1]), float(p[2]), float(p[3]), float(p[4])) for p in (line.split() for line in lines) if p[:1] == ["lag"]]


def measure(target: Watched, connections: int, rate: float, seconds: float, seed: int) -> dict:
    if not target.start():
        raise RuntimeError(f"{target.name} did not start: {target.errors.read_text()[-1500:]}")
    try:
        cpu0 = target.cpu_seconds()
        report = load(target, "-c", str(connections), "-r", str(rate), "-d", str(seconds), "--seed", str(seed))
        cpu = target.cpu_seconds() - cpu0
    finally:
        target.stop()
    lags = target.lag_lines()
    return {
        "ack": report["event_to_ack_ms"], "show": report["trigger_to_show_ms"], "rate": report["events_per_second"],
        "errors": report["errors"], "cpu": cpu / max(report["generator"]["wall_seconds"], 1e-9),
        "stall_max": max((m for *_, m in lags), default=0.0),
        "stall_p99": statistics.median(p99 for _, _, p99, _ in lags) if lags else 0.0,
        "hung": target.hung,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", required=True, help="the git revision to compare with (e.g. main)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=5000)
    args = parser.parse_args()
    raise_fd_limit()
    workdir = Path(tempfile.mkdtemp(prefix="nudge-redis-latency-"))
    before = workdir / "before"
    before.mkdir()
    archive = subprocess.run(["git", "archive", args.before, "server"], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(before)], input=archive, check=True)
    redis_port = free_port()
    redis_proc = subprocess.Popen(
        ["taskset", "-c", "1", shutil.which("redis-server") or "redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
    )
    store = f"redis://127.0.0.1:{redis_port}/0"
    targets = [
        Watched("memory", "memory://"),
        Watched(f"redis before ({args.before})", store + "?prefix=before:&max_connections=512", before),
        Watched("redis after", store + "?prefix=after:"),
    ]
    results: dict[str, list[dict]] = {t.name: [] for t in targets}
    try:
        probe = redis.Redis(port=redis_port)
        deadline = time.monotonic() + 10
        while True:
            try:
                probe.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        for round_ in range(args.rounds):
            for target in targets:
                found = measure(target, args.connections, args.rate, args.seconds, seed=round_ + 1)
                results[target.name].append(found)
                print(
                    f"round {round_ + 1} {target.name:32} ack p50 {found['ack']['p50']:7.2f} p99 {found['ack']['p99']:8.2f}  "
                    f"show p50 {found['show']['p50']:7.2f} p99 {found['show']['p99']:8.2f}  stall max {found['stall_max']:7.1f} "
                    f"(p99/s {found['stall_p99']:5.1f}) ms  {found['rate']:6.0f} ev/s  cpu {found['cpu']:4.0%}"
                    f"{'  errors ' + str(found['errors']) if found['errors'] else ''}{'  HUNG at stop' if found['hung'] else ''}",
                    flush=True,
                )
    finally:
        redis_proc.terminate()
        redis_proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print("| server | event→ack p50 | p99 | trigger→show p50 | p99 | worst loop stall | server CPU | p99 per round |")
    print("|---|---|---|---|---|---|---|---|")
    for name, runs in results.items():
        def med(key: str, field: str | None = None, runs=runs) -> float:
            return statistics.median(r[key][field] if field else r[key] for r in runs)

        print(
            f"| {name} | {med('ack', 'p50'):.2f} | **{med('ack', 'p99'):.2f}** | {med('show', 'p50'):.2f} | **{med('show', 'p99'):.2f}** "
            f"| {med('stall_max'):.1f} | {med('cpu'):.0%} | {', '.join(format(r['ack']['p99'], '.1f') for r in runs)} |"
        )


if __name__ == "__main__":
    main()
