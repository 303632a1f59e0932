"""What each campaign and variant did: decisions counted by the server, outcomes reported by the
browser, conversions by goal. The report built from them (rates, intervals, significance) is
:mod:`nudge.ops.results`.

Counting is a dict increment on the hot path. Counts survive restarts: what changed since the
last flush (``pending``) is added to the store in one call — every write-behind tick with Redis
(``HINCRBY`` in one pipeline, shared by every node), and at a graceful stop with the memory
store (its snapshot file) — and read back at start.
"""

from __future__ import annotations

from collections import defaultdict

NO_VARIANT = "-"
HOUR = 3600
# The counters also counted per hour (results over time): exposures (sent, or held out), shown,
# clicked, converted.
SERIES = frozenset({"sent", "suppressed:holdout", "shown", "clicked", "converted"})


class Results:
    def __init__(self, clock=None) -> None:
        # campaign -> variant -> counter -> count. Counters: sent (decided and sent or queued),
        # shown / clicked / dismissed (reported by the browser), converted, suppressed:<reason>,
        # deferred:<reason>.
        self._counts: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
        self.pending: dict[tuple[str, str, str], int] = defaultdict(int)  # not yet in the store
        self.outcomes: dict[str, int] = defaultdict(int)  # counter -> counted by this process (metrics)
        self.clock = clock  # for the hour of a count; None: no results over time
        self.series_pending: dict[tuple[str, str, str, int], int] = defaultdict(int)  # (…, hour) not yet in the store
        self._hour = -HOUR  # the hour the last count fell in (its first second)

    def count(self, campaign: str, variant: str | None, counter: str) -> None:
        variant = variant or NO_VARIANT
        self._counts[campaign][variant][counter] += 1
        self.pending[(campaign, variant, counter)] += 1
        self.outcomes[counter] += 1
        if counter in SERIES and self.clock is not None:
            now = self.clock.now()
            if not self._hour <= now < self._hour + HOUR:
                self._hour = int(now // HOUR) * HOUR
            self.series_pending[(campaign, variant, counter, self._hour)] += 1

    def get(self, campaign: str, variant: str | None = None) -> dict[str, int]:
        found = self._counts.get(campaign, {}).get(variant or NO_VARIANT)
        return dict(found) if found else {}

    def snapshot(self) -> dict[str, dict[str, dict[str, int]]]:
        return {c: {v: dict(n) for v, n in variants.items()} for c, variants in self._counts.items()}

    def take_pending(self) -> dict[tuple[str, str, str], int]:
        """What changed since the last call, handed to the store (given back on failure with
        :meth:`give_back`)."""
        pending, self.pending = self.pending, defaultdict(int)
        return dict(pending)

    def take_series(self) -> dict[tuple[str, str, str, int], int]:
        """The hourly counts since the last call (given back with :meth:`give_back_series`)."""
        pending, self.series_pending = self.series_pending, defaultdict(int)
        return dict(pending)

    def give_back_series(self, pending: dict[tuple[str, str, str, int], int]) -> None:
        for key, n in pending.items():
            self.series_pending[key] += n

    def give_back(self, pending: dict[tuple[str, str, str], int]) -> None:
        for key, n in pending.items():
            self.pending[key] += n

    def restore(self, totals: dict[tuple[str, str, str], int]) -> None:
        """Add counts read from the store (at start) without marking them pending."""
        for (campaign, variant, counter), n in totals.items():
            self._counts[campaign][variant][counter] += n


def from_totals(totals: dict[tuple[str, str, str], int]) -> dict[str, dict[str, dict[str, int]]]:
    out: dict[str, dict[str, dict[str, int]]] = {}
    for (campaign, variant, counter), n in totals.items():
        out.setdefault(campaign, {}).setdefault(variant, {})[counter] = n
    return out
