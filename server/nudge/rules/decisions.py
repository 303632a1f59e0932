"""What the engine decides: small records the runtime carries out (send, queue, schedule, log)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Show:
    """Show this message now: on the session's socket, or queued for the next visit when
    ``queued`` (the timer fell due while the visitor had no session open)."""

    campaign: str
    content: dict[str, Any]  # kind, position, title, body, cta, dismiss, theme: plain text
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
    reason: str  # see REASONS
    variant: str | None = None
    detail: str | None = None  # for "template": the error its message failed to render with


@dataclass(slots=True)
class Defer:
    """A campaign fired and will show later: after its delay, at a calm moment, or once the
    message on screen is closed."""

    campaign: str
    reason: str  # delay | calm | busy | window (the absence window of an A/B test opened: entered it)
    variant: str | None = None


@dataclass(slots=True)
class Converted:
    """The campaign's goal event came within its window after the visitor was exposed to it
    (shown, or held out)."""

    campaign: str
    variant: str | None


@dataclass(slots=True)
class Wake:
    """The session's next moment a time condition may come true changed (None: none)."""

    at: float | None


Decision = Show | Schedule | Cancel | Suppress | Defer | Converted | Wake


def outcome_of(decision: Decision) -> tuple[str, str | None, str] | None:
    """(campaign, variant, outcome) of a decision worth reporting, or None."""
    if isinstance(decision, Show):
        return decision.campaign, decision.variant, "sent"
    if isinstance(decision, Suppress):
        return decision.campaign, decision.variant, f"suppressed:{decision.reason}"
    if isinstance(decision, Defer):
        return decision.campaign, decision.variant, f"deferred:{decision.reason}"
    if isinstance(decision, Converted):
        return decision.campaign, decision.variant, "converted"
    return None

# Why a campaign whose trigger came true did not show: every reason the engine gives.
REASONS = {
    "audience": "the visitor is not in the campaign's audience",
    "template": "its message failed to render (a template dividing by an empty cart's count, say)",
    "cap:per_session": "shown as often as its per_session cap allows in this session",
    "cap:per_day": "shown as often as its per_day cap allows in the last 24 h",
    "cap:per_week": "shown as often as its per_week cap allows in the last 7 days",
    "cap:lifetime": "shown as often as its lifetime cap allows",
    "cap:every": "shown too recently: re-eligible only after its 'every' interval",
    "limit:per_hour": "the visitor had as many messages as limits.per_hour allows in the last hour",
    "limit:per_day": "the visitor had as many messages as limits.per_day allows in the last 24 h",
    "cooldown": "another message was shown less than limits.cooldown ago",
    "quiet_hours": "it is within quiet hours in the visitor's time zone",
    "priority": "a higher-priority campaign showed at the same moment",
    "busy": "another message was on screen (on_conflict: drop)",
    "holdout": "the visitor is in the holdout: counted, not shown",
    "offline": "the visitor had no tab open and the campaign says offline: drop",
    "expired": "it waited longer than its 'expires' for its moment",
    "cancelled": "an event in its cancel_on list came first",
    "closed": "its absence window closed with its 'while' condition no longer true",
}
