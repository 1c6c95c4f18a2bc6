"""The closed set of wsi roles, leak rules and end reasons used as label values.

Labels never carry unbounded values, so every label value the core can produce is listed here.
"""

from enum import StrEnum


class Role(StrEnum):
    """What a wsi is; a wsi may change role once (h1-server -> ws-server on upgrade)."""

    LISTEN = "listen"
    H1_SERVER = "h1-server"
    H2_SERVER = "h2-server"
    H2_STREAM = "h2-stream"
    WS_SERVER = "ws-server"
    H1_CLIENT = "h1-client"
    H2_CLIENT = "h2-client"
    WS_CLIENT = "ws-client"
    RAW = "raw"
    INTERNAL = "internal"


SERVER_ROLES = frozenset({Role.H1_SERVER, Role.H2_SERVER, Role.H2_STREAM, Role.WS_SERVER})
CLIENT_ROLES = frozenset({Role.H1_CLIENT, Role.H2_CLIENT, Role.WS_CLIENT})


class LeakRule(StrEnum):
    """Why a wsi was flagged as never getting its WSI_DESTROY."""

    CONTEXT_DESTROYED = "context_destroyed"  # its context was torn down while it was live
    IDENTITY_REUSED = "identity_reused"  # a new wsi appeared at its identity while it was live
    FINALIZED = "finalized"  # its connection object was collected without the close callback
    IDLE = "idle"  # no activity for longer than its role's limit (suspect only)
    SOURCE_LOST = "source_lost"  # its producer went silent (suspect only)
    # dropped from the table to stay under the Tracker's max_wsis: the oldest live wsi, never
    # destroyed for longest (suspect only: it may have been fine, it is simply forgotten)
    EVICTED = "evicted"
    # aiohttp client connections (sources/aiohttp_client.py)
    UNRELEASED = "unreleased"  # acquired for a request and not released in time (suspect only)
    SESSION_CLOSED = "session_closed"  # its client session closed while it was still acquired
    SESSION_COLLECTED = "session_collected"  # its session was collected while it was acquired


SUSPECT_RULES = frozenset(
    {LeakRule.IDLE, LeakRule.SOURCE_LOST, LeakRule.EVICTED, LeakRule.UNRELEASED}
)


class EndReason(StrEnum):
    """How a connection span ended."""

    DESTROYED = "destroyed"  # the normal end: WSI_DESTROY / connection_lost
    SHUTDOWN = "shutdown"  # ended by a graceful shutdown of its context or of lwsobs
    LEAKED = "leaked"  # flagged by a leak rule
    ABANDONED = "abandoned"  # its producer process is gone: no verdict, it simply ended with it


class AbandonReason(StrEnum):
    """Why the wsis of a producer were abandoned: how the service knows the process is gone.

    A process that died is not an app that leaked: its wsis end with it and are counted apart.
    """

    CRASHED = "crashed"  # the shim reported a fatal signal (FATAL) as the process died
    EXITED = "exited"  # its pid is gone from this host, or a new run of it replaced a silent one
    EXPIRED = "expired"  # silent for longer than the source expiry: presumed gone


CODE_CLASSES = ("none", "1xx", "2xx", "3xx", "4xx", "5xx")


def code_class_index(status: int | None) -> int:
    """Index into CODE_CLASSES: the hot path counts into a list with it."""
    return status // 100 if status is not None and 100 <= status <= 599 else 0


def code_class(status: int | None) -> str:
    """Map an HTTP status to a bounded label value (1xx..5xx, or 'none')."""
    return CODE_CLASSES[code_class_index(status)]
