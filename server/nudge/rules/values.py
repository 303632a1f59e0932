"""The one rule for values from outside (docs/protocol.md, "Values"): a value is what a browser's
JavaScript holds, in a form every part of Nudge can keep.

Visitors' values are stored as MessagePack (the store, the event log, the memory snapshot),
which holds text only as valid UTF-8 and whole numbers only within 64 bits. JSON can say more
than that, and so can a page: a JavaScript string is UTF-16, in which one half of a pair (a lone
*surrogate*, ``"\\ud800"``) is legal, and ``JSON.stringify`` writes a number as large as a double
holds in whole digits (``98765432109876543210``). One such value kept in a visitor's state made
every write of the store fail for everyone (issue 13). So, at the edge, before anything is kept:

- **text**: a lone surrogate becomes U+FFFD, the replacement character (what a browser shows for
  it anyway). Valid pairs are one character already once JSON is decoded.
- **numbers**: a whole number outside −2⁶³ … 2⁶⁴−1 becomes the double JavaScript had
  (``98765432109876543210`` → ``9.876543210987654e19``); one beyond a double's range (above about
  1.8e308, which no JavaScript number is) is refused: :class:`OutOfRange`.

Pure: the codecs apply it to what they decode, campaign text is checked against it at load.
"""

from __future__ import annotations

import re
from typing import Any

MIN_WHOLE = -(2**63)  # the whole numbers MessagePack holds
MAX_WHOLE = 2**64 - 1
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
REPLACEMENT = "\ufffd"


class OutOfRange(ValueError):
    """A number no JavaScript value is: refused rather than kept."""


def text(value: str) -> str:
    """``value`` with each lone surrogate replaced by U+FFFD (the same string when it has none)."""
    return _LONE_SURROGATE.sub(REPLACEMENT, value)


def has_lone_surrogate(value: str) -> bool:
    return not value.isascii() and _LONE_SURROGATE.search(value) is not None


def whole(value: int) -> int | float:
    """A whole number as the rule keeps it: itself within 64 bits, else the double it rounds to."""
    if MIN_WHOLE <= value <= MAX_WHOLE:
        return value
    try:
        return float(value)
    except OverflowError:
        raise OutOfRange("a number beyond what JavaScript holds (about 1.8e308)") from None


def mend(value: Any) -> Any:
    """``value`` (maps, lists and scalars, as a codec decodes them) with the rule applied to every
    string, key and whole number in it. Nesting is bounded before this runs (the codecs' depth
    limit), so the recursion is too."""
    kind = value.__class__
    if kind is str:
        return text(value)
    if kind is int:
        return whole(value)
    if kind is dict:
        return {(text(k) if k.__class__ is str else k): mend(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        return [mend(v) for v in value]
    return value
