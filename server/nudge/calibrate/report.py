"""Replay results for people: a text table for the terminal and a self-contained HTML page (inline
SVG charts, no script, no server needed)."""

from __future__ import annotations

import html
from collections import Counter

from nudge.calibrate.replay import DAY, Replay


def _fmt_seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.0f} s"
    if value < 7200:
        return f"{value / 60:.0f} min"
    if value < 2 * DAY:
        return f"{value / 3600:.1f} h"
    return f"{value / DAY:.1f} d"


def _rate(entry: dict | None) -> str:
    if not entry or entry["rate"] is None:
        return "-"
    return f"{entry['rate'] * 100:.1f} % of {entry['visitors']}"


def text(replay: Replay) -> str:
    summary = replay.summary()
    lines = [f"{replay.events:,} events from {len(replay.visitors):,} visitors" + (f" ({replay.refused:,} refused as invalid)" if replay.refused else ""), ""]
    for campaign_id, entry in summary.items():
        variants = ", ".join(f"{v} {n}" for v, n in sorted(entry["by_variant"].items()) if v != "-")
        lines.append(f"{campaign_id}: would fire {entry['fired']:,} times to {entry['visitors_shown']:,} visitors" + (f" ({variants})" if variants else ""))
        if entry["suppressed"]:
            lines.append("  suppressed: " + ", ".join(f"{r} {n:,}" for r, n in sorted(entry["suppressed"].items(), key=lambda i: -i[1])))
        if entry["deferred"]:
            lines.append("  deferred: " + ", ".join(f"{r} {n:,}" for r, n in sorted(entry["deferred"].items(), key=lambda i: -i[1])))
        if entry["messages_per_visitor_day"]:
            lines.append("  messages per visitor per day: " + ", ".join(f"{k}: {v:,}" for k, v in entry["messages_per_visitor_day"].items()))
        timing = entry["first_event_to_message_s"]
        lines.append(f"  first event to message: median {_fmt_seconds(timing['median'])}, p90 {_fmt_seconds(timing['p90'])}")
        if "goal" in entry:
            goal = entry["goal"]
            lines.append(f"  goal {goal['event']}: with the message {_rate(goal['with_message'])}, without {_rate(goal['without_message'])}")
    return "\n".join(lines)


def compare_text(a: Replay, b: Replay, samples: dict[str, list[dict]]) -> str:
    sa, sb = a.summary(), b.summary()
    lines = [f"{a.events:,} events from {len(a.visitors):,} visitors", ""]
    for campaign_id in sorted(set(sa) | set(sb)):
        ea, eb = sa.get(campaign_id), sb.get(campaign_id)
        if ea is None or eb is None:
            only = eb if ea is None else ea
            assert only is not None  # the campaign is in one of the two summaries
            lines.append(f"{campaign_id}: only in {'B' if ea is None else 'A'}: fires {only['fired']:,}")
            continue
        delta = eb["fired"] - ea["fired"]
        lines.append(f"{campaign_id}: fires {ea['fired']:,} → {eb['fired']:,} ({delta:+,}); visitors {ea['visitors_shown']:,} → {eb['visitors_shown']:,}")
        for reason in sorted(set(ea["suppressed"]) | set(eb["suppressed"])):
            before, after = ea["suppressed"].get(reason, 0), eb["suppressed"].get(reason, 0)
            if before != after:
                lines.append(f"  suppressed {reason}: {before:,} → {after:,}")
        for sample in samples.get(campaign_id, []):
            lines.append(f"  visitor {sample['visitor']}: {sample['a_fired']} → {sample['b_fired']}")
            for side in ("a", "b"):
                trace = "; ".join(f"{_fmt_seconds(o['after'])}: {o['outcome']}" for o in sample[side]) or "nothing"
                lines.append(f"    {side.upper()}: {trace}")
    return "\n".join(lines)


def changed_visitors(a: Replay, b: Replay, limit: int = 5) -> dict[str, list[dict]]:
    """Per campaign, a few visitors whose number of messages changed, with both decision traces."""
    out: dict[str, list[dict]] = {}
    visitors = sorted(set(a.by_visitor) | set(b.by_visitor))
    campaigns = {o.campaign for v in visitors for o in a.by_visitor.get(v, []) + b.by_visitor.get(v, [])}
    for campaign in sorted(campaigns):
        found = []
        for visitor in visitors:
            ta = [o for o in a.by_visitor.get(visitor, []) if o.campaign == campaign]
            tb = [o for o in b.by_visitor.get(visitor, []) if o.campaign == campaign]
            fa, fb = sum(o.outcome == "sent" for o in ta), sum(o.outcome == "sent" for o in tb)
            if fa != fb:
                first = a.visitors[visitor].first_event if visitor in a.visitors else None
                start = first or 0.0
                found.append({
                    "visitor": visitor, "a_fired": fa, "b_fired": fb,
                    "a": [{"after": o.at - start, "outcome": o.outcome} for o in ta],
                    "b": [{"after": o.at - start, "outcome": o.outcome} for o in tb],
                })
                if len(found) >= limit:
                    break
        if found:
            out[campaign] = found
    return out


# --- HTML ---------------------------------------------------------------------------------------

_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:980px;color:#1f2933;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2.2rem;border-top:1px solid #e4e7eb;padding-top:1rem}
table{border-collapse:collapse;margin:.6rem 0}td,th{padding:.25rem .7rem;border-bottom:1px solid #e4e7eb;text-align:left}
th{font-weight:600;color:#52606d}.num{text-align:right;font-variant-numeric:tabular-nums}
.charts{display:flex;gap:2rem;flex-wrap:wrap}figure{margin:0}figcaption{color:#52606d;font-size:.85rem}
svg text{font:11px system-ui,sans-serif;fill:#52606d}
"""


def _bar_chart(values: list[tuple[str, int]], width: int = 420, height: int = 160, title: str = "") -> str:
    if not values:
        return "<p>no data</p>"
    top = max(v for _, v in values) or 1
    bar = (width - 40) / len(values)
    parts = [f'<svg role="img" aria-label="{html.escape(title)}" width="{width}" height="{height + 30}" viewBox="0 0 {width} {height + 30}">']
    for i, (label, value) in enumerate(values):
        h = (height - 20) * value / top
        x = 30 + i * bar
        parts.append(f'<rect x="{x + 2:.1f}" y="{height - h:.1f}" width="{max(bar - 4, 1):.1f}" height="{h:.1f}" fill="#3e7c6b"><title>{html.escape(label)}: {value}</title></rect>')
        if len(values) <= 24 or i % max(1, len(values) // 12) == 0:
            parts.append(f'<text x="{x + bar / 2:.1f}" y="{height + 14}" text-anchor="middle">{html.escape(label)}</text>')
    parts.append(f'<text x="0" y="12">{top}</text><line x1="28" y1="{height}" x2="{width}" y2="{height}" stroke="#cbd2d9"/></svg>')
    return "".join(parts)


def _fires_over_time(replay: Replay, campaign: str) -> list[tuple[str, int]]:
    start = replay.first_at or 0.0
    span = max((replay.last_at or start) - start, 1.0)
    bucket = 3600.0 if span <= 3 * DAY else DAY
    counts: Counter = Counter()
    for outcome in replay.outcomes:
        if outcome.campaign == campaign and outcome.outcome == "sent":
            counts[int((outcome.at - start) // bucket)] += 1
    if not counts:
        return []
    unit = "h" if bucket == 3600.0 else "d"
    return [(f"{i}{unit}", counts.get(i, 0)) for i in range(max(counts) + 1)]


def _comparison(a: Replay, b: Replay, against: str, samples: dict[str, list[dict]]) -> list[str]:
    """The ``--against`` section: per campaign, A's counts beside B's, and the sample visitors
    whose outcome changed with both decision traces (what ``compare_text`` prints)."""
    sa, sb = a.summary(), b.summary()
    out = [f"<h2 id=compare>Compared with {html.escape(against)}</h2>",
           "<p>A: this report's campaigns; B: the file compared with. Both replayed in one pass over the same log.</p>",
           "<table><tr><th>campaign</th><th class=num>A fires</th><th class=num>B fires</th><th class=num>change</th>"
           "<th class=num>A visitors</th><th class=num>B visitors</th><th>suppressed, where it moved</th></tr>"]
    for campaign_id in sorted(set(sa) | set(sb)):
        ea, eb = sa.get(campaign_id), sb.get(campaign_id)
        fa, fb = (ea["fired"] if ea else 0), (eb["fired"] if eb else 0)
        va, vb = (ea["visitors_shown"] if ea else 0), (eb["visitors_shown"] if eb else 0)
        reasons = sorted(set(ea["suppressed"] if ea else ()) | set(eb["suppressed"] if eb else ()))
        moved = ", ".join(
            f"{html.escape(r)} {(ea or {}).get('suppressed', {}).get(r, 0):,} → {(eb or {}).get('suppressed', {}).get(r, 0):,}"
            for r in reasons
            if (ea or {}).get("suppressed", {}).get(r, 0) != (eb or {}).get("suppressed", {}).get(r, 0)
        ) or ("only in B" if ea is None else "only in A" if eb is None else "-")
        out.append(f"<tr class=compare><td>{html.escape(campaign_id)}</td><td class=num>{fa:,}</td><td class=num>{fb:,}</td>"
                   f"<td class=num>{fb - fa:+,}</td><td class=num>{va:,}</td><td class=num>{vb:,}</td><td>{moved}</td></tr>")
    out.append("</table>")
    for campaign_id, found in samples.items():
        out.append(f"<h3>{html.escape(campaign_id)}: visitors whose outcome changed</h3><table><tr><th>visitor</th><th class=num>A</th><th class=num>B</th><th>A's decisions</th><th>B's decisions</th></tr>")
        for sample in found:
            traces = ["; ".join(f"{_fmt_seconds(o['after'])}: {o['outcome']}" for o in sample[side]) or "nothing" for side in ("a", "b")]
            out.append(f"<tr><td>{html.escape(sample['visitor'])}</td><td class=num>{sample['a_fired']}</td><td class=num>{sample['b_fired']}</td>"
                       f"<td>{html.escape(traces[0])}</td><td>{html.escape(traces[1])}</td></tr>")
        out.append("</table>")
    return out


def html_report(
    replay: Replay, title: str = "Nudge replay", *, against: Replay | None = None, against_title: str = "B",
    samples: dict[str, list[dict]] | None = None,
) -> str:
    """The report of one replay; given ``against`` (the same log replayed with other campaigns),
    the comparison too: each campaign's counts beside each other and the visitors who moved
    (``samples``, from ``changed_visitors``; computed when not given)."""
    summary = replay.summary()
    out = [f"<!doctype html><html lang=en><meta charset=utf-8><title>{html.escape(title)}</title><style>{_STYLE}</style>",
           f"<h1>{html.escape(title)}</h1>",
           f"<p>{replay.events:,} events from {len(replay.visitors):,} visitors.</p>",
           "<table><tr><th>campaign</th><th class=num>would fire</th><th class=num>visitors</th><th>suppressed</th><th>goal: with / without a message</th></tr>"]
    for campaign_id, entry in summary.items():
        suppressed = ", ".join(f"{html.escape(r)} {n:,}" for r, n in sorted(entry["suppressed"].items(), key=lambda i: -i[1])) or "-"
        goal = entry.get("goal")
        goal_text = f"{_rate(goal['with_message'])} / {_rate(goal['without_message'])}" if goal else "-"
        out.append(f"<tr><td><a href='#{html.escape(campaign_id)}'>{html.escape(campaign_id)}</a></td><td class=num>{entry['fired']:,}</td><td class=num>{entry['visitors_shown']:,}</td><td>{suppressed}</td><td>{html.escape(goal_text)}</td></tr>")
    out.append("</table>")
    for campaign_id, entry in summary.items():
        per_day = [(k, v) for k, v in entry["messages_per_visitor_day"].items()]
        out.append(f"<h2 id='{html.escape(campaign_id)}'>{html.escape(campaign_id)}</h2>")
        timing = entry["first_event_to_message_s"]
        out.append(f"<p>First event to message: median {_fmt_seconds(timing['median'])}, p90 {_fmt_seconds(timing['p90'])}.</p>")
        out.append("<div class=charts>")
        out.append(f"<figure>{_bar_chart(_fires_over_time(replay, campaign_id), title=f'{campaign_id}: fires over time')}<figcaption>Fires over time</figcaption></figure>")
        out.append(f"<figure>{_bar_chart(per_day, width=260, title=f'{campaign_id}: messages per visitor per day')}<figcaption>Messages per visitor per day (visitor-days)</figcaption></figure>")
        out.append("</div>")
    if against is not None:
        out.extend(_comparison(replay, against, against_title, changed_visitors(replay, against) if samples is None else samples))
    out.append("</html>")
    return "\n".join(out)
