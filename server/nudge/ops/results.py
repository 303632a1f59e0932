"""The results report: per campaign and variant, the funnel, rates with their intervals and the
comparison of variants (the counts come from :mod:`nudge.runtime.results`)."""

from __future__ import annotations

from typing import Any

from nudge.ops import statistics as stats
from nudge.runtime.results import from_totals

__all__ = ["from_totals", "report"]

# No verdict on a comparison before each side has this many exposures: before, a test's p-value
# says little, and "no significant difference" over a handful of visitors reads as an answer.
MIN_EXPOSURES = stats.MIN_EXPOSURES  # per side of a comparison, before any verdict
MAX_BUCKETS = 400  # the latest hours or days of a campaign's results over time, at most

# Suppressions that mean the visitor was not eligible (rather than eligible but not shown).
NOT_ELIGIBLE = ("audience", "cap:", "limit:", "cooldown", "quiet_hours", "offline")


def report(counts: dict[str, dict[str, dict[str, int]]], campaigns: dict) -> dict:
    """Per campaign and variant: the funnel, the conversion rate with its 95 % Wilson interval,
    every pair of variants compared (the holdout, else the first variant, as ``control`` of the
    others first), with Holm-adjusted and always-valid p-values, and a sample-ratio check of the
    split — see :mod:`nudge.ops.statistics` for the tests. ``campaigns``: id -> Campaign."""
    out = {}
    for campaign_id, variants in counts.items():
        campaign = campaigns.get(campaign_id)
        declared = tuple(campaign.variants) if campaign is not None and campaign.variants else ()
        order = [v.id for v in declared]
        holdouts = {v.id for v in declared if v.holdout}
        # Variants that change the absence window are compared from when the window opened
        # (every visitor who entered the test), not from the message: a longer window shows
        # fewer people (more bought meanwhile), and a rate among them compares nothing.
        entries = any(getattr(v, "trigger", False) for v in declared)
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
            exposed = deferred.get("window", 0) if entries else (held_out if vid in holdouts else sent)
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
        pairs = []
        if control is not None:
            pairs = [(vid, control) for vid in rows if vid != control]
            others = [vid for vid in rows if vid != control]
            pairs += [(a, b) for i, a in enumerate(others) for b in others[i + 1:]]
        comparisons = []
        for vid, against in pairs:
            a, b = rows[vid], rows[against]
            result = stats.compare(a["converted"], a["exposed"], b["converted"], b["exposed"])
            result["sequential_p"] = float(f"{stats.msprt(a['converted'], a['exposed'], b['converted'], b['exposed']):.6g}")
            comparisons.append({
                "variant": vid, "control": against, **result,
                "minimum_exposures": stats.MIN_EXPOSURES, "exposures": [a["exposed"], b["exposed"]],
            })
        for comparison, adjusted in zip(comparisons, stats.holm([c["p_value"] for c in comparisons]), strict=True):
            comparison["p_adjusted"] = float(f"{adjusted:.6g}")
            smallest = min(rows[comparison["variant"]]["exposed"], rows[comparison["control"]]["exposed"])
            if smallest < stats.MIN_EXPOSURES:
                comparison.update(significant=None, better=None, verdict="too_few_exposures")
                continue
            comparison["significant"] = adjusted < stats.ALPHA
            comparison["better"] = comparison["significant"] and (
                (rows[comparison["variant"]]["conversion_rate"] or 0) > (rows[comparison["control"]]["conversion_rate"] or 0)
            )
            comparison["verdict"] = ("better" if comparison["better"] else "worse") if comparison["significant"] else "no_difference"
        split = None
        if len(declared) > 1:
            split = stats.sample_ratio({vid: rows[vid]["exposed"] if entries else rows[vid]["eligible"] for vid in order}, {v.id: getattr(v, "weight", 1.0) for v in declared})
        out[campaign_id] = {"variants": rows, "control": control, "comparisons": comparisons, "sample_ratio": split}
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
