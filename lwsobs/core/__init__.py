"""The pure lifecycle core: no I/O, no clock reads, explicit nanosecond timestamps.

Everything here is driven by plain method calls so every rule is testable without sockets.
"""

from lwsobs.core.model import Context, Transaction, Wsi
from lwsobs.core.policy import LeakPolicy
from lwsobs.core.roles import Role
from lwsobs.core.sink import Sink
from lwsobs.core.tracker import Tracker

__all__ = ["Context", "LeakPolicy", "Role", "Sink", "Tracker", "Transaction", "Wsi"]
