"""parse_line and parse_datagram (msgspec) against judge_line (the Python judge), line by line.

The one rule: for every line, parse_line returns exactly what judge_line returns: the same Event
(same values, same types) or the same Rejection (reason, detail, field). msgspec must also take
every line of real recordings itself, without the judge, or it buys no speed.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lwsobs.sources.lws import wire
from lwsobs.sources.lws.wire import (
    EVENT_FIELDS,
    MAX_LINE_BYTES,
    MAX_TEXT_BYTES,
    Event,
    Rejection,
    judge_line,
    parse_datagram,
    parse_line,
)

ROOT = Path(__file__).resolve().parents[2]
RECORDINGS = (
    ROOT / "lwsobs/data/lws-demo.ndjson",
    ROOT / "tests/reliability/data/lws-recording.ndjson",
)
I64_MIN = -(1 << 63)
I64_MAX = (1 << 63) - 1
FIELDS = EVENT_FIELDS
BASE: dict[str, Any] = {"v": 1, "src": "myapp@host:4242", "seq": 7, "t": 1_732_630_000 * 10**9}
DECODE = msgspec.json.Decoder(Event)


def by_msgspec(line: bytes) -> Event | None:
    """The Event msgspec makes of `line` (its types, then the src and pointer characters), None
    when it refuses it (the judge's to say)."""
    try:
        event = DECODE.decode(line)
    except (msgspec.DecodeError, RecursionError):
        return None
    return event if wire._canonical([event]) else None


def same(got: Event | Rejection, judged: Event | Rejection) -> None:
    assert type(got) is type(judged), (got, judged)
    assert got == judged
    if isinstance(got, Event):
        assert [type(getattr(got, f)) for f in FIELDS] == [type(getattr(judged, f)) for f in FIELDS]


def agree(line: bytes) -> Event | Rejection:
    """parse_line's result for `line`, after checking it is exactly the judge's."""
    got = parse_line(line)
    same(got, judge_line(line))
    if line and b"\n" not in line:  # a datagram of that one line: the same answer
        events, rejections = parse_datagram(line)
        assert (events, rejections) == (([got], []) if isinstance(got, Event) else ([], [got]))
    return got


def lines_of(path: Path) -> list[bytes]:
    return [line for line in path.read_bytes().split(b"\n") if line]


def bench_recording(n: int) -> list[bytes]:
    spec = importlib.util.spec_from_file_location("bench_ingest", ROOT / "bench/ingest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    lines: list[bytes] = module.recording(n)[0]
    return lines


def line(*pairs: tuple[str, Any], base: bool = True) -> bytes:
    """An object from key/value pairs (duplicates kept), BASE's pairs first; r defaults to 29."""
    head = [*BASE.items(), ("r", 29)] if base else []
    keys = {k for k, _ in pairs}
    items = [(k, v) for k, v in head if k not in keys] + list(pairs)
    body = ",".join(f"{json.dumps(k)}:{json.dumps(v, ensure_ascii=False)}" for k, v in items)
    return ("{" + body + "}").encode()


def judged_datagram(data: bytes) -> tuple[list[Event], list[Rejection]]:
    """parse_datagram as the judge alone would answer it."""
    events: list[Event] = []
    rejections: list[Rejection] = []
    for item in data.split(b"\n"):
        if item:
            result = judge_line(item)
            (events if isinstance(result, Event) else rejections).append(result)  # type: ignore[arg-type]
    return events, rejections


# -- the Struct and the judge describe the same fields --------------------------------------------


def test_the_struct_types_are_the_judges_checks() -> None:
    """Each field's type in Event is the one its judge check produces (one field table)."""
    kinds = {wire._int: int, wire._seq: int, wire._hex: str, wire._text: str, wire._src: str}
    kinds[wire._bool] = bool
    checks = {**dict(wire._REQUIRED), **wire._OPTIONAL}
    info = msgspec.inspect.type_info(Event)
    assert isinstance(info, msgspec.inspect.StructType)
    assert tuple(f.name for f in info.fields) == EVENT_FIELDS
    for field in info.fields:
        if field.name == "v":
            assert field.required and isinstance(field.type, msgspec.inspect.IntType)
            continue
        expected = kinds[checks[field.name]]
        typ = field.type
        if isinstance(typ, msgspec.inspect.UnionType):  # an optional field: T | None, None default
            assert not field.required and field.default is None
            assert [type(t) for t in typ.types][1:] == [msgspec.inspect.NoneType]
            typ = typ.types[0]
        else:
            assert field.required
        python = {
            msgspec.inspect.IntType: int,
            msgspec.inspect.StrType: str,
            msgspec.inspect.BoolType: bool,
        }[type(typ)]
        assert python is expected, field.name
        if expected is int:
            assert isinstance(typ, msgspec.inspect.IntType)
            assert typ.le == I64_MAX and typ.ge == (0 if field.name == "seq" else I64_MIN)
        if checks[field.name] is wire._text:
            assert isinstance(typ, msgspec.inspect.StrType) and typ.max_length == MAX_TEXT_BYTES
    assert set(wire._TEXT_FIELDS) == {n for n, c in checks.items() if c is wire._text}


def test_event_is_frozen_and_compares_by_value() -> None:
    event = parse_line(line())
    assert isinstance(event, Event)
    with pytest.raises(AttributeError):
        event.seq = 8  # type: ignore[misc]
    assert event == Event(v=1, src="myapp@host:4242", seq=7, t=BASE["t"], r=29)
    assert event != msgspec.structs.replace(event, seq=8)
    assert hash(event) == hash(msgspec.structs.replace(event))


# -- real lines: all taken by msgspec, all identical --------------------------------------------


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: p.name)
def test_every_recorded_line_is_decoded_by_msgspec_and_identical(path: Path) -> None:
    lines = lines_of(path)
    assert len(lines) > 100
    for ln in lines:
        judged = judge_line(ln)
        assert isinstance(judged, Event), judged
        assert by_msgspec(ln) == judged, ln[:200]  # the shim's lines never need the judge
        same(agree(ln), judged)


def test_every_bench_line_is_decoded_by_msgspec_and_identical() -> None:
    lines = bench_recording(2000)
    assert [by_msgspec(ln) for ln in lines] == [judge_line(ln) for ln in lines]
    assert all(isinstance(agree(ln), Event) for ln in lines)


def test_datagrams_of_real_lines_agree_with_the_judge() -> None:
    data = b"\n".join(ln for path in RECORDINGS for ln in lines_of(path))
    events, rejections = parse_datagram(data)
    assert rejections == [] and len(events) == 465
    assert (events, rejections) == judged_datagram(data)


def test_shim_shaped_bodies_take_the_plain_path() -> None:
    """The whole-body path (no check per line in Python) is the one real traffic takes."""
    demo = lines_of(RECORDINGS[0])
    bench = bench_recording(20_000)
    bodies = [
        b"\n".join(demo) + b"\n",  # one replay slice
        b"\n".join(demo[:40]) + b"\n",  # an 8 KiB datagram
        b"\n".join(bench) + b"\n",  # a 4 MiB HTTP body
    ]
    for body in bodies:
        assert wire._plain_body(body, body.split(b"\n"))
        assert parse_datagram(body) == judged_datagram(body)


def test_a_body_is_split_exactly_as_the_judge_splits_it() -> None:
    good = lines_of(RECORDINGS[1])[:5]
    unknown = line(("x", 1))  # valid, with an unknown key
    bodies = [
        b"",
        b"\n\n\n",
        b"\n".join(good),
        b"\n" + b"\n\n".join(good) + b"\n",
        b"\n".join([good[0], unknown, b"{bad", good[1], b"  ", good[2] + b"\r"]),
        b"\n".join([b"{bad"] * 3),
        good[0] * 2,  # two objects on one line: one bad line
        b"\n".join([line(), b" ", line()]),  # a blank line that is not empty: not_json
        b"\n".join([line(("x", [1])), line(("x", "]")), line()]),
    ]
    for body in bodies:
        assert parse_datagram(body) == judged_datagram(body), body[:80]
    events, rejections = parse_datagram(bodies[4])
    assert len(events) == 4 and len(rejections) == 2
    assert events[0] == judge_line(good[0]) and events[1].seq == 7  # order kept


def test_a_bytearray_body_gives_the_same_answer() -> None:
    data = b"\n".join([*lines_of(RECORDINGS[1])[:3], b"{"])
    assert parse_datagram(bytearray(data)) == parse_datagram(data)  # type: ignore[arg-type]


# -- accepted shapes: each handled, each identical -------------------------------------------------


ACCEPTED = {
    "minimal": line(),
    "whitespace": b' \t{ "v" : 1 ,\r"src":"a", "seq":0,"t":-0 , "r" : -5 } \r\n',
    "int64 edges": line(("t", I64_MIN), ("mono", I64_MAX), ("seq", I64_MAX)),
    "nulls are absent": line(("fd", None), ("ctx", None), ("uri", None), ("ssl", None)),
    "bools": line(("ssl", True), ("fake", False)),
    "hex forms": line(("ctx", "0x00AbC"), ("wsi", "0"), ("nwsi", "0X000"), ("parent", "f" * 16)),
    "hex 0x + 16": line(("child", "0x" + "0" * 15 + "1")),
    "escapes": (
        b'{"v":1,"src":"a","seq":1,"t":2,"r":3,"uri":"\\"\\\\\\/\\b\\f\\n\\r\\t\\u0000\\u00e9'
        b'\\u20AC\\uFFFF"}'
    ),
    "unicode": line(("uri", "/é€😀\x7f"), ("peer", "ünï")),
    "src edge": line(("src", "A" * 64)),
    "text at the cut": line(("why", "a" * MAX_TEXT_BYTES)),
    "ascii over the cut": line(("err", "b" * (MAX_TEXT_BYTES + 7))),
    "2-byte char split": line(("uri", "a" + "é" * 600)),
    "3-byte char split": line(("uri", "€" * 400)),
    "4-byte char split": line(("uri", "a" + "😀" * 300)),
    "escaped non-ascii split": ("".join([line(("uri", "x")).decode()[:-2], "\\u20ac" * 400, '"}'])),
    "every field": line(
        *((name, "0x1") for name in ("ctx", "wsi", "nwsi", "parent", "child")),
        *((name, -1) for name in ("fd", "afd", "mono", "drop", "status", "pid")),
        *((name, name) for name in ("vh", "pcol", "tag", "uri", "method", "peer", "upg")),
        *((name, name) for name in ("sub", "why", "err", "lws", "host")),
        ("ssl", True),
        ("fake", True),
    ),
}


@pytest.mark.parametrize("data", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_common_shapes_are_accepted(data: bytes | str) -> None:
    raw = data.encode() if isinstance(data, str) else data
    assert len(raw) <= MAX_LINE_BYTES
    assert isinstance(agree(raw), Event)


def test_canonical_lines_need_no_judge() -> None:
    """What the shim sends is decoded by msgspec alone; the rest is still accepted, by the judge."""
    canonical = (
        "minimal",
        "int64 edges",
        "nulls are absent",
        "bools",
        "src edge",
        "text at the cut",
    )
    for name in canonical:
        data = ACCEPTED[name]
        assert isinstance(data, bytes)
        assert by_msgspec(data) == judge_line(data), name
    for name in ("hex forms", "ascii over the cut"):
        assert by_msgspec(ACCEPTED[name]) is None, name  # type: ignore[arg-type]


def test_text_cut_drops_a_split_character() -> None:
    event = agree(line(("uri", "a" + "😀" * 300)))
    assert isinstance(event, Event) and event.uri is not None
    assert len(event.uri.encode()) == 1021 and event.uri.endswith("😀")


def test_non_ascii_text_under_1024_characters_is_cut_after_msgspec() -> None:
    """msgspec counts characters: 1000 of them are 2000 bytes, which parse_line still cuts."""
    data = line(("uri", "é" * 1000), ("why", "€" * 10))
    assert by_msgspec(data) is not None  # msgspec decodes it...
    event = agree(data)  # ...and parse_line cuts it as the judge does
    assert isinstance(event, Event) and event.uri == "é" * 512 and event.why == "€" * 10
    escaped = b'{"v":1,"src":"a","seq":1,"t":2,"r":3,"err":"' + b"\\u20ac" * 400 + b'"}'
    event = agree(escaped)  # ASCII bytes, non-ASCII text
    assert isinstance(event, Event) and event.err == "€" * 341


# -- tricky shapes: the judge's answer, whichever path gives it ------------------------------------

DEEP = 3000


def nested(depth: int) -> bytes:
    return b'{"v":1,"src":"a","seq":1,"t":2,"r":3,"x":' + b"[" * depth + b"]" * depth + b"}"


TRICKY: dict[str, tuple[bytes, type]] = {
    "unknown key": (line(("future", 1)), Event),
    "duplicate key": (line(("fd", 1), ("fd", 2)), Event),
    "duplicate, bad then good": (line(("fd", "x"), ("fd", 2)), Event),
    "duplicate, good then bad": (line(("fd", 2), ("fd", "x")), Rejection),
    "duplicate, then null": (line(("fd", 1), ("fd", None)), Event),
    "duplicate null": (line(("fd", None), ("fd", 2)), Event),
    "duplicate required, null first": (line(("src", None), ("src", "b")), Event),
    "escaped key": (b'{"v":1,"src":"a","seq":1,"t":2,"\\u0072":3}', Event),
    "escaped duplicate key": (
        b'{"v":1,"src":"a","seq":1,"t":2,"r":3,"fd":1,"f\\u0064":"x"}',
        Rejection,
    ),
    "float": (line(("t", 1.5)), Rejection),
    "integral float": (line(("t", 1.0)), Rejection),
    "exponent": (b'{"v":1,"src":"a","seq":1,"t":1e3,"r":3}', Rejection),
    "huge int": (line(("t", I64_MAX + 1)), Rejection),
    "huge negative": (line(("t", I64_MIN - 1)), Rejection),
    "20 digits": (line(("t", 10**19)), Rejection),
    "uint64 max": (line(("fd", (1 << 64) - 1)), Rejection),
    "40 digits": (line(("mono", 10**40)), Rejection),
    "5000 digits, unknown field": (line()[:-1] + b',"x":' + b"9" * 5000 + b"}", Event),
    "5000 digits, known field": (line()[:-1] + b',"fd":' + b"9" * 5000 + b"}", Rejection),
    "1e999, unknown field": (line()[:-1] + b',"x":1e999}', Event),
    "leading zero": (b'{"v":1,"src":"a","seq":01,"t":2,"r":3}', Rejection),
    "plus sign": (b'{"v":1,"src":"a","seq":+1,"t":2,"r":3}', Rejection),
    "bool as int": (line(("fd", True)), Rejection),
    "int as bool": (line(("ssl", 1)), Rejection),
    "int as text": (line(("uri", 5)), Rejection),
    "text as int": (line(("fd", "5")), Rejection),
    "v 2": (line(("v", 2)), Rejection),
    "v true": (line(("v", True)), Rejection),
    "v 1.0": (line(("v", 1.0)), Rejection),
    "v null": (line(("v", None)), Rejection),
    "required null": (line(("src", None)), Rejection),
    "required missing": (line(("seq", 1), base=False), Rejection),
    "negative seq": (line(("seq", -1)), Rejection),
    "bad src": (line(("src", "a b")), Rejection),
    "src with a final newline": (line(("src", "a\n")), Rejection),
    "long src": (line(("src", "a" * 65)), Rejection),
    "empty src": (line(("src", "")), Rejection),
    "escaped src": (b'{"v":1,"src":"\\u0061","seq":1,"t":2,"r":3}', Event),
    "bad hex": (line(("ctx", "0x")), Rejection),
    "long hex": (line(("ctx", "1" * 17)), Rejection),
    "hex with a final newline": (line(("ctx", "ab\n")), Rejection),
    "upper hex": (line(("ctx", "AB")), Event),
    "0x hex": (line(("wsi", "0x1")), Event),
    "zero hex": (line(("wsi", "0000")), Event),
    "nested": (line(("uri", ["x"])), Rejection),
    "object": (line(("uri", {"x": 1})), Rejection),
    "lone surrogate": (b'{"v":1,"src":"a","seq":1,"t":2,"r":3,"uri":"\\ud800"}', Event),
    "lone low surrogate": (b'{"v":1,"src":"a","seq":1,"t":2,"r":3,"uri":"x\\udc00"}', Event),
    "lone surrogate, unknown field": (
        b'{"v":1,"src":"a","seq":1,"t":2,"r":3,"x":"\\ud800"}',
        Event,
    ),
    "surrogate pair": (b'{"v":1,"src":"a","seq":1,"t":2,"r":3,"uri":"\\ud83d\\ude00"}', Event),
    "bad escape": (b'{"v":1,"src":"a","seq":1,"t":2,"r":3,"uri":"\\x41"}', Rejection),
    "bad escape, unknown field": (b'{"v":1,"src":"a","seq":1,"t":2,"r":3,"x":"\\x41"}', Rejection),
    "short unicode escape": (b'{"v":1,"src":"a","seq":1,"t":2,"r":3,"uri":"\\u12"}', Rejection),
    "control char": (b'{"v":1,"src":"a","seq":1,"t":2,"r":3,"uri":"a\tb"}', Rejection),
    "control char, unknown field": (
        b'{"v":1,"src":"a","seq":1,"t":2,"r":3,"x":"a\x01"}',
        Rejection,
    ),
    "invalid utf-8": (b'{"v":1,"src":"a","seq":1,"t":2,"r":3,"uri":"\xff"}', Rejection),
    "invalid utf-8, unknown field": (
        b'{"v":1,"src":"a","seq":1,"t":2,"r":3,"x":"\xff"}',
        Rejection,
    ),
    "utf-8 surrogate, unknown field": (
        b'{"v":1,"src":"a","seq":1,"t":2,"r":3,"x":"\xed\xa0\x80"}',
        Rejection,
    ),
    "overlong utf-8, unknown field": (
        b'{"v":1,"src":"a","seq":1,"t":2,"r":3,"x":"\xc0\xaf"}',
        Rejection,
    ),
    "beyond U+10FFFF, unknown field": (
        b'{"v":1,"src":"a","seq":1,"t":2,"r":3,"x":"\xf4\x90\x80\x80"}',
        Rejection,
    ),
    "BOM": (b"\xef\xbb\xbf" + line(), Rejection),
    "trailing comma": (b'{"v":1,"src":"a","seq":1,"t":2,"r":3,}', Rejection),
    "extra data": (line() + b" {}", Rejection),
    "two objects": (line() + line(), Rejection),
    "NaN": (b'{"v":1,"src":"a","seq":1,"t":2,"r":3,"fd":NaN}', Rejection),
    "NaN, unknown field": (b'{"v":1,"src":"a","seq":1,"t":2,"r":3,"x":NaN}', Rejection),
    "Infinity, unknown field": (b'{"v":1,"src":"a","seq":1,"t":2,"r":3,"x":Infinity}', Rejection),
    "-Infinity, unknown field": (b'{"v":1,"src":"a","seq":1,"t":2,"r":3,"x":-Infinity}', Rejection),
    "form feed": (line() + b"\x0c", Rejection),
    "NUL after": (line() + b"\x00", Rejection),
    "nested 400, unknown field": (nested(400), Event),
    "nested too deep": (nested(DEEP), Rejection),
    "too long": (line(("uri", "a" * MAX_LINE_BYTES)), Rejection),
    "too long, unknown field": (line()[:-1] + b',"x":"' + b"a" * MAX_LINE_BYTES + b'"}', Rejection),
    "at the limit": (
        line()[:-1] + b',"x":"' + b"a" * (MAX_LINE_BYTES - len(line()) - 7) + b'"}',
        Event,
    ),
    "not an object": (b"[1]", Rejection),
    "a string": (b'"{}"', Rejection),
    "empty object": (b"{}", Rejection),
    "whitespace only": (b" \t\r", Rejection),
}


@pytest.mark.parametrize("data, kind", TRICKY.values(), ids=TRICKY.keys())
def test_tricky_shapes_get_the_judges_answer(data: bytes, kind: type) -> None:
    assert isinstance(agree(data), kind)


def test_at_the_limit_is_the_limit() -> None:
    assert len(TRICKY["at the limit"][0]) == MAX_LINE_BYTES
    assert len(TRICKY["too long"][0]) > MAX_LINE_BYTES


def test_lines_msgspec_lets_through_are_checked_before_it() -> None:
    """msgspec alone would accept these; the spec refuses them, and so does parse_line."""
    for name in (
        "invalid utf-8, unknown field",
        "utf-8 surrogate, unknown field",
        "beyond U+10FFFF, unknown field",
        "too long, unknown field",
    ):
        data = TRICKY[name][0]
        assert by_msgspec(data) is not None, name
        assert isinstance(parse_line(data), Rejection), name


def test_deep_nesting_is_left_to_the_judge(monkeypatch: pytest.MonkeyPatch) -> None:
    """Python's json gives up at the recursion limit less the caller's depth, and msgspec too,
    a few frames apart: so no line that may nest that deep is msgspec's to decide."""
    brackets: list[int] = []

    def spy(data: bytes) -> Event:
        brackets.append(data.count(b"[") + data.count(b"{"))
        return DECODE.decode(data)

    monkeypatch.setattr(wire, "_decode", spy)
    shallow, deep = nested(300), nested(700)
    for data in (shallow, deep, nested(DEEP)):
        agree(data)  # far enough from the limit either way for the judge to be sure
    long = line(("uri", "x" * 600))  # the body path takes no shortcut past these
    body = b"\n".join([long, deep, long, shallow])
    assert parse_datagram(body) == judged_datagram(body)
    assert len(parse_datagram(body)[0]) == 4
    assert 301 in brackets and 1 in brackets  # msgspec had the shallow lines...
    assert max(brackets) <= wire._SHALLOW  # ...and never a deep one


def test_nesting_is_judged_the_same_however_deep_the_callers_stack() -> None:
    def at_depth(frames: int, data: bytes) -> tuple[Event | Rejection, Event | Rejection]:
        if frames:
            return at_depth(frames - 1, data)
        return parse_line(data), judge_line(data)

    answers = [at_depth(frames, nested(700)) for frames in (0, 100, 500)]
    for got, judged in answers:
        same(got, judged)
    assert isinstance(answers[0][0], Event)  # shallow: accepted
    if sys.version_info < (3, 12):  # where Python frames count against json's nesting too
        assert isinstance(answers[-1][0], Rejection)  # 700 levels 500 frames down: too deep


def test_surrogates_stay_visible() -> None:
    event = agree(TRICKY["lone surrogate"][0])
    assert isinstance(event, Event) and event.uri == "\\ud800"


# -- generated objects -----------------------------------------------------------------------------

KEYS = st.sampled_from([*FIELDS, "x", "V", "src ", "é", ""])
INTS = st.one_of(
    st.integers(min_value=-(10**25), max_value=10**25),
    st.sampled_from([0, -1, 1, I64_MIN, I64_MAX, I64_MIN - 1, I64_MAX + 1, 10**19, -(10**19)]),
)
TEXT = st.one_of(
    st.text(max_size=40),  # includes lone surrogates
    st.from_regex(r"(0[xX])?[0-9A-Fa-f]{0,18}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9._:@ -]{0,66}", fullmatch=True),
    st.builds(
        lambda n, ch, tail: "a" * n + ch * tail,
        st.integers(MAX_TEXT_BYTES - 12, MAX_TEXT_BYTES + 4),
        st.sampled_from(["é", "€", "😀", "\\", '"', "\x00", "\ud800"]),
        st.integers(0, 6),
    ),
)
VALUES = st.one_of(
    INTS.map(str),
    TEXT.flatmap(lambda s: st.sampled_from([json.dumps(s), json.dumps(s, ensure_ascii=False)])),
    st.sampled_from(["true", "false", "null", "1.0", "1e3", "-0", "01", "+1", "NaN", "[]", "{}"]),
    st.floats(allow_nan=False).map(json.dumps),
)
SEPARATORS = st.sampled_from([",", ", ", " ,\t", ",\r\n"])


@st.composite
def objects(draw: st.DrawFn) -> bytes:
    pairs = [(json.dumps(k), json.dumps(v)) for k, v in [*BASE.items(), ("r", 29)]]
    if draw(st.booleans()):
        pairs.pop(draw(st.integers(0, len(pairs) - 1)))
    for key, value in draw(st.lists(st.tuples(KEYS, VALUES), max_size=8)):
        token = json.dumps(key, ensure_ascii=draw(st.booleans()))
        pairs.insert(draw(st.integers(0, len(pairs))), (token, value))
    sep = draw(SEPARATORS)
    text = "{" + sep.join(f"{k}:{v}" for k, v in pairs) + "}"
    return text.encode("utf-8", "surrogatepass")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(objects())
def test_generated_objects_agree(data: bytes) -> None:
    agree(data)


# -- mutations of real lines -----------------------------------------------------------------------

REAL = [ln for path in RECORDINGS for ln in lines_of(path)]


def test_truncations_of_real_lines_agree() -> None:
    for data in REAL[::20]:
        for end in range(len(data)):
            assert isinstance(agree(data[:end]), Rejection)


def test_byte_flips_of_real_lines_agree() -> None:
    accepted = 0
    for data in REAL[::40]:
        for at in range(len(data)):
            for byte in b'"\\}, 0n-\x80\xff\x00':
                mutated = data[:at] + bytes([byte]) + data[at + 1 :]
                accepted += isinstance(agree(mutated), Event)
    assert accepted > 0  # some flips keep the line valid (a digit, a letter in a string)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(REAL), st.data())
def test_random_edits_of_real_lines_agree(data: bytes, draw: st.DataObject) -> None:
    at = draw.draw(st.integers(0, len(data)))
    edit = draw.draw(st.sampled_from(["insert", "delete", "replace"]))
    byte = bytes([draw.draw(st.integers(0, 255))])
    if edit == "insert":
        data = data[:at] + byte + data[at:]
    elif edit == "delete":
        data = data[:at] + data[at + 1 :]
    else:
        data = data[:at] + byte + data[at + 1 :]
    agree(data)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(REAL),
            st.sampled_from([b"", b" ", b"{", b"\r", line(("x", 1)), line(("seq", -1))]),
            st.sampled_from([TRICKY[name][0] for name in TRICKY]),
            objects(),
        ),
        max_size=12,
    ),
    st.booleans(),
)
def test_generated_bodies_split_and_judge_as_the_judge(parts: list[bytes], trailing: bool) -> None:
    body = b"\n".join(parts) + (b"\n" if trailing else b"")
    assert parse_datagram(body) == judged_datagram(body)
