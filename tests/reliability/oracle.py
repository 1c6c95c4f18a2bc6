"""An independent judge of wire-v1 lines, written from docs/wire.md alone.

The fuzz tests compare its verdict with what the pipeline counted, line by line or summed: if
lwsobs.sources.lws.wire rejects a line for another reason than the spec gives, or accepts a line the
spec refuses, the counts differ. Precedence where a line breaks several rules follows the
documented order: length, UTF-8, JSON, object, `v`, the required fields in order, then the
optional ones in the order they appear.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_LINE = 16 * 1024
INT64 = (-(1 << 63), (1 << 63) - 1)
SRC = re.compile(r"[A-Za-z0-9._:@-]{1,64}\Z")
HEX = re.compile(r"(0[xX])?[0-9A-Fa-f]{1,16}\Z")
INTS = {"fd", "afd", "mono", "drop", "status", "pid", "port", "n", "sig", "hb"}
BOOLS = {"ssl", "fake"}
HEXES = {"ctx", "wsi", "nwsi", "parent", "child"}
TEXTS = {
    *("vh", "pcol", "tag", "uri", "method", "peer", "upg", "sub", "why", "err", "lws", "host"),
    *("addr", "shim", "unobserved"),
}


class _Big:
    """A JSON integer too long for Python's int() limit: certainly outside int64."""


def _int_or_big(text: str) -> int | _Big:
    return int(text) if len(text) < 4000 else _Big()


def _no_constants(name: str) -> float:
    raise ValueError(name)


def _is_int64(value: object) -> bool:
    return type(value) is int and INT64[0] <= value <= INT64[1]


def _field_ok(name: str, value: Any) -> bool:
    if name in INTS:
        return _is_int64(value)
    if name in BOOLS:
        return type(value) is bool
    if name in HEXES:
        return type(value) is str and HEX.match(value) is not None
    if name in TEXTS:
        return type(value) is str
    return True  # unknown fields are ignored


MAX_NESTING = 1000  # docs/wire.md: arrays and objects nested more than 1,000 deep are not_json


def _nesting(text: str) -> int:
    """How deep arrays and objects nest in JSON `text`, brackets inside strings not counted."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def judge(line: bytes) -> str | None:
    """The rejection reason wire-v1 gives `line` (no newline), or None if it is accepted."""
    if len(line) > MAX_LINE:
        return "too_long"
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return "not_utf8"
    try:
        obj = json.loads(text, parse_int=_int_or_big, parse_constant=_no_constants)
    except (ValueError, RecursionError):
        return "not_json"
    if text.count("[") + text.count("{") > MAX_NESTING and _nesting(text) > MAX_NESTING:
        return "not_json"
    if not isinstance(obj, dict):
        return "not_object"
    v = obj.get("v")
    if v is None:
        return "missing_field"
    if not _is_int64(v):
        return "bad_field"
    if v != 1:
        return "bad_version"
    for name in ("src", "seq", "t", "r"):
        value = obj.get(name)
        if value is None:
            return "missing_field"
        if name == "src":
            ok = type(value) is str and SRC.match(value) is not None
        else:
            ok = _is_int64(value) and (name != "seq" or value >= 0)
        if not ok:
            return "bad_field"
    for name, value in obj.items():
        if value is not None and not _field_ok(name, value):
            return "bad_field"
    return None
