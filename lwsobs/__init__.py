"""lwsobs: connection-lifecycle observability for libwebsockets and aiohttp."""

from lwsobs.config import Config
from lwsobs.instrument import (
    instrument,
    instrument_all_clients,
    instrument_client,
    uninstrument_all_clients,
)
from lwsobs.observer import Observer, default_observer

__all__ = [
    "Config",
    "Observer",
    "default_observer",
    "instrument",
    "instrument_all_clients",
    "instrument_client",
    "uninstrument_all_clients",
]
__version__ = "0.1.0"
