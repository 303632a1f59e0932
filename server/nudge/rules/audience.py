"""Who a campaign is for: conditions over what Nudge knows of the visitor and their visit.

    audience:
      device: mobile
      visitor.plan: {in: [free, trial]}       # traits sent by identify (the browser may claim them)
      trusted.vip: true                       # only what the backend set (secret key, signed token)
      visit.days_since_last: {gte: 7}         # returned after a week away
      utm.source: newsletter
      any:
        - page.referrer: {contains: google.}
        - visit.first: true

Names resolve lazily against the state, so an audience costs nothing until its campaign is a
candidate.
"""

from __future__ import annotations

import re
from typing import Any

from nudge.rules.conditions import MISSING

# Every name an audience may test, besides ``visitor.<trait>``.
NAMES = {
    "page.path": "the current page's path",
    "page.url": "the current page's full URL",
    "page.referrer": "the page the visit came from",
    "page.title": "the current page's title",
    "utm.source": "utm_source of the visit's landing page",
    "utm.medium": "utm_medium",
    "utm.campaign": "utm_campaign",
    "utm.term": "utm_term",
    "utm.content": "utm_content",
    "device": "mobile, tablet or desktop (from the browser's User-Agent)",
    "visit.count": "how many sessions this visitor has started, this one included",
    "visit.first": "true on the visitor's first session",
    "visit.days_since_last": "days between this visit and the previous one's last tab event (missing on a first visit)",
    "visit.last_session_pages": "pages viewed in the previous session (missing on a first visit)",
    "visit.last_session_duration": "seconds from the previous session's start to its last tab event",
    "visit.last_session_last_page": "the path of the last page of the previous session",
    "cart.count": "items in the cart",
    "cart.value": "value of the cart",
}
TRAIT_PREFIX = "visitor."  # any trait, whoever sent it (a page can claim anything)
TRUSTED_PREFIX = "trusted."  # only the traits a backend set, or a signed token proved


def known(name: str) -> bool:
    return name in NAMES or any(
        name.startswith(prefix) and len(name) > len(prefix) for prefix in (TRAIT_PREFIX, TRUSTED_PREFIX)
    )


def lookup(view: Any, name: str) -> Any:
    """Resolve ``name`` against ``view``, a ``(State, now)`` pair."""
    state, _now = view
    visitor, session = state.visitor, state.session
    if name.startswith(TRAIT_PREFIX):
        return visitor.traits.get(name[len(TRAIT_PREFIX):], MISSING)
    if name.startswith(TRUSTED_PREFIX):
        return visitor.trusted.get(name[len(TRUSTED_PREFIX):], MISSING)
    if name == "cart.count":
        return visitor.cart.count
    if name == "cart.value":
        return visitor.cart.value
    if session is None:
        return MISSING
    if name == "device":
        return session.device or MISSING
    if name == "visit.count":
        return visitor.sessions
    if name == "visit.first":
        return session.first_visit
    if name == "visit.days_since_last":
        return session.days_since_last_visit if session.days_since_last_visit is not None else MISSING
    if name.startswith("visit.last_session_"):
        value = getattr(session, name[len("visit."):], None)
        return value if value is not None else MISSING
    if name.startswith("utm."):
        return session.utm.get(name[4:], MISSING)
    if name == "page.path":
        return session.page if session.page is not None else MISSING
    if name == "page.url":
        return session.url or MISSING
    if name == "page.referrer":
        return session.referrer or MISSING
    if name == "page.title":
        return session.title or MISSING
    return MISSING


_TABLET = re.compile(r"iPad|Tablet|PlayBook|Silk|Kindle|(Android(?!.*Mobile))", re.I)
_MOBILE = re.compile(r"Mobi|iPhone|iPod|Android.*Mobile|Windows Phone|BlackBerry|Opera Mini", re.I)


def device_class(user_agent: str | None) -> str | None:
    """mobile, tablet or desktop, from a User-Agent header; None when there is none."""
    if not user_agent:
        return None
    if _TABLET.search(user_agent):
        return "tablet"
    if _MOBILE.search(user_agent):
        return "mobile"
    return "desktop"
