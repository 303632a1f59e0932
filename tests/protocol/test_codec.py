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


# --- the rule for values (docs/protocol.md, "Values"; nudge.rules.values) -----------------------


def test_json_lone_surrogates_become_the_replacement_character_and_pairs_stay():
    codec = protocol.JsonCodec()
    frame = codec.decode('{"t":"ev","seq":1,"name":"page_view","props":{"path":"/","title":"a\\ud800 \\ud83d\\ude00 \\udfff","\\udc00":1}}')
    assert frame["props"]["title"] == "a\ufffd \U0001F600 \ufffd"
    assert frame["props"]["\ufffd"] == 1
    assert codec.decode('{"t":"ev","a":"\\\\ud800"}') == {"t": "ev", "a": "\\ud800"}  # an escaped backslash: plain text
    assert protocol.loads(b'{"a":"\\ud800"}') == {"a": "\ufffd"}  # beacons' and backends' JSON


def test_json_whole_numbers_beyond_64_bits_become_the_double_javascript_had():
    codec = protocol.JsonCodec()
    frame = codec.decode('{"t":"ev","seq":1,"props":{"n":98765432109876543210,"m":-9223372036854775809,"k":18446744073709551615}}')
    assert frame["props"]["n"] == 98765432109876543210.0 and isinstance(frame["props"]["n"], float)
    assert isinstance(frame["props"]["m"], float)
    assert frame["props"]["k"] == 2**64 - 1 and isinstance(frame["props"]["k"], int)  # fits: kept whole
    with pytest.raises(MalformedFrame, match="beyond what JavaScript holds"):
        codec.decode('{"t":"ev","seq":1,"props":{"n":1' + "0" * 400 + '}}')
    assert protocol.loads('{"n":98765432109876543210}') == {"n": 9.876543210987654e19}


@pytest.mark.parametrize("codec", [protocol.JsonCodec(), protocol.MsgpackCodec()])
def test_a_frame_out_is_always_sendable(codec):
    """A value that skipped the rule (stored by an older version) is mended on the way out, not
    lost with the socket."""
    data = codec.encode({"t": "show", "seq": 1, "title": "x\ud800", "n": 2**70})
    if isinstance(data, str):
        data.encode("utf-8")  # valid UTF-8: a text frame can carry it
    assert codec.decode(data)["title"] == "x\ufffd"
