"""The versions kept of each campaign: on every change to the campaign document (through the
admin API or from the file), the version a change replaces or removes is kept in the document's
``history`` — the last ``HISTORY_KEPT`` per campaign — so that it travels with the document to
Redis and the memory snapshot, and the editor can show a diff and roll back
(``GET /api/campaigns/{id}/history``, ops/editor.py)."""

from __future__ import annotations

import copy

HISTORY_KEPT = 20  # versions kept per campaign, besides the one in force


def remember_versions(before: dict, after: dict, now: float) -> None:
    """Keep in ``after["history"]`` the version of each campaign of ``before`` that ``after``
    changes or removes (called on every change to the document, by the API or the file)."""
    history = copy.deepcopy(before.get("history") or {})
    current = {c.get("id"): c for c in after.get("campaigns", []) if isinstance(c, dict)}
    for campaign in before.get("campaigns", []):
        if not isinstance(campaign, dict) or not isinstance(cid := campaign.get("id"), str):
            continue
        if current.get(cid) == campaign:
            continue
        kept = history.setdefault(cid, [])
        version = before.get("versions", {}).get(cid, 1)
        if not kept or kept[-1]["version"] != version:
            kept.append({"version": version, "at": now, "campaign": campaign})
        del kept[:-HISTORY_KEPT]
    after["history"] = history
