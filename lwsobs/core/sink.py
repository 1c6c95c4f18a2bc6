"""What the Tracker tells its sinks. Sinks on the hot path only append or bump integers."""

from __future__ import annotations

from typing import Protocol

from mypy_extensions import mypyc_attr

from lwsobs.core.model import Transaction, Wsi
from lwsobs.core.roles import Role


class Sink(Protocol):
    def wsi_opened(self, wsi: Wsi) -> None:
        """A wsi was created (or first seen)."""

    def role_changed(self, wsi: Wsi, old: Role) -> None:
        """The wsi moved from role `old` to `wsi.role` (an upgrade)."""

    def transaction_ended(self, txn: Transaction) -> None:
        """A transaction finished; `txn.end_ns`, `txn.status` and `txn.error` are final."""

    def wsi_flagged(self, wsi: Wsi, rule: str, certain: bool) -> None:
        """A leak rule fired. Called once per wsi, before wsi_span_ended."""

    def wsi_span_ended(self, wsi: Wsi) -> None:
        """The wsi's connection span is over: destroyed, shut down or flagged (see end_reason)."""

    def wsi_destroyed(self, wsi: Wsi) -> None:
        """The wsi got its WSI_DESTROY (also after an earlier suspect flag) and left the table."""

    def wsi_left(self, wsi: Wsi) -> None:
        """The wsi left the live table, whichever way (`end_reason` says which); called once
        per wsi, so created, upgrades and these balance the live count per role."""

    def wsi_abandoned(self, wsi: Wsi, reason: str) -> None:
        """The wsi's producer is gone (an AbandonReason): it left the table with no verdict."""

    def transaction_refused(self, txn: Transaction) -> None:
        """A request the producer answered itself with no callback (lws refusing a request)."""


@mypyc_attr(allow_interpreted_subclasses=True)  # sinks of the service and of users
class BaseSink:
    """No-op implementations; the Tracker does not even call the ones a sink leaves alone."""

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

    def wsi_left(self, wsi: Wsi) -> None:
        pass

    def wsi_abandoned(self, wsi: Wsi, reason: str) -> None:
        pass

    def transaction_refused(self, txn: Transaction) -> None:
        pass
