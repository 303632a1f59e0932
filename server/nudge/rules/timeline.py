"""The timeline: where a message decided for a visitor goes, and when their sessions end.

Sans-I/O, like the engine: plain data in (the visitor's tabs, attached or detached; the time;
the campaign's ``offline:`` rule), decisions out. The server's hub, ``nudge replay`` and
``nudge simulate`` all ask these functions, so a reminder decided while the visitor's only tab
is closed goes to the same place in all three. See docs/campaigns.md, "Offline visitors".

A visitor's tabs over time, and what a message decided at each moment becomes::

    tab A  ==attached==|.....detached, resumable (grace).........| over
    tab B                          |==attached==|....
                       ^ closed    ^ opened     ^ closed
    decided here:  tab | queued for the visitor | tab | queued ...         | offline
                       |<-- offline_after -->|                |<-- offline_after -->|

- **attached** — some tab has a socket: the message is decided in the most recently attached
  one and shown there now.
- **away** — no tab attached, for less than ``offline_after`` (a page change, a reload, a
  reconnect after a network blip): the message is decided with no session and queued for the
  *visitor* (not a session), so the first tab that attaches — the old one resumed, or a new
  one — takes it, once. A campaign whose ``offline:`` is ``webhook`` or ``drop`` is checked
  again when the visitor turns offline: what is still queued then is handed off or dropped.
- **offline** — no tab attached for ``offline_after`` seconds (or since the last session's grace
  ended, if sooner): the campaign's ``offline:`` rule applies at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from nudge.rules.state import VisitorState

OFFLINE_AFTER = 60.0  # default: longer than a page change and the snippet's longest reconnect wait (30 s)

TAB = "tab"  # shown in the attached tab now
QUEUE = "queue"  # kept for the visitor's next tab
HAND_OFF = "hand_off"  # the ``offline`` webhook event
DROP = "drop"  # forgotten


@dataclass(frozen=True, slots=True)
class Tab:
    """One of the visitor's sessions as the timeline sees it."""

    session: str  # the session id
    detached_at: float | None = None  # when its socket closed; None while one is attached


@dataclass(frozen=True, slots=True)
class Presence:
    """Whether someone is looking: the tab decisions are made in, or when the visitor is offline."""

    tab: str | None  # the most recently attached tab; None when no tab is attached
    offline_at: float  # from when the visitor counts as offline (infinite while a tab is attached)

    def offline(self, now: float) -> bool:
        return self.tab is None and self.offline_at <= now


ATTACHED_FOREVER = float("inf")


def presence(tabs: Iterable[Tab], now: float, *, offline_after: float = OFFLINE_AFTER, grace: float = 300.0) -> Presence:
    """Who is looking at ``now``, given the visitor's tabs (oldest first). A tab's session is held
    until its grace ends (:func:`session_ends_at`); a visitor with no tab held is offline."""
    last_detach = None
    attached = None
    for tab in tabs:
        if tab.detached_at is None:
            attached = tab.session
        elif last_detach is None or tab.detached_at > last_detach:
            last_detach = tab.detached_at
    if attached is not None:
        return Presence(attached, ATTACHED_FOREVER)
    if last_detach is None:
        return Presence(None, now)
    return Presence(None, last_detach + min(offline_after, grace))


def session_ends_at(detached_at: float, grace: float) -> float:
    """When a detached session is over: its grace period ran out with no socket back."""
    return detached_at + grace


def not_before(visitor: VisitorState, due: float) -> float:
    """A timer runs as of its due time, but never before something already recorded for the
    visitor (time as the engine sees it only moves forward)."""
    latest = max(visitor.last_seen, visitor.last_shown_at or 0.0)
    return due if due >= latest else latest


def offline_rule(offline: str, hand_off: bool) -> str:
    """What a campaign's ``offline:`` means once the visitor is offline: ``hand_off`` (webhook,
    when an endpoint takes it; else queued), ``drop``, or ``queue``."""
    if offline == "webhook":
        return HAND_OFF if hand_off else QUEUE
    return DROP if offline == "drop" else QUEUE


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a decided show goes."""

    route: str  # TAB, QUEUE, HAND_OFF or DROP
    check_at: float | None = None  # queued while away: apply the offline rule at this time to what is still queued


def place(in_tab: bool, whereabouts: Presence, rule: str, now: float) -> Placement:
    """Where a show goes: ``in_tab`` when it was decided in the attached tab (the engine's
    ``Show.queued`` is False); else by ``rule`` (:func:`offline_rule`) once the visitor is offline,
    and queued for the visitor until then."""
    if in_tab and whereabouts.tab is not None:
        return Placement(TAB)
    if whereabouts.offline(now):
        return Placement(rule)
    return Placement(QUEUE, whereabouts.offline_at if rule != QUEUE else None)


def at_check(whereabouts: Presence, rule: str, now: float) -> Placement:
    """The check :func:`place` asked for came: a message still queued goes by ``rule`` if the
    visitor is offline now, or waits for the next check (a tab came and went meanwhile)."""
    if whereabouts.offline(now):
        return Placement(rule)
    if whereabouts.tab is not None:
        return Placement(QUEUE)  # an attached tab takes it (or took it already)
    return Placement(QUEUE, whereabouts.offline_at)


def next_due(wakes: Iterable[tuple[float, str]], ends: Iterable[tuple[float, str]], timers: dict[str, float]) -> tuple[float, str, str] | None:
    """What falls due first on a visitor's timeline: ``(due, kind, what)`` with kind ``wake``
    (an attached session's wake-up; what: its id), ``end`` (a detached session's grace ran out)
    or ``timer`` (a durable visitor timer; what: its key). A session's own times go first at a
    tie, in that order; ``wakes`` and ``ends`` are (due, session id) pairs."""
    best: tuple[float, str, str] | None = None
    for kind, items in (("wake", wakes), ("end", ends)):
        for due, what in items:
            if best is None or due < best[0]:
                best = (due, kind, what)
    for key, due in timers.items():
        if best is None or due < best[0]:
            best = (due, "timer", key)
    return best
