"""Codecs and frame shapes of wire protocol v1."""

from __future__ import annotations

import pytest
from nudge.errors import BadEvent, HandshakeError, MalformedFrame, UnknownEvent
from nudge.protocol import codec as protocol
from nudge.rules import events


@pytest.mark.parametrize("codec", [protocol.JsonCodec(), protocol.MsgpackCodec()])
def test_codecs_round_trip(codec):
    frame = {"t": "show", "seq": 3, "title": "Ünïcode ✓", "cta": {"label": "Go", "url": "/x"}}
    assert codec.decode(codec.encode(frame)) == frame


def test_json_depth_bomb_is_malformed_not_a_crash():
    with pytest.raises(MalformedFrame):
        protocol.JsonCodec().decode("[" * 100_000)


@pytest.mark.parametrize("codec", [protocol.JsonCodec(), protocol.MsgpackCodec()])
def test_depth_and_length_limits(codec):
    def nested(depth):
        value = 1
        for _ in range(depth - 1):
            value = [value]
        return {"t": "ev", "props": {"x": value}} if depth > 2 else value

    assert codec.decode(codec.encode({"t": "ev", "props": {"a": [[[[[1]]]]]}}))  # depth 7
    with pytest.raises(MalformedFrame, match="deeper"):
        codec.decode(codec.encode({"t": "ev", "props": {"a": [[[[[[[1]]]]]]]}}))  # depth 9
    with pytest.raises(MalformedFrame):
        codec.decode(codec.encode({"t": "ev", "props": {"a": list(range(protocol.MAX_ITEMS + 1))}}))
    with pytest.raises(MalformedFrame):
        codec.decode(codec.encode({"t": "ev", "props": {str(i): i for i in range(protocol.MAX_KEYS + 1)}}))


def test_json_depth_is_judged_before_parsing_and_ignores_brackets_in_strings():
    codec = protocol.JsonCodec(max_depth=3)
    text = r'{"a": "[[[[[[{{{{", "b": [{"c": "\\"}], "d": "\"[[[["}'
    assert codec.decode(text) == {"a": "[[[[[[{{{{", "b": [{"c": "\\"}], "d": '"[[[['}
    assert protocol.json_depth_exceeds('{"a": [[[1]]]}', 3)
    with pytest.raises(MalformedFrame, match="deeper"):
        codec.decode("[" * 60_000)


def test_msgpack_refuses_non_string_keys_and_ext():
    import msgpack

    codec = protocol.MsgpackCodec()
    with pytest.raises(MalformedFrame):
        codec.decode(msgpack.packb({1: "x"}))
    with pytest.raises(MalformedFrame):
        codec.decode(msgpack.packb(msgpack.ExtType(5, b"x")))


def test_choose_codec_follows_the_clients_order():
    assert protocol.choose_codec(["nudge.v1.msgpack", "nudge.v1.json"], 1024).subprotocol == protocol.MSGPACK
    assert protocol.choose_codec(["x", "nudge.v1.json"], 1024).subprotocol == protocol.JSON
    assert protocol.choose_codec([], 1024).subprotocol == protocol.JSON
    assert protocol.choose_codec(["x"], 1024) is None


def test_hello():
    visitor = "v_Qx3f9aK2mZ81c2Lp"
    hello = protocol.parse_hello({"t": "hello", "v": 1, "key": "pk_a", "visitor": visitor, "session": "s_abcdefgh", "rx": 2})
    assert (hello.key, hello.visitor, hello.session, hello.rx) == ("pk_a", visitor, "s_abcdefgh", 2)


@pytest.mark.parametrize("weak", ["v_abcdefgh", "v_0000000000000000", "aaaaaaaaaaaaaaaaaaaaaaaa", "v_ababababababab"])
def test_a_guessable_visitor_id_is_replaced_not_kept(weak):
    hello = protocol.parse_hello({"t": "hello", "v": 1, "key": "pk_a", "visitor": weak})
    assert hello.visitor is None  # the hub makes a random one, and welcome tells the client
    assert protocol.parse_hello({"t": "hello", "v": 1, "key": "pk_a", "session": "../../etc"}).session is None
    for bad in ({"t": "ev"}, {"t": "hello", "v": 1}, {"t": "hello", "v": 1, "key": "k", "rx": -1}, {"t": "hello", "v": 1, "key": "k", "visitor": "a b"}):
        with pytest.raises(HandshakeError):
            protocol.parse_hello(bad)


class TestEvents:
    def test_builtins_are_normalised(self):
        assert events.validate("scroll", {"depth": 55.7}, 1, frozenset()).props == {"depth": 55}
        assert events.validate("add_to_cart", {"id": "a", "name": "A"}, 1, frozenset()).props == {"id": "a", "name": "A", "price": 0.0, "quantity": 1}
        assert events.validate("idle", {"after": 99999}, 1, frozenset()).props == {"after": 3600.0}

    @pytest.mark.parametrize(
        "name, props, message",
        [
            ("page_view", {}, "props.path is required"),
            ("page_view", {"path": "relative"}, "must start with '/'"),
            ("scroll", {"depth": 101}, "between 0 and 100"),
            ("scroll", {"depth": float("nan")}, "must be a number"),
            ("add_to_cart", {"id": "a", "name": "A", "price": -1}, "must be ≥ 0"),
            ("add_to_cart", {"id": "a", "name": "A", "quantity": True}, "quantity"),
            ("shown", {"msg": "1"}, "props.msg"),
            ("click", {str(i): i for i in range(40)}, "at most 32"),
            ("click", {"text": "x" * 600}, "longer than 512"),
            ("click", [1], "props must be a map"),
            ("", {}, "non-empty string"),
        ],
    )
    def test_bad_events_name_the_field(self, name, props, message):
        with pytest.raises(BadEvent, match=message):
            events.validate(name, props, 1, frozenset())

    def test_unknown_and_custom(self):
        with pytest.raises(UnknownEvent):
            events.validate("signup", {}, 1, frozenset())
        assert events.validate("signup", {"plan": "pro"}, 1, frozenset({"signup"})).name == "signup"
