"""Instructions per event of each whole server process, counted by callgrind: the side-by-side
figure a busy machine cannot move.

    bench/.venv/bin/python bench/instructions.py [-c 100] [--events 2000 8000] [--source TREE ...]

Each server (the echo server, then ``nudge serve`` with bench/campaigns.yaml, as bench/run.py
starts them) runs under ``valgrind --tool=callgrind`` while ``nudge loadtest -c C -n N`` plays
the usual visits against it, once for each of the two N; the difference of the two totals over
the difference in events is what one more event costs, with startup, handshakes and shutdown
cancelled out. User space only: the kernel's share of each socket write is not counted (it is the
same per frame for every server). ``--source`` adds Nudge rows from other source trees (e.g. a
``git archive`` of another commit), measured in the same run. ``--store redis://…`` measures
Nudge's memory mode against its Redis mode instead (the ratio is then to memory mode): the
write-behind runs every 0.5 s of wall time, so a slower run spreads one write-behind over more
events; compare rows of one run only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(kind: str, port: int, store: str | None = None) -> list[str]:
    if kind == "echo":
        return [PYTHON, "-m", "uvicorn", "--port", str(port), "--ws", "websockets-sansio", "--log-level", "warning",
                "--no-access-log", "--ws-per-message-deflate", "false", "bench.echo_server:app"]
    return [PYTHON, "-m", "nudge", "serve", "--campaigns", str(ROOT / "bench" / "campaigns.yaml"), "--site-key", "pk_demo",
            "--origin", "*", "--port", str(port), "--ws", "websockets-sansio", *(["--store", store] if store else [])]


def count(kind: str, tree: Path, connections: int, events: int, store: str | None = None) -> tuple[int, int]:
    """(instructions, events acknowledged) of one server process that served ``events``."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(tree / "server"), NUDGE_EVENTS_PER_SECOND="1000000",
               NUDGE_EVENT_BURST="1000000", NUDGE_LOG_LEVEL="warning", NUDGE_MAX_CONNECTIONS_PER_IP="0", NUDGE_GRACE="30")
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/out", *command(kind, port, store)],
            cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        try:
            deadline = time.monotonic() + 300
            while True:  # under valgrind, starting takes a minute or more
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"{kind} did not start: {server.stderr.read()[-500:]}") from None
                    time.sleep(0.5)
            load = subprocess.run(
                [PYTHON, "-m", "nudge", "loadtest", f"ws://127.0.0.1:{port}/ws", "--json", "-q", "-c", str(connections),
                 "-n", str(events), "-d", "900"],
                cwd=tree, env=env, capture_output=True, text=True, timeout=1200,
            )
            report = json.loads(load.stdout)
        finally:
            server.terminate()
            _, log = server.communicate(timeout=300)
    found = re.search(r"Collected : (\d+)", log)
    if not found or report["errors"]:
        raise RuntimeError(f"{kind}: no count ({report['errors']})")
    return int(found.group(1)), report["events_acked"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--connections", type=int, default=100)
    parser.add_argument("--events", type=int, nargs=2, default=(2000, 8000), metavar=("FEW", "MORE"))
    parser.add_argument("--source", type=Path, action="append", default=[], help="another tree's Nudge, in the same run")
    parser.add_argument("--store", help="a Redis URL: rows for Nudge's memory mode, then Redis mode (this tree and each --source)")
    args = parser.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("valgrind is not installed")
    rows = [("echo", "echo", ROOT, None), ("nudge", "nudge", ROOT, None)] + [(f"nudge ({tree})", "nudge", tree, None) for tree in args.source]
    if args.store:
        rows = [("nudge memory", "nudge", ROOT, None), ("nudge redis", "nudge", ROOT, args.store)] + [
            (f"nudge redis ({tree})", "nudge", tree, args.store) for tree in args.source
        ]
    per_event = {}
    for name, kind, tree, store in rows:
        (few, n_few), (more, n_more) = (count(kind, tree, args.connections, n, store) for n in args.events)
        per_event[name] = (more - few) / (n_more - n_few)
        print(f"{name}: {per_event[name]:,.0f} instructions per event", file=sys.stderr, flush=True)
    echo = per_event[rows[0][0]]  # the echo's, or memory mode's with --store
    print(f"C={args.connections}, N={args.events[0]} and {args.events[1]} events")
    for name, value in per_event.items():
        print(f"| {name} | {value:,.0f} | {echo / value:.2f}× |")


if __name__ == "__main__":
    main()
