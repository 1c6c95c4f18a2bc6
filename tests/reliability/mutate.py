"""Mutations of real wire-v1 lines: the bad input a broken or hostile producer could send.

Each operator takes a recorded line and a seeded Random and returns one line (never containing a
newline, never empty), so a corpus is reproducible from its seed and every generated line is
judged exactly once by the pipeline.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

Mutation = Callable[[bytes, random.Random], bytes]

WRONG_VALUES: tuple[Any, ...] = (
    None, True, False, 0, -1, 1.5, -0.0, 1e308, "", "x", "0x", "zz", "1", [], [1], {}, {"a": 1},
    "\u0000", "\ud800", "é" * 700, 2**63, -(2**63) - 1, 10**30,
)  # fmt: skip
INVALID_UTF8 = (
    b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf8\x88\x80\x80\x80", b"\x80",
)  # fmt: skip
HUGE_NUMBERS = (
    b"9223372036854775807", b"9223372036854775808", b"-9223372036854775809",
    b"1" + b"0" * 19, b"1" + b"0" * 40, b"9" * 5000, b"-" + b"9" * 30000, b"1e400", b"-1e-400",
    b"1.0", b"NaN", b"Infinity", b"-Infinity", b"0x10", b"01",
)  # fmt: skip
ONE_MB = 1 << 20


def _obj(line: bytes) -> dict[str, Any]:
    value = json.loads(line)
    assert isinstance(value, dict)
    return value


def _dump(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8", "surrogatepass"
    )


def _safe(data: bytes) -> bytes:
    """No newline inside (it would split the line) and never empty."""
    data = data.replace(b"\n", b" ")
    return data if data.strip(b" \t\r") else b"~"


def truncate(line: bytes, rnd: random.Random) -> bytes:
    return _safe(line[: rnd.randrange(1, len(line))])


def wrong_type(line: bytes, rnd: random.Random) -> bytes:
    obj = _obj(line)
    obj[rnd.choice(sorted(obj))] = rnd.choice(WRONG_VALUES)
    return _safe(_dump(obj))


def drop_field(line: bytes, rnd: random.Random) -> bytes:
    obj = _obj(line)
    del obj[rnd.choice(sorted(obj))]
    return _safe(_dump(obj))


def huge_number(line: bytes, rnd: random.Random) -> bytes:
    obj = _obj(line)
    name = rnd.choice(sorted(obj))
    text = _dump({**obj, name: "@@N@@"})
    return _safe(text.replace(b'"@@N@@"', rnd.choice(HUGE_NUMBERS)))


def invalid_utf8(line: bytes, rnd: random.Random) -> bytes:
    at = rnd.randrange(len(line) + 1)
    return _safe(line[:at] + rnd.choice(INVALID_UTF8) + line[at:])


def escaped_text(line: bytes, rnd: random.Random) -> bytes:
    """Valid JSON escapes of hostile text: lone surrogates, controls, quotes, label syntax."""
    obj = _obj(line)
    name = rnd.choice(("uri", "peer", "vh", "pcol", "why", "method", "host", "lws", "tag", "sub"))
    obj[name] = rnd.choice(
        ('\ud800x"', '\u0000\u001f\\"', '"} 1\n# HELP x', "a\u2028b", "é" * 600, "x" * 3000)
    )
    return _safe(json.dumps(obj, separators=(",", ":")).encode())


def deep_nesting(line: bytes, rnd: random.Random) -> bytes:
    depth = rnd.choice((10, 100, 1000, 5000, 100_000))
    opener, closer = rnd.choice(((b"[", b"]"), (b'{"a":', b"}")))
    nested = opener * depth + b"1" + closer * depth
    where = rnd.random()
    if where < 0.3:
        return nested
    # as an unknown field (ignored once decoded) or as a known field (a wrong type)
    name = b"zz" if where < 0.6 else b"uri"
    return _safe(line[:-1] + b',"' + name + b'":' + nested + b"}")


def megabyte(line: bytes, rnd: random.Random | None = None) -> bytes:
    pad = b"A" * (ONE_MB - len(line))
    return line[:-1] + b',"zz":"' + pad + b'"}'


def garbage(line: bytes, rnd: random.Random) -> bytes:
    return _safe(rnd.randbytes(rnd.choice((1, 7, 100, 2000, 20_000))))


def flip_bytes(line: bytes, rnd: random.Random) -> bytes:
    data = bytearray(line)
    for _ in range(rnd.randint(1, 4)):
        data[rnd.randrange(len(data))] = rnd.randrange(256)
    return _safe(bytes(data))


def splice(line: bytes, rnd: random.Random) -> bytes:
    """Delete or duplicate a random slice: the shapes of a torn or doubled write."""
    a = rnd.randrange(len(line))
    b = min(len(line), a + rnd.randint(1, 40))
    if rnd.random() < 0.5:
        return _safe(line[:a] + line[b:])
    return _safe(line[:b] + line[a:])


def version(line: bytes, rnd: random.Random) -> bytes:
    obj = _obj(line)
    obj["v"] = rnd.choice((0, 2, -1, 999, "1", 1.0, None, True))
    return _safe(_dump(obj))


def bad_src(line: bytes, rnd: random.Random) -> bytes:
    obj = _obj(line)
    obj["src"] = rnd.choice(("", "a b", "x" * 65, "é", "a/b", "a\u0000", "ok@" + "h" * 61))
    return _safe(_dump(obj))


def not_object(line: bytes, rnd: random.Random) -> bytes:
    return rnd.choice((b"[]", b"1", b'"s"', b"null", b"true", b"[" + line + b"]", b"-0"))


def extra_fields(line: bytes, rnd: random.Random) -> bytes:
    """Still valid: unknown fields of any type, duplicate keys, spaces, CR (accepted lines)."""
    obj = _obj(line)
    obj["unknown_" + str(rnd.randrange(9))] = rnd.choice(WRONG_VALUES)
    text = json.dumps(obj, indent=rnd.choice((None, 1))).replace("\n", " ")
    if rnd.random() < 0.5:
        text = text[:-1] + ',"v":1}'
    return _safe((" \t" + text + "\r").encode("utf-8", "surrogatepass"))


def unchanged(line: bytes, rnd: random.Random) -> bytes:
    return line


MUTATIONS: tuple[tuple[Mutation, int], ...] = (
    (unchanged, 20),
    (extra_fields, 6),
    (truncate, 8),
    (wrong_type, 12),
    (drop_field, 6),
    (huge_number, 8),
    (invalid_utf8, 6),
    (escaped_text, 6),
    (deep_nesting, 3),
    (garbage, 4),
    (flip_bytes, 8),
    (splice, 6),
    (version, 3),
    (bad_src, 3),
    (not_object, 2),
)
"""Each operator with its weight. `megabyte` is used apart: a few per corpus, not by weight."""


def corpus(seeds: tuple[bytes, ...], size: int, seed: int) -> list[tuple[str, bytes]]:
    """`size` mutated lines (operator name, line), seeds taken in order so sequences stay."""
    rnd = random.Random(seed)
    operators = [op for op, _ in MUTATIONS]
    weights = [w for _, w in MUTATIONS]
    out: list[tuple[str, bytes]] = []
    for i in range(size):
        op = rnd.choices(operators, weights)[0]
        out.append((op.__name__, op(seeds[i % len(seeds)], rnd)))
    return out
