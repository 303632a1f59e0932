"""Replay speed: a million events against 50 campaigns, on one core.

    .venv/bin/python bench/replay_bench.py [--visitors 35000]

Makes a synthetic log with bench/make_log.py (cached in /tmp), then times `replay.run` over it:
reading and parsing the gzip JSON Lines, and the engine. Target: ≥ 1,000,000 events in under a
minute on one core.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "server"))

from nudge.calibrate import recording, replay  # noqa: E402
from nudge.rules.campaigns import load_text  # noqa: E402


def fifty_campaigns() -> str:
    demo = (ROOT / "server" / "nudge" / "demo" / "campaigns.yaml").read_text()
    extra = []
    for i in range(45):
        kind = i % 3
        if kind == 0:
            extra.append(f"  - {{id: scroll-{i}, trigger: {{path: /p{i}/*, scroll: {10 + i}}}, caps: {{per_session: 1}}, message: {{kind: toast, title: s}}}}")
        elif kind == 1:
            extra.append(f"  - {{id: custom-{i}, trigger: {{event: custom_{i}}}, message: {{kind: toast, title: c}}}}")
        else:
            extra.append(f"  - {{id: price-{i}, trigger: {{event: add_to_cart, where: {{price: {{gte: {100 + i}}}}}}}, caps: {{per_day: 1}}, message: {{kind: toast, title: p}}}}")
    return demo.rstrip() + "\n" + "\n".join(extra) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--visitors", type=int, default=38000)
    args = parser.parse_args()
    path = Path(f"/tmp/nudge-bench-log-{args.visitors}.jsonl.gz")
    if not path.exists():
        subprocess.run([sys.executable, str(ROOT / "bench" / "make_log.py"), str(path), "--visitors", str(args.visitors), "--days", "14"], check=True)
    campaign_set = load_text(fifty_campaigns(), "fifty.yaml")
    assert len(campaign_set.campaigns) == 50
    os.sched_setaffinity(0, {0})
    started = time.process_time()
    wall = time.perf_counter()
    (result,) = replay.run(recording.read([path]), [campaign_set])
    cpu, elapsed = time.process_time() - started, time.perf_counter() - wall
    fired = sum(e["fired"] for e in result.summary().values())
    print(f"{result.events:,} events, {len(result.visitors):,} visitors, 50 campaigns: {elapsed:.1f} s wall, {cpu:.1f} s CPU "
          f"({result.events / cpu:,.0f} events per CPU second); {fired:,} messages would fire")


if __name__ == "__main__":
    main()
