"""Types of the C fast path (_fastspan.c); spans.py, otlp_facts.py and recent_connections.py
build and call it through span_fastpath.fast()."""

from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import Any

class Pusher:
    max_queue: int
    batch_size: int
    def __init__(
        self,
        queue: deque[Any],
        max_queue: int,
        batch_size: int,
        wake: Callable[[], object],
        overflow: Callable[[Any], object],
    ) -> None: ...
    def __call__(self, fact: Any, /) -> None: ...

class Encoder:
    def __init__(
        self,
        salt: int,
        resource: bytes,
        scope: bytes,
        index_key: bytes,
        queue_key: bytes,
        path_key: bytes,
        wsi_id_key: bytes,
        shapes: dict[Any, tuple[bytes, bytes, bytes]],
        shape: Callable[[Any], tuple[bytes, bytes, bytes]],
        connection: Callable[[Any], tuple[bytes, bytes, bytes]],
        path: Callable[[str], bytes],
        span: Callable[[Any, dict[Any, tuple[bytes, bytes, bytes]]], bytes],
        connection_type: type,
        connection_shapes: dict[Any, tuple[bytes, ...]],
        connection_shape: Callable[[Any], tuple[bytes, ...]],
        built_keys: frozenset[str],
    ) -> None: ...
    def encode(
        self, facts: Sequence[Any], join: bool, conns: dict[Any, tuple[bytes, bytes, bytes]], /
    ) -> bytes: ...

def sample(
    queue: deque[Any],
    take: int,
    join: bool,
    decide: Callable[[Any], bool],
    connection_type: type,
    /,
) -> tuple[list[Any], int]: ...
def record(
    pending: OrderedDict[Any, Any],
    facts: Sequence[Any],
    open_entry: Callable[[Any], Any],
    finish: Callable[[Any], object],
    connection_type: type,
    /,
) -> None: ...
def mix64(x: int, /) -> int: ...
