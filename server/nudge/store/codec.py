"""Visitor and session state to bytes and back, generically: dataclass fields → a MessagePack map.

Nothing here names a field. A field added to ``state.py`` is stored from then on; a field the
stored bytes lack takes its default; a stored field the code no longer knows is ignored. So an
upgrade (or a rollback) never fails to load what an older (or newer) node wrote.

Decoding follows the dataclasses' type hints, so nested records (``Cart`` → ``CartItem``), sets
and dicts of records come back as the types the engine expects.
"""

from __future__ import annotations

import dataclasses
import logging
import types
import typing
from functools import cache
from typing import Any, TypeVar

import msgpack

T = TypeVar("T")

log = logging.getLogger("nudge.store")


class Unstorable(ValueError, TypeError):
    """A state holding what MessagePack cannot: a lone surrogate in a string, a whole number
    beyond 64 bits (or a value of a type no state field has). The edge normalises both (:mod:`nudge.rules.values`); a state that has one
    anyway is left out of its write alone, logged and counted, so that it never fails the batch
    it is in (the store implementations do that)."""


def _plain(value: Any) -> Any:
    """A value made of maps, lists and scalars only."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value) if isinstance(value, set | frozenset) else value
        return [_plain(v) for v in items]
    return value


def dumps(state: Any) -> bytes:
    """Encode a state dataclass (any nesting of dataclasses, dicts, lists, sets, scalars).

    The same bytes as packing ``_plain(state)``, but msgpack walks the maps and lists in C and
    calls back only for a dataclass (one shallow map of its fields) or a set: 7x faster than
    building the plain copy in Python, which is what the write-behind of a thousand sessions at
    once costs the event loop (bench/RESULTS-redis.md)."""
    try:
        packed: bytes = msgpack.packb(state, default=_shallow, use_bin_type=True)
        return packed
    except (UnicodeEncodeError, OverflowError, TypeError) as exc:
        raise Unstorable(_why(exc)) from None


def pack(value: Any) -> bytes:
    """Plain maps, lists and scalars to MessagePack (a queued message, a snapshot's record);
    raises :class:`Unstorable` as :func:`dumps` does."""
    try:
        packed: bytes = msgpack.packb(value, use_bin_type=True)
        return packed
    except (UnicodeEncodeError, OverflowError, TypeError) as exc:
        raise Unstorable(_why(exc)) from None


def left_out(refused: dict[str, int], kind: str, ident: str, exc: Unstorable) -> None:
    """Count and log one record a store could not encode (it is not written; the rest are)."""
    refused[kind] += 1
    log.error("%s %s not stored: %s (the other records are)", kind, ident, exc)


def _why(exc: Exception) -> str:
    if isinstance(exc, UnicodeEncodeError):
        return f"a string holds a lone surrogate ({exc.object[exc.start:exc.end]!r})"
    if isinstance(exc, OverflowError):
        return "a whole number beyond 64 bits"
    return str(exc)  # a value of a type the store does not keep


def _shallow(value: Any) -> Any:
    """What msgpack cannot pack by itself, one level down: a dataclass as a map of its fields
    (in declaration order, as ``_plain`` does), a set as a sorted list."""
    kind: type = type(value)
    names = _field_names(kind)
    if names is not None:
        return {name: getattr(value, name) for name in names}
    if isinstance(value, set | frozenset):
        return sorted(value)
    if isinstance(value, int):  # msgpack asks here about one beyond 64 bits
        raise Unstorable("a whole number beyond 64 bits")
    raise TypeError(f"cannot store a {type(value).__name__}")


@cache
def _field_names(kind: type) -> tuple[str, ...] | None:
    if not dataclasses.is_dataclass(kind):
        return None
    return tuple(f.name for f in dataclasses.fields(kind))


def loads(cls: type[T], data: bytes) -> T:
    """Decode what :func:`dumps` wrote back into ``cls``, tolerating added and removed fields."""
    built: T = _build(cls, msgpack.unpackb(data, raw=False, strict_map_key=False))
    return built


def to_plain(state: Any) -> Any:
    """For snapshots that pack many states into one document."""
    return _plain(state)


def from_plain(cls: type[T], value: Any) -> T:
    built: T = _build(cls, value)
    return built


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _build(kind: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(kind)
    if origin is typing.Union or origin is types.UnionType:
        options = [arg for arg in typing.get_args(kind) if arg is not type(None)]
        return _build(options[0], value) if len(options) == 1 else value
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise ValueError(f"expected a map for {kind.__name__}, got {type(value).__name__}")
        hints = _hints(kind)
        known = {}
        for f in dataclasses.fields(kind):
            if f.name in value and f.init:
                known[f.name] = _build(hints.get(f.name, Any), value[f.name])
        missing = [
            f.name for f in dataclasses.fields(kind)
            if f.init and f.name not in known
            and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise ValueError(f"{kind.__name__} is missing {', '.join(missing)}")
        return kind(**known)
    args = typing.get_args(kind)
    if origin is dict:
        inner = args[1] if len(args) == 2 else Any
        return {k: _build(inner, v) for k, v in value.items()}
    if origin is tuple and args and args[-1] is not Ellipsis and len(args) == len(value):
        return tuple(_build(kind_at, v) for kind_at, v in zip(args, value, strict=True))
    if origin in (list, set, frozenset, tuple):
        inner = args[0] if args else Any
        items = [_build(inner, v) for v in value]
        return items if origin is list else origin(items)
    if kind is float and isinstance(value, int):
        return float(value)
    return value
