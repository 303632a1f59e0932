"""Property conditions: every operator, nesting, and missing values."""

from __future__ import annotations

import pytest
from nudge.conditions import compile_where

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
