"""The socket layers side by side (issue 20): today's uvicorn layer, ``--ws-server picows`` and the
bare uvicorn + starlette echo, in alternating rounds of one run → a table for bench/RESULTS.md.

    .venv/bin/python bench/layers.py [--rounds 4] [--seconds 5] [--idle 1000,5000] [--json out.json]

Each measurement starts a fresh server pinned to core 0; ``nudge loadtest`` runs pinned to core 1
(bench/run.py's helpers). The order of the three servers alternates from round to round (a
neighbour's burst then falls on each in turn); the claim is the ratio of each round's figures,
per core (events/s divided by the CPU the server process used). Memory: a fresh server, its
RSS, then N idle browsers (each sent a page view and a scroll) held open; the slope between two
sizes is the cost of one more connection, which projects 50,000.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.run import memory, raise_fd_limit, targets, throughput  # noqa: E402


def layer_targets(ws: str) -> list:
    found = {t.name: t for t in targets(None, ws)}
    echo, nudge = found["echo"], found["nudge-memory"]
    # every simulated browser comes from 127.0.0.1: admission's per-address limit lifted, as a load test does
    nudge.env = {**nudge.env, "NUDGE_MAX_PENDING_CONNECTIONS_PER_IP": "0"}
    picows = type(nudge)("nudge-picows", nudge.dialect, [*nudge.command, "--ws-server", "picows"], nudge.path, nudge.env)
    uvicorn = type(nudge)("nudge-uvicorn", nudge.dialect, [*nudge.command, "--ws-server", "uvicorn"], nudge.path, nudge.env)
    return [echo, uvicorn, picows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--idle", default="1000,5000", help="idle connection counts for the memory slope")
    parser.add_argument("--memory-rounds", type=int, default=2)
    parser.add_argument("--procs", type=int, default=1, help="load generator processes for the idle connections "
                        "(2 past 20,000 descriptors: one process's limit here)")
    parser.add_argument("--only", action="append", help="these servers only (echo, nudge-uvicorn, nudge-picows)")
    parser.add_argument("--ws", default="websockets-sansio")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    raise_fd_limit()
    servers = [t for t in layer_targets(args.ws) if not args.only or t.name in args.only]
    rounds: list[dict] = []
    for n in range(args.rounds):
        order = servers if n % 2 == 0 else servers[::-1]
        row = {}
        for target in order:
            if not target.start():
                raise SystemExit(f"{target.name} did not start: {target.log.decode(errors='replace')[-500:]}")
            try:
                r = throughput(target, args.connections, args.seconds, 1)
            finally:
                target.stop()
            r["per_core"] = r["events_per_second"] / max(r["server_cpu_percent"] / 100, 1e-9)
            row[target.name] = r
            print(f"round {n + 1} {target.name}: {r['events_per_second']:,.0f} ev/s, server {r['server_cpu_percent']}% "
                  f"→ {r['per_core']:,.0f}/core, generator {r['generator_cpu_percent']}%, errors {r['errors'] or 'none'}",
                  file=sys.stderr, flush=True)
        rounds.append(row)
    sizes = [int(s) for s in args.idle.split(",")]
    mem: dict[str, list] = {t.name: [] for t in servers}
    for n in range(args.memory_rounds):
        for target in servers if n % 2 == 0 else servers[::-1]:
            figures = {size: memory(target, size, procs=args.procs) for size in sizes}
            mem[target.name].append(figures)
            print(f"memory {target.name}: " + ", ".join(
                f"{s}: {f.get('bytes_per_connection', 0) / 1024:.1f} KB/conn, {f.get('connects_per_second', 0):,.0f} conns/s, "
                f"errors {f.get('errors') or 'none'}" for s, f in figures.items()), file=sys.stderr, flush=True)
    result = {"rounds": rounds, "memory": mem, "args": vars(args) | {"json": str(args.json)}}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    print(report(result, sizes))


def report(result: dict, sizes: list[int]) -> str:
    lines = [] if not result["rounds"] else ["| round | echo per core | nudge-uvicorn per core | nudge-picows per core | picows ÷ uvicorn | picows ÷ echo | uvicorn ÷ echo |",
             "|---|---|---|---|---|---|---|"]
    ratios = []
    for n, row in enumerate(result["rounds"], 1):
        e, u, p = (row[k]["per_core"] for k in ("echo", "nudge-uvicorn", "nudge-picows"))
        ratios.append((p / u, p / e, u / e))
        lines.append(f"| {n} | {e:,.0f} | {u:,.0f} | {p:,.0f} | {p / u:.2f}× | {p / e:.2f}× | {u / e:.2f}× |")
    if ratios:
        med = [statistics.median(r[i] for r in ratios) for i in range(3)]
        lines.append(f"| median | | | | **{med[0]:.2f}×** | {med[1]:.2f}× | {med[2]:.2f}× |")
    lines += ["", "| server | " + " | ".join(f"KB/conn at {s:,}" for s in sizes) + " | slope KB/conn | 50,000 projected | conns/s opened |",
              "|---|" + "---|" * (len(sizes) + 3)]
    for name, runs in result["memory"].items():
        if not runs:
            continue
        per = [[run[s]["bytes_per_connection"] / 1024 for run in runs if "bytes_per_connection" in run[s]] for s in sizes]
        slope = statistics.median(
            ((run[sizes[-1]]["rss_peak"] - run[sizes[0]]["rss_peak"]) / (run[sizes[-1]]["connected"] - run[sizes[0]]["connected"])) / 1024
            for run in runs
        )
        base = statistics.median(run[sizes[0]]["rss_peak"] - run[sizes[0]]["connected"] * slope * 1024 for run in runs)
        projected = (base + 50000 * slope * 1024) / 2**20
        rate = statistics.median(run[s]["connects_per_second"] for run in runs for s in sizes)
        lines.append(f"| {name} | " + " | ".join(f"{statistics.median(p):.1f}" for p in per)
                     + f" | {slope:.1f} | {projected:,.0f} MiB | {rate:,.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
