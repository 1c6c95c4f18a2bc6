"""Types of the C fast path (_fasthooks.c); aiohttp_server.py configures it and is its user."""

from collections.abc import Callable
from typing import Any

class RequestHook:
    """One connection's request factory wrapper and pipelining state."""

    def __init__(self, factory: Callable[..., Any], tracker: Any, detail: bool) -> None: ...
    def __call__(
        self, message: Any, payload: Any, protocol: Any, writer: Any, task: Any
    ) -> Any: ...
    @property
    def arrivals(self) -> tuple[tuple[int, int, int], ...]: ...
    @property
    def dequeued(self) -> int: ...
    @property
    def detail(self) -> bool: ...
    @property
    def factory(self) -> Callable[..., Any]: ...
    @property
    def tracker(self) -> Any: ...
    @property
    def bind(self) -> Callable[..., Any]:
        """tracker.bind, looked up once, when the connection opened."""

    @property
    def drop(self) -> Callable[..., Any]:
        """tracker.drop, looked up once, when the connection opened."""

def configure(
    handler_type: type,
    anchor_ns: int,
    error_message: object,
    base_data_received: Callable[..., Any],
    base_log_access: Callable[..., Any],
    clock: Callable[[], int] | None,
    /,
) -> dict[str, Any]:
    """Returns {"data_received": ..., "log_access": ...}: method descriptors of handler_type."""

def configure_status(prop: property | None, /) -> None:
    """StreamResponse.status (a getter returning self._status): log_access then reads
    `_status` itself for responses that find this property; None: it always reads `status`."""

def route_of(request: Any, /) -> str | None: ...
def offsets() -> dict[str, int]: ...
