"""``nudge serve`` with an event-loop lag monitor, for the benchmarks (not shipped in Nudge).

    python bench/lagmon.py serve ...same arguments as `nudge serve`...

Once the hub has started, a task sleeps 5 ms at a time and measures how late it wakes up: the
time the loop was held by something else (a frame handler, a write-behind, the collector). Every
second it prints ``lag <n> <p50 ms> <p99 ms> <max ms> <full collections> <longest ms>`` on stderr:
the last two are the garbage collector's oldest-generation passes in that second (a stall every
allocation-heavy workload has, whatever the store). It patches ``Hub.start`` only,
so it runs any source tree of Nudge put first on ``PYTHONPATH`` (a before/after comparison).
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time

from nudge.cli import main
from nudge.runtime import hub

TICK = 0.005

_start = hub.Hub.start
_full: list[float] = []  # durations of the oldest generation's collections since the last line
_began = [0.0]


def _on_gc(phase: str, info: dict) -> None:
    if info.get("generation") != 2:
        return
    if phase == "start":
        _began[0] = time.perf_counter()
    else:
        _full.append(time.perf_counter() - _began[0])


async def _watch() -> None:
    lags: list[float] = []
    reported = time.perf_counter()
    while True:
        before = time.perf_counter()
        await asyncio.sleep(TICK)
        now = time.perf_counter()
        lags.append(max(0.0, now - before - TICK))
        if now - reported >= 1.0:
            lags.sort()
            n = len(lags)
            longest = max(_full, default=0.0) * 1000
            print(
                f"lag {n} {lags[n // 2] * 1000:.3f} {lags[n * 99 // 100] * 1000:.3f} {lags[-1] * 1000:.3f} {len(_full)} {longest:.3f}",
                file=sys.stderr, flush=True,
            )
            lags, reported = [], now
            _full.clear()


async def _start_watched(self) -> None:
    await _start(self)
    self._lag_watch = asyncio.get_running_loop().create_task(_watch(), name="lag-monitor")


hub.Hub.start = _start_watched
gc.callbacks.append(_on_gc)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
