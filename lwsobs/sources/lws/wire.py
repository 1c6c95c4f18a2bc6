"""Parse wire-v1 NDJSON (docs/wire.md) into Events, or say why a line was refused.

The producer lives outside this process, so nothing it sends may raise here: each line becomes
exactly one Event or one Rejection, judged alone, so a bad line never spoils its neighbours. A
Rejection's reason is a closed set (a label value for the rejection counter) and its detail is
short and safe to log: it never echoes more than a few dozen characters of the input.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from enum import IntEnum, StrEnum
from typing import Annotated, Any, Final, NamedTuple

import msgspec
from msgspec import Meta
from msgspec.structs import force_setattr

MAX_LINE_BYTES: Final = 16 * 1024  # "a line longer than 16 KiB ... is rejected": 16384 is accepted
MAX_TEXT_BYTES: Final = 1024  # free-text fields are cut here (the producer should already have)
MAX_HEX_DIGITS: Final = 16  # a 64-bit pointer; longer is not a pointer
INT64_MIN: Final = -(1 << 63)
INT64_MAX: Final = (1 << 63) - 1
WIRE_VERSION: Final = 1


class PseudoEvent(IntEnum):
    """Negative `r` values: producer and context milestones that are no lws callback."""

    HELLO = -1  # the producer starts: carries lws, pid, host
    HEARTBEAT = -2  # alive while idle; its seq keeps gap detection honest
    CONTEXT_DESTROY_BEGIN = -3  # lws_context_destroy(ctx) called
    CONTEXT_DESTROYED = -4  # lws_context_destroy(ctx) returned: live wsis of ctx are leaks
    BYE = -5  # clean exit: like CONTEXT_DESTROYED for all contexts, then the source is forgotten
    LISTEN = -6  # a vhost listens: ctx, vh, port and (lws 4.3+) n, the sockets it opened
    HTTP_STATUS = -7  # a server response status is written (also lws's own refusals): wsi, status
    FATAL = -8  # the process dies from signal `sig`: the lines before this are its last


HELLO: Final = PseudoEvent.HELLO
HEARTBEAT: Final = PseudoEvent.HEARTBEAT
CONTEXT_DESTROY_BEGIN: Final = PseudoEvent.CONTEXT_DESTROY_BEGIN
CONTEXT_DESTROYED: Final = PseudoEvent.CONTEXT_DESTROYED
BYE: Final = PseudoEvent.BYE
LISTEN: Final = PseudoEvent.LISTEN
HTTP_STATUS: Final = PseudoEvent.HTTP_STATUS
FATAL: Final = PseudoEvent.FATAL


class RejectReason(StrEnum):
    """Why a line was refused; the closed set of values of the rejection counter's label."""

    TOO_LONG = "too_long"  # more than MAX_LINE_BYTES, judged before decoding
    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"  # includes NaN/Infinity and nesting too deep to decode
    NOT_OBJECT = "not_object"  # valid JSON, but not an object at the top level
    BAD_VERSION = "bad_version"  # `v` is an integer other than 1
    MISSING_FIELD = "missing_field"  # a required field is absent (or null)
    BAD_FIELD = "bad_field"  # a known field has the wrong type, format or range


class Rejection(NamedTuple):
    """A refused line: `field` names the culprit for the field reasons, None otherwise."""

    reason: RejectReason
    detail: str
    field: str | None = None


SRC_PATTERN: Final = r"[A-Za-z0-9._:@-]{1,64}"
"""What `src` must match, whole (docs/wire.md); neither cut nor rewritten."""

CANONICAL_POINTER: Final = rf"0|[1-9a-f][0-9a-f]{{0,{MAX_HEX_DIGITS - 1}}}"
"""A pointer as the service stores it: lowercase hex, no 0x, no leading zeros."""

# The types of Event's fields, with what msgspec checks while decoding a line into one. Only
# the canonical line is decoded this way: one that judge_line would accept as it stands, so that
# the Event msgspec builds is the one the judge would build (see parse_line). msgspec checks
# ranges and lengths for next to nothing, but a Meta pattern costs about 0.4 us a field, more
# than the rest of the line: so the characters of `src` and of pointers, which repeat from line
# to line, are checked after decoding, once per distinct value (_canonical).
Int64 = Annotated[int, Meta(ge=INT64_MIN, le=INT64_MAX)]  # JSON integers only: not 1.0, not true
Seq = Annotated[int, Meta(ge=0, le=INT64_MAX)]
Version = Annotated[int, Meta(ge=WIRE_VERSION, le=WIRE_VERSION)]  # anything else: the judge says
Src = Annotated[str, Meta(min_length=1, max_length=64)]  # and SRC_PATTERN, by _canonical
# A pointer as the service stores it (CANONICAL_POINTER, by _canonical). The wire allows more
# (either case, 0x, leading zeros): such a line is left to the judge, which normalises it.
Pointer = Annotated[str, Meta(min_length=1, max_length=MAX_HEX_DIGITS)]
# At most MAX_TEXT_BYTES characters: a longer value is left to the judge, which cuts it. A shorter
# one may still be longer in UTF-8, which parse_line checks when the line can hold non-ASCII.
Text = Annotated[str, Meta(max_length=MAX_TEXT_BYTES)]


class Event(msgspec.Struct, frozen=True, gc=False):
    """One accepted line; optional fields the producer did not send are None.

    Pointers (ctx, wsi, nwsi, parent, child) are normalised hex: lowercase, no 0x, no leading
    zeros, so the same pointer compares equal whatever printf format the producer used. Text
    fields are cut at 1 KiB of UTF-8.

    A msgspec Struct: msgspec.json decodes a line straight into one, checking the types above on
    the way (unknown fields are skipped, null is None). Its fields are slots, which CPython reads
    fast (the pipeline and the decoder read a dozen of every line). gc=False: an Event holds only
    ints, strings, bools and None, so it can be in no reference cycle and the garbage collector
    need not track the hundreds of thousands made per second.
    """

    v: Version
    src: Src
    seq: Seq
    t: Int64
    r: Int64
    # identity and context
    ctx: Pointer | None = None
    wsi: Pointer | None = None
    nwsi: Pointer | None = None
    parent: Pointer | None = None
    fd: Int64 | None = None
    vh: Text | None = None
    pcol: Text | None = None
    ssl: bool | None = None
    fake: bool | None = None
    mono: Int64 | None = None
    drop: Int64 | None = None
    tag: Text | None = None
    # decoded from the callback's in/user, for the reasons the spec names
    uri: Text | None = None
    method: Text | None = None
    afd: Int64 | None = None
    peer: Text | None = None
    upg: Text | None = None
    sub: Text | None = None
    why: Text | None = None
    err: Text | None = None
    status: Int64 | None = None
    child: Pointer | None = None
    port: Int64 | None = None  # 17, 30, LISTEN: the listen port; a client's first line: its target
    addr: Text | None = None  # a client's first line: the host it connects to
    n: Int64 | None = None  # LISTEN: listen sockets the vhost opened (lws 4.3+)
    sig: Int64 | None = None  # FATAL
    # HELLO
    lws: Text | None = None
    pid: Int64 | None = None
    host: Text | None = None
    shim: Text | None = None  # the shim's version
    hb: Int64 | None = None  # the heartbeat interval, ms
    unobserved: Text | None = None  # why the shim passes through: no callbacks will follow


EVENT_FIELDS: Final[tuple[str, ...]] = Event.__struct_fields__
"""The field names of Event in order."""


# -- JSON decoding ---------------------------------------------------------------------------------


class _HugeInt:
    """Stands in for a JSON integer too long for int64, so that int() never sees 16k digits."""

    __slots__ = ("digits",)

    def __init__(self, digits: int) -> None:
        self.digits = digits


class _NotJson(ValueError):
    pass


def _parse_int(text: str) -> int | _HugeInt:
    # 20 characters hold every int64 with its sign; longer is out of range whatever it says
    return int(text) if len(text) <= 20 else _HugeInt(len(text))


def _parse_constant(name: str) -> float:
    raise _NotJson(f"{name} is not JSON")


_DECODER: Final = json.JSONDecoder(parse_int=_parse_int, parse_constant=_parse_constant)

MAX_NESTING: Final = 1000
"""Arrays and objects nested deeper than this are not JSON to the spec (not_json) on every
interpreter. json's own limit moved: about 1000 less the caller's frames on 3.11, 1500 C-level
calls on 3.12, 10000 on 3.13, so without this a line could be refused on one and accepted on
another."""


def _too_deep(obj: object) -> bool:
    """Whether lists and dicts nest in `obj` deeper than MAX_NESTING (walked without recursion)."""
    stack: list[tuple[object, int]] = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if type(value) is list:
            children: Any = value
        elif type(value) is dict:
            children = value.values()
        else:
            continue
        if depth > MAX_NESTING:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


# -- field checks ----------------------------------------------------------------------------------


class _FieldError(Exception):
    pass


def _json_type(raw: object) -> str:
    if raw is None:
        return "null"
    if isinstance(raw, bool):
        return "boolean"
    if isinstance(raw, int | _HugeInt):
        return "integer"
    if isinstance(raw, float):
        return "number"
    if isinstance(raw, str):
        return "string"
    return "array" if isinstance(raw, list) else "object"


def _show(raw: object) -> str:
    """A bounded, printable glimpse of a value for a log line (at most ~50 characters)."""
    if isinstance(raw, str):
        text = repr(raw[:32])
        return text if len(text) <= 48 and len(raw) <= 32 else text[:48] + "..."
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, int | float):
        return repr(raw)[:32]
    return ""


def _expected(kind: str, raw: object) -> _FieldError:
    glimpse = _show(raw)
    got = f"{_json_type(raw)} {glimpse}" if glimpse else _json_type(raw)
    return _FieldError(f"expected {kind}, got {got}")


def _int(raw: object) -> int:
    if type(raw) is int:  # not isinstance: JSON true must not pass as 1
        if INT64_MIN <= raw <= INT64_MAX:
            return raw
        raise _FieldError(f"{_show(raw)} is out of int64 range")
    if isinstance(raw, _HugeInt):
        raise _FieldError(f"integer of {raw.digits} characters is out of int64 range")
    raise _expected("integer", raw)


def _bool(raw: object) -> bool:
    if type(raw) is bool:
        return raw
    raise _expected("boolean", raw)


def _text(raw: object) -> str:
    if type(raw) is not str:
        raise _expected("string", raw)
    if raw.isascii():
        return raw if len(raw) <= MAX_TEXT_BYTES else raw[:MAX_TEXT_BYTES]
    try:
        data = raw.encode()
    except UnicodeEncodeError:  # a lone surrogate from a \ud800 escape: keep it visible, as text
        data = raw.encode("utf-8", "backslashreplace")
        raw = data.decode()
    if len(data) <= MAX_TEXT_BYTES:
        return raw
    return data[:MAX_TEXT_BYTES].decode("utf-8", "ignore")  # drop a character cut in half


_HEX: Final = re.compile(rf"(?:0[xX])?([0-9A-Fa-f]{{1,{MAX_HEX_DIGITS}}})")


def _hex(raw: object) -> str:
    if type(raw) is not str:
        raise _expected("hex string", raw)
    match = _HEX.fullmatch(raw)
    if match is None:
        raise _FieldError(f"expected hex pointer of 1..{MAX_HEX_DIGITS} digits, got {_show(raw)}")
    return match.group(1).lower().lstrip("0") or "0"


_SRC: Final = re.compile(SRC_PATTERN)


def _src(raw: object) -> str:
    if type(raw) is not str:
        raise _expected("string", raw)
    if _SRC.fullmatch(raw) is None:
        raise _FieldError(f"must match {SRC_PATTERN}, got {_show(raw)}")
    return raw


_LABEL_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_.-]")


def source_label(src: str) -> str:
    """The bounded label of a producer: its program name (`myapp@host:4242` -> `myapp`).

    `src` names one process instance; the program name survives restarts, so every metric that
    has a `source` label (wsis and ingest alike) uses this, and restarts take no label slot.
    """
    name = src.partition("@")[0] or src
    return _LABEL_UNSAFE.sub("_", name)[:32] or "lws"


def _seq(raw: object) -> int:
    value = _int(raw)
    if value < 0:
        raise _FieldError(f"must be >= 0, got {value}")
    return value


_REQUIRED: Final[tuple[tuple[str, Callable[[object], object]], ...]] = (
    ("src", _src),
    ("seq", _seq),
    ("t", _int),
    ("r", _int),
)

_OPTIONAL: Final[Mapping[str, Callable[[object], object]]] = {
    "ctx": _hex,
    "wsi": _hex,
    "nwsi": _hex,
    "parent": _hex,
    "child": _hex,
    "fd": _int,
    "afd": _int,
    "mono": _int,
    "drop": _int,
    "status": _int,
    "pid": _int,
    "port": _int,
    "n": _int,
    "sig": _int,
    "hb": _int,
    "ssl": _bool,
    "fake": _bool,
    "vh": _text,
    "pcol": _text,
    "tag": _text,
    "uri": _text,
    "method": _text,
    "peer": _text,
    "upg": _text,
    "sub": _text,
    "why": _text,
    "err": _text,
    "lws": _text,
    "host": _text,
    "addr": _text,
    "shim": _text,
    "unobserved": _text,
}


_TEXT_FIELDS: Final = tuple(name for name, check in _OPTIONAL.items() if check is _text)


# -- the judge: every rule, and why a line breaks it ----------------------------------------------


def judge_line(line: bytes) -> Event | Rejection:
    """Judge one line (without its newline) by every rule of the spec; never raises.

    The reference: parse_line gives the same answer, faster, by letting msgspec decode the lines
    it can, and this explains the others. A JSON null counts as absent: a required field that
    is null is missing, an optional one is simply not set. Fields this version does not know are
    ignored (the spec extends only by adding optional fields).
    """
    if len(line) > MAX_LINE_BYTES:
        return Rejection(RejectReason.TOO_LONG, f"{len(line)} bytes, limit {MAX_LINE_BYTES}")
    try:
        text = line.decode()
    except UnicodeDecodeError as exc:
        return Rejection(RejectReason.NOT_UTF8, f"invalid UTF-8 at byte {exc.start}")
    try:
        obj = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        return Rejection(RejectReason.NOT_JSON, f"{exc.msg} at char {exc.pos}")
    except _NotJson as exc:
        return Rejection(RejectReason.NOT_JSON, str(exc))
    except RecursionError:
        return Rejection(RejectReason.NOT_JSON, "nested too deeply")
    except ValueError:
        return Rejection(RejectReason.NOT_JSON, "undecodable JSON value")
    if line.count(b"[") + line.count(b"{") > MAX_NESTING and _too_deep(obj):
        return Rejection(RejectReason.NOT_JSON, "nested too deeply")
    if type(obj) is not dict:
        return Rejection(RejectReason.NOT_OBJECT, f"top level is {_json_type(obj)}")
    return _judge(obj)


def _judge(obj: dict[str, Any]) -> Event | Rejection:
    version = obj.get("v")
    if version is None:
        return Rejection(RejectReason.MISSING_FIELD, "v: missing", "v")
    try:
        fields: dict[str, Any] = {"v": _int(version)}
    except _FieldError as exc:
        return Rejection(RejectReason.BAD_FIELD, f"v: {exc}", "v")
    if version != WIRE_VERSION:
        return Rejection(RejectReason.BAD_VERSION, f"v: {version} is not {WIRE_VERSION}", "v")
    for name, check in _REQUIRED:
        raw = obj.get(name)
        if raw is None:
            return Rejection(RejectReason.MISSING_FIELD, f"{name}: missing", name)
        try:
            fields[name] = check(raw)
        except _FieldError as exc:
            return Rejection(RejectReason.BAD_FIELD, f"{name}: {exc}", name)
    for name, raw in obj.items():
        optional = _OPTIONAL.get(name)
        if optional is None or raw is None:
            continue
        try:
            fields[name] = optional(raw)
        except _FieldError as exc:
            return Rejection(RejectReason.BAD_FIELD, f"{name}: {exc}", name)
    return Event(**fields)


# -- the msgspec path: lines and datagrams ---------------------------------------------------------

_decode: Final = msgspec.json.Decoder(Event).decode
_decode_error: Final = (msgspec.DecodeError, RecursionError)  # ValidationError is a DecodeError

_SHALLOW: Final = 512
"""Lines that may nest deeper than this many arrays and objects are left to the judge.

Both decoders stop at Python's recursion limit, which depends on how deep the caller's stack
is, so near it msgspec could accept what the judge refuses as nested too deeply. A line with at
most this many `[` and `{` cannot come near that limit (1000 unless changed).
"""


_POINTER: Final = re.compile(CANONICAL_POINTER)
_KNOWN_LIMIT: Final = 4096
_known_srcs: set[str] = set()  # values found to match SRC_PATTERN (forgotten all at once when full)
_known_pointers: set[str] = set()  # values found canonical


def _canonical(events: list[Event]) -> bool:
    """Whether every src matches SRC_PATTERN and every pointer is canonical, as msgspec has not
    checked; each distinct value is matched once, later lines only looked up."""
    srcs, pointers = _known_srcs, _known_pointers
    for event in events:
        if event.src not in srcs and not _learn(srcs, _SRC, event.src):
            return False
        ptr = event.ctx
        if ptr is not None and ptr not in pointers and not _learn(pointers, _POINTER, ptr):
            return False
        ptr = event.wsi
        if ptr is not None and ptr not in pointers and not _learn(pointers, _POINTER, ptr):
            return False
        ptr = event.nwsi
        if ptr is not None and ptr not in pointers and not _learn(pointers, _POINTER, ptr):
            return False
        ptr = event.parent
        if ptr is not None and ptr not in pointers and not _learn(pointers, _POINTER, ptr):
            return False
        ptr = event.child
        if ptr is not None and ptr not in pointers and not _learn(pointers, _POINTER, ptr):
            return False
    return True


def _learn(known: set[str], pattern: re.Pattern[str], value: str) -> bool:
    if pattern.fullmatch(value) is None:
        return False
    if len(known) >= _KNOWN_LIMIT:
        known.clear()
    known.add(value)
    return True


def parse_line(line: bytes) -> Event | Rejection:
    """Judge one line (without its newline) as judge_line does, faster; never raises.

    msgspec decodes the line into an Event, checking everything the Event's field types say.
    It is stricter than the spec (it refuses what the judge would accept after normalising, as
    an upper-case pointer or a text over 1 KiB, and every lone surrogate), so whatever it
    refuses, the judge judges. What it would let through that the spec refuses is checked first:
    the length, invalid UTF-8 (which msgspec does not look for in the values of unknown fields)
    and deep nesting. After it, only text fields that may be longer than 1 KiB of UTF-8 (a
    non-ASCII line, or \\u escapes) need a look.
    """
    if len(line) > MAX_LINE_BYTES:
        return judge_line(line)
    plain = line.isascii()
    if not plain:
        try:
            line.decode()
        except UnicodeDecodeError:
            return judge_line(line)
    if len(line) > _SHALLOW and line.count(b"[") + line.count(b"{") > _SHALLOW:
        return judge_line(line)
    try:
        event = _decode(line)
    except _decode_error:
        return judge_line(line)
    if not _canonical([event]):
        return judge_line(line)
    if plain and b"\\u" not in line:
        return event  # every string ASCII: at most MAX_TEXT_BYTES characters is as many bytes
    return _cut_texts(event)


def _cut_texts(event: Event) -> Event:
    """The Event with its non-ASCII text fields cut as the judge cuts them (at 1 KiB of UTF-8)."""
    for name in _TEXT_FIELDS:
        value = getattr(event, name)
        if value is not None and not value.isascii():
            cut = _text(value)
            if cut is not value:
                force_setattr(event, name, cut)
    return event


def parse_datagram(data: bytes) -> tuple[list[Event], list[Rejection]]:
    """Split a datagram or body on newlines and judge each non-empty line; both lists keep order.

    The common body (the shim's: ASCII, no escapes, short lines) is decoded line after line with
    no check in Python at all; if any line of it fails, or the body is not that plain, every
    line takes parse_line.
    """
    lines = data.split(b"\n")
    if _plain_body(data, lines):
        try:
            decoded = [_decode(line) for line in lines if line]
        except _decode_error:
            pass  # a line msgspec refuses: judge them all, in order
        else:
            if _canonical(decoded):
                return decoded, []
    events: list[Event] = []
    rejections: list[Rejection] = []
    for line in lines:
        if line:
            result = parse_line(line)
            if isinstance(result, Event):
                events.append(result)
            else:
                rejections.append(result)
    return events, rejections


def _plain_body(data: bytes, lines: list[bytes]) -> bool:
    """Whether every line of the body is one parse_line would hand to msgspec as it stands.

    ASCII (so valid UTF-8, and each string as many bytes as characters), no backslash (so no
    \\u escape either), no line too long, and none with more than _SHALLOW `[` and `{`: each line
    holds at least the `{` of its object, so none holds more than all of them but one per line.
    """
    if not data.isascii() or b"\\" in data:
        return False
    if len(data) <= _SHALLOW:
        return True
    longest = max(map(len, lines))
    if longest <= _SHALLOW:
        return True
    if longest > MAX_LINE_BYTES:
        return False
    opens = data.count(b"{") + data.count(b"[")
    return opens - (len(lines) - lines.count(b"")) < _SHALLOW
