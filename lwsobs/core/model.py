"""The records the core keeps: contexts, wsis and transactions.

They use __slots__ because a busy producer keeps hundreds of thousands of them live; sinks read
them, only the Tracker writes them.
"""

from __future__ import annotations

from typing import Any

from lwsobs.core.roles import Role

Peer = tuple[Any, ...] | str | None
"""A socket address as the producer knows it: a getpeername() tuple, 'ip:port' text, or None."""


class Context:
    """A group of wsis that live and die together: an aiohttp server, or one lws_context."""

    __slots__ = ("active_transactions", "closing", "destroyed", "live", "name", "source")

    def __init__(self, source: str, name: str) -> None:
        self.source = source
        self.name = name
        # The live table, partitioned by role: a role's live count is the length of its set,
        # so the count can never drift from the table itself.
        self.live: dict[Role, set[Wsi]] = {}
        # Transactions bound and not yet dropped, by the role of their wsi.
        self.active_transactions: dict[Role, int] = {}
        self.closing = False
        self.destroyed = False

    def __repr__(self) -> str:
        return f"Context({self.source!r}, {self.name!r})"


class Wsi:
    """One connection-like object, from creation to WSI_DESTROY (or to a leak verdict)."""

    __slots__ = (
        "__weakref__",
        "attrs",
        "context",
        "created_ns",
        "end_ns",
        "end_reason",
        "events",
        "last_ns",
        "leak",
        "local",
        "parent",
        "peer",
        "role",
        "sampled",
        "serial",
        "span_end_ns",
        "transactions",
        "txn",
    )

    def __init__(
        self,
        serial: int,
        context: Context,
        role: Role,
        now: int,
        peer: Peer,
        local: Peer,
        parent: Wsi | None,
        attrs: dict[str, Any] | None,
    ) -> None:
        self.serial = serial
        self.context = context
        self.role = role
        self.created_ns = now
        self.last_ns = now
        self.peer = peer
        self.local = local
        self.parent = parent
        self.attrs = attrs
        self.transactions = 0
        self.txn: Transaction | None = None
        self.events: list[tuple[str, int, dict[str, Any] | None]] | None = None
        self.end_ns: int | None = None
        self.end_reason: str | None = None
        self.leak: str | None = None
        self.span_end_ns: int | None = None
        # Set by the span sink once its sampler decided for the connection's trace.
        self.sampled: bool | None = None

    @property
    def span_ended(self) -> bool:
        """True once the connection span is over (destroyed, shut down, or flagged)."""
        return self.span_end_ns is not None

    @property
    def live(self) -> bool:
        """True until the wsi is destroyed, shut down or flagged as a certain leak."""
        return self.end_ns is None

    @property
    def id(self) -> str:
        """A readable identity, unique within one lwsobs process."""
        return f"{self.context.source}/{self.serial}"

    def __repr__(self) -> str:
        return f"Wsi({self.id}, {self.role})"


class Transaction:
    """One HTTP request/response on a wsi (HTTP_BIND_PROTOCOL .. HTTP_DROP_PROTOCOL)."""

    __slots__ = (
        "arrived_ns",
        "end_ns",
        "error",
        "index",
        "method",
        "path",
        "role",
        "route",
        "sampled",
        "serial",
        "start_ns",
        "status",
        "traceparent",
        "wsi",
    )

    def __init__(
        self,
        wsi: Wsi,
        serial: int,
        index: int,
        arrived_ns: int,
        start_ns: int,
        method: str | None,
        path: str | None,
        traceparent: str | None,
    ) -> None:
        self.wsi = wsi
        self.role = wsi.role  # the role the wsi had when the transaction ran (before an upgrade)
        self.serial = serial
        self.index = index
        self.arrived_ns = arrived_ns
        self.start_ns = start_ns
        self.method = method
        self.path = path
        self.traceparent = traceparent
        self.end_ns: int | None = None
        self.status: int | None = None
        self.route: str | None = None
        self.error: str | None = None
        # Set by the span sink once its sampler decided; exemplars only point at kept traces.
        self.sampled: bool | None = None

    @property
    def queue_ns(self) -> int:
        """Time the request waited behind earlier pipelined requests before handling began."""
        return max(0, self.start_ns - self.arrived_ns)

    @property
    def duration_ns(self) -> int:
        """Arrival to end: what the client experienced on this connection."""
        end = self.end_ns if self.end_ns is not None else self.start_ns
        return max(0, end - self.arrived_ns)
