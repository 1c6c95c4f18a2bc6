"""Which modules the build compiles with mypyc, and which build this interpreter imports.

Every module here is plain, type-checked Python. `pip install` compiles the ones listed in
COMPILED to C extensions with mypyc (setup.py reads this list without importing the package),
unless the build is asked for the interpreted kind (LWSOBS_BUILD=interpreted); either way the
same source runs, and nothing at run time chooses between two implementations. Python imports
a module's extension in preference to its .py file, so a build decides by leaving the
extensions in place or not.

This file itself is never compiled: setup.py reads COMPILED from its text, and `build_kind`
must answer the same way under both builds.
"""

from __future__ import annotations

import importlib
from importlib.machinery import EXTENSION_SUFFIXES
from typing import Final, Literal

COMPILED: Final = (
    "lwsobs.clock",  # read on every request
    # the core: the table, the lifecycle and leak rules, derived ids
    "lwsobs.core.model",
    "lwsobs.core.roles",
    "lwsobs.core.ids",
    "lwsobs.core.policy",
    "lwsobs.core.sink",
    "lwsobs.core.tracker",
    # the aiohttp server source's per-request hooks
    "lwsobs.sources.aiohttp.server",
    # the lws source: ingest pipeline, sequence tracking, decoder
    "lwsobs.sources.lws.sequence",
    "lwsobs.sources.lws.pipeline",
    "lwsobs.sources.lws.tags",
    "lwsobs.sources.lws.decoder",
    # the metrics sink (not its renderer, exposition.py: string building runs slower compiled,
    # 2.9 against 2.1 ms per /metrics render on CPython 3.11)
    "lwsobs.sinks.metrics.histogram",
    "lwsobs.sinks.metrics.sink",
    # the span sink, sampling and the OTLP encoder
    "lwsobs.sinks.spans.sink",
    "lwsobs.sinks.spans.builder",
    "lwsobs.sinks.spans.otlp_encode",
    "lwsobs.sinks.spans.connection_span",
    "lwsobs.sinks.spans.otlp_facts",
    "lwsobs.sinks.spans.recent_connections",
)
"""Modules on a per-request, per-line or per-span path, compiled by the default build."""

BuildKind = Literal["compiled", "interpreted", "mixed"]


def compiled_modules() -> dict[str, bool]:
    """Each module of COMPILED, and whether this interpreter imported it as an extension."""
    out: dict[str, bool] = {}
    for name in COMPILED:
        origin = importlib.import_module(name).__file__ or ""
        out[name] = origin.endswith(tuple(EXTENSION_SUFFIXES))
    return out


def build_kind() -> BuildKind:
    """'compiled' or 'interpreted'; 'mixed' means a broken install (some extensions missing)."""
    kinds = set(compiled_modules().values())
    if kinds == {True}:
        return "compiled"
    return "interpreted" if kinds == {False} else "mixed"
