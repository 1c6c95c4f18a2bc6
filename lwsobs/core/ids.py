"""Trace and span ids derived from serial numbers, and W3C traceparent parsing.

Deriving ids instead of storing random ones keeps each live wsi smaller and the hot path free of
id generation: the span sink and the exemplars compute the same ids whenever they need them.
The mixer is the splitmix64 finalizer, a bijection on 64-bit integers, so distinct serials never
collide and the low 64 bits look random to ratio samplers.
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

from lwsobs.core.model import Transaction, Wsi

M64: Final = (1 << 64) - 1


def mix64(x: int) -> int:
    x &= M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


class RemoteParent(NamedTuple):
    trace_id: int
    span_id: int
    sampled: bool


def parse_traceparent(value: str | None) -> RemoteParent | None:
    """Parse a W3C traceparent header; None when absent or invalid (then it is ignored).

    Only lowercase hex is valid; version ff is forbidden; version 00 has exactly four fields,
    later versions may append more after a dash.
    """
    if value is None:
        return None
    match = _TRACEPARENT.match(value.strip())
    if match is None:
        return None
    version, trace_hex, span_hex, flags_hex, rest = match.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    trace_id = int(trace_hex, 16)
    span_id = int(span_hex, 16)
    if trace_id == 0 or span_id == 0:
        return None
    return RemoteParent(trace_id, span_id, bool(int(flags_hex, 16) & 1))


_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?\Z")


class TxnTrace(NamedTuple):
    trace_id: int
    span_id: int
    parent_span_id: int
    remote: RemoteParent | None  # set when the transaction joined the caller's trace


class Ids:
    """The id scheme of one lwsobs process; `salt` comes from the adapter (random per process)."""

    def __init__(self, salt: int, *, join_traceparent: bool = True) -> None:
        self.salt = salt & M64
        self.trace_hi = mix64(salt ^ 0x5DEECE66D) or 1
        self.join_traceparent = join_traceparent

    def wsi_span_id(self, wsi: Wsi) -> int:
        return mix64(self.salt + 2 * wsi.serial) or 1

    def wsi_trace_id(self, wsi: Wsi) -> int:
        """A connection is its own trace, unless it is an h2 stream inside its network wsi."""
        root = wsi
        while root.parent is not None:
            root = root.parent
        return (self.trace_hi << 64) | mix64(self.salt + 2 * root.serial + 1)

    def txn_span_id(self, txn: Transaction) -> int:
        return mix64(self.salt ^ (txn.serial << 1) ^ 0xA5A5A5A5A5A5A5A5) or 1

    def txn_trace(self, txn: Transaction) -> TxnTrace:
        """Where a transaction span belongs: the caller's trace, or nested in its connection."""
        remote = parse_traceparent(txn.traceparent) if self.join_traceparent else None
        span_id = self.txn_span_id(txn)
        if remote is not None:
            return TxnTrace(remote.trace_id, span_id, remote.span_id, remote)
        wsi = txn.wsi
        return TxnTrace(self.wsi_trace_id(wsi), span_id, self.wsi_span_id(wsi), None)
