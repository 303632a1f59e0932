"""What the engine decides: small records the runtime carries out (send, queue, schedule, log)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Show:
    """Show this message now: on the session's socket, or queued for the next visit when
    ``queued`` (the timer fell due while the visitor had no session open)."""

    campaign: str
    content: dict  # kind, position, title, body, cta, dismiss: plain text
    queued: bool = False
    expires_at: float | None = None  # for queued messages: drop if not delivered by then
    variant: str | None = None


@dataclass(slots=True)
class Schedule:
    """Start (or restart) a durable visitor timer."""

    key: str  # unique per visitor: "absence:<campaign>" or "delay:<campaign>"
    due: float
    campaign: str


@dataclass(slots=True)
class Cancel:
    """Cancel a durable visitor timer that is no longer wanted (e.g. the purchase came)."""

    key: str


@dataclass(slots=True)
class Suppress:
    """A campaign's trigger came true but it was not shown, and why."""

    campaign: str
    reason: str  # cap:per_session | cap:per_day | limit:per_day | cooldown | priority | offline


@dataclass(slots=True)
class Wake:
    """The session's next moment a dwell or idle condition may come true changed (None: none)."""

    at: float | None


Decision = Show | Schedule | Cancel | Suppress | Wake
