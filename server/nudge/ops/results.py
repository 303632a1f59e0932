"""The results report: per campaign and variant, the funnel, rates with their intervals and the
comparison of variants (the counts come from :mod:`nudge.runtime.results`)."""

from __future__ import annotations

from nudge.ops import statistics as stats
from nudge.runtime.results import from_totals

__all__ = ["from_totals", "report"]

# Suppressions that mean the visitor was not eligible (rather than eligible but not shown).
NOT_ELIGIBLE = ("audience", "cap:", "limit:", "cooldown", "quiet_hours", "offline")


def report(counts: dict[str, dict[str, dict[str, int]]], campaigns: dict) -> dict:
    """Per campaign and variant: the funnel, the conversion rate with its 95 % Wilson interval,
    and each variant against the control (the holdout, else the first variant) — see
    :mod:`nudge.ops.statistics` for the tests. ``campaigns``: id -> Campaign, for variant order."""
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
