"""Wire protocol v1 (docs/protocol.md): the two codecs and the shape of each frame.

Sans-I/O: bytes or text in, plain values out, and back. The gateway moves them over the socket.
"""

from __future__ import annotations

import json
import json.scanner
import re
from dataclasses import dataclass
from typing import Any

import msgpack

from .errors import HandshakeError, MalformedFrame

VERSION = 1
MAX_BATCH = 100  # events in one ``evs`` frame
JSON = "nudge.v1.json"
MSGPACK = "nudge.v1.msgpack"

_VISITOR_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
_SESSION_ID = re.compile(r"^s_[A-Za-z0-9_-]{8,64}$")


class JsonCodec:
    subprotocol = JSON
    binary = False

    _dumps = staticmethod(json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode)

    _scan = staticmethod(json.scanner.make_scanner(json.JSONDecoder()))

    def decode(self, data: str | bytes) -> Any:
        # A frame is one compact object: the C scanner alone reads it, without ``json.loads``'
        # two whitespace regexes and two Python calls. Anything else (spaces around it, bytes,
        # invalid JSON) goes through ``json.loads``, whose answer and errors are the reference.
        try:
            if data.__class__ is str:
                try:
                    frame, end = self._scan(data, 0)
                except (StopIteration, ValueError, RecursionError):
                    pass
                else:
                    if end == len(data):
                        return frame
            return json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise MalformedFrame(f"not valid JSON: {exc}") from None

    def encode(self, frame: dict) -> str:
        return self._dumps(frame)

    def encode_ack(self, seq: int) -> str:
        """``encode(ack(seq))``, without building the map: one ack goes out per event."""
        return f'{{"t":"ack","seq":{seq:d}}}'


class MsgpackCodec:
    subprotocol = MSGPACK
    binary = True

    def __init__(self, max_size: int = 65536) -> None:
        self._limits = {
            "raw": False,
            "strict_map_key": True,
            "max_str_len": max_size,
            "max_bin_len": 0,
            "max_ext_len": 0,
            "max_array_len": 1024,
            "max_map_len": 256,
        }

    def decode(self, data: str | bytes) -> Any:
        if isinstance(data, str):
            raise MalformedFrame("text frame on a msgpack connection")
        try:
            return msgpack.unpackb(data, **self._limits)
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
            raise MalformedFrame(f"not valid MessagePack: {exc}") from None

    def encode(self, frame: dict) -> bytes:
        return msgpack.packb(frame, use_bin_type=True)

    _ACK_HEAD = msgpack.packb({"t": "ack", "seq": 0})[:-1]  # the map up to the seq value

    def encode_ack(self, seq: int) -> bytes:
        """``encode(ack(seq))``, without building the map: one ack goes out per event."""
        return self._ACK_HEAD + msgpack.packb(seq)


def choose_codec(offered: list[str], max_size: int) -> JsonCodec | MsgpackCodec | None:
    """The codec for the first subprotocol offered that we speak; JSON when none was offered;
    None when only unknown ones were offered (the handshake is refused)."""
    if not offered:
        return JsonCodec()
    for name in offered:
        if name == JSON:
            return JsonCodec()
        if name == MSGPACK:
            return MsgpackCodec(max_size)
    return None


@dataclass(frozen=True, slots=True)
class Hello:
    key: str
    visitor: str | None
    session: str | None
    rx: int


def _int(frame: dict, key: str, default: int | None = None) -> int:
    value = frame.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MalformedFrame(f"{key} must be a whole number ≥ 0")
    return value


def parse_hello(frame: Any) -> Hello:
    """The first frame of a connection; anything else closes it with 4400."""
    if not isinstance(frame, dict) or frame.get("t") != "hello":
        raise HandshakeError("the first frame must be hello")
    if frame.get("v") != VERSION:
        raise HandshakeError(f"unsupported protocol version {frame.get('v')!r}; this server speaks {VERSION}")
    key = frame.get("key")
    if not isinstance(key, str) or not key:
        raise HandshakeError("hello.key is required")
    visitor = frame.get("visitor")
    if visitor is not None and (not isinstance(visitor, str) or not _VISITOR_ID.match(visitor)):
        raise HandshakeError("hello.visitor must be 8-64 characters of A-Z a-z 0-9 _ -")
    session = frame.get("session")
    if session is not None and (not isinstance(session, str) or not _SESSION_ID.match(session)):
        session = None  # a mangled session id is not worth refusing over: start a new session
    try:
        rx = _int(frame, "rx", 0)
    except MalformedFrame as exc:
        raise HandshakeError(f"hello.{exc.reason}") from None
    return Hello(key, visitor, session, rx)


def welcome(session: str, visitor: str, resumed: bool, ack: int, grace: float) -> dict:
    return {"t": "welcome", "session": session, "visitor": visitor, "resumed": resumed, "ack": ack, "grace": int(grace)}


def ack(seq: int) -> dict:
    return {"t": "ack", "seq": seq}


def error(code: str, reason: str, seq: int | None = None) -> dict:
    frame = {"t": "error", "code": code, "reason": reason}
    if seq is not None:
        frame["seq"] = seq
    return frame


PONG = {"t": "pong"}
