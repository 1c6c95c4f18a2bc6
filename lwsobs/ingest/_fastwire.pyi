"""Types of the C fast path (_fastwire.c); wire.py configures it and is its only caller."""

from typing import Any

def configure(
    event: type,
    spec: tuple[tuple[str, str, bool], ...],
    max_line: int,
    max_text: int,
    max_hex: int,
    version: int,
    /,
) -> None: ...
def parse(line: bytes, /) -> Any: ...
def parse_lines(data: bytes, /) -> tuple[list[Any], int]: ...
