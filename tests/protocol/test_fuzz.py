"""Hostile frames, generated (hypothesis): whatever bytes arrive after hello, the decoders and the
hub answer per the protocol — an ``error`` frame, an ``ack`` or a ``pong`` — and never raise; and
after every one, the state of every visitor (the fuzzing ones' and a neighbour's) can still be
written to the store and read back (a lone surrogate or a 65-bit integer kept in one visitor's
state once failed every write of the store: issue 13). A Redis-backed run checks the same with
the real write-behind (``test_after_hostile_frames_a_neighbour_is_still_written_to_redis``).

Sans-I/O: frames go straight into :meth:`Hub.on_frame` with a connection whose writes are
collected, so tens of thousands of frames run in seconds: the suite feeds over 116,000 (hypothesis
~16,000, a seeded mutation fuzzer 100,000). ``bench/fuzz.py`` runs the hypothesis checks longer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nudge.protocol import codec as protocol
from nudge.rules.campaigns import load_text
from nudge.rules.state import SessionState, VisitorState
from nudge.runtime.clock import FakeClock
from nudge.runtime.config import Settings, Site
from nudge.runtime.connection import Connection
from nudge.runtime.hub import Hub
from nudge.store import codec as store_codec
from nudge.store.memory import MemoryStore

EXAMPLES = int(os.environ.get("NUDGE_FUZZ_EXAMPLES", "1500"))  # per test; bench/fuzz.py runs more

CAMPAIGNS = load_text("""
events: [signup]
campaigns:
  - {id: mug, trigger: {event: add_to_cart}, message: {kind: toast, title: "Hi {{ event.name }}"}}
  - {id: cart, trigger: {event: add_to_cart, absent: purchase, within: 15m}, message: {kind: modal, title: x}}
  - {id: reader, trigger: {path: /a*, scroll: 50}, message: {kind: banner, title: y}}
""", "fuzz.yaml")


class Harness:
    """A hub with one attached session per codec; frames in, replies collected."""

    def __init__(self, store=None) -> None:
        self.loop = asyncio.new_event_loop()
        self.hub = Hub(Settings(events_per_second=1e9, event_burst=10**9), CAMPAIGNS, store or MemoryStore(), FakeClock())
        self.sent: list[dict] = []
        self.frames = 0  # fed so far
        self.sessions = {}
        if not self.hub.alone:
            self.loop.run_until_complete(self.hub.start())  # the relay and the write-behind
        for codec in (protocol.JsonCodec(), protocol.MsgpackCodec(), protocol.JsonCodec()):
            conn = self._connection(codec)
            hello = protocol.Hello("pk_fuzz", None, None, 0)
            live = self.loop.run_until_complete(self.hub.attach(Site("pk_fuzz", frozenset({"*"})), hello, conn))
            conn.queue.clear()
            self.sessions.setdefault(codec.binary, (live, conn))
            self.neighbour = live  # the last one: a visitor who sends nothing hostile
        self.loop.run_until_complete(self.neighbour_event())

    async def neighbour_event(self) -> None:
        """The neighbour adds to their cart, as any shopper does."""
        live = self.neighbour
        live.state.last_event_seq = 0
        frame = json.dumps({"t": "ev", "seq": 1, "name": "add_to_cart", "props": {"id": "n", "name": "Mug", "price": 2, "quantity": 1}})
        live.conn.in_handler = True
        await self.hub.on_frame(live, live.conn, frame)
        live.conn.in_handler = False
        live.conn.queue.clear()

    def storable(self, binary: bool) -> None:
        """The property that once broke: the state of the visitor the frame came from, and of
        the neighbour, is still what the store can write (the bytes every store that encodes
        writes): encoded after every frame, and read back after every hundredth (decoding is the
        costly half)."""
        live, _ = self.sessions[binary]
        visitor, session = store_codec.dumps(live.visitor.state), store_codec.dumps(live.state)
        if self.frames % 100 == 0:
            assert store_codec.loads(VisitorState, visitor).id == live.visitor.state.id
            assert store_codec.loads(SessionState, session).id == live.state.id
            neighbour = self.neighbour
            assert store_codec.loads(VisitorState, store_codec.dumps(neighbour.visitor.state)).cart.count == 1
            assert store_codec.loads(SessionState, store_codec.dumps(neighbour.state)).id == neighbour.state.id

    def _connection(self, codec) -> Connection:
        async def send(message: dict) -> None:
            self.sent.append(message)

        return Connection(send, codec, limit=10_000, rate=1e9, burst=10**9, now=0.0, origin=None)

    def feed(self, data: str | bytes, binary: bool) -> list[dict]:
        """Hand one frame to the hub; the frames it answered with."""
        live, conn = self.sessions[binary]
        live.state.last_event_seq = 0  # every event is new: none is waved through as a resend
        self.frames += 1
        conn.in_handler = True
        self.loop.run_until_complete(self.hub.on_frame(live, conn, data))
        conn.in_handler = False
        # Acks are queued already encoded (the hot path builds no map for them): decode those.
        replies = [conn.codec.decode(r) if isinstance(r, (str, bytes)) else r for r in conn.queue]
        conn.queue.clear()
        return replies


HARNESS = Harness()

# Values of every JSON/msgpack type, nested a little.
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40), st.text(st.characters(codec=None, categories=["Cs", "Ll", "So"]), max_size=6),  # Cs: lone surrogates
    st.sampled_from([98765432109876543210, -(2**63) - 1, 2**64, 10**400]), st.sampled_from(["", "ev", "ack", "ping", "hello", "/a", "add_to_cart", "x" * 600]),
)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
NAMES = st.sampled_from(["page_view", "scroll", "click", "add_to_cart", "remove_from_cart", "purchase", "shown",
                         "clicked", "dismissed", "identify", "tab_visible", "idle", "signup", "nope"]) | st.text(max_size=70)
PROPS = st.dictionaries(
    st.sampled_from(["path", "depth", "id", "name", "price", "quantity", "value", "msg", "away", "after", "user_id", "token"]) | st.text(max_size=8),
    VALUES, max_size=6,
)
FRAMES = st.one_of(
    st.fixed_dictionaries({"t": st.just("ev"), "seq": VALUES | st.integers(-3, 10**6), "name": NAMES | VALUES, "props": PROPS | VALUES}),
    st.fixed_dictionaries({"t": st.sampled_from(["ack", "ping", "hello", "show", "welcome"]) | VALUES, "seq": VALUES}),
    VALUES,
)


def _depth_bomb(depth: int, opener: str) -> str:
    return '{"t":"ev","seq":1,"name":"x","props":{"a":' + opener * depth


def _encodings(frame) -> list[tuple[str | bytes, bool]]:
    out = []
    with contextlib.suppress(ValueError, TypeError):
        out.append((json.dumps(frame), False))
    with contextlib.suppress(ValueError, TypeError, OverflowError):
        out.append((msgpack.packb(frame, use_bin_type=True), True))
    return out


def check(data: str | bytes, binary: bool) -> None:
    """The protocol's promise: one answer per frame, never an exception.

    A valid ``ack`` is the one frame that needs no answer."""
    replies = HARNESS.feed(data, binary)
    HARNESS.storable(binary)
    kinds = [r["t"] for r in replies]
    assert all(k in ("error", "ack", "pong", "show") for k in kinds), kinds
    if not kinds:
        frame = (protocol.MsgpackCodec() if binary else protocol.JsonCodec()).decode(data)
        assert frame["t"] == "ack", (data, replies)
    for reply in replies:
        if reply["t"] == "error":
            assert reply["code"] in ("malformed", "bad_event", "unknown_event", "protocol"), reply


fuzz = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)


@fuzz
@given(FRAMES)
def test_well_encoded_frames_of_any_shape(frame):
    for data, binary in _encodings(frame):
        check(data, binary)


@fuzz
@given(FRAMES, st.data())
def test_truncated_frames(frame, data):
    for encoded, binary in _encodings(frame):
        cut = data.draw(st.integers(0, max(0, len(encoded) - 1)))
        check(encoded[:cut], binary)


@fuzz
@given(st.binary(max_size=300))
def test_random_bytes_on_either_codec(blob):
    check(blob, True)
    check(blob, False)
    check(blob.decode("latin-1"), False)


@fuzz
@given(st.integers(1, 5000), st.sampled_from(["[", "{\"a\":", "[{\"a\":"]))
def test_deeply_nested_json(depth, opener):
    check(_depth_bomb(depth, opener), False)


def reference_depth(text: str) -> int:
    """How deep brackets nest outside strings, one character at a time (the plain way)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


# Texts made of what the depth scan looks at, and runs of them: escaped quotes, strings that
# never end, brackets inside and outside strings (the scan once took quadratic time on these).
SCAN_TEXT = st.lists(
    st.sampled_from(['"', '\\', '\\"', "[", "]", "{", "}", "a", ",", ":", '"a"', "\n"]).flatmap(
        lambda piece: st.integers(1, 40).map(lambda n: piece * n)),
    max_size=30,
).map("".join)


@fuzz
@given(SCAN_TEXT, st.integers(1, 12))
def test_the_depth_scan_agrees_with_reading_the_text_character_by_character(text, limit):
    assert protocol.json_depth_exceeds(text, limit) is (reference_depth(text) > limit)
    check(text, False)  # and the hub answers such a frame like any other


@fuzz
@given(VALUES)
def test_the_depth_scan_measures_valid_json_as_the_parser_nests_it(value):
    def nesting(v) -> int:
        inner = v.values() if isinstance(v, dict) else v if isinstance(v, list) else None
        return 0 if inner is None else 1 + max((nesting(x) for x in inner), default=0)

    text = json.dumps(value)
    for limit in (1, 2, 3, 8):
        assert protocol.json_depth_exceeds(text, limit) is (nesting(value) > limit)


# MessagePack headers that declare far more than follows: str32, bin32, array32, map32, ext32.
HUGE = [b"\xdb", b"\xc6", b"\xdd", b"\xdf", b"\xc9"]


@fuzz
@given(st.sampled_from(HUGE), st.integers(0, 2**32 - 1), st.binary(max_size=40), st.integers(0, 3000))
def test_msgpack_huge_declared_lengths_and_depth(header, length, tail, depth):
    check(header + length.to_bytes(4, "big") + tail, True)
    check(b"\x91" * depth + b"\x01", True)  # arrays of one, nested ``depth`` deep
    check(b"\x81\xa1t\xa2ev\x81\xa1p" + header + length.to_bytes(4, "big") + tail, True)


def test_the_hub_is_still_sound_after_the_fuzzing():
    """After every test above the same sessions still take events and answer them."""
    for binary in (False, True):
        live, conn = HARNESS.sessions[binary]
        seq = 7
        frame = {"t": "ev", "seq": seq, "name": "page_view", "props": {"path": "/"}}
        data = msgpack.packb(frame) if binary else json.dumps(frame)
        assert HARNESS.feed(data, binary)[-1] == {"t": "ack", "seq": seq}
    print(f"fuzzed frames: {HARNESS.frames}")


# --- a hundred thousand mutated frames, in the suite ----------------------------------------------
# Hypothesis above explores shapes and shrinks what fails; this mutation fuzzer brings the volume:
# valid frames of every kind, changed the way broken or hostile clients change them (wrong types,
# missing and extra fields, truncation, flipped and inserted bytes, nesting bombs, msgpack headers
# declaring gigabytes), each then checked against the same promise. Seeded: a failure reproduces.

MUTATED_FRAMES = int(os.environ.get("NUDGE_FUZZ_MUTATIONS", "100000"))
ODD_VALUES = [None, True, False, 0, -1, 2**63, -(2**64), 1e308, float("inf"), "", "x" * 5000, [], {}, [[[]]],
              {"t": "ev"}, "ev", "add_to_cart", "\u0000", "\ud7ff\ue000", b"\x00\xff", 3.5, [1, "a", None],
              "\ud800", "cut \udbff", "\udfff\ud800", 98765432109876543210, 2**64, -(2**63) - 1, 10**400]


def _seed_frames() -> list[dict]:
    props = {
        "page_view": {"path": "/a/b", "title": "A", "referrer": "https://x.test/"},
        "scroll": {"depth": 55}, "click": {"selector": "#buy"}, "idle": {"after": 30},
        "add_to_cart": {"id": "m1", "name": "Blue Mug", "price": 12.5, "quantity": 2},
        "remove_from_cart": {"id": "m1"}, "purchase": {"value": 25.0, "order": "o1"},
        "shown": {"campaign": "mug"}, "clicked": {"campaign": "mug"}, "dismissed": {"campaign": "cart"},
        "identify": {"user_id": "u1", "user_token": "v1.1.ab"}, "signup": {"plan": "pro"}, "tab_visible": {},
    }
    frames: list[dict] = [{"t": "ev", "seq": 1, "name": name, "props": p} for name, p in props.items()]
    frames.append({"t": "evs", "events": [dict(f) for f in frames[:5]]})
    frames += [{"t": "ack", "seq": 3}, {"t": "ping"}, {"t": "hello", "v": 1, "key": "pk_fuzz"}, {"t": "bye"}]
    return frames


def _mutate_structure(rng, value, depth: int = 0):
    """A copy of ``value`` with a field dropped, added, or given a value of another type."""
    if isinstance(value, dict) and value and depth < 4:
        value = dict(value)
        key = rng.choice(list(value))
        roll = rng.random()
        if roll < 0.25:
            del value[key]
        elif roll < 0.4:
            value[rng.choice(["t", "seq", "props", "name", "events", "zz", "", "\u00e9"])] = rng.choice(ODD_VALUES)
        elif roll < 0.75:
            value[key] = rng.choice(ODD_VALUES)
        else:
            value[key] = _mutate_structure(rng, value[key], depth + 1)
        return value
    if isinstance(value, list) and value and depth < 4:
        value = list(value)
        i = rng.randrange(len(value))
        value[i] = _mutate_structure(rng, value[i], depth + 1) if rng.random() < 0.6 else rng.choice(ODD_VALUES)
        if rng.random() < 0.2:
            value *= rng.randint(2, 40)  # long batches
        return value
    return rng.choice(ODD_VALUES)


def _mutate_bytes(rng, data: bytes) -> bytes:
    roll = rng.random()
    if not data or roll < 0.2:
        return data[: rng.randrange(len(data) + 1)]  # truncated
    buf = bytearray(data)
    if roll < 0.45:
        for _ in range(rng.randint(1, 4)):
            buf[rng.randrange(len(buf))] = rng.randrange(256)  # flipped
    elif roll < 0.6:
        at = rng.randrange(len(buf) + 1)
        buf[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))  # inserted
    elif roll < 0.7:
        at = rng.randrange(len(buf))
        buf[at:at] = rng.choice(HUGE) + rng.randrange(2**32).to_bytes(4, "big")  # a huge declared length
    elif roll < 0.8:
        a = rng.randrange(len(buf))
        buf[a:a] = buf[a: a + rng.randint(1, 64)] * rng.randint(2, 50)  # a slice repeated
    else:
        return (b"[" * rng.randint(1, 3000)) + data if rng.random() < 0.5 else (b"\x91" * rng.randint(1, 3000)) + data
    return bytes(buf)


def test_a_hundred_thousand_mutated_frames():
    import random

    rng = random.Random(20261124)
    seeds = _seed_frames()
    before = HARNESS.frames
    while HARNESS.frames - before < MUTATED_FRAMES:
        frame = rng.choice(seeds)
        if rng.random() < 0.7:
            frame = _mutate_structure(rng, frame)
        for data, binary in _encodings(frame):
            if rng.random() < 0.5:
                raw = data if binary else data.encode()
                mutated = _mutate_bytes(rng, raw)
                data = mutated if binary else mutated.decode("utf-8", "replace")  # text frames are UTF-8
            check(data, binary)
    fed = HARNESS.frames - before
    print(f"mutated frames: {fed}")
    assert fed >= MUTATED_FRAMES


# --- the same property against the real write-behind and a real Redis ------------------------

REDIS_FRAMES = int(os.environ.get("NUDGE_FUZZ_REDIS_FRAMES", "1500"))


@pytest.mark.redis
def test_after_hostile_frames_a_neighbour_is_still_written_to_redis():
    """Each hostile frame (mutated, as above) lands between a neighbour's event and the next
    write-behind; after it, the neighbour's session as Redis holds it has that event."""
    import random

    from nudge.store.redis import RedisStore

    from ..conftest import drop_keys, redis_store_url

    url = redis_store_url()
    harness = Harness(RedisStore(url))
    hub, loop, neighbour = harness.hub, harness.loop, harness.neighbour
    rng = random.Random(20261207)
    seeds = _seed_frames()
    try:
        for i in range(REDIS_FRAMES):
            seq = neighbour.state.last_event_seq + 1
            frame = json.dumps({"t": "ev", "seq": seq, "name": "page_view", "props": {"path": f"/n{i}"}})
            neighbour.conn.in_handler = True
            loop.run_until_complete(hub.on_frame(neighbour, neighbour.conn, frame))
            neighbour.conn.in_handler = False
            neighbour.conn.queue.clear()
            hostile = _mutate_structure(rng, rng.choice(seeds)) if rng.random() < 0.8 else rng.choice(seeds)
            for data, binary in _encodings(hostile):
                harness.feed(data, binary)
            hub.clock.advance(hub.settings.write_behind)
            loop.run_until_complete(hub.scheduler.settled())
            stored = loop.run_until_complete(hub.store.load_session(neighbour.state.site, neighbour.state.id))
            assert stored is not None and stored.page == f"/n{i}" and stored.last_event_seq == seq, (i, hostile)
            visitor = loop.run_until_complete(hub.store.load_visitor(neighbour.state.site, neighbour.state.visitor))
            assert visitor is not None and visitor.cart.count == 1
        assert hub.store.refused == {} and hub.write_error is None
    finally:
        loop.run_until_complete(hub.stop())
        loop.run_until_complete(drop_keys(url))
        loop.close()
