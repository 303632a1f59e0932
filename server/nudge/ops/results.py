"""The results report: per campaign and variant, the funnel, rates with their intervals and the
comparison of variants (the counts come from :mod:`nudge.runtime.results`)."""

from __future__ import annotations

from typing import Any

from nudge.ops import statistics as stats
from nudge.runtime.results import from_totals

__all__ = ["from_totals", "report"]

# No verdict on a comparison before each side has this many exposures: before, a test's p-value
# says little, and "no significant difference" over a handful of visitors reads as an answer.
MIN_EXPOSURES = 100
MAX_BUCKETS = 400  # the latest hours or days of a campaign's results over time, at most

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
        rows: dict[str, dict[str, Any]] = {}
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
                    compared = stats.compare(row["converted"], row["exposed"], c["converted"], c["exposed"])
                    enough = min(row["exposed"], c["exposed"]) >= MIN_EXPOSURES
                    comparisons.append({
                        "variant": vid, "control": control, **compared,
                        "minimum_exposures": MIN_EXPOSURES, "exposures": [row["exposed"], c["exposed"]],
                        # better | worse | no_difference, or None while either side has too few
                        "verdict": None if not enough else (
                            ("better" if compared["better"] else "worse") if compared["significant"] else "no_difference"),
                    })
        out[campaign_id] = {"variants": rows, "control": control, "comparisons": comparisons}
    return out


def over_time(series: dict[tuple[str, str, int], int], campaign, bucket: str = "hour") -> dict:
    """A campaign's results per hour or day: per variant, a row per bucket with exposures
    (sent, or held out for a holdout), shown, clicked and converted, oldest first, empty buckets
    between included. ``series``: (variant, counter, hour) -> count, from the store."""
    width = 86400 if bucket == "day" else 3600
    holdouts = {v.id for v in campaign.variants if v.holdout} if campaign is not None else set()
    order = [v.id for v in campaign.variants] if campaign is not None and campaign.variants else []
    rows: dict[str, dict[int, dict[str, int]]] = {}
    for (variant, counter, hour), n in series.items():
        at = hour // width * width
        row = rows.setdefault(variant, {}).setdefault(at, {"exposed": 0, "shown": 0, "clicked": 0, "converted": 0})
        if counter == ("suppressed:holdout" if variant in holdouts else "sent"):
            row["exposed"] += n
        elif counter in row:
            row[counter] += n
    starts = [at for buckets in rows.values() for at in buckets]
    variants = {}
    if starts:
        last = max(starts)
        first = max(min(starts), last - (MAX_BUCKETS - 1) * width)
        for variant in order + sorted(v for v in rows if v not in order):
            buckets = rows.get(variant, {})
            variants[variant] = [{"at": at, **buckets.get(at, {"exposed": 0, "shown": 0, "clicked": 0, "converted": 0})}
                                 for at in range(first, last + width, width)]
    return {"bucket": bucket, "seconds": width, "variants": variants}
