"""The events a visitor's browser (or later, a backend) may send, and their validation.

Validation is strict and specific: an invalid event is refused with a reason that names the field,
and nothing of it reaches the session state.

Two paths, one answer. :func:`check` is the reference: every rule, each error worded for the
field at fault. :func:`validate`, which every event goes through, first tries the precompiled
check of its name (``FAST``): a few type tests that pass the props of a plain, valid event in
one call, and give up — to :func:`check` — on anything else. A fast check never refuses and
never says more than "the reference would accept these props unchanged"; the tests hold it to that.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any, Literal, overload

from nudge.errors import BadEvent, UnknownEvent

MAX_PROPS = 32
MAX_STRING = 512
MAX_NAME = 64
MAX_NUMBER = int(sys.float_info.max)  # the largest integer a float can hold (~1.8e308)


@dataclass(slots=True)
class Event:
    name: str
    props: dict[str, Any]
    seq: int = 0  # the client's sequence number (0 for events that do not come from a socket)
    trusted: bool = False  # from a backend holding the secret key, not from a browser
    # When it happened, if a backend said so (``timestamp``) and it was before it arrived: a
    # conversion is judged by it (a purchase reported late still falls in the goal's window).
    at: float | None = None


@overload
def _number(props: dict[str, Any], key: str, seq: int, *, required: Literal[True], minimum: float = 0.0) -> float: ...
@overload
def _number(props: dict[str, Any], key: str, seq: int, *, required: bool, minimum: float = 0.0) -> float | None: ...
def _number(props: dict[str, Any], key: str, seq: int, *, required: bool, minimum: float = 0.0) -> float | None:
    value = props.get(key)
    if value is None:
        if required:
            raise BadEvent(f"props.{key} is required", seq)
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadEvent(f"props.{key} must be a number, got {type(value).__name__}", seq)
    if value.__class__ is int and not -MAX_NUMBER <= value <= MAX_NUMBER:
        # JSON carries integers of any length; past the largest float, math.isfinite() and
        # every sum with a float raise OverflowError. No price or depth is that large.
        raise BadEvent(f"props.{key} must be a number of at most 1.8e308, got an integer of {len(str(abs(value)))} digits", seq)
    if not math.isfinite(value):
        raise BadEvent(f"props.{key} must be a number, not {value!r}", seq)
    if value < minimum:
        raise BadEvent(f"props.{key} must be ≥ {minimum:g}", seq)
    return value


@overload
def _string(props: dict[str, Any], key: str, seq: int, *, required: Literal[True]) -> str: ...
@overload
def _string(props: dict[str, Any], key: str, seq: int, *, required: bool) -> str | None: ...
def _string(props: dict[str, Any], key: str, seq: int, *, required: bool) -> str | None:
    value = props.get(key)
    if value is None:
        if required:
            raise BadEvent(f"props.{key} is required", seq)
        return None
    if not isinstance(value, str):
        raise BadEvent(f"props.{key} must be a string, got {type(value).__name__}", seq)
    return value


def _page_view(props: dict[str, Any], seq: int) -> None:
    path = _string(props, "path", seq, required=True)
    if not path.startswith("/"):
        raise BadEvent("props.path must start with '/'", seq)


def _scroll(props: dict[str, Any], seq: int) -> None:
    depth = _number(props, "depth", seq, required=True)
    if depth > 100:
        raise BadEvent("props.depth must be between 0 and 100", seq)
    props["depth"] = int(depth)


def _idle(props: dict[str, Any], seq: int) -> None:
    after = _number(props, "after", seq, required=False)
    props["after"] = min(after or 0.0, 3600.0)


def _add_to_cart(props: dict[str, Any], seq: int) -> None:
    _string(props, "id", seq, required=True)
    _string(props, "name", seq, required=True)
    props["price"] = _number(props, "price", seq, required=False) or 0.0
    quantity = props.get("quantity", 1)
    if isinstance(quantity, bool) or not isinstance(quantity, int) or not 1 <= quantity <= 10_000:
        raise BadEvent("props.quantity must be a whole number from 1 to 10000", seq)
    props["quantity"] = quantity


def _remove_from_cart(props: dict[str, Any], seq: int) -> None:
    _string(props, "id", seq, required=True)
    quantity = props.get("quantity")
    if quantity is not None and (isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 1):
        raise BadEvent("props.quantity must be a whole number ≥ 1", seq)


def _purchase(props: dict[str, Any], seq: int) -> None:
    _number(props, "value", seq, required=False)


def _message_report(props: dict[str, Any], seq: int) -> None:
    msg = props.get("msg")
    if isinstance(msg, bool) or not isinstance(msg, int) or msg < 1:
        raise BadEvent("props.msg must be the seq of a show message", seq)
    _string(props, "campaign", seq, required=False)


def _tab_visible(props: dict[str, Any], seq: int) -> None:
    props["away"] = min(_number(props, "away", seq, required=False) or 0.0, 86400.0 * 365)


def _identify(props: dict[str, Any], seq: int) -> None:
    for key, value in props.items():
        if value is not None and (isinstance(value, (dict, list)) or not isinstance(value, (str, int, float, bool))):
            raise BadEvent(f"props.{key}: traits must be text, numbers, true/false or null", seq)
    # ``user_id`` with its ``user_token`` is checked by the hub (identity.check_identify), which
    # holds the keys and the clock this pure check has not.


def _nothing(props: dict[str, Any], seq: int) -> None:
    pass


# Built-in event names and the check each one's properties must pass.
BUILT_IN = {
    "page_view": _page_view,
    "scroll": _scroll,
    "click": _nothing,
    "idle": _idle,
    "active": _nothing,
    "add_to_cart": _add_to_cart,
    "remove_from_cart": _remove_from_cart,
    "purchase": _purchase,
    "shown": _message_report,
    "clicked": _message_report,
    "dismissed": _message_report,
    "exit_intent": _nothing,
    "tab_hidden": _nothing,
    "tab_visible": _tab_visible,
    "identify": _identify,
}


def validate(name: Any, props: Any, seq: int, custom: frozenset[str]) -> Event:
    """Check an event as received and return it; raise :class:`BadEvent` or :class:`UnknownEvent`.

    ``custom`` holds the names the campaign file declares or listens to, beyond the built-ins.
    The same answer as :func:`check`, sooner for the events browsers send all the time.
    """
    if name.__class__ is str and props.__class__ is dict:
        fast = FAST.get(name)
        if fast is not None and fast(props):
            return Event(name, props, seq)
    return check(name, props, seq, custom)


def check(name: Any, props: Any, seq: int, custom: frozenset[str]) -> Event:
    """The reference validation: every rule, and the error for the first one broken."""
    if not isinstance(name, str) or not name:
        raise BadEvent("name must be a non-empty string", seq)
    if props is None:
        props = {}
    elif not isinstance(props, dict):
        raise BadEvent("props must be a map", seq)
    if len(props) > MAX_PROPS:
        raise BadEvent(f"props has {len(props)} keys, at most {MAX_PROPS} allowed", seq)
    for key, value in props.items():
        if not isinstance(key, str):
            raise BadEvent("props keys must be strings", seq)
        if isinstance(value, str) and len(value) > MAX_STRING:
            raise BadEvent(f"props.{key} is longer than {MAX_STRING} characters", seq)
    check = BUILT_IN.get(name)
    if check is None:
        if name not in custom:
            shown = name if len(name) <= MAX_NAME else name[:MAX_NAME] + "…"
            raise UnknownEvent(
                f"unknown event {shown!r}; declare it under events: in the campaign file", seq
            )
        check = _nothing
    check(props, seq)
    return Event(name, props, seq)


# --- the fast checks ---------------------------------------------------------------------------
# Each takes the props (a dict) of an event of its name and returns True only when check() would
# accept them and leave them as they are (its normalisations would change nothing). False means
# "ask check()", which then accepts, normalises or words the refusal.


def _plain(props: dict[str, Any]) -> bool:
    """The rules every event's props follow: few keys, string keys, no long strings."""
    if len(props) > MAX_PROPS:
        return False
    for key, value in props.items():
        if key.__class__ is not str or (isinstance(value, str) and len(value) > MAX_STRING):
            return False
    return True


def _fast_scroll(props: dict[str, Any]) -> bool:
    depth = props.get("depth")
    return depth.__class__ is int and 0 <= depth <= 100 and (len(props) == 1 or _plain(props))


def _fast_page_view(props: dict[str, Any]) -> bool:
    path = props.get("path")
    return path.__class__ is str and path.startswith("/") and _plain(props)


def _fast_idle(props: dict[str, Any]) -> bool:
    # check() stores min(after or 0.0, 3600.0): the very same int for 1 to 3600.
    after = props.get("after")
    return after.__class__ is int and 0 < after <= 3600 and _plain(props)


FAST: dict[str, Any] = {
    "scroll": _fast_scroll,
    "page_view": _fast_page_view,
    "click": _plain,
    "active": _plain,
    "exit_intent": _plain,
    "tab_hidden": _plain,
    "idle": _fast_idle,
}
