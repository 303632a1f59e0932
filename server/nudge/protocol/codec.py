"""Wire protocol v1 (docs/protocol.md): the two codecs and the shape of each frame.

Sans-I/O: bytes or text in, plain values out, and back. The gateway moves them over the socket.
"""

from __future__ import annotations

import json
import json.scanner
import re
from collections import defaultdict
from dataclasses import dataclass
from itertools import accumulate
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
# The first frame comes before anything is proven (no key checked, any Origin): it is refused
# unread past this size, so that what a stranger's frame can cost is bounded by a small one.
# A hello holds a key, two ids, a user id of at most 128 characters and its token: well under 1 KB.
MAX_HELLO = 4096

# The depth scan, in two linear passes done in C. Strings are cut out first: a possessive match
# never gives back what it took, so it cannot backtrack, and a string that never ends runs to the
# end of the text, as the parser would read it. (``"(?:[^"\\]|\\.)*"`` instead, tried again from
# every quote of ``"\"\"\"…``, took quadratic time: 14 s for one 64 KB frame.) Then everything
# but brackets goes, and the depth is the highest running sum of +1 per opening, -1 per closing.
_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+"?', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]++")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}.__getitem__


def json_depth_exceeds(text: str, limit: int) -> bool:
    """Whether brackets in ``text`` nest deeper than ``limit``, found without parsing it, in time
    linear in its length: a frame of 60,000 ``[`` is refused before the parser recurses into it.
    Frames with fewer brackets than the limit (nearly all) are passed by two counts."""
    if text.count("[") + text.count("{") <= limit:
        return False
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(map(_STEP, brackets)), default=0) > limit


# How deep an HTTP body's JSON may nest (the admin API, server events): a campaign's conditions
# nest a dozen levels at most. Deeper is refused before parsing, as frames are: the parser
# recurses, and 100,000 brackets made it raise RecursionError (a 500).
MAX_DOCUMENT_DEPTH = 32


class TooDeep(ValueError):
    """A JSON text nests deeper than allowed; refused before it is parsed."""


def parse_document(body: str | bytes, max_depth: int = MAX_DOCUMENT_DEPTH) -> Any:
    """The JSON document of an HTTP body; raises ValueError (:class:`TooDeep` when it nests
    deeper than ``max_depth``) with the reason, and never RecursionError."""
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    if json_depth_exceeds(text, max_depth):
        raise TooDeep(f"nested deeper than {max_depth} (maps and lists)")
    return json.loads(text)


def shape_error(value: Any, limit: int, keys_are_text: bool = False) -> str | None:
    """Why a decoded frame is refused — nested deeper than ``limit``, a list longer than
    MAX_ITEMS, a map with more than MAX_KEYS keys or a key that is not a string — or None.
    ``keys_are_text``: the decoder made every key a string already (JSON does).

    Iterative, a level at a time, so a hostile frame cannot exhaust the stack here either, and
    its cost per container is a few C calls: 20,000 empty maps in one 64 KB frame take ~2 ms."""
    level = [value] if value.__class__ is dict or value.__class__ is list else []
    depth = 1
    while level:
        if depth > limit:
            malformed["too_deep"] += 1
            return f"nested deeper than {limit}"
        inner: list[Any] = []
        for item in level:
            if item.__class__ is dict:
                if len(item) > MAX_KEYS:
                    malformed["too_many_items"] += 1
                    return f"a map with more than {MAX_KEYS} keys"
                if not keys_are_text and not all(key.__class__ is str for key in item):
                    malformed["undecodable"] += 1
                    return "map keys must be strings"
                inner += item.values()
            else:
                if len(item) > MAX_ITEMS:
                    malformed["too_many_items"] += 1
                    return f"a list of more than {MAX_ITEMS} items"
                inner += item
        level = [child for child in inner if child.__class__ is dict or child.__class__ is list]
        depth += 1
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


def loads(text: str | bytes, max_depth: int = MAX_DOCUMENT_DEPTH) -> Any:
    """JSON from outside (a beacon body, a backend's events) read under the rule for values,
    as frames are. Raises ValueError (``values.OutOfRange`` among them) for what is not, and
    :class:`TooDeep`, judged before parsing, for what nests deeper than ``max_depth``."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    if json_depth_exceeds(text, max_depth):
        raise TooDeep(f"nested deeper than {max_depth} (maps and lists)")
    found = _DECODER.decode(text)
    if "\\u" in text and _SURROGATE_ESCAPE.search(text):
        found = values.mend(found)
    return found


class JsonCodec:
    subprotocol = JSON
    binary = False

    _dumps = staticmethod(json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode)

    # typeshed has make_scanner's argument as a scanner; CPython's takes the decoder (its context).
    _scan = staticmethod(json.scanner.make_scanner(_DECODER))  # type: ignore[arg-type]

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
        if isinstance(frame, (dict, list)) and data.count(",") >= MAX_KEYS:
            # Only a frame with this many commas can hold a map or a list over the limits, and
            # its depth was judged above.
            problem = shape_error(frame, self.max_depth, keys_are_text=True)
            if problem is not None:
                raise MalformedFrame(f"not accepted: {problem}")
        return frame

    def encode(self, frame: dict[str, Any]) -> str:
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

    def encode(self, frame: dict[str, Any]) -> bytes:
        packed: bytes
        try:
            packed = msgpack.packb(frame, use_bin_type=True)
        except (UnicodeEncodeError, OverflowError):
            # As JsonCodec.encode: a value that skipped the rule, mended rather than lost.
            packed = msgpack.packb(values.mend(frame), use_bin_type=True)
        return packed

    _ACK_HEAD: bytes = msgpack.packb({"t": "ack", "seq": 0})[:-1]  # the map up to the seq value

    def encode_ack(self, seq: int) -> bytes:
        """``encode(ack(seq))``, without building the map: one ack goes out per event."""
        packed: bytes = msgpack.packb(seq)
        return self._ACK_HEAD + packed


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


def _int(frame: dict[str, Any], key: str, default: int | None = None) -> int:
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


def decode_hello(codec: JsonCodec | MsgpackCodec, data: str | bytes) -> Hello:
    """The first frame of a connection, decoded and checked; at most MAX_HELLO bytes (characters
    for a text frame), else refused before it is decoded."""
    if len(data) > MAX_HELLO:
        raise HandshakeError(f"hello is at most {MAX_HELLO} bytes")
    try:
        frame = codec.decode(data)
    except MalformedFrame as exc:
        raise HandshakeError(exc.reason) from None
    return parse_hello(frame)


def welcome(session: str, visitor: str, resumed: bool, ack: int, grace: float) -> dict[str, Any]:
    return {"t": "welcome", "session": session, "visitor": visitor, "resumed": resumed, "ack": ack, "grace": int(grace)}


def ack(seq: int) -> dict[str, Any]:
    return {"t": "ack", "seq": seq}


def error(code: str, reason: str, seq: int | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"t": "error", "code": code, "reason": reason}
    if seq is not None:
        frame["seq"] = seq
    return frame


PONG = {"t": "pong"}
