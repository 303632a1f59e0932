"""Property conditions: every operator, nesting, and missing values."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nudge.rules.conditions import compile_where

PROPS = {"price": 45, "name": "Blue Mug", "tags": ["sale", "kitchen"], "vip": True, "note": None}


@pytest.mark.parametrize(
    "spec, expected",
    [
        ({"price": 45}, True),
        ({"price": {"eq": 44}}, False),
        ({"price": {"ne": 44}}, True),
        ({"name": {"in": ["Blue Mug", "Cup"]}}, True),
        ({"name": {"not_in": ["Blue Mug"]}}, False),
        ({"price": {"gt": 45}}, False),
        ({"price": {"gte": 45}}, True),
        ({"price": {"lt": 50, "gt": 40}}, True),
        ({"price": {"lte": 44.99}}, False),
        ({"name": {"gt": 3}}, False),  # comparisons only hold between numbers
        ({"name": {"contains": "Mug"}}, True),
        ({"tags": {"contains": "sale"}}, True),
        ({"tags": {"contains": "garden"}}, False),
        ({"name": {"starts_with": "Blue"}}, True),
        ({"name": {"regex": "^blue", }}, False),
        ({"name": {"regex": "(?i)^blue"}}, True),
        ({"missing": {"exists": False}}, True),
        ({"missing": {"exists": True}}, False),
        ({"name": {"exists": True}}, True),
        ({"missing": "x"}, False),
        ({"missing": {"ne": "x"}}, False),  # a missing value satisfies nothing but exists: false
        ({"vip": True}, True),
        ({"note": None}, True),
        ({"any": [{"price": {"lt": 10}}, {"vip": True}]}, True),
        ({"all": [{"price": {"lt": 10}}, {"vip": True}]}, False),
        ({"not": {"price": {"lt": 10}}}, True),
        ({"not": {"any": [{"vip": True}]}}, False),
        ({"price": {"gte": 40}, "name": {"starts_with": "Red"}}, False),
    ],
)
def test_operator(spec, expected):
    assert compile_where(spec)(PROPS) is expected


# --- one operator on one field: the shape most campaigns use, compiled to a single call --------

VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=True), st.sampled_from([0.0, 1.0, 2.5, 40, 45]),
    st.text(max_size=3), st.sampled_from(["Blue Mug", "Blue", "Mug", "sale"]), st.lists(st.sampled_from(["sale", 1, "Mug"]), max_size=2),
)
EXPECTED = {
    "eq": VALUES, "ne": VALUES, "in": st.lists(VALUES, max_size=3), "not_in": st.lists(VALUES, max_size=3),
    "gt": st.integers(-3, 50) | st.floats(-3, 50), "gte": st.integers(-3, 50) | st.floats(-3, 50),
    "lt": st.integers(-3, 50) | st.floats(-3, 50), "lte": st.integers(-3, 50) | st.floats(-3, 50),
    "contains": st.sampled_from(["sale", "Mug", "x", 1]), "starts_with": st.sampled_from(["Blue", "b", ""]),
    "regex": st.sampled_from(["^B", "ug$", "(?i)mug"]),
}


def spelled_out(op, expected, props, key="k") -> bool:
    """Each operator as docs/campaigns.md states it, the long way."""
    if key not in props:
        return False
    v = props[key]
    number = isinstance(v, (int, float)) and not isinstance(v, bool)
    return {
        "eq": lambda: v == expected, "ne": lambda: v != expected,
        "in": lambda: v in expected, "not_in": lambda: v not in expected,
        "gt": lambda: number and v > expected, "gte": lambda: number and v >= expected,
        "lt": lambda: number and v < expected, "lte": lambda: number and v <= expected,
        "contains": lambda: (isinstance(v, str) and isinstance(expected, str) and expected in v) or (isinstance(v, list) and expected in v),
        "starts_with": lambda: isinstance(v, str) and v.startswith(expected),
        "regex": lambda: isinstance(v, str) and re.search(expected, v) is not None,
    }[op]()


@settings(max_examples=1500, deadline=None)
@given(st.sampled_from(sorted(EXPECTED)).flatmap(lambda op: st.tuples(st.just(op), EXPECTED[op])),
       st.dictionaries(st.sampled_from(["k", "other"]), VALUES, max_size=2))
def test_one_operator_on_one_field(case, props):
    op, expected = case
    assert compile_where({"k": {op: expected}})(props) is bool(spelled_out(op, expected, props))
    assert compile_where({"k": {op: expected, "exists": True}})(props) is bool(spelled_out(op, expected, props))
