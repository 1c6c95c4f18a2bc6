"""Parse wire-v1 NDJSON (docs/wire.md) into Events, or say why a line was refused.

The producer lives outside this process, so nothing it sends may raise here: each line becomes
exactly one Event or one Rejection, judged alone, so a bad line never spoils its neighbours. A
Rejection's reason is a closed set (a label value for the rejection counter) and its detail is
short and safe to log: it never echoes more than a few dozen characters of the input.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any, Final, NamedTuple

from lwsobs.core.fast import PURE_PYTHON

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


@dataclass(frozen=True, slots=True)
class Event:
    """One accepted line; optional fields the producer did not send are None.

    Pointers (ctx, wsi, nwsi, parent, child) are normalised hex: lowercase, no 0x, no leading
    zeros, so the same pointer compares equal whatever printf format the producer used. Text
    fields are cut at 1 KiB of UTF-8.

    A slotted class rather than a NamedTuple: the pipeline and the decoder read a dozen fields
    of every line, and CPython specialises reads of __slots__ (a NamedTuple's fields go through
    a generic descriptor call each time). The C parser fills the slots directly.
    """

    v: int
    src: str
    seq: int
    t: int
    r: int
    # identity and context
    ctx: str | None = None
    wsi: str | None = None
    nwsi: str | None = None
    parent: str | None = None
    fd: int | None = None
    vh: str | None = None
    pcol: str | None = None
    ssl: bool | None = None
    fake: bool | None = None
    mono: int | None = None
    drop: int | None = None
    tag: str | None = None
    # decoded from the callback's in/user, for the reasons the spec names
    uri: str | None = None
    method: str | None = None
    afd: int | None = None
    peer: str | None = None
    upg: str | None = None
    sub: str | None = None
    why: str | None = None
    err: str | None = None
    status: int | None = None
    child: str | None = None
    port: int | None = None  # 17, 30, LISTEN: the listen port; a client's first line: its target
    addr: str | None = None  # a client's first line: the host it connects to
    n: int | None = None  # LISTEN: listen sockets the vhost opened (lws 4.3+)
    sig: int | None = None  # FATAL
    # HELLO
    lws: str | None = None
    pid: int | None = None
    host: str | None = None
    shim: str | None = None  # the shim's version
    hb: int | None = None  # the heartbeat interval, ms
    unobserved: str | None = None  # why the shim passes through: no callbacks will follow


EVENT_FIELDS: Final = tuple(f.name for f in dataclasses.fields(Event))
"""The field names of Event in order (the C parser's field table follows it)."""


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


_SRC: Final = re.compile(r"[A-Za-z0-9._:@-]{1,64}")


def _src(raw: object) -> str:
    if type(raw) is not str:
        raise _expected("string", raw)
    if _SRC.fullmatch(raw) is None:
        raise _FieldError(f"must match [A-Za-z0-9._:@-]{{1,64}}, got {_show(raw)}")
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


# -- lines and datagrams ---------------------------------------------------------------------------


def parse_line(line: bytes) -> Event | Rejection:
    """Judge one line (without its newline); never raises.

    A JSON null counts as absent: a required field that is null is missing, an optional one is
    simply not set. Fields this version does not know are ignored (the spec extends only by
    adding optional fields).
    """
    fast = _fast_parse
    if fast is not None:
        event = fast(line)
        if event is not None:
            return event
    return parse_line_pure(line)


def parse_line_pure(line: bytes) -> Event | Rejection:
    """parse_line without the C fast path: the reference the fast path must agree with."""
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


def parse_datagram(data: bytes) -> tuple[list[Event], list[Rejection]]:
    """Split a datagram or body on newlines and judge each non-empty line; both lists keep order."""
    items: list[Event | bytes]
    if _fast_parse is not None and _fast_lines is not None and type(data) is bytes:
        parsed, doubtful = _fast_lines(data)  # the C parser's Events, its doubts left as bytes
        if not doubtful:
            return parsed, []  # every line an Event: the common case, no loop in Python
        items = parsed
    else:  # pure (or not bytes, which the C parser declines line by line anyway)
        items = [line for line in data.split(b"\n") if line]
    return _judge_lines(items)


def _judge_lines(items: list[Event | bytes]) -> tuple[list[Event], list[Rejection]]:
    """Each line not parsed yet judged by the pure path, in order, with the Events given."""
    events: list[Event] = []
    rejections: list[Rejection] = []
    for item in items:
        result = item if isinstance(item, Event) else parse_line_pure(item)
        if isinstance(result, Event):
            events.append(result)
        else:
            rejections.append(result)
    return events, rejections


# -- the C fast path (lwsobs/ingest/_fastwire.c) ---------------------------------------------------

# the C code re-implements these validators (and these two patterns) for the lines it accepts
_FAST_KINDS: Final[Mapping[Callable[[object], object], str]] = {
    _src: "src",
    _seq: "seq",
    _int: "int",
    _hex: "hex",
    _text: "text",
    _bool: "bool",
}
_FAST_PATTERNS: Final = (
    (_SRC, r"[A-Za-z0-9._:@-]{1,64}"),
    (_HEX, rf"(?:0[xX])?([0-9A-Fa-f]{{1,{MAX_HEX_DIGITS}}})"),
)


def _load_fast() -> Any:
    """The C parser module, configured from this module's field table; None if absent or out
    of step.

    Its `parse` returns an Event only for lines it is certain about and None for the rest
    (`parse_lines` hands those back as bytes), which parse_line_pure then judges, so its
    absence changes speed, never results.
    """
    try:
        from lwsobs.ingest import _fastwire
    except ImportError:
        return None
    if any(regex.pattern != expected for regex, expected in _FAST_PATTERNS):
        return None
    required = dict(_REQUIRED)
    spec: list[tuple[str, str, bool]] = []
    for name in EVENT_FIELDS:
        if name == "v":
            spec.append((name, "version", True))
            continue
        check = required.get(name) or _OPTIONAL.get(name)
        kind = None if check is None else _FAST_KINDS.get(check)
        if kind is None:
            return None
        spec.append((name, kind, name in required))
    try:
        _fastwire.configure(
            Event, tuple(spec), MAX_LINE_BYTES, MAX_TEXT_BYTES, MAX_HEX_DIGITS, WIRE_VERSION
        )
    except (TypeError, ValueError):
        return None
    return _fastwire


_fastwire_module = _load_fast()  # None when the extension is not built (or out of step)
fast_parse: Final[Callable[[bytes], Event | None] | None] = (
    None if _fastwire_module is None else _fastwire_module.parse
)
# one call per body: its Events, with the lines the C parser was unsure of left as bytes
_fast_lines: Final[Callable[[bytes], tuple[list[Any], int]] | None] = (
    None if _fastwire_module is None else _fastwire_module.parse_lines
)
_fast_parse = None if PURE_PYTHON else fast_parse


def use_fast_path(enabled: bool) -> bool:
    """Switch parse_line/parse_datagram to the C fast path or off it (LWSOBS_PURE_PYTHON=1 starts
    off); returns whether the fast path is now in use, False when it is not built."""
    global _fast_parse
    _fast_parse = fast_parse if enabled else None
    return _fast_parse is not None
