"""What a Redis reply holds, narrowed for the type checker.

redis-py types every reply as ``bytes | str``: which of the two depends on the client's
``decode_responses``, which its types cannot see. The store's own clients never decode (bytes);
the blocking reader of the event log does (str). These give the one a caller needs, whichever
client answered, at the cost of one ``isinstance``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def text(reply: bytes | str) -> str:
    """A reply as text (UTF-8, as every key and member the store writes)."""
    return reply.decode() if isinstance(reply, bytes) else reply


def raw(reply: bytes | str) -> bytes:
    """A reply as bytes (a packed state, a queue entry)."""
    return reply if isinstance(reply, bytes) else reply.encode()


def scored(reply: Iterable[Any]) -> list[tuple[bytes, float]]:
    """The (member, score) pairs of a ``ZRANGE … WITHSCORES``."""
    return [(raw(member), float(score)) for member, score in reply]
