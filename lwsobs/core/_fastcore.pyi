"""Types of the C fast path (_fastcore.c); lwsobs.core.fast loads and configures it."""

from typing import Any

class Transaction:
    def __init__(
        self,
        wsi: Any,
        serial: int,
        index: int,
        arrived_ns: int,
        start_ns: int,
        method: str | None,
        path: str | None,
        traceparent: str | None,
    ) -> None: ...
    def __getattr__(self, name: str) -> Any: ...

class HotPath:
    epoch_ns: int
    _txn_serial: int
    _on_txn: list[Any]
    def bind(
        self,
        wsi: Any,
        now: int,
        arrived: int | None = None,
        method: str | None = None,
        path: str | None = None,
        traceparent: str | None = None,
    ) -> Any: ...
    def drop(
        self,
        wsi: Any,
        now: int,
        status: int | None = None,
        route: str | None = None,
        error: str | None = None,
    ) -> Any: ...
    def _end_transaction(
        self,
        wsi: Any,
        txn: Any,
        now: int,
        status: int | None,
        route: str | None,
        error: str | None,
    ) -> None: ...

class MetricsHotPath:
    series: dict[Any, Any]  # a slot of this base: (source, role) -> TransactionSeries
    def transaction_ended(self, txn: Any) -> None: ...

def configure_core(wsi: type, context: type, /) -> None: ...
def configure_metrics(series: type, histogram: type, /) -> None: ...
