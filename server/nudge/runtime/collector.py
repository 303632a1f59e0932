"""The garbage collector kept off the hot path, and the pauses it makes, for ``/metrics``.

CPython frees almost everything an event allocates by reference counting; the cyclic collector
only walks containers that outlived a young collection. What it costs a server is the pause of
one collection, which grows with the objects it walks. Measured under 1,000 browsers at 5,000
events/s (bench/RESULTS.md, "a neighbour on the server's core"):

- objects made before the first connection (modules, campaigns, templates, the app) are set
  aside for good (``gc.freeze()`` once the server has started), so no collection walks them;
- the young generation is collected every ``THRESHOLDS[0]`` net allocations, and the middle one
  after ``THRESHOLDS[1]`` young collections, so a middle collection walks at most about 10,000
  survivors (a few ms) — with 5,000 and 20 it walked up to 100,000 during a burst of handshakes
  and held the loop for 40–80 ms;
- the oldest generation is collected only after ``THRESHOLDS[2]`` middle collections (and, as
  CPython always adds, once a quarter more objects are waiting than it holds), so a full pass,
  whose pause grows with every connection held, is rare while traffic flows.

:class:`Pauses` is a ``gc.callbacks`` hook that counts each generation's collections and the time
they held the thread: ``nudge_gc_pauses_total``, ``nudge_gc_pause_seconds_total`` and
``nudge_gc_pause_longest_seconds`` in ``/metrics`` (docs/operate.md). ``nudge serve`` installs
both (:func:`settle`); an embedding that never calls it keeps Python's defaults and reports zeros.

May import: nothing of Nudge.
"""

from __future__ import annotations

import gc
import time

# (young, middle, oldest): see the module's docstring; the figures are in bench/RESULTS.md.
THRESHOLDS = (2000, 5, 100)


class Pauses:
    """Each generation's collections since the hook was installed: how many, how long in all,
    the longest (seconds of wall time; another process taking the core counts too)."""

    __slots__ = ("count", "seconds", "longest", "_began")

    def __init__(self) -> None:
        self.count = [0, 0, 0]  # collections, by generation
        self.seconds = [0.0, 0.0, 0.0]  # time they held the thread, by generation
        self.longest = [0.0, 0.0, 0.0]  # the longest of them, by generation
        self._began = 0.0  # when the collection under way began

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._began = time.perf_counter()
            return
        took = time.perf_counter() - self._began
        generation = info["generation"]
        self.count[generation] += 1
        self.seconds[generation] += took
        if took > self.longest[generation]:
            self.longest[generation] = took

    def install(self) -> None:
        if self not in gc.callbacks:
            gc.callbacks.append(self)

    def remove(self) -> None:
        if self in gc.callbacks:
            gc.callbacks.remove(self)


pauses = Pauses()  # the process's (one server per process): what /metrics reads


def settle() -> None:
    """The server has started: set its startup objects aside, apply ``THRESHOLDS``, and count
    the pauses from here on."""
    gc.collect()  # what startup left as garbage goes now, not frozen with the rest
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
    pauses.install()
