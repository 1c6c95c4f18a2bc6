"""The sinks' common base: no-op callbacks, so each sink writes only the ones it uses."""

from lwsobs.core.sink import BaseSink as NullSink

__all__ = ["NullSink"]
