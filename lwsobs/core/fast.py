"""The switch to the C fast path of the core (lwsobs/core/_fastcore.c), decided once at import.

The per-request bookkeeping (Transaction records, Tracker.bind/drop, the metrics update) has a
pure-Python reference (model.Transaction, hotpath.HotPath, metrics.TransactionCounting) and a C
twin that does the same work for a tenth of the instructions. The C one is used when it is built
and LWSOBS_PURE_PYTHON is unset or 0. Unlike the wire parser's, this choice cannot change at run
time: Transaction is one class for every isinstance check in the process.
"""

from __future__ import annotations

import os
from typing import Any

PURE_PYTHON = os.environ.get("LWSOBS_PURE_PYTHON", "") not in ("", "0")
"""LWSOBS_PURE_PYTHON=1: every C fast path starts off (parser, core, hooks, span path)."""


def load_core(wsi_class: type, context_class: type) -> Any | None:
    """The configured `_fastcore` module, or None (pure Python asked for, not built, or out of
    step with the slots of Wsi and Context)."""
    if PURE_PYTHON:
        return None
    try:
        from lwsobs.core import _fastcore
    except ImportError:
        return None
    try:
        _fastcore.configure_core(wsi_class, context_class)
    except TypeError:
        return None
    return _fastcore
