"""lwsobs: connection-lifecycle observability for libwebsockets and aiohttp."""

from lwsobs.config import Config
from lwsobs.instrument import instrument
from lwsobs.observer import Observer, default_observer

__all__ = ["Config", "Observer", "default_observer", "instrument"]
__version__ = "0.1.0"
