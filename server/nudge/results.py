"""What each campaign and variant did: decisions counted by the server, outcomes reported by the
browser, conversions by goal — and the report built from them (rates, intervals, significance).

Counting is a dict increment on the hot path. Counts survive restarts: what changed since the
last flush (``pending``) is added to the store in one call — every write-behind tick with Redis
(``HINCRBY`` in one pipeline, shared by every node), and at a graceful stop with the memory
store (its snapshot file) — and read back at start.
"""

from __future__ import annotations

from collections import defaultdict

from . import stats

NO_VARIANT = "-"
# Suppressions that mean the visitor was not eligible (rather than eligible but not shown).
NOT_ELIGIBLE = ("audience", "cap:", "limit:", "cooldown", "quiet_hours", "offline")


class Results:
    def __init__(self) -> None:
        # campaign -> variant -> counter -> count. Counters: sent (decided and sent or queued),
        # shown / clicked / dismissed (reported by the browser), converted, suppressed:<reason>,
        # deferred:<reason>.
        self._counts: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
        self.pending: dict[tuple[str, str, str], int] = defaultdict(int)  # not yet in the store
        self.outcomes: dict[str, int] = defaultdict(int)  # counter -> counted by this process (metrics)

    def count(self, campaign: str, variant: str | None, counter: str) -> None:
        variant = variant or NO_VARIANT
        self._counts[campaign][variant][counter] += 1
        self.pending[(campaign, variant, counter)] += 1
        self.outcomes[counter] += 1

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


def report(counts: dict[str, dict[str, dict[str, int]]], campaigns: dict) -> dict:
    """Per campaign and variant: the funnel, the conversion rate with its 95 % Wilson interval,
    and each variant against the control (the holdout, else the first variant) — see
    :mod:`nudge.stats` for the tests. ``campaigns``: id -> Campaign, for variant order."""
    out = {}
    for campaign_id, variants in counts.items():
        campaign = campaigns.get(campaign_id)
        order = [v.id for v in campaign.variants] if campaign is not None and campaign.variants else []
        holdouts = {v.id for v in campaign.variants if v.holdout} if campaign is not None else set()
        ids = order + sorted(v for v in variants if v not in order)
        rows = {}
        for vid in ids:
            n = variants.get(vid, {})
            suppressed = {k.split(":", 1)[1]: c for k, c in n.items() if k.startswith("suppressed:")}
            deferred = {k.split(":", 1)[1]: c for k, c in n.items() if k.startswith("deferred:")}
            held_out = suppressed.pop("holdout", 0)
            sent = n.get("sent", 0)
            triggered = sent + held_out + sum(suppressed.values())
            eligible = triggered - sum(c for r, c in suppressed.items() if r.startswith(NOT_ELIGIBLE))
            exposed = held_out if vid in holdouts else sent
            converted = n.get("converted", 0)
            low, high = stats.wilson(converted, exposed)
            rows[vid] = {
                "holdout": vid in holdouts,
                "eligible": eligible, "triggered": triggered, "suppressed": suppressed,
                "deferred": deferred, "held_out": held_out, "sent": sent,
                "shown": n.get("shown", 0), "clicked": n.get("clicked", 0),
                "dismissed": n.get("dismissed", 0), "converted": converted, "exposed": exposed,
                "conversion_rate": round(converted / exposed, 6) if exposed else None,
                "ci95": [round(low, 6), round(high, 6)],
            }
        control = next((v for v in ids if v in holdouts), ids[0] if len(ids) > 1 and order else None)
        comparisons = []
        if control is not None:
            c = rows[control]
            for vid, row in rows.items():
                if vid != control:
                    comparisons.append({
                        "variant": vid, "control": control,
                        **stats.compare(row["converted"], row["exposed"], c["converted"], c["exposed"]),
                    })
        out[campaign_id] = {"variants": rows, "control": control, "comparisons": comparisons}
    return out
