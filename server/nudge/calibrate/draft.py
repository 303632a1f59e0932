"""What a draft campaign would have done: the event log of the last days replayed against the
campaign document with the draft in it and against the document in force, in one pass (the replay
core, :func:`nudge.calibrate.replay.run`), for the dashboard's editor.

It runs in a process of its own (``python -m nudge.calibrate.draft``: a job as JSON on stdin, the
answer as JSON on stdout), so a large log never holds the server's event loop or its interpreter
lock; the server kills it past its time limit. The work is bounded here too: past ``max_records``
records read, it stops and answers ``too_big``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from nudge.calibrate import recording, replay
from nudge.rules.campaigns import load_data


class TooBig(Exception):
    """The log holds more records than the job may read."""


def window(records: Iterable[dict], since: float, max_records: int) -> Iterator[dict]:
    """The records at or after ``since`` (and every file's ``config``), reading at most
    ``max_records`` in all (those before ``since`` included: they cost the reading too)."""
    for count, record in enumerate(records, 1):
        if count > max_records:
            raise TooBig(count - 1)
        at = record.get("t")
        if at is None or at >= since:
            yield record


def side(summary: dict, campaign: str) -> dict:
    """The draft's campaign as one replay saw it, and what every other campaign fired."""
    entry = summary.get(campaign)
    return {
        "in_document": entry is not None,
        "fired": entry["fired"] if entry else 0,
        "visitors_shown": entry["visitors_shown"] if entry else 0,
        "by_variant": entry["by_variant"] if entry else {},
        "suppressed": entry["suppressed"] if entry else {},
        "deferred": entry["deferred"] if entry else {},
        "messages_per_visitor_day": entry["messages_per_visitor_day"] if entry else {},
        "goal": entry.get("goal") if entry else None,
        "others_fired": sum(e["fired"] for cid, e in summary.items() if cid != campaign),
    }


def compare(job: dict[str, Any]) -> dict[str, Any]:
    """Replay the job's log against its ``draft`` and ``in_force`` documents (plain campaign
    data); per side, the ``campaign``'s counts."""
    sets = [load_data(job["draft"], "draft"), load_data(job["in_force"], "in force")]
    paths: list[str | Path] = [Path(p) for p in job["paths"]]
    try:
        draft, in_force = replay.run(window(recording.read(paths), job["since"], job["max_records"]), sets)
    except TooBig as exc:
        return {"error": "too_big", "records": exc.args[0]}
    campaign = job["campaign"]
    return {
        "events": draft.events,
        "visitors": len(draft.visitors),
        "from": draft.first_at,
        "to": draft.last_at,
        "draft": side(draft.summary(), campaign),
        "in_force": side(in_force.summary(), campaign),
    }


def main() -> int:
    job = json.load(sys.stdin)
    json.dump(compare(job), sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
