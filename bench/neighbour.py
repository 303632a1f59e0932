"""The tail under a controlled neighbour: a CPU hog taking a fixed share of the server's core,
Nudge and the bare echo server side by side → bench/RESULTS.md.

    .venv/bin/python bench/neighbour.py [--before main] [--rounds 5] [--seconds 15] [--share 0.3]

The load is the benchmark's latency row (bench/run.py): ``nudge loadtest`` with 1,000 browsers and
5,000 events/s between them, pinned to core 1, against one server pinned to core 0 (bench/
campaigns.yaml for Nudge). Beside the server, on core 0 too, runs the neighbour: a process that
spins for ``share`` of every 10 ms and sleeps for the rest, so the server has the core to itself
for the other 70 % whatever else the machine does. Each server is started fresh for each round,
in turn (``echo``, ``nudge``, and, with ``--before``, Nudge from that revision's source tree), and
runs under bench/lagmon.py, which reports how late its event loop wakes from a 5 ms sleep and
every garbage collection's pause (``gc.callbacks``).

Reported per round and as medians over rounds: event→ack p50/p99/p99.9, loop lag p99/p99.9 over
the whole run, the longest collection of each generation (wall time, and the most CPU time one
took: the collector's own work, which preemption does not inflate), the server's CPU; and Nudge's p99 as a
multiple of the echo's in the same round (the target: at most 2×, in every round).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from redis_latency import ENV
from redis_latency import Watched as LagWatched
from run import BENCH, PYTHON, ROOT, Target, load, raise_fd_limit

HOG = """
import sys, time
busy, period = float(sys.argv[1]) * 0.010, 0.010
while True:
    start = time.perf_counter()
    while time.perf_counter() - start < busy:
        pass
    time.sleep(max(0.0, period - (time.perf_counter() - start)))
"""


class Watched(LagWatched):
    """A server under bench/lagmon.py, on core 0 (started and stopped as bench/redis_latency.py's), whose stderr (the lag and gc lines) goes to a file."""

    def __init__(self, name: str, command: list[str], source: Path | None = None) -> None:
        env = dict(ENV)
        if source is not None:
            env["PYTHONPATH"] = str(source / "server")
        Target.__init__(self, name, "nudge", [PYTHON, str(BENCH / "lagmon.py"), *command], "/ws", env)
        self.errors = Path(tempfile.mkstemp(prefix="nudge-neighbour-", suffix=".log")[1])
        self.hung = False

    def watched(self) -> tuple[list[float], dict[int, float], dict[int, float]]:
        """Every lag sample (ms), the longest collection of each generation (ms of wall time), and
        the most CPU time one of them took (ms: the collector's own work)."""
        lags: list[float] = []
        longest = {0: 0.0, 1: 0.0, 2: 0.0}
        work = {0: 0.0, 1: 0.0, 2: 0.0}
        for line in self.errors.read_text(errors="replace").splitlines():
            parts = line.split()
            if parts[:1] == ["lags"]:
                lags += map(float, parts[1:])
            elif parts[:1] == ["gc"]:
                longest[int(parts[1])] = max(longest[int(parts[1])], float(parts[3]))
                work[int(parts[1])] = max(work[int(parts[1])], float(parts[5]))
        return lags, longest, work


def _pct(ordered: list[float], p: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))] if ordered else 0.0


def measure(target: Watched, share: float, connections: int, rate: float, seconds: float, seed: int) -> dict:
    if not target.start():
        raise RuntimeError(f"{target.name} did not start: {target.errors.read_text()[-1500:]}")
    hog = subprocess.Popen(["taskset", "-c", "0", PYTHON, "-c", HOG, str(share)]) if share > 0 else None
    try:
        cpu0 = target.cpu_seconds()
        report = load(target, "-c", str(connections), "-r", str(rate), "-d", str(seconds), "--seed", str(seed))
        cpu = target.cpu_seconds() - cpu0
    finally:
        if hog is not None:
            hog.terminate()
            hog.wait(5)
        target.stop()
    lags, longest, work = target.watched()
    lags.sort()
    return {
        "ack": report["event_to_ack_ms"], "rate": report["events_per_second"], "errors": report["errors"],
        "cpu": cpu / max(report["generator"]["wall_seconds"], 1e-9),
        "lag_p99": _pct(lags, 99), "lag_p999": _pct(lags, 99.9), "gc": longest, "gc_cpu": work,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", help="also run Nudge from this git revision (e.g. main)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--share", type=float, default=0.3, help="of the server's core the neighbour takes")
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=5000)
    args = parser.parse_args()
    raise_fd_limit()
    nudge = ["serve", "--campaigns", str(BENCH / "campaigns.yaml"), "--site-key", "pk_demo", "--origin", "*",
             "--port", "{port}", "--ws", "websockets-sansio"]
    echo = ["uvicorn", "--port", "{port}", "--ws", "websockets-sansio", "--log-level", "warning", "--no-access-log",
            "--ws-per-message-deflate", "false", "bench.echo_server:app"]
    targets = [Watched("echo", echo), Watched("nudge", nudge)]
    workdir = Path(tempfile.mkdtemp(prefix="nudge-neighbour-"))
    if args.before:
        before = workdir / "before"
        before.mkdir()
        archive = subprocess.run(["git", "archive", args.before, "server"], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(before)], input=archive, check=True)
        targets.insert(1, Watched(f"nudge before ({args.before})", nudge, before))
    results: dict[str, list[dict]] = {t.name: [] for t in targets}
    print(f"neighbour: {args.share:.0%} of core 0; {args.connections} browsers, {args.rate:.0f} events/s, {args.seconds:.0f} s a run",
          flush=True)
    for round_ in range(args.rounds):
        for target in targets:
            found = measure(target, args.share, args.connections, args.rate, args.seconds, seed=round_ + 1)
            results[target.name].append(found)
            gcs, cpus = found["gc"], found["gc_cpu"]
            print(
                f"round {round_ + 1} {target.name:22} ack p50 {found['ack']['p50']:6.2f} p99 {found['ack']['p99']:7.2f} "
                f"p99.9 {found['ack']['p99.9']:7.2f}  lag p99 {found['lag_p99']:6.2f} p99.9 {found['lag_p999']:6.2f}  "
                f"gc longest {gcs[0]:.1f}/{gcs[1]:.1f}/{gcs[2]:.1f} ms (CPU {cpus[0]:.1f}/{cpus[1]:.1f}/{cpus[2]:.1f})  {found['rate']:5.0f} ev/s  cpu {found['cpu']:4.0%}"
                f"{'  errors ' + str(found['errors']) if found['errors'] else ''}",
                flush=True,
            )
    print()
    print("| server (ms) | event→ack p50 | p99 | p99.9 | loop lag p99 | p99.9 | longest gc 0 / 1 / 2 | its CPU time | server CPU | p99 per round |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, runs in results.items():
        def med(get, runs=runs) -> float:
            return statistics.median(get(r) for r in runs)

        print(
            f"| {name} | {med(lambda r: r['ack']['p50']):.2f} | **{med(lambda r: r['ack']['p99']):.2f}** | "
            f"{med(lambda r: r['ack']['p99.9']):.2f} | {med(lambda r: r['lag_p99']):.2f} | {med(lambda r: r['lag_p999']):.2f} | "
            f"{med(lambda r: r['gc'][0]):.1f} / {med(lambda r: r['gc'][1]):.1f} / {med(lambda r: r['gc'][2]):.1f} | "
            f"{med(lambda r: r['gc_cpu'][0]):.1f} / {med(lambda r: r['gc_cpu'][1]):.1f} / {med(lambda r: r['gc_cpu'][2]):.1f} | "
            f"{med(lambda r: r['cpu']):.0%} | {', '.join(format(r['ack']['p99'], '.1f') for r in runs)} |"
        )
    echo_p99 = [r["ack"]["p99"] for r in results["echo"]]
    for name, runs in results.items():
        if name != "echo":
            ratios = [r["ack"]["p99"] / max(e, 1e-9) for r, e in zip(runs, echo_p99, strict=True)]
            within = sum(ratio <= 2 for ratio in ratios)
            print(f"\n{name}: p99 ÷ echo's per round {', '.join(f'{x:.2f}' for x in ratios)} — within 2× in {within} of {len(ratios)}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
