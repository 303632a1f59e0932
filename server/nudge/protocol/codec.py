"""Wire protocol v1 (docs/protocol.md): the two codecs and the shape of each frame.

Sans-I/O: bytes or text in, plain values out, and back. The gateway moves them over the socket.
"""

from __future__ import annotations

import json
import json.scanner
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import msgpack

from nudge.errors import HandshakeError, MalformedFrame
from nudge.rules import values

VERSION = 1
# reason -> frames the codecs refused in this process (undecodable, too_deep, too_many_items),
# counted here where it is decided and read by /metrics (nudge_frames_malformed_total).
malformed: dict[str, int] = defaultdict(int)
MAX_BATCH = 100  # events in one ``evs`` frame
JSON = "nudge.v1.json"
MSGPACK = "nudge.v1.msgpack"

_VISITOR_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
# A visitor id is a bearer credential: whoever presents it gets the visitor's queued messages and
# traits. One shorter than this, or made of fewer distinct characters, is guessable, so the server
# replaces it with a random one of its own (welcome.visitor; the snippet adopts it).
STRONG_VISITOR_LENGTH = 16
STRONG_VISITOR_VARIETY = 6
_SESSION_ID = re.compile(r"^s_[A-Za-z0-9_-]{8,64}$")

MAX_DEPTH = 8  # maps and lists nested in a frame, the frame itself counting 1: ev → props → value
MAX_ITEMS = 1024  # entries of one list; maps hold at most MAX_KEYS
MAX_KEYS = 256

# A string literal (skipped whole) or one bracket: what the depth scan of a JSON text looks at.
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def json_depth_exceeds(text: str, limit: int) -> bool:
    """Whether brackets in ``text`` nest deeper than ``limit``, found without parsing it: a
    frame of 60,000 ``[`` is refused before the parser recurses into it. Frames with fewer
    brackets than the limit (nearly all) are passed by two counts done in C."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    for match in _JSON_TOKEN.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > limit:
                return True
        elif token in "]}":
            depth -= 1
    return False


def shape_error(value: Any, limit: int) -> str | None:
    """Why a decoded frame is refused — nested deeper than ``limit``, a list longer than
    MAX_ITEMS, a map with more than MAX_KEYS keys or a key that is not a string — or None.
    Iterative, so a hostile frame cannot exhaust the stack here either."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        is_map = isinstance(item, dict)
        if not is_map and not isinstance(item, list):
            continue  # a scalar at the top: only containers are stacked below
        if depth > limit:
            malformed["too_deep"] += 1
            return f"nested deeper than {limit}"
        if is_map:
            if len(item) > MAX_KEYS:
                malformed["too_many_items"] += 1
                return f"a map with more than {MAX_KEYS} keys"
            if not all(isinstance(key, str) for key in item):
                malformed["undecodable"] += 1
                return "map keys must be strings"
            inner = item.values()
        else:
            if len(item) > MAX_ITEMS:
                malformed["too_many_items"] += 1
                return f"a list of more than {MAX_ITEMS} items"
            inner = item
        stack.extend((child, depth + 1) for child in inner if isinstance(child, (dict, list)))
    return None


def _whole(digits: str) -> int | float:
    """The JSON decoder's reading of a whole number, under the rule for values
    (:mod:`nudge.rules.values`): 18 digits always fit in 64 bits, so only longer ones are tested."""
    if len(digits) < 19:
        return int(digits)
    return values.whole(int(digits))


# Where a JSON text may hold a lone surrogate: only a \u escape of D800-DFFF can say one (the
# text itself arrives as valid UTF-8). A pair is decoded into one character; what is left is mended.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_DECODER = json.JSONDecoder(parse_int=_whole)


def loads(text: str | bytes) -> Any:
    """JSON from outside (a beacon body, a backend's events) read under the rule for values,
    as frames are. Raises ValueError (``values.OutOfRange`` among them) for what is not."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    found = _DECODER.decode(text)
    if "\\u" in text and _SURROGATE_ESCAPE.search(text):
        found = values.mend(found)
    return found


class JsonCodec:
    subprotocol = JSON
    binary = False

    _dumps = staticmethod(json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode)

    _scan = staticmethod(json.scanner.make_scanner(_DECODER))

    def __init__(self, max_depth: int = MAX_DEPTH) -> None:
        self.max_depth = max_depth  # deeper frames are refused before they are parsed

    def decode(self, data: str | bytes) -> Any:
        if data.__class__ is not str and isinstance(data, bytes):
            try:
                data = data.decode("utf-8")
            except UnicodeDecodeError:
                malformed["undecodable"] += 1
                raise MalformedFrame("not valid JSON: not UTF-8") from None
        # json_depth_exceeds' own first test, inline: a frame with no more opening brackets than
        # the limit (nearly every one) cannot nest deeper, and is not scanned.
        if data.count("{") + data.count("[") > self.max_depth and json_depth_exceeds(data, self.max_depth):
            malformed["too_deep"] += 1
            raise MalformedFrame(f"not accepted: nested deeper than {self.max_depth}")
        try:
            # A frame is one compact object: the C scanner alone reads it, without json.loads'
            # two whitespace regexes and two Python calls. Anything else (spaces around it,
            # invalid JSON) goes through json.loads, whose answer and errors are the reference.
            try:
                frame, end = self._scan(data, 0)
            except (StopIteration, ValueError, RecursionError):
                frame, end = None, -1
            if end != len(data):
                frame = _DECODER.decode(data)
        except values.OutOfRange as exc:
            malformed["out_of_range"] += 1
            raise MalformedFrame(f"not accepted: {exc}") from None
        except (ValueError, RecursionError) as exc:
            malformed["undecodable"] += 1
            raise MalformedFrame(f"not valid JSON: {exc}") from None
        if "\\u" in data and _SURROGATE_ESCAPE.search(data):
            frame = values.mend(frame)  # lone surrogates become U+FFFD (docs/protocol.md, "Values")
        if isinstance(frame, (dict, list)) and len(data) > 2 * MAX_KEYS:
            # Only a frame this long can hold a map or list over the limits.
            problem = shape_error(frame, self.max_depth)
            if problem is not None:
                raise MalformedFrame(f"not accepted: {problem}")
        return frame

    def encode(self, frame: dict) -> str:
        text = self._dumps(frame)
        if not text.isascii() and values.has_lone_surrogate(text):
            # Not UTF-8, so not sendable: from something that skipped the rule (a value stored
            # by an older version, say). Mended rather than lost; surrogates are only in strings.
            text = values.text(text)
        return text

    def encode_ack(self, seq: int) -> str:
        """``encode(ack(seq))``, without building the map: one ack goes out per event."""
        return f'{{"t":"ack","seq":{seq:d}}}'


class MsgpackCodec:
    subprotocol = MSGPACK
    binary = True

    def __init__(self, max_size: int = 65536, max_depth: int = MAX_DEPTH) -> None:
        self.max_depth = max_depth  # deeper frames are refused
        self._limits = {
            "raw": False,
            "strict_map_key": True,
            "max_str_len": max_size,
            "max_bin_len": 0,
            "max_ext_len": 0,
            "max_array_len": MAX_ITEMS,
            "max_map_len": MAX_KEYS,
        }

    def decode(self, data: str | bytes) -> Any:
        if isinstance(data, str):
            malformed["undecodable"] += 1
            raise MalformedFrame("text frame on a msgpack connection")
        try:
            frame = msgpack.unpackb(data, **self._limits)
        except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
            malformed["undecodable"] += 1
            raise MalformedFrame(f"not valid MessagePack: {exc}") from None
        # The unpacker's own stack limit is 1024 levels: far too deep for what a frame holds.
        # A value nested d deep takes at least d bytes, so short frames need no walk.
        if len(data) > self.max_depth and isinstance(frame, (dict, list)):
            problem = shape_error(frame, self.max_depth)
            if problem is not None:
                raise MalformedFrame(f"not accepted: {problem}")
        return frame

    def encode(self, frame: dict) -> bytes:
        try:
            return msgpack.packb(frame, use_bin_type=True)
        except (UnicodeEncodeError, OverflowError):
            # As JsonCodec.encode: a value that skipped the rule, mended rather than lost.
            return msgpack.packb(values.mend(frame), use_bin_type=True)

    _ACK_HEAD = msgpack.packb({"t": "ack", "seq": 0})[:-1]  # the map up to the seq value

    def encode_ack(self, seq: int) -> bytes:
        """``encode(ack(seq))``, without building the map: one ack goes out per event."""
        return self._ACK_HEAD + msgpack.packb(seq)


def choose_codec(offered: list[str], max_size: int, max_depth: int = MAX_DEPTH) -> JsonCodec | MsgpackCodec | None:
    """The codec for the first subprotocol offered that we speak; JSON when none was offered;
    None when only unknown ones were offered (the handshake is refused)."""
    if not offered:
        return JsonCodec(max_depth)
    for name in offered:
        if name == JSON:
            return JsonCodec(max_depth)
        if name == MSGPACK:
            return MsgpackCodec(max_size, max_depth)
    return None


@dataclass(frozen=True, slots=True)
class Hello:
    key: str
    visitor: str | None
    session: str | None
    rx: int
    user: str | None = None  # an identified user, proven by ``user_token`` (nudge.identity)
    user_token: str | None = None
    gpc: bool = False  # the visitor opted out: Global Privacy Control, or the snippet's optOut


def _int(frame: dict, key: str, default: int | None = None) -> int:
    value = frame.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MalformedFrame(f"{key} must be a whole number ≥ 0")
    return value


def strong_visitor_id(visitor: str) -> bool:
    """Whether a well-formed visitor id is long and varied enough to be a random one."""
    return len(visitor) >= STRONG_VISITOR_LENGTH and len(set(visitor)) >= STRONG_VISITOR_VARIETY


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
    if visitor is not None and not strong_visitor_id(visitor):
        visitor = None  # guessable: the server makes a new one
    session = frame.get("session")
    if session is not None and (not isinstance(session, str) or not _SESSION_ID.match(session)):
        session = None  # a mangled session id is not worth refusing over: start a new session
    try:
        rx = _int(frame, "rx", 0)
    except MalformedFrame as exc:
        raise HandshakeError(f"hello.{exc.reason}") from None
    user, token = frame.get("user_id"), frame.get("user_token")
    if user is not None and not isinstance(user, str):
        raise HandshakeError("hello.user_id must be a string")
    return Hello(key, visitor, session, rx, user, token if isinstance(token, str) else None, frame.get("gpc") is True)


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
