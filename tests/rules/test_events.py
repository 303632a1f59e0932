"""Event validation: the precompiled checks of the events browsers send all the time
(:data:`nudge.rules.events.FAST`) answer exactly as the reference :func:`nudge.rules.events.check` does."""

from __future__ import annotations

import copy

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nudge.errors import BadEvent, UnknownEvent
from nudge.rules import events

CUSTOM = frozenset({"signup"})

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5), st.integers(95, 105), st.integers(3595, 3605), st.integers(),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, 50.0, 50.5, 100.0, 3600.0, -0.0]),
    st.text(max_size=8), st.sampled_from(["/", "/a", "a", ""]),
    st.sampled_from(["x" * 512, "x" * 513, "/" + "y" * 511, "/" + "y" * 512]),  # at MAX_STRING
)
VALUES = SCALARS | st.lists(SCALARS, max_size=2) | st.dictionaries(st.text(max_size=3), SCALARS, max_size=2)
KEYS = st.sampled_from(["depth", "path", "after", "target", "text", "url", "title", "id", "name", "msg"]) | st.text(max_size=6)
PROPS = st.one_of(
    st.dictionaries(KEYS, VALUES, max_size=5),
    st.dictionaries(KEYS | st.integers(0, 3), VALUES, max_size=3),  # keys that are not strings
    st.dictionaries(st.text(min_size=1, max_size=4), st.just(1), min_size=31, max_size=34),  # about MAX_PROPS keys
    st.none(), st.lists(SCALARS, max_size=2), st.text(max_size=3),
)
NAMES = st.sampled_from([*events.FAST, *events.BUILT_IN, "signup", "nope", ""]) | st.integers() | st.none()
# The property each fast check looks at, present, beside a few others.
OWN = {"scroll": "depth", "page_view": "path", "idle": "after", "click": "target"}
TARGETED = st.sampled_from(sorted(OWN)).flatmap(lambda name: st.tuples(
    st.just(name),
    st.fixed_dictionaries({OWN[name]: SCALARS}, optional={k: SCALARS for k in ("text", "title", "depth", 1) if k != OWN[name]}),
))


def outcome(call, name, props) -> tuple:
    try:
        event = call(name, props, 7, CUSTOM)
    except (BadEvent, UnknownEvent) as exc:
        return (type(exc).__name__, exc.code, exc.reason, exc.seq)
    return ("event", event.name, repr(event.props), event.seq)


@settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.tuples(NAMES, PROPS) | TARGETED)
def test_validate_answers_as_the_reference_does(event):
    """The same event, or the same error worded the same, and the same props afterwards."""
    name, props = event
    mine, theirs = copy.deepcopy(props), copy.deepcopy(props)
    assert outcome(events.validate, name, mine) == outcome(events.check, name, theirs)
    assert repr(mine) == repr(theirs)


@pytest.mark.parametrize(
    "name, props",
    [
        ("scroll", {"depth": 40}),
        ("scroll", {"depth": 0}),
        ("scroll", {"depth": 100}),
        ("page_view", {"path": "/article.html", "title": "An article"}),
        ("click", {"target": "related", "text": "Read next"}),
        ("active", {}),
        ("idle", {"after": 20}),
        ("idle", {"after": 3600}),
        ("tab_hidden", {}),
        ("exit_intent", {}),
    ],
)
def test_plain_events_take_the_fast_check(name, props):
    """What the snippet sends most is accepted in one call (the property above holds it to the
    reference's answer)."""
    assert events.FAST[name](dict(props)) is True


@pytest.mark.parametrize(
    "name, props",
    [
        ("scroll", {"depth": 55.7}),  # the reference truncates it
        ("scroll", {"depth": True}),
        ("scroll", {"depth": 101}),
        ("page_view", {"path": "relative"}),
        ("idle", {"after": 0}),  # the reference stores 0.0
        ("idle", {"after": 99999}),  # ... and 3600.0
        ("idle", {}),
        ("click", {"text": "x" * 513}),
        ("click", {1: "x"}),
        ("click", {str(i): i for i in range(33)}),
    ],
)
def test_anything_else_goes_to_the_reference(name, props):
    assert events.FAST[name](dict(props)) is False
