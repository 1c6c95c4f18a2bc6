"""The C hooks' test support, shared by tests/unit/test_fasthooks.py and
tests/integration/test_fasthooks_server.py: the handler classes compared, a fake clock for both
paths and the fixtures around them (registered for every test by tests/conftest.py).

It imports neither hypothesis nor the extension, so the aiohttp 3.10 compat venv (which has no
hypothesis) can load it; without the extension every function here fails, never skips.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiohttp import web_protocol

from lwsobs.clock import ANCHOR_NS
from lwsobs.sources import aiohttp_server
from lwsobs.sources.aiohttp_server import InstrumentedRequestHandler


def fast_handler() -> type[InstrumentedRequestHandler]:
    fast = aiohttp_server.FAST_HANDLER
    assert fast is not None, "lwsobs.sources._fasthooks is not built: run pip install -e ."
    return fast


def hooks() -> Any:
    fast_handler()
    from lwsobs.sources import _fasthooks

    return _fasthooks


@functools.cache
def handler_classes() -> dict[str, type[Any]]:
    """The handlers every comparison runs, built on first use: without the extension this
    module still imports (tests/conftest.py registers it) and each test using it fails."""
    fast = fast_handler()

    class FastSubclass(fast):  # type: ignore[valid-type,misc]
        """Not exactly the configured type: the C hooks read its slots by getattr, not offset."""

        __slots__ = ()

    return {"pure": InstrumentedRequestHandler, "fast": fast, "fast-subclass": FastSubclass}


def configure(clock: Callable[[], int] | None) -> None:
    """(Re)configure the C hooks as aiohttp_server does, with `clock` for monotonic_ns."""
    hooks().configure(
        fast_handler(),
        ANCHOR_NS,
        web_protocol.ERROR,
        aiohttp_server._base_data_received,
        aiohttp_server._base_log_access,
        clock,
    )


class Clock:
    """monotonic_ns for both paths: 1000, 2000, ..., so every stamp says which read took it."""

    def __init__(self) -> None:
        self.reads = 0

    def __call__(self) -> int:
        self.reads += 1
        return self.reads * 1000


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    """The same fake clock for both paths (the pure one reads the module's monotonic_ns)."""
    fake = Clock()
    monkeypatch.setattr(aiohttp_server, "monotonic_ns", fake)
    configure(fake)
    yield fake
    configure(None)


@pytest.fixture
def restore_handler_switch() -> Iterator[None]:
    was = aiohttp_server._handler_class
    yield
    aiohttp_server._handler_class = was
