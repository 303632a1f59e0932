"""Property conditions: ``where:`` maps compiled once into plain predicates over a dict.

    where:
      price: {gte: 20}          # operator map
      name: Mug                 # shorthand for {eq: Mug}
      any:                      # all / any / not nest
        - category: kitchen
        - tags: {contains: sale}
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, Protocol

import re2

Predicate = Callable[[Any], bool]
Lookup = Callable[[Any, str], Any]  # (data, key) -> value, or MISSING

MISSING = object()
_MISSING = MISSING

# The predicates that are exactly "property K equals V", with (K, V): see equality().
_EQUALS: weakref.WeakKeyDictionary[Predicate, tuple[str, Any]] = weakref.WeakKeyDictionary()


def _dict_lookup(data: Any, key: str) -> Any:
    return data.get(key, MISSING)


def _num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ``regex`` patterns run on text a visitor sends. Python's backtracking ``re`` takes exponential
# time on some patterns (``^(a+)+$`` doubles its work with each "a": 0.6 s at 24 characters, with
# every other visitor of the node waiting), and has no timeout. RE2 matches in time linear in the
# text whatever the pattern, and refuses what only backtracking can do (backreferences,
# lookahead and lookbehind): such a pattern is refused when the campaigns load.
_RE2 = re2.Options()
_RE2.log_errors = False  # the refusal is the loader's to report


class Regex(Protocol):
    """What a compiled RE2 pattern offers the conditions (the re2 package ships no types)."""

    def search(self, text: str) -> object: ...


def compile_regex(pattern: Any) -> Regex:
    """``pattern`` compiled for ``regex`` conditions (RE2 syntax); ValueError says why not."""
    if not isinstance(pattern, str):
        raise ValueError("must be text")
    try:
        compiled: Regex = re2.compile(pattern, _RE2)
        return compiled
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        raise ValueError(reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)) from None


def _compare(op: str, expected: Any) -> Callable[[Any], bool]:
    if op == "eq":
        return lambda v: v == expected
    if op == "ne":
        return lambda v: v != expected
    if op == "in":
        options = list(expected)
        return lambda v: v in options
    if op == "not_in":
        options = list(expected)
        return lambda v: v not in options
    # Comparisons hold between numbers only. Plain ints and floats are told apart by their class
    # first (bool is a class of its own): one call per test where most values are prices.
    if op == "gt":
        return lambda v: (v.__class__ is int or v.__class__ is float or _num(v)) and v > expected
    if op == "gte":
        return lambda v: (v.__class__ is int or v.__class__ is float or _num(v)) and v >= expected
    if op == "lt":
        return lambda v: (v.__class__ is int or v.__class__ is float or _num(v)) and v < expected
    if op == "lte":
        return lambda v: (v.__class__ is int or v.__class__ is float or _num(v)) and v <= expected
    if op == "contains":
        return lambda v: (isinstance(v, str) and isinstance(expected, str) and expected in v) or (
            isinstance(v, list) and expected in v
        )
    if op == "starts_with":
        return lambda v: isinstance(v, str) and v.startswith(expected)
    if op == "regex":
        pattern = compile_regex(expected)
        return lambda v: isinstance(v, str) and pattern.search(v) is not None
    raise ValueError(f"unknown operator {op!r}")


OPERATORS = ("eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "contains", "starts_with", "regex", "exists")
COMBINATORS = ("all", "any", "not")


def compile_where(spec: dict[str, Any], lookup: Lookup = _dict_lookup) -> Predicate:
    """Compile a condition map (already validated by the campaign loader) into a predicate.

    ``lookup(data, key)`` finds a value in what the predicate is applied to: by default a dict of
    event properties; for audiences, a view of the visitor's state that resolves dotted names."""
    tests: list[Predicate] = []
    for key, value in spec.items():
        if key == "all":
            tests.append(_every([compile_where(item, lookup) for item in value]))
        elif key == "any":
            tests.append(_some([compile_where(item, lookup) for item in value]))
        elif key == "not":
            tests.append(_negated(compile_where(value, lookup)))
        else:
            tests.append(_field_test(key, value, lookup))
    if len(tests) == 1:
        return tests[0]
    return lambda props: all(t(props) for t in tests)


def _every(parts: list[Predicate]) -> Predicate:
    return lambda props: all(p(props) for p in parts)


def _some(parts: list[Predicate]) -> Predicate:
    return lambda props: any(p(props) for p in parts)


def _negated(inner: Predicate) -> Predicate:
    return lambda props: not inner(props)


def equality(predicate: Predicate | None) -> tuple[str, Any] | None:
    """``(key, value)`` when ``predicate`` is exactly "the property ``key`` equals ``value``" (a
    ``where:`` of one field, ``key: value`` or ``key: {eq: value}``, over a dict of event
    properties), else None. The engine indexes such campaigns by value instead of testing each."""
    return None if predicate is None else _EQUALS.get(predicate)


def _equals(key: str, value: Any, lookup: Lookup) -> Predicate:
    def test(props: Any) -> bool:
        found: bool = lookup(props, key) == value
        return found

    if lookup is _dict_lookup:
        _EQUALS[test] = (key, value)  # see equality()
    return test


def _field_test(key: str, value: Any, lookup: Lookup) -> Predicate:
    if not isinstance(value, dict):
        return _equals(key, value, lookup)
    if len(value) == 1 and "eq" in value:
        return _equals(key, value["eq"], lookup)
    checks: list[Callable[[Any], bool]] = []
    must_exist: bool | None = None
    for op, expected in value.items():
        if op == "exists":
            must_exist = bool(expected)
        else:
            checks.append(_compare(op, expected))

    if must_exist is None and len(checks) == 1 and lookup is _dict_lookup:
        # The usual shape (``price: {gte: 20}``), tested without a loop: the same answers.
        check = checks[0]

        def one(props: Any) -> bool:
            v = props.get(key, _MISSING)
            return v is not _MISSING and check(v)

        return one

    def test(props: Any) -> bool:
        v = lookup(props, key)
        if v is _MISSING:
            return must_exist is False
        if must_exist is False:
            return False
        return all(check(v) for check in checks)

    return test


def unmet(spec: dict[str, Any], data: Any, lookup: Lookup = _dict_lookup) -> list[str]:
    """The conditions of ``spec`` that do not hold for ``data``, each said in words with the
    value found (``device: is 'desktop', wants 'mobile'``); empty when all hold. For explaining a
    decision, not for deciding: it compiles ``spec`` afresh on every call."""
    out: list[str] = []
    for key, value in spec.items():
        if compile_where({key: value}, lookup)(data):
            continue
        if key == "all":
            out.extend(f"all: {reason}" for item in value for reason in unmet(item, data, lookup))
        elif key == "any":
            out.append(f"any: none holds ({'; '.join(r for item in value for r in unmet(item, data, lookup))})")
        elif key == "not":
            out.append(f"not: {value!r} holds")
        else:
            found = lookup(data, key)
            wants = ", ".join(f"{op} {arg!r}" for op, arg in value.items()) if isinstance(value, dict) else repr(value)
            out.append(f"{key}: is {'missing' if found is _MISSING else repr(found)}, wants {wants}")
    return out
