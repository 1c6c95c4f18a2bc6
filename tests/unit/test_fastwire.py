"""The C fast path (lwsobs/ingest/_fastwire.c) against the pure-Python parser, line by line.

The one rule: for every line, the fast path returns None or exactly the Event the pure path
builds (same values, same types). It must also accept every line of real recordings, or it buys
no speed. These tests fail (never skip) when the extension is not built: CI tests the fast path.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lwsobs.ingest import wire
from lwsobs.ingest.wire import (
    EVENT_FIELDS,
    MAX_LINE_BYTES,
    MAX_TEXT_BYTES,
    Event,
    Rejection,
    parse_datagram,
    parse_line,
    parse_line_pure,
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


def fast(line: bytes) -> Event | None:
    parse = wire.fast_parse
    assert parse is not None, "lwsobs.ingest._fastwire is not built: run pip install -e ."
    result = parse(line)
    assert result is None or type(result) is Event, result
    return result


def agree(line: bytes) -> Event | None:
    """The fast result for `line`, after checking it is None or exactly the pure result."""
    got = fast(line)
    pure = parse_line_pure(line)
    if got is not None:
        assert isinstance(pure, Event), (line[:200], pure)
        assert got == pure, line[:200]
        assert [type(getattr(got, f)) for f in FIELDS] == [type(getattr(pure, f)) for f in FIELDS]
    assert parse_line(line) == pure  # the hook never changes a result either way
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


# -- the extension is there and wired in -----------------------------------------------------------


@pytest.fixture
def restore_switch() -> Iterator[None]:
    """Leave the switch as the session had it (LWSOBS_PURE_PYTHON=1 runs everything else pure)."""
    was = wire._fast_parse is not None
    yield
    wire.use_fast_path(was)


@pytest.mark.usefixtures("restore_switch")
def test_fast_path_is_built_and_in_use() -> None:
    assert wire.fast_parse is not None, "lwsobs.ingest._fastwire is not built"
    assert wire.use_fast_path(True) is True
    assert wire._fast_parse is wire.fast_parse


@pytest.mark.usefixtures("restore_switch")
def test_switch_forces_the_pure_path_and_results_do_not_change() -> None:
    data = b"\n".join(lines_of(RECORDINGS[1])) + b"\n{bad\n"
    assert wire.use_fast_path(False) is False
    pure = parse_datagram(data)
    assert wire.use_fast_path(True) is True
    assert parse_datagram(data) == pure
    assert len(pure[0]) == 166 and len(pure[1]) == 1


def test_configure_refuses_an_event_class_without_the_slots() -> None:
    """The C parser writes fields into __slots__ by offset: anything else must be refused."""
    module = wire._fastwire_module
    assert module is not None
    spec = (("v", "version", True), ("src", "src", True))
    limits = (MAX_LINE_BYTES, MAX_TEXT_BYTES, 16, 1)

    class AsTuple(NamedTuple):
        v: int
        src: str

    class WithDict:
        v: int
        src: str

    @dataclass(slots=True)
    class MissingSlot:
        v: int

    for cls in (AsTuple, WithDict, MissingSlot, int):
        with pytest.raises(TypeError):
            module.configure(cls, spec, *limits)
    assert fast(line()) == parse_line_pure(line())  # a refused configure changed nothing


def test_environment_switch_starts_pure() -> None:
    code = "from lwsobs.ingest import wire; print(wire.fast_parse is not None, wire._fast_parse)"
    env = {**os.environ, "LWSOBS_PURE_PYTHON": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "None"]


# -- real lines: all accepted, all identical -------------------------------------------------------


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: p.name)
def test_every_recorded_line_is_accepted_and_identical(path: Path) -> None:
    lines = lines_of(path)
    assert len(lines) > 100
    refused = [ln for ln in lines if agree(ln) is None]
    assert refused == []


def test_every_bench_line_is_accepted_and_identical() -> None:
    lines = bench_recording(2000)
    refused = [ln for ln in lines if agree(ln) is None]
    assert refused == []


def test_datagrams_of_real_lines_agree_with_the_pure_path() -> None:
    data = b"\n".join(ln for path in RECORDINGS for ln in lines_of(path))
    events, rejections = parse_datagram(data)
    assert rejections == [] and len(events) == 465
    assert events == [parse_line_pure(ln) for ln in data.split(b"\n")]


def pure_datagram(data: bytes) -> tuple[list[Event], list[Rejection]]:
    was = wire._fast_parse is not None
    wire.use_fast_path(False)
    try:
        return parse_datagram(data)
    finally:
        wire.use_fast_path(was)


@pytest.mark.usefixtures("restore_switch")
def test_a_body_is_split_in_c_exactly_as_the_pure_path_splits_it() -> None:
    wire.use_fast_path(True)
    good = lines_of(RECORDINGS[1])[:5]
    doubtful = line(("x", 1))  # valid, but an unknown key: the C parser leaves it to Python
    bodies = [
        b"",
        b"\n\n\n",
        b"\n".join(good),
        b"\n" + b"\n\n".join(good) + b"\n",
        b"\n".join([good[0], doubtful, b"{bad", good[1], b"  ", good[2] + b"\r"]),
        b"\n".join([b"{bad"] * 3),
        good[0] * 2,  # two objects on one line: one bad line
    ]
    for body in bodies:
        assert parse_datagram(body) == pure_datagram(body), body[:80]
    events, rejections = parse_datagram(bodies[4])
    assert len(events) == 4 and len(rejections) == 2
    assert events[0] == parse_line_pure(good[0]) and events[1].seq == 7  # order kept


def test_parse_lines_reports_what_it_left_to_python() -> None:
    module = wire._fastwire_module
    assert module is not None
    items, doubtful = module.parse_lines(b"\n".join([line(), line(("x", 1)), b"", b"{"]))
    assert doubtful == 2
    assert [type(item) for item in items] == [Event, bytes, bytes]
    with pytest.raises(TypeError):
        module.parse_lines("not bytes")


@pytest.mark.usefixtures("restore_switch")
def test_a_bytearray_body_takes_the_python_split() -> None:
    wire.use_fast_path(True)
    data = b"\n".join(lines_of(RECORDINGS[1])[:3])
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
    assert agree(raw) is not None


def test_text_cut_drops_a_split_character() -> None:
    event = agree(line(("uri", "a" + "😀" * 300)))
    assert event is not None and event.uri is not None
    assert len(event.uri.encode()) == 1021 and event.uri.endswith("😀")


# -- declined shapes: None, and the pure path still judges them ------------------------------------


DECLINED = {
    "unknown key": line(("future", 1)),
    "duplicate key": line(("fd", 1), ("fd", 2)),
    "duplicate null": line(("fd", None), ("fd", 2)),
    "escaped key": b'{"v":1,"src":"a","seq":1,"t":2,"\\u0072":3}',
    "float": line(("t", 1.5)),
    "exponent": b'{"v":1,"src":"a","seq":1,"t":1e3,"r":3}',
    "huge int": line(("t", I64_MAX + 1)),
    "huge negative": line(("t", I64_MIN - 1)),
    "20 digits": line(("t", 10**19)),
    "leading zero": b'{"v":1,"src":"a","seq":01,"t":2,"r":3}',
    "plus sign": b'{"v":1,"src":"a","seq":+1,"t":2,"r":3}',
    "bool as int": line(("fd", True)),
    "int as bool": line(("ssl", 1)),
    "int as text": line(("uri", 5)),
    "v 2": line(("v", 2)),
    "v true": line(("v", True)),
    "v null": line(("v", None)),
    "required null": line(("src", None)),
    "required missing": line(("seq", 1), base=False),
    "negative seq": line(("seq", -1)),
    "bad src": line(("src", "a b")),
    "long src": line(("src", "a" * 65)),
    "empty src": line(("src", "")),
    "bad hex": line(("ctx", "0x")),
    "long hex": line(("ctx", "1" * 17)),
    "nested": line(("uri", ["x"])),
    "object": line(("uri", {"x": 1})),
    "lone surrogate": b'{"v":1,"src":"a","seq":1,"t":2,"r":3,"uri":"\\ud800"}',
    "surrogate pair": b'{"v":1,"src":"a","seq":1,"t":2,"r":3,"uri":"\\ud83d\\ude00"}',
    "bad escape": b'{"v":1,"src":"a","seq":1,"t":2,"r":3,"uri":"\\x41"}',
    "short unicode escape": b'{"v":1,"src":"a","seq":1,"t":2,"r":3,"uri":"\\u12"}',
    "control char": b'{"v":1,"src":"a","seq":1,"t":2,"r":3,"uri":"a\tb"}',
    "invalid utf-8": b'{"v":1,"src":"a","seq":1,"t":2,"r":3,"uri":"\xff"}',
    "utf-8 surrogate": b'{"v":1,"src":"a","seq":1,"t":2,"r":3,"uri":"\xed\xa0\x80"}',
    "overlong utf-8": b'{"v":1,"src":"a","seq":1,"t":2,"r":3,"uri":"\xc0\xaf"}',
    "trailing comma": b'{"v":1,"src":"a","seq":1,"t":2,"r":3,}',
    "extra data": line() + b" {}",
    "NaN": b'{"v":1,"src":"a","seq":1,"t":2,"r":3,"fd":NaN}',
    "too long": line(("uri", "a" * MAX_LINE_BYTES)),
    "not an object": b"[1]",
    "empty object": b"{}",
}


@pytest.mark.parametrize("data", DECLINED.values(), ids=DECLINED.keys())
def test_uncertain_shapes_are_declined(data: bytes) -> None:
    assert fast(data) is None
    assert parse_line(data) == parse_line_pure(data)


def test_declined_valid_lines_still_become_events() -> None:
    for data in (DECLINED["unknown key"], DECLINED["duplicate key"], DECLINED["surrogate pair"]):
        assert isinstance(parse_line(data), Event)
    assert isinstance(parse_line(DECLINED["lone surrogate"]), Event)
    assert isinstance(parse_line(DECLINED["bad hex"]), Rejection)


def test_fast_path_refuses_what_is_not_bytes() -> None:
    assert fast(bytearray(line())) is None  # type: ignore[arg-type]
    assert fast("{}") is None  # type: ignore[arg-type]


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
            assert agree(data[:end]) is None


def test_byte_flips_of_real_lines_agree() -> None:
    accepted = 0
    for data in REAL[::40]:
        for at in range(len(data)):
            for byte in b'"\\}, 0n-\x80\xff\x00':
                mutated = data[:at] + bytes([byte]) + data[at + 1 :]
                accepted += agree(mutated) is not None
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
            objects(),
        ),
        max_size=12,
    ),
    st.booleans(),
)
@pytest.mark.usefixtures("restore_switch")
def test_generated_bodies_split_and_judge_as_the_pure_path(
    parts: list[bytes], trailing: bool
) -> None:
    wire.use_fast_path(True)
    body = b"\n".join(parts) + (b"\n" if trailing else b"")
    assert parse_datagram(body) == pure_datagram(body)
