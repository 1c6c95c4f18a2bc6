"""Whether the span path uses its C fast path (_fastspan.c), and the switch tests flip.

The extension is optional: without it, or with LWSOBS_PURE_PYTHON=1, the span sink, the OTLP
fact encoder and the recent-connections ring run their pure-Python reference code, with the same
results. Each object chooses when it is built, so a test can build one of each and compare them.
"""

from __future__ import annotations

from types import ModuleType
from typing import Final

from lwsobs.core.fast import PURE_PYTHON


def _load() -> ModuleType | None:
    try:
        from lwsobs.sinks import _fastspan
    except ImportError:
        return None
    return _fastspan


built: Final = _load()  # None when the extension is not built
_enabled = not PURE_PYTHON


def use_fast_path(enabled: bool) -> bool:
    """Objects built from now on use the C fast path, or not (LWSOBS_PURE_PYTHON=1 starts off);
    returns whether they will, False when it is not built."""
    global _enabled
    _enabled = enabled
    return fast() is not None


def fast() -> ModuleType | None:
    """The C module when the fast path is on, else None."""
    return built if _enabled else None
