"""A server with an event-loop lag monitor, for the benchmarks (not shipped in Nudge).

    python bench/lagmon.py serve ...same arguments as `nudge serve`...
    python bench/lagmon.py uvicorn ...same arguments as `uvicorn` (e.g. the bare echo server)...

Once the server has started, a task sleeps 5 ms at a time and measures how late it wakes up: the
time the loop was held by something else (a frame handler, a write-behind, the collector). Every
second it prints ``lag <n> <p50 ms> <p99 ms> <max ms> <full collections> <longest ms>`` on stderr
(the last two are the garbage collector's oldest-generation passes in that second), and, for each
generation that was collected in it, ``gc <generation> <collections> <longest ms> <total ms>
<longest CPU ms>``: the last is the thread's CPU time in its longest collection by CPU, which a
neighbour taking the core away during the pause does not inflate.
Each second's samples also follow as ``lags <ms> <ms> ...`` (for percentiles over the whole
run). ``LAGMON_GC=t0,t1,t2`` sets the collector's thresholds once the server has started (to try
settings without changing Nudge). It patches ``Hub.start`` (``serve``) or uvicorn's
``Server.startup`` (``uvicorn``) only, so it runs any source tree of Nudge put first on
``PYTHONPATH`` (a before/after comparison).
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import time

TICK = 0.005

_pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}  # generation -> pauses since the last line
_work: dict[int, list[float]] = {0: [], 1: [], 2: []}  # ... the thread's CPU time in each of them
_began = [0.0, 0.0]


def _on_gc(phase: str, info: dict) -> None:
    if phase == "start":
        _began[:] = time.perf_counter(), time.thread_time()
    else:
        _pauses[info["generation"]].append(time.perf_counter() - _began[0])
        _work[info["generation"]].append(time.thread_time() - _began[1])


async def _watch() -> None:
    lags: list[float] = []
    reported = time.perf_counter()
    while True:
        before = time.perf_counter()
        await asyncio.sleep(TICK)
        now = time.perf_counter()
        lags.append(max(0.0, now - before - TICK))
        if now - reported >= 1.0:
            print("lags " + " ".join(f"{lag * 1000:.3f}" for lag in lags), file=sys.stderr, flush=True)
            lags.sort()
            n = len(lags)
            full = _pauses[2]
            print(
                f"lag {n} {lags[n // 2] * 1000:.3f} {lags[n * 99 // 100] * 1000:.3f} {lags[-1] * 1000:.3f} {len(full)} "
                f"{max(full, default=0.0) * 1000:.3f}",
                file=sys.stderr, flush=True,
            )
            for generation, pauses in _pauses.items():
                if pauses:
                    work = _work[generation]
                    print(
                        f"gc {generation} {len(pauses)} {max(pauses) * 1000:.3f} {sum(pauses) * 1000:.3f} {max(work) * 1000:.3f}",
                        file=sys.stderr, flush=True,
                    )
                    pauses.clear()
                    work.clear()
            lags, reported = [], now


def _watching(start):
    async def started(self, *args, **kwargs):
        result = await start(self, *args, **kwargs)
        if os.environ.get("LAGMON_GC"):
            gc.set_threshold(*(int(t) for t in os.environ["LAGMON_GC"].split(",")))
        self._lag_watch = asyncio.get_running_loop().create_task(_watch(), name="lag-monitor")
        return result
    return started


gc.callbacks.append(_on_gc)

if __name__ == "__main__":
    if sys.argv[1:2] == ["uvicorn"]:
        import uvicorn.main
        import uvicorn.server

        uvicorn.server.Server.startup = _watching(uvicorn.server.Server.startup)
        sys.exit(uvicorn.main.main(sys.argv[2:]))
    from nudge.cli import main
    from nudge.runtime import hub

    hub.Hub.start = _watching(hub.Hub.start)
    sys.exit(main(sys.argv[1:]))
