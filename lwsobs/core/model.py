"""The records the core keeps: contexts, wsis and transactions.

They use __slots__ because a busy producer keeps hundreds of thousands of them live; sinks read
them, only the Tracker writes them (a sink keeps what it decides about a record, such as a
sampling decision, in its own tables).
"""

from __future__ import annotations

from typing import Any

from lwsobs.core.roles import Role

Peer = tuple[Any, ...] | str | None
"""A socket address as the producer knows it: a getpeername() tuple, 'ip:port' text, or None."""


class Context:
    """A group of wsis that live and die together: an aiohttp server, or one lws_context."""

    __slots__ = (
        "active_transactions",
        "closing",
        "destroyed",
        "epoch_ns",
        "live",
        "name",
        "origin",
        "source",
        "uncertain",
    )

    def __init__(
        self, source: str, name: str, epoch_ns: int = 0, origin: str | None = None
    ) -> None:
        # `source` is the label value; `origin` the source name it was asked for, which differs
        # only when the Tracker folded a source beyond its label limit into "other".
        self.source = source
        self.origin = source if origin is None else origin
        self.name = name
        # Wsis store their times relative to this: smaller ints, fewer bytes per live wsi.
        self.epoch_ns = epoch_ns
        # The live table, partitioned by role: a role's live count is the length of its set,
        # so the count can never drift from the table itself.
        self.live: dict[Role, set[Wsi]] = {}
        # Transactions bound and not yet dropped, by the role of their wsi.
        self.active_transactions: dict[Role, int] = {}
        self.closing = False
        self.destroyed = False
        # Set by a source that lost events of this context: every leak verdict on its wsis from
        # then on is marked uncertain (`lws.leak.uncertain`), whichever rule made it.
        self.uncertain = False

    def __repr__(self) -> str:
        return f"Context({self.source!r}, {self.name!r})"


class WsiExtra:
    """What only some wsis carry: a parent (h2 streams), attributes, events, a suspect time.

    Kept apart so a plain connection pays one pointer for all of it.
    """

    __slots__ = ("attrs", "events", "parent", "suspected_ns")

    def __init__(self) -> None:
        self.parent: Wsi | None = None
        self.attrs: dict[str, Any] | None = None
        self.events: list[tuple[str, int, dict[str, Any] | None]] | None = None
        self.suspected_ns: int | None = None


class Wsi:
    """One connection-like object, from creation to WSI_DESTROY (or to a leak verdict).

    A busy producer keeps hundreds of thousands live, so the record is lean: times are kept
    relative to the context's epoch (`_created`, `_last`; read them as `created_ns`,
    `last_ns`) and rarely used fields live in `WsiExtra`.
    """

    __slots__ = (
        "_created",
        "_extra",
        "_last",
        "context",
        "end_ns",
        "end_reason",
        "leak",
        "local",
        "peer",
        "role",
        "serial",
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
        self._created = self._last = now - context.epoch_ns
        self.peer = peer
        self.local = local
        self._extra: WsiExtra | None = None
        if parent is not None or attrs:
            extra = self._extra = WsiExtra()
            extra.parent = parent
            extra.attrs = attrs
        self.transactions = 0
        self.txn: Transaction | None = None
        self.end_ns: int | None = None
        self.end_reason: str | None = None
        self.leak: str | None = None

    @property
    def extra(self) -> WsiExtra:
        """The rarely used fields, created on first write."""
        if self._extra is None:
            self._extra = WsiExtra()
        return self._extra

    @property
    def created_ns(self) -> int:
        return self.context.epoch_ns + self._created

    @property
    def last_ns(self) -> int:
        """The last activity: creation, a transaction boundary, an upgrade, a touch."""
        return self.context.epoch_ns + self._last

    @last_ns.setter
    def last_ns(self, now: int) -> None:
        self._last = now - self.context.epoch_ns

    @property
    def parent(self) -> Wsi | None:
        return None if self._extra is None else self._extra.parent

    @property
    def attrs(self) -> dict[str, Any] | None:
        return None if self._extra is None else self._extra.attrs

    @property
    def events(self) -> list[tuple[str, int, dict[str, Any] | None]] | None:
        return None if self._extra is None else self._extra.events

    @property
    def span_end_ns(self) -> int | None:
        """When the connection span ended: the flag time for a suspect, else the end."""
        extra = self._extra
        if extra is not None and extra.suspected_ns is not None:
            return extra.suspected_ns
        return self.end_ns

    @property
    def span_ended(self) -> bool:
        """True once the connection span is over (destroyed, shut down, or flagged)."""
        return self.end_ns is not None or self.leak is not None

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

    @property
    def queue_ns(self) -> int:
        """Time the request waited behind earlier pipelined requests before handling began."""
        return max(0, self.start_ns - self.arrived_ns)

    @property
    def duration_ns(self) -> int:
        """Arrival to end: what the client experienced on this connection."""
        end = self.end_ns if self.end_ns is not None else self.start_ns
        return max(0, end - self.arrived_ns)
