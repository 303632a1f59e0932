"""What each campaign and variant did: decisions counted by the server, outcomes reported by the
browser, conversions by goal. In memory for now; counts are per process."""

from __future__ import annotations

from collections import defaultdict

NO_VARIANT = "-"


class Results:
    def __init__(self) -> None:
        # campaign -> variant -> counter -> count. Counters: sent (decided and sent or queued),
        # shown / clicked / dismissed (reported by the browser), converted, suppressed:<reason>,
        # deferred:<reason>.
        self._counts: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))

    def count(self, campaign: str, variant: str | None, counter: str) -> None:
        self._counts[campaign][variant or NO_VARIANT][counter] += 1

    def get(self, campaign: str, variant: str | None = None) -> dict[str, int]:
        found = self._counts.get(campaign, {}).get(variant or NO_VARIANT)
        return dict(found) if found else {}

    def snapshot(self) -> dict[str, dict[str, dict[str, int]]]:
        return {c: {v: dict(n) for v, n in variants.items()} for c, variants in self._counts.items()}
