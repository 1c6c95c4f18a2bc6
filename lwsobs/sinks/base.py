"""A sink that ignores everything, so concrete sinks only write the callbacks they use."""

from __future__ import annotations

from lwsobs.core.model import Transaction, Wsi
from lwsobs.core.roles import Role


class NullSink:
    def wsi_opened(self, wsi: Wsi) -> None:
        pass

    def role_changed(self, wsi: Wsi, old: Role) -> None:
        pass

    def transaction_ended(self, txn: Transaction) -> None:
        pass

    def wsi_flagged(self, wsi: Wsi, rule: str, certain: bool) -> None:
        pass

    def wsi_span_ended(self, wsi: Wsi) -> None:
        pass

    def wsi_destroyed(self, wsi: Wsi) -> None:
        pass
