"""The side-by-side benchmark: one workload, every server, one machine, one run → bench/RESULTS.md.

    bench/setup                       # once: bench/.venv (python-socketio, py-spy) and Node's socket.io
    bench/.venv/bin/python bench/run.py [--quick] [--repeat 3] [--store redis://127.0.0.1:6379/0]

Servers, each started fresh, pinned to core 0 (``taskset``); the load generator
(``nudge.loadtest``, the code behind ``nudge loadtest``) runs as its own process pinned to core 1:

- ``nudge-memory``: ``nudge serve`` with bench/campaigns.yaml (50 campaigns; one pushes a banner
  when a visitor scrolls past 50 % of an article), memory store;
- ``nudge-redis``: the same with ``--store URL`` (reported "not available" when this build of
  Nudge has no Redis store or the server does not answer);
- ``echo``: bare uvicorn + starlette + websockets, acking every frame and nothing else — the ceiling;
- ``python-socketio`` and ``node-socketio``: the same job written on those (bench/peers/).

Measured for each: events/s flat out at C=100 and C=1,000 (each browser waits for the ack of
its event before sending the next), event→ack and trigger→show latency at a fixed 5,000 events/s
over 1,000 connections, server RSS per idle connection at 1k and 10k (each browser sent a page
view and a scroll, so its session holds state), and connections opened per second. Every figure
is also given as a ratio to the echo server measured in the same run: the machine is shared, so
absolute numbers move from run to run and the ratios are the claim.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
PYTHON = sys.executable
SERVER_CORE, LOAD_CORE = "0", "1"
FD_LIMIT = 65536
BATCH = 8  # events per evs frame in the batched rows
PREFIX = f"nudgebench:{os.getpid()}:"  # Redis keys of this run (never flushed: shared server)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raise_fd_limit() -> None:
    """Children inherit it: 10k-20k sockets need more than the usual 1,024 (or 20,000)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for want in (FD_LIMIT, hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard)))
            return
        except (ValueError, OSError):
            continue


# --- the servers ------------------------------------------------------------------------------

class Target:
    def __init__(self, name: str, dialect: str, command: list[str], path: str, env: dict | None = None,
                 load_args: tuple[str, ...] = ()) -> None:
        self.name = name
        self.load_args = load_args  # added to every load run (e.g. --batch)
        self.dialect = dialect  # what the load generator speaks to it
        self.command = command  # with {port}
        self.path = path
        self.env = env or {}
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.log = b""

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{self.path}"

    def start(self) -> bool:
        self.port = free_port()
        command = [part.format(port=self.port) for part in self.command]
        env = dict(os.environ, **self.env)
        self.proc = subprocess.Popen(
            ["taskset", "-c", SERVER_CORE, *command], cwd=ROOT, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log = self.proc.stderr.read()[-2000:]
                return False
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                time.sleep(0.3)  # let the app finish its startup after the socket is bound
                return True
            except OSError:
                time.sleep(0.1)
        self.stop()
        return False

    def rss(self) -> int:
        """Resident set of the server process, bytes (its children included, for npm-style wrappers)."""
        total = 0
        for pid in [self.proc.pid, *_children(self.proc.pid)]:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            except OSError:
                pass
        return total

    def cpu_seconds(self) -> float:
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def targets(store_url: str | None, ws: str, redis_source: Path | None = None) -> list[Target]:
    nudge_env = {
        "NUDGE_EVENTS_PER_SECOND": "1000000", "NUDGE_EVENT_BURST": "1000000",
        "NUDGE_LOG_LEVEL": "warning", "NUDGE_GRACE": "30",
        "NUDGE_MAX_CONNECTIONS_PER_IP": "0",  # every simulated browser comes from 127.0.0.1
        "NUDGE_MAX_PENDING_CONNECTIONS_PER_IP": "0",  # (admission's limit, as a load test lifts it)
    }
    nudge = [
        PYTHON, "-m", "nudge", "serve", "--campaigns", str(BENCH / "campaigns.yaml"), "--site-key", "pk_demo",
        "--origin", "*", "--port", "{port}", "--ws", ws,
    ]
    uvicorn = [PYTHON, "-m", "uvicorn", "--port", "{port}", "--ws", ws, "--log-level", "warning", "--no-access-log",
               "--ws-per-message-deflate", "false"]
    found = [
        Target("echo", "nudge", [*uvicorn, "bench.echo_server:app"], "/ws"),
        Target("nudge-memory", "nudge", nudge, "/ws", nudge_env),
        Target(f"nudge-memory, evs ×{BATCH}", "nudge", nudge, "/ws", nudge_env, ("--batch", str(BATCH))),
        # /ws on uvicorn's ASGI layer, the default until picows (--ws-server auto) replaced it
        Target("nudge-memory, --ws-server uvicorn", "nudge", [*nudge, "--ws-server", "uvicorn"], "/ws", nudge_env),
    ]
    if store_url:
        if redis_source is not None:
            # Nudge from another source tree (a branch not merged yet): its memory mode too, so
            # that Redis is compared with memory on the same code.
            other = {**nudge_env, "PYTHONPATH": str(redis_source / "server")}
            found.append(Target(f"nudge-memory ({redis_source.name})", "nudge", nudge, "/ws", other))
            found.append(Target(f"nudge-redis ({redis_source.name})", "nudge", [*nudge, "--store", store_url], "/ws", other))
        else:
            found.append(Target("nudge-redis", "nudge", [*nudge, "--store", store_url], "/ws", nudge_env))
    found.append(Target("python-socketio", "socketio", [*uvicorn, "bench.peers.sio_server:app"], "/"))
    if shutil.which("node") and (BENCH / "peers" / "node_modules" / "socket.io").exists():
        found.append(Target("node-socketio", "socketio", ["node", str(BENCH / "peers" / "socketio_server.js"), "{port}"], "/"))
    return found


# --- the load -------------------------------------------------------------------------------

def load(target: Target, *args: str, timeout: float = 120) -> dict:
    """Run the load generator on its own core against ``target``; its JSON report."""
    command = [
        "taskset", "-c", LOAD_CORE, PYTHON, "-m", "nudge", "loadtest", target.url, "--json", "-q",
        "--dialect", target.dialect, *target.load_args, *args,
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, timeout=timeout, text=True)
    if done.returncode not in (0, 1) or not done.stdout.strip():
        raise RuntimeError(f"loadtest failed: {done.stderr[-1500:]}")
    return json.loads(done.stdout)


def throughput(target: Target, connections: int, seconds: float, repeat: int) -> dict:
    runs = []
    for _ in range(repeat):
        cpu0 = target.cpu_seconds()
        report = load(target, "-c", str(connections), "-d", str(seconds))
        report["server_cpu_seconds"] = target.cpu_seconds() - cpu0
        runs.append(report)
    rates = [r["events_per_second"] for r in runs]
    best = sorted(runs, key=lambda r: r["events_per_second"])[len(runs) // 2]
    return {
        "events_per_second": statistics.median(rates), "runs": rates,
        "server_cpu_percent": round(100 * best["server_cpu_seconds"] / max(best["generator"]["wall_seconds"], 1e-9), 1),
        "generator_cpu_percent": best["generator"]["cpu_percent_of_one_core"],
        "errors": best["errors"], "event_to_ack_ms": best["event_to_ack_ms"],
    }


def latency(target: Target, connections: int, rate: float, seconds: float, repeat: int) -> dict:
    """Latency at a fixed rate; the run with the median p99 is kept (a neighbour's burst on the
    shared machine moves a p99 by 100x), every run's p99 is recorded."""
    runs = [load(target, "-c", str(connections), "-r", str(rate), "-d", str(seconds), "--seed", str(i + 1)) for i in range(repeat)]
    runs.sort(key=lambda r: r["event_to_ack_ms"]["p99"])
    report = runs[len(runs) // 2]
    return {
        "events_per_second": report["events_per_second"], "event_to_ack_ms": report["event_to_ack_ms"],
        "trigger_to_show_ms": report["trigger_to_show_ms"], "errors": report["errors"],
        "generator_cpu_percent": report["generator"]["cpu_percent_of_one_core"],
        "p99_runs": [r["event_to_ack_ms"]["p99"] for r in runs],
    }


def fresh(target: Target, measure, *args):
    """``measure(target, *args)`` on a server of its own: no sessions left over from the previous
    measurement (their grace periods would end during this one)."""
    if not target.start():
        raise RuntimeError("did not start")
    try:
        return measure(target, *args)
    finally:
        target.stop()


def memory(target: Target, connections: int, procs: int = 1) -> dict:
    """Server RSS per idle connection: a fresh server, its RSS, then ``connections`` idle
    browsers held open, the peak RSS while they are."""
    if not target.start():
        return {"error": "did not start"}
    try:
        time.sleep(0.5)
        before = target.rss()
        command = [
            "taskset", "-c", LOAD_CORE, PYTHON, "-m", "nudge", "loadtest", target.url, "--json", "-q", "--idle",
            "--dialect", target.dialect, "-c", str(connections), "-d", "3", "--open-concurrency", "256",
            "--procs", str(procs),
        ]
        proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        peak = before
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            peak = max(peak, target.rss())
            time.sleep(0.1)
        out, err = proc.communicate(timeout=30)
        report = json.loads(out) if out.strip() else {"connected": 0, "connects_per_second": 0, "errors": {"loadtest": err[-300:]}}
        connected = report["connected"] or 1
        return {
            "connections": connections, "connected": report["connected"], "rss_before": before, "rss_peak": peak,
            "bytes_per_connection": round((peak - before) / connected), "connects_per_second": report["connects_per_second"],
            "errors": report["errors"],
        }
    finally:
        target.stop()


def forget_keys(store_url: str) -> None:
    """Delete this run's keys (and only those: the Redis server is shared, never flushed)."""
    try:
        import redis
    except ImportError:
        return
    url, _, query = store_url.partition("?")
    client = redis.Redis.from_url(url)
    try:
        batch = list(client.scan_iter(match=PREFIX + "*", count=1000))
        for start in range(0, len(batch), 500):
            client.delete(*batch[start:start + 500])
    except redis.RedisError as exc:
        print(f"could not delete this run's Redis keys ({PREFIX}*): {exc}", file=sys.stderr)
    finally:
        client.close()


# --- the report -------------------------------------------------------------------------------

def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for name in ("nudge-server", "uvicorn", "starlette", "websockets", "uvloop", "httptools", "python-socketio", "python-engineio", "wsproto", "redis"):
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    if shutil.which("redis-server"):
        found["redis-server"] = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2]
    if shutil.which("node"):
        found["node"] = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
        package = BENCH / "peers" / "node_modules" / "socket.io" / "package.json"
        if package.exists():
            found["socket.io"] = json.loads(package.read_text())["version"]
    return found


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    return f"{os.cpu_count()} × {model}, {mem} MiB RAM, Linux {platform.release()}"


def _ratio(value: float | None, base: float | None) -> str:
    if not value or not base:
        return ""
    return f" ({value / base:.2f}×)"


def json_path(out: Path) -> Path:
    """Where the raw figures go beside the report: bench/RESULTS.md -> bench/results.json."""
    return out.with_name(out.stem.lower() + ".json")


def _per_core(figures: dict | None) -> float:
    if not figures or not figures.get("server_cpu_percent"):
        return 0.0
    return figures["events_per_second"] / (figures["server_cpu_percent"] / 100)


def write_results(results: dict, path: Path) -> None:
    echo = results["targets"].get("echo", {})
    lines = [
        "# Benchmark results",
        "",
        f"Run {results['when']} by `bench/run.py {' '.join(results['argv'])}` on {results['machine']}.",
        f"Servers on core {SERVER_CORE}, the load generator on core {LOAD_CORE} (`taskset`); loopback; JSON frames.",
        "**The machine is shared** (other engineers were running test suites during this run): absolute",
        "figures move between runs; the ratios to the echo server, measured minutes apart in the same run, are",
        f"the claim. Throughput is the median of {results['repeat']} runs of {results['seconds']:g} s each; latency is the",
        f"run with the median p99 of {results['repeat']} runs of {results.get('latency_seconds', 8):g} s at 5,000 events/s (every run's p99 below the",
        "table). Each measurement starts a fresh server.",
        "",
        "| server | events/s C=100 | events/s C=1,000 | ack p50 / p99 ms @ 5k/s, 1k conns | show p50 / p99 ms | RSS/conn 1k | RSS/conn 10k | conns/s opened |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["targets"].items():
        if "unavailable" in r:
            lines.append(f"| {name} | not available: {r['unavailable']} | | | | | | |")
            continue

        def tp(key: str, r=r) -> str:
            value = r.get(key, {}).get("events_per_second")
            return f"{value:,.0f}{_ratio(value, echo.get(key, {}).get('events_per_second'))}" if value else "–"

        lat = r.get("latency", {})
        ack, show = lat.get("event_to_ack_ms", {}), lat.get("trigger_to_show_ms", {})
        ack_s = f"{ack['p50']:.2f} / {ack['p99']:.2f}" if ack else "–"
        show_s = f"{show['p50']:.2f} / {show['p99']:.2f}" if show.get("count") else "–"

        def mem(key: str, r=r) -> str:
            m = r.get(key, {})
            value = m.get("bytes_per_connection")
            if value is None:
                return "–"
            return f"{value / 1024:.1f} KB{_ratio(value, echo.get(key, {}).get('bytes_per_connection'))}"

        conns = r.get("mem_10k", {}).get("connects_per_second")
        conns_s = f"{conns:,.0f}{_ratio(conns, echo.get('mem_10k', {}).get('connects_per_second'))}" if conns else "–"
        lines.append(f"| {name} | {tp('c100')} | {tp('c1000')} | {ack_s} | {show_s} | {mem('mem_1k')} | {mem('mem_10k')} | {conns_s} |")
    lines += ["", "Ratios in brackets are to the echo server in the same column. Event→ack p99 of each latency run, ms:", ""]
    for name, r in results["targets"].items():
        runs = r.get("latency", {}).get("p99_runs")
        if runs:
            lines.append(f"- {name}: {', '.join(f'{x:.2f}' for x in runs)}")
    lines.append("")
    big = results.get("nudge_20k")
    if big:
        lines += [
            f"Nudge (memory store), {big['connected']:,} idle connections in one process: "
            f"{big['rss_peak'] / 2**20:.0f} MiB RSS, {big['bytes_per_connection'] / 1024:.1f} KB per connection "
            f"(session state included), opened at {big['connects_per_second']:,.0f}/s; errors: {big['errors'] or 'none'}.",
            "",
        ]
    lines += ["## Per server core, and the generator's share", "",
              "A server that did not use its whole core (waiting on round trips, or on the generator) is compared",
              "here by events/s divided by the CPU it used: events per second per core.", "",
              "| server | C=100 server CPU | events/s per core C=100 | C=1,000 server CPU | events/s per core C=1,000 | generator CPU C=100 / C=1,000 | errors |",
              "|---|---|---|---|---|---|---|"]
    echo_core = {k: _per_core(echo.get(k)) for k in ("c100", "c1000")}
    for name, r in results["targets"].items():
        if "c100" in r:
            errors = {**r["c100"]["errors"], **r.get("c1000", {}).get("errors", {})}
            c100, c1000 = r["c100"], r.get("c1000", {})
            lines.append(
                f"| {name} | {c100['server_cpu_percent']:.0f}% | {_per_core(c100):,.0f}{_ratio(_per_core(c100), echo_core['c100'])} | "
                f"{c1000.get('server_cpu_percent', 0):.0f}% | {_per_core(c1000):,.0f}{_ratio(_per_core(c1000), echo_core['c1000'])} | "
                f"{c100['generator_cpu_percent']:.0f}% / {c1000.get('generator_cpu_percent', 0):.0f}% | {errors or 'none'} |"
            )
    ws = results.get("ws_implementations")
    if ws:
        lines += ["", "## uvicorn's WebSocket implementations, Nudge at C=100", "",
                  "| `--ws` | events/s | events/s per core |", "|---|---|---|"]
        base = _per_core(ws.get("websockets-sansio"))
        for name, figures in ws.items():
            if "events_per_second" in figures:
                lines.append(f"| {name} | {figures['events_per_second']:,.0f} | {_per_core(figures):,.0f}{_ratio(_per_core(figures), base)} |")
    lines += ["", "## Versions", ""]
    lines += [f"- {k} {v}" for k, v in results["versions"].items()]
    lines += ["", f"Raw figures: `{json_path(path).name}` beside this file.", ""]
    notes = BENCH / "NOTES.md"
    if notes.exists():
        lines += [notes.read_text()]
    path.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default=None, help="a Redis store URL for nudge-redis (e.g. redis://127.0.0.1:6379/0); "
                        "a key prefix of this run's own is added, and its keys are deleted at the end")
    parser.add_argument("--redis-source", type=Path, help="run the Redis rows from this source tree (e.g. `git archive redis`)")
    parser.add_argument("--seconds", type=float, default=5.0, help="each throughput run (default 5)")
    parser.add_argument("--repeat", type=int, default=3, help="throughput runs per figure; the median is kept (default 3)")
    parser.add_argument("--quick", action="store_true", help="2 s runs, no repeats, no 10k/20k: a smoke of the script")
    parser.add_argument("--only", action="append", help="run only these targets (repeatable)")
    parser.add_argument("--throughput-only", action="store_true",
                        help="only the events/s rows (C=100 and C=1,000): no latency, memory, --ws or 20k runs")
    parser.add_argument("--ws", default="websockets-sansio", help="uvicorn WebSocket implementation for the Python servers")
    parser.add_argument("--out", type=Path, default=BENCH / "RESULTS.md")
    parser.add_argument("--report-only", action="store_true", help="rewrite RESULTS.md from bench/results.json (after editing NOTES.md)")
    args = parser.parse_args()
    if args.report_only:
        write_results(json.loads(json_path(args.out).read_text()), args.out)
        return
    raise_fd_limit()
    if args.quick:
        args.seconds, args.repeat = 2.0, 1
    results = {
        "when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), "argv": sys.argv[1:], "machine": machine(),
        "versions": versions(), "seconds": args.seconds, "repeat": args.repeat, "targets": {},
        "latency_seconds": 3.0 if args.quick else 8.0,
    }
    store = args.store
    if store and "prefix" not in store:
        store += ("&" if "?" in store else "?") + f"prefix={PREFIX}"
    for target in targets(store, args.ws, args.redis_source):
        if args.only and target.name not in args.only:
            continue
        print(f"== {target.name}", file=sys.stderr, flush=True)
        if not target.start():
            reason = (target.log.decode(errors="replace").strip().splitlines() or ["did not start"])[-1]
            results["targets"][target.name] = {"unavailable": reason[:200]}
            print(f"   not available: {reason}", file=sys.stderr)
            continue
        target.stop()
        r = results["targets"][target.name] = {}
        try:
            r["c100"] = fresh(target, throughput, 100, args.seconds, args.repeat)
            r["c1000"] = fresh(target, throughput, 1000, args.seconds, args.repeat)
            if not args.throughput_only:
                r["latency"] = fresh(target, latency, 1000, 5000, results["latency_seconds"], args.repeat)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            r["error"] = str(exc)[-500:]
        if not target.load_args and not args.throughput_only:  # the same server as its unbatched row: memory is measured there
            r["mem_1k"] = memory(target, 1000)
            if not args.quick:
                r["mem_10k"] = memory(target, 10000)
        print(f"   {json.dumps({k: v.get('events_per_second') or v.get('bytes_per_connection') for k, v in r.items() if isinstance(v, dict)})}", file=sys.stderr)
    if not args.quick and not args.throughput_only and (not args.only or "nudge-memory" in args.only):
        results["ws_implementations"] = {}
        for ws in ("websockets-sansio", "websockets", "wsproto"):
            nudge = next(t for t in targets(None, ws) if t.name == "nudge-memory, --ws-server uvicorn")
            try:
                results["ws_implementations"][ws] = fresh(nudge, throughput, 100, args.seconds, 1)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                results["ws_implementations"][ws] = {"error": str(exc)[-300:]}
        nudge = next(t for t in targets(None, args.ws) if t.name == "nudge-memory")
        # Two generator processes (on the same core): 20,000 client sockets exceed one process's
        # descriptor limit here. The server's own limit is the container's hard 20,000.
        results["nudge_20k"] = memory(nudge, 20000, procs=2)
    if store:
        forget_keys(store)
    json_path(args.out).write_text(json.dumps(results, indent=2))
    write_results(results, args.out)
    print(args.out.read_text())


if __name__ == "__main__":
    main()
