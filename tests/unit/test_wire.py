"""wire-v1 parsing: every rule of docs/wire.md, line by line and datagram by datagram."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lwsobs.sources.lws.wire import (
    BYE,
    CONTEXT_DESTROY_BEGIN,
    CONTEXT_DESTROYED,
    EVENT_FIELDS,
    FATAL,
    HEARTBEAT,
    HELLO,
    HTTP_STATUS,
    LISTEN,
    MAX_LINE_BYTES,
    MAX_TEXT_BYTES,
    Event,
    PseudoEvent,
    Rejection,
    RejectReason,
    parse_datagram,
    parse_line,
)

T0 = 1_732_630_000_000_000_000
BASE: dict[str, Any] = {"v": 1, "src": "myapp@host:4242", "seq": 7, "t": T0, "r": 29}
REQUIRED = ("v", "src", "seq", "t", "r")
I64_MAX = (1 << 63) - 1
I64_MIN = -(1 << 63)

# every optional field of the spec's tables, by type
HEX_FIELDS = ("ctx", "wsi", "nwsi", "parent", "child")
INT_FIELDS = ("fd", "afd", "mono", "drop", "status", "pid", "port", "n", "sig", "hb")
BOOL_FIELDS = ("ssl", "fake")
TEXT_FIELDS = (
    *("vh", "pcol", "tag", "uri", "method", "peer", "upg", "sub", "why", "err"),
    *("lws", "host", "addr", "shim", "unobserved"),
)
OPTIONAL = HEX_FIELDS + INT_FIELDS + BOOL_FIELDS + TEXT_FIELDS


def encode(obj: object) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


def line(**fields: Any) -> bytes:
    """BASE with fields added or replaced; a field given as ... is removed."""
    obj = {**BASE, **fields}
    return encode({k: v for k, v in obj.items() if v is not ...})


def event(data: bytes) -> Event:
    result = parse_line(data)
    assert isinstance(result, Event), result
    return result


def rejected(data: bytes, reason: RejectReason, field: str | None = None) -> Rejection:
    result = parse_line(data)
    assert isinstance(result, Rejection), result
    assert result.reason is reason, result
    assert result.field == field, result
    assert len(result.detail) <= 100
    if field is not None:
        assert result.detail.startswith(f"{field}: ")
    return result


# -- accepted lines --------------------------------------------------------------------------------


def test_minimal_line() -> None:
    ev = event(line())
    assert (ev.v, ev.src, ev.seq, ev.t, ev.r) == (1, "myapp@host:4242", 7, T0, 29)
    assert all(getattr(ev, name) is None for name in OPTIONAL)


def test_the_tests_cover_every_optional_field_of_event() -> None:
    assert set(EVENT_FIELDS) == set(REQUIRED) | set(OPTIONAL)
    assert len(OPTIONAL) == len(set(OPTIONAL))


def test_full_line() -> None:
    full = {
        "ctx": "0x55d1c2a0",
        "wsi": "0x55D1C2B0",
        "nwsi": "55d1c2c0",
        "parent": "0x7f00",
        "child": "0X00ABC",
        "fd": -1,
        "afd": 12,
        "mono": 123_456_789,
        "drop": 3,
        "status": 200,
        "pid": 4242,
        "ssl": True,
        "fake": False,
        "vh": "default",
        "pcol": "http",
        "tag": "[wsisrv|3|adopted|h1|default|GET|200]",
        "uri": "/items/1?q=\u00e9",
        "method": "GET",
        "peer": "127.0.0.1:5555",
        "upg": "websocket",
        "sub": "lws-minimal",
        "why": "lws_http_transaction_completed",
        "err": "HS: ACCEPT missing",
        "lws": "4.3.3-v4.3.3",
        "host": "box",
        "port": 7681,
        "n": 2,
        "sig": 11,
        "hb": 2000,
        "addr": "example.com",
        "shim": "2",
        "unobserved": "libwebsockets 3.2.0 not supported (4.1 to 5.0 are)",
    }
    ev = event(line(**full))
    assert (ev.ctx, ev.wsi, ev.nwsi, ev.parent, ev.child) == (
        "55d1c2a0",
        "55d1c2b0",
        "55d1c2c0",
        "7f00",
        "abc",
    )
    for name in INT_FIELDS + BOOL_FIELDS + TEXT_FIELDS:
        assert getattr(ev, name) == full[name], name
    assert type(ev.ssl) is bool and type(ev.fd) is int


@pytest.mark.parametrize(
    "fields",
    [
        {"src": "a"},
        {"src": "a" * 64},
        {"src": "AZaz09._:@-"},
        {"seq": 0},
        {"seq": I64_MAX},
        {"t": 0},
        {"t": I64_MIN},
        {"t": I64_MAX},
        {"r": -5},
        {"r": 0},
        {"r": 1000},
        {"r": 424242},  # unknown reasons are opaque, not refused
        {"fd": I64_MIN, "mono": I64_MAX},
    ],
    ids=repr,
)
def test_boundary_values_are_accepted(fields: dict[str, Any]) -> None:
    ev = event(line(**fields))
    for name, value in fields.items():
        assert getattr(ev, name) == value


def test_unknown_fields_are_ignored_whatever_they_hold() -> None:
    extra = {
        "tsi": 0,
        "cbp": 1,
        "len": 5,
        "future": {"nested": [1, 2.5, None, True]},
        "huge": int("9" * 200),
        "deep": json.loads("[" * 100 + "]" * 100),
        "Wsi": "not a pointer",  # keys are case-sensitive
    }
    ev = event(line(**extra))
    assert ev == Event(**BASE)


@pytest.mark.parametrize("name", OPTIONAL)
def test_optional_null_is_absent(name: str) -> None:
    assert event(line(**{name: None})) == Event(**BASE)


def test_field_order_and_whitespace_do_not_matter() -> None:
    text = ' { "r" : 30 , "t":1, "seq" :0,"src":"s" ,"v":1, "wsi":"0x1" }\r'
    assert event(text.encode()) == Event(v=1, src="s", seq=0, t=1, r=30, wsi="1")


def test_duplicate_keys_keep_the_last_value() -> None:
    assert event(b'{"v":1,"src":"a","seq":1,"seq":2,"t":0,"r":0}').seq == 2


# -- required fields -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", REQUIRED)
def test_missing_required_field(name: str) -> None:
    rejected(line(**{name: ...}), RejectReason.MISSING_FIELD, name)


@pytest.mark.parametrize("name", REQUIRED)
def test_null_required_field_is_missing(name: str) -> None:
    rejected(line(**{name: None}), RejectReason.MISSING_FIELD, name)


def test_the_first_missing_field_is_named() -> None:
    rejected(encode({"v": 1}), RejectReason.MISSING_FIELD, "src")
    rejected(encode({"v": 1, "src": "a", "t": 0}), RejectReason.MISSING_FIELD, "seq")


BAD_REQUIRED = [
    ("v", "1"),
    ("v", 1.0),
    ("v", True),
    ("v", False),
    ("v", [1]),
    ("v", {"major": 1}),
    ("v", 1 << 63),
    ("src", 5),
    ("src", True),
    ("src", ["a"]),
    ("src", ""),
    ("src", "a" * 65),
    ("src", "my app"),
    ("src", "app/1"),
    ("src", "app\n"),
    ("src", "caf\u00e9"),
    ("src", "app\u0000"),
    ("seq", -1),
    ("seq", "0"),
    ("seq", 0.0),
    ("seq", 1.5),
    ("seq", True),
    ("seq", False),
    ("seq", 1 << 63),
    ("seq", {}),
    ("t", "1"),
    ("t", 1.5),
    ("t", 1e18),
    ("t", True),
    ("t", 1 << 63),
    ("t", I64_MIN - 1),
    ("r", "29"),
    ("r", 29.0),
    ("r", True),
    ("r", []),
    ("r", 1 << 64),
]


@pytest.mark.parametrize(("name", "value"), BAD_REQUIRED, ids=repr)
def test_mistyped_required_field(name: str, value: object) -> None:
    rejected(line(**{name: value}), RejectReason.BAD_FIELD, name)


@pytest.mark.parametrize("version", [0, 2, -1, 100])
def test_other_versions(version: int) -> None:
    rejected(line(v=version), RejectReason.BAD_VERSION, "v")


def test_version_is_judged_before_the_other_fields() -> None:
    """A v2 line may have other required fields: it is a version problem, not a missing field."""
    rejected(encode({"v": 2}), RejectReason.BAD_VERSION, "v")
    rejected(encode({"v": 2, "src": 5}), RejectReason.BAD_VERSION, "v")


# -- optional fields -------------------------------------------------------------------------------

BAD_HEX: list[object] = [
    5,
    0,
    True,
    1.5,
    [],
    {},
    "",
    "0x",
    "xyz",
    "0xg1",
    "(nil)",
    " 0x1",
    "0x1 ",
    "-0x1",
    "+1",
    "0x" + "f" * 17,
    "f" * 17,
    "0x0x1",
    "\u0661",  # an Arabic-Indic digit: not hex
]
BAD_INT: list[object] = ["1", 1.0, 1.5, True, False, [], {}, 1 << 63, I64_MIN - 1]
BAD_BOOL: list[object] = [1, 0, "true", "false", [], {}, 1.0]
BAD_TEXT: list[object] = [1, 0, True, 1.5, [], ["a"], {}]
BAD_OPTIONAL = (
    [(name, value) for name in HEX_FIELDS for value in BAD_HEX]
    + [(name, value) for name in INT_FIELDS for value in BAD_INT]
    + [(name, value) for name in BOOL_FIELDS for value in BAD_BOOL]
    + [(name, value) for name in TEXT_FIELDS for value in BAD_TEXT]
)


@pytest.mark.parametrize(("name", "value"), BAD_OPTIONAL, ids=repr)
def test_mistyped_optional_field(name: str, value: object) -> None:
    rejected(line(**{name: value}), RejectReason.BAD_FIELD, name)


def test_a_bad_optional_field_names_itself_among_good_ones() -> None:
    rejection = rejected(line(wsi="0x1", fd=3, ssl="yes"), RejectReason.BAD_FIELD, "ssl")
    assert "boolean" in rejection.detail and "string" in rejection.detail


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("0x55d1c2a0", "55d1c2a0"),
        ("55d1c2a0", "55d1c2a0"),
        ("0x55D1C2A0", "55d1c2a0"),
        ("0X55d1C2a0", "55d1c2a0"),
        ("0x000055d1c2a0", "55d1c2a0"),
        ("0000000055d1c2a0", "55d1c2a0"),
        ("0x0000000000000000", "0"),
        ("0", "0"),
        ("0x0", "0"),
        ("ffffffffffffffff", "ffffffffffffffff"),
        ("0xFFFFFFFFFFFFFFFF", "ffffffffffffffff"),
        ("a", "a"),
    ],
)
def test_hex_normalisation(raw: str, normal: str) -> None:
    ev = event(line(ctx=raw, wsi=raw, nwsi=raw, parent=raw, child=raw))
    assert ev.ctx == ev.wsi == ev.nwsi == ev.parent == ev.child == normal


def test_the_same_pointer_in_two_formats_compares_equal() -> None:
    assert event(line(wsi="0x00007f3a")).wsi == event(line(wsi="7F3A")).wsi


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        ("a" * MAX_TEXT_BYTES, "a" * MAX_TEXT_BYTES),
        ("a" * (MAX_TEXT_BYTES + 1), "a" * MAX_TEXT_BYTES),
        ("b" * 1300, "b" * MAX_TEXT_BYTES),
        ("\u00e9" * 512, "\u00e9" * 512),  # exactly 1024 bytes
        ("\u00e9" * 600, "\u00e9" * 512),
        ("a" + "\u00e9" * 600, "a" + "\u00e9" * 511),  # a 2-byte character cut in half is dropped
        ("\U0001f600" * 300, "\U0001f600" * 256),
        ("ab" + "\U0001f600" * 300, "ab" + "\U0001f600" * 255),
        ("", ""),
    ],
    ids=lambda x: repr(x)[:30],
)
def test_texts_are_cut_at_1_kib_of_utf8(raw: str, kept: str) -> None:
    half = len(TEXT_FIELDS) // 2  # all of them at once would pass the 16 KiB line limit
    for names in (TEXT_FIELDS[:half], TEXT_FIELDS[half:]):
        ev = event(line(**dict.fromkeys(names, raw)))
        for name in names:
            value = getattr(ev, name)
            assert value == kept
            assert len(value.encode()) <= MAX_TEXT_BYTES


def test_a_lone_surrogate_escape_becomes_visible_text() -> None:
    ev = event(json.dumps({**BASE, "uri": "\ud800/x"}).encode())  # ASCII: sent as \\ud800
    assert ev.uri == "\\ud800/x"
    assert ev.uri.encode() == b"\\ud800/x"  # encodable: safe for any exporter


def test_control_characters_in_texts_are_kept_as_sent() -> None:
    assert event(line(err="a\u0000b\nc")).err == "a\u0000b\nc"


# -- framing: length, UTF-8, JSON ------------------------------------------------------------------


def padded(size: int) -> bytes:
    """A valid line of exactly size bytes, padded by an unknown field."""
    stub = line(pad="")
    data = line(pad="x" * (size - len(stub)))
    assert len(data) == size
    return data


def test_a_line_of_exactly_16_kib_is_accepted() -> None:
    assert MAX_LINE_BYTES == 16384
    event(padded(MAX_LINE_BYTES))


def test_a_line_over_16_kib_is_too_long() -> None:
    rejection = rejected(padded(MAX_LINE_BYTES + 1), RejectReason.TOO_LONG)
    assert "16385" in rejection.detail


def test_length_is_checked_before_decoding() -> None:
    rejected(b"\xff" * (MAX_LINE_BYTES + 1), RejectReason.TOO_LONG)


@pytest.mark.parametrize(
    "data",
    [
        b"\xff",
        b'{"v":1,"src":"a\xff"}',
        b'{"v":1,"uri":"\xc3"}',  # a truncated 2-byte sequence
        b"\xc0\xaf",  # overlong encoding of '/'
        b'"\xed\xa0\x80"',  # a UTF-16 surrogate encoded as UTF-8
        b'"\xf4\x90\x80\x80"',  # above U+10FFFF
        b"\x80",
    ],
)
def test_invalid_utf8(data: bytes) -> None:
    rejected(data, RejectReason.NOT_UTF8)


@pytest.mark.parametrize(
    "data",
    [
        b"{",
        b"}",
        b"{'v': 1}",
        b'{"v":1,}',
        b"{} x",
        b"{}{}",
        b"NaN",
        b"-Infinity",
        line(t=...)[:-1] + b',"t":Infinity}',
        line(seq=...)[:-1] + b',"seq":NaN}',
        b"\xef\xbb\xbf{}",  # a UTF-8 byte order mark
        b"\r",
        b" ",
        b"\x00",
        b"\t\t",
    ],
)
def test_not_json(data: bytes) -> None:
    rejected(data, RejectReason.NOT_JSON)


@pytest.mark.parametrize("data", [b"[]", b"[{}]", b"1", b"-1.5", b'"s"', b"null", b"true"])
def test_not_object(data: bytes) -> None:
    rejected(data, RejectReason.NOT_OBJECT)


def test_deep_nesting_does_not_crash() -> None:
    rejected(b"[" * 100_000, RejectReason.TOO_LONG)
    rejected(b"[" * MAX_LINE_BYTES, RejectReason.NOT_JSON)
    rejected(b"[" * 8000 + b"]" * 8000, RejectReason.NOT_JSON)
    rejected(b'{"a":' * 2500 + b"1" + b"}" * 2500, RejectReason.NOT_JSON)
    rejected(line()[:-1] + b',"x":' + b"[" * 5000 + b"]" * 5000 + b"}", RejectReason.NOT_JSON)


@pytest.mark.parametrize("name", ["v", "seq", "t", "r", "fd", "mono", "pid"])
@pytest.mark.parametrize(
    "number", [b"1" + b"0" * 19, b"-" + b"9" * 19, b"9" * 5000, b"-" + b"1" * 16000, b"1e400"]
)
def test_huge_numbers_are_bad_fields(name: str, number: bytes) -> None:
    data = line(**{name: ...})[:-1] + b',"' + name.encode() + b'":' + number + b"}"
    if len(data) > MAX_LINE_BYTES:
        rejected(data, RejectReason.TOO_LONG)
    else:
        rejection = rejected(data, RejectReason.BAD_FIELD, name)
        assert len(rejection.detail) <= 100


def test_a_huge_number_where_a_string_belongs_is_a_type_error() -> None:
    data = line()[:-1] + b',"wsi":' + b"1" * 100 + b"}"
    assert rejected(data, RejectReason.BAD_FIELD, "wsi").detail == (
        "wsi: expected hex string, got integer"
    )


def test_int64_bounds_exactly() -> None:
    event(line(t=I64_MAX))
    event(line(t=I64_MIN))
    rejected(line(t=I64_MAX + 1), RejectReason.BAD_FIELD, "t")
    rejected(line(t=I64_MIN - 1), RejectReason.BAD_FIELD, "t")
    rejected(line(t=int("9" * 20)), RejectReason.BAD_FIELD, "t")
    rejected(line(t=-int("9" * 19)), RejectReason.BAD_FIELD, "t")


def test_details_never_echo_much_of_the_input() -> None:
    for data in (
        line(src="x" * 10_000),
        line(wsi="\n" * 5000),
        line(uri=["y" * 10_000]),
        line(seq="\u00e9" * 3000),
        line(r={"k" * 5000: 1}),
    ):
        result = parse_line(data)
        assert isinstance(result, Rejection)
        assert len(result.detail) <= 100
        assert "\n" not in result.detail


# -- datagrams -------------------------------------------------------------------------------------


def test_datagram_keeps_good_lines_in_order_around_bad_ones() -> None:
    lines = [
        line(seq=1),
        b"garbage",
        line(seq=2, wsi="0xA"),
        b"\xff\xfe",
        line(seq=3, v=2),
        line(seq=4, fd="x"),
        padded(MAX_LINE_BYTES + 10),
        line(seq=5),
        b"[]",
    ]
    events, rejections = parse_datagram(b"\n".join(lines) + b"\n")
    assert [e.seq for e in events] == [1, 2, 5]
    assert events[1].wsi == "a"
    assert [r.reason for r in rejections] == [
        RejectReason.NOT_JSON,
        RejectReason.NOT_UTF8,
        RejectReason.BAD_VERSION,
        RejectReason.BAD_FIELD,
        RejectReason.TOO_LONG,
        RejectReason.NOT_OBJECT,
    ]


def test_datagram_skips_empty_lines_and_accepts_crlf() -> None:
    data = b"\n\n" + line(seq=1) + b"\r\n\n" + line(seq=2) + b"\r\n"
    events, rejections = parse_datagram(data)
    assert [e.seq for e in events] == [1, 2]
    assert rejections == []


@pytest.mark.parametrize("data", [b"", b"\n", b"\n\n\n"])
def test_empty_datagram(data: bytes) -> None:
    assert parse_datagram(data) == ([], [])


def test_last_line_needs_no_newline() -> None:
    events, _ = parse_datagram(line(seq=1) + b"\n" + line(seq=2))
    assert [e.seq for e in events] == [1, 2]


def test_the_16_kib_limit_is_per_line_not_per_datagram() -> None:
    many = b"\n".join(padded(MAX_LINE_BYTES) for _ in range(4))
    events, rejections = parse_datagram(many)
    assert len(events) == 4 and rejections == []


# -- pseudo-events ---------------------------------------------------------------------------------


def test_pseudo_event_numbers() -> None:
    assert (HELLO, HEARTBEAT, CONTEXT_DESTROY_BEGIN, CONTEXT_DESTROYED, BYE) == (-1, -2, -3, -4, -5)
    assert (LISTEN, HTTP_STATUS, FATAL) == (-6, -7, -8)
    assert [p.name for p in PseudoEvent] == [
        "HELLO",
        "HEARTBEAT",
        "CONTEXT_DESTROY_BEGIN",
        "CONTEXT_DESTROYED",
        "BYE",
        "LISTEN",
        "HTTP_STATUS",
        "FATAL",
    ]


def test_hello_line() -> None:
    ev = event(line(r=HELLO, seq=0, lws="4.1.6", pid=4242, host="box"))
    assert ev.r == PseudoEvent.HELLO and (ev.lws, ev.pid, ev.host) == ("4.1.6", 4242, "box")


# -- properties ------------------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=10,
)
field_names = st.sampled_from(REQUIRED + OPTIONAL) | st.text(max_size=6)
json_objects = st.dictionaries(field_names, json_values, max_size=12).map(
    lambda extra: encode({**BASE, **extra})
)
json_lines = st.lists(json_objects | json_values.map(encode) | st.binary(max_size=40), max_size=8)
datagrams = st.binary(max_size=300) | json_lines.map(b"\n".join)


@settings(database=None, deadline=None)
@given(datagrams)
def test_parse_datagram_never_raises_and_judges_every_line_once(data: bytes) -> None:
    events, rejections = parse_datagram(data)
    assert len(events) + len(rejections) == sum(1 for part in data.split(b"\n") if part)
    for rejection in rejections:
        assert rejection.reason in RejectReason
        assert len(rejection.detail) <= 100
    for ev in events:
        assert ev.v == 1 and type(ev.seq) is int and ev.seq >= 0


pointers = st.integers(min_value=0, max_value=(1 << 64) - 1)


@st.composite
def valid_lines(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """A valid wire object and the Event fields it must parse to."""
    i64 = st.integers(min_value=I64_MIN, max_value=I64_MAX)
    wire: dict[str, Any] = {
        "v": 1,
        "src": draw(st.from_regex(r"[A-Za-z0-9._:@-]{1,64}", fullmatch=True)),
        "seq": draw(st.integers(min_value=0, max_value=I64_MAX)),
        "t": draw(i64),
        "r": draw(i64),
    }
    expected = dict(wire)
    for name in draw(st.lists(st.sampled_from(OPTIONAL), unique=True)):
        if name in HEX_FIELDS:
            value = draw(pointers)
            wire[name] = draw(st.sampled_from(["0x{:x}", "{:X}", "0x{:016x}"])).format(value)
            expected[name] = f"{value:x}"
        elif name in INT_FIELDS:
            wire[name] = expected[name] = draw(i64)
        elif name in BOOL_FIELDS:
            wire[name] = expected[name] = draw(st.booleans())
        else:
            wire[name] = expected[name] = draw(st.text(max_size=50))
    return wire, expected


@settings(database=None, deadline=None)
@given(valid_lines())
def test_valid_lines_round_trip(case: tuple[dict[str, Any], dict[str, Any]]) -> None:
    wire, expected = case
    ev = event(json.dumps(wire).encode())
    assert ev == Event(**expected)
