"""Is an lws producer's process still running, and why does a shim say it observes nothing?

A producer's HELLO names its host and pid. When that host is this one, /proc answers whether
the process is still there, so a killed app's wsis end within a tick of its death instead of
waiting for the silence limit. On another host (or in another pid namespace, where hostnames
differ) nothing can be told, and the decoder falls back to silence and expiry.
"""

from __future__ import annotations

import os
import socket
from typing import Final

# the shim's HELLO `unobserved` text, classified into a closed set of label values
_UNOBSERVED: Final = (
    ("not supported", "version_mismatch"),
    ("lacks", "missing_function"),
)


def unobserved_reason(text: str) -> str:
    """The label value for a shim's reason to pass through (free text on the wire)."""
    for needle, reason in _UNOBSERVED:
        if needle in text:
            return reason
    return "other"


class ProcessWatch:
    """Answers "is pid P on host H alive?" for the host lwsobs runs on, and only for it."""

    def __init__(self, host: str | None = None, proc: str = "/proc") -> None:
        self.host = socket.gethostname() if host is None else host
        self.proc = proc

    def alive(self, host: str | None, pid: int | None) -> bool | None:
        """True or False for a process of this host, None when it cannot be told."""
        if pid is None or pid <= 0 or not host or not self.host:
            return None
        if host not in (self.host, self.host[:63]):  # the shim keeps 63 bytes of it
            return None
        return os.path.exists(os.path.join(self.proc, str(pid)))
