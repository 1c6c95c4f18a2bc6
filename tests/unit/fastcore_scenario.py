"""A random but seeded run of the Tracker and MetricsSink, printed as one JSON digest.

tests/unit/test_fastcore.py runs it in two processes, one on the C core and one with
LWSOBS_PURE_PYTHON=1, and requires identical digests: every transaction field, every wsi counter,
every active-transaction count, every metric, exemplar and error, call by call.
Usage: python -m tests.unit.fastcore_scenario SEED [OPERATIONS]
"""

from __future__ import annotations

import json
import random
import sys
from typing import Any

from lwsobs.core.model import FASTCORE, PyTransaction, Transaction, Wsi
from lwsobs.core.policy import NS
from lwsobs.core.roles import LeakRule, Role
from lwsobs.core.sink import BaseSink
from lwsobs.core.tracker import Tracker
from lwsobs.sinks.metrics import MetricsSink, TransactionSeries

T0 = 1_732_630_000 * NS
STATUSES = (None, 99, 100, 101, 200, 204, 301, 404, 499, 500, 503, 599, 600, 1000)
METHODS = (None, "GET", "POST", "DELETE")
PATHS = (None, "/", "/items/1?secret=x", "/\u00e9t\u00e9")
ERRORS = (None, "invalid_request", "aborted")


def txn_digest(txn: Transaction | None) -> Any:
    if txn is None:
        return None
    return {
        "wsi": txn.wsi.serial,
        "role": txn.role.value,
        **{
            name: getattr(txn, name)
            for name in (
                "serial",
                "index",
                "arrived_ns",
                "start_ns",
                "method",
                "path",
                "traceparent",
                "end_ns",
                "status",
                "route",
                "error",
                "sampled",
            )
        },
        "queue_ns": txn.queue_ns,
        "duration_ns": txn.duration_ns,
    }


def wsi_digest(wsi: Wsi) -> Any:
    txn = wsi.txn
    return [
        wsi.serial,
        wsi.role.value,
        wsi.transactions,
        wsi.last_ns,
        wsi.end_ns,
        wsi.leak,
        None if txn is None else txn.serial,
    ]


def metrics_digest(metrics: MetricsSink) -> Any:
    out: list[Any] = []
    table: dict[Any, Any] = metrics.series  # change_series may leave None entries
    for (source, role), series in sorted(table.items()):
        if series is None:
            out.append([source, role.value, None])
            continue
        hists = []
        for hist in (series.duration, series.queue_wait):
            exemplars = [
                None if e is None else [getattr(e[0], "serial", None), e[1]] for e in hist.exemplars
            ]
            hists.append([hist.counts, repr(hist.sum), exemplars])
        out.append([source, role.value, series.by_class, hists])
    return out


class _CallLog(dict[Any, Any]):
    """A table that writes down how it is used: both paths must use it the same way."""

    def __init__(self, calls: list[Any], *args: Any) -> None:
        super().__init__(*args)
        self.calls = calls

    def get(self, key: Any, default: Any = None) -> Any:
        self.calls.append(["get", str(key)])
        return super().get(key, default)

    def __getitem__(self, key: Any) -> Any:
        self.calls.append(["getitem", str(key)])
        return super().__getitem__(key)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.calls.append(["setitem", str(key), type(value).__name__])
        super().__setitem__(key, value)


def change_series(rng: random.Random, metrics: MetricsSink, calls: list[Any]) -> Any:
    """Whatever may happen to the (source, role) -> series table between two transactions."""
    table = metrics.series
    keys = sorted(table)
    key = rng.choice(keys) if keys else None
    change = rng.choice(("clear", "new", "copy", "del", "fresh", "none", "same", "log", "dict"))
    if change == "clear":
        table.clear()
    elif change == "new":
        metrics.series = {}
    elif change == "copy":  # the same entries in another table
        metrics.series = dict(table)
    elif change == "log":  # a table of another type: every lookup goes through its get
        metrics.series = _CallLog(calls, table)
    elif change == "dict":
        metrics.series = dict(table)
    elif key is None:
        return [change, None]
    elif change == "del":
        del table[key]
    elif change == "fresh":
        table[key] = TransactionSeries()
    elif change == "none":  # a None entry counts as missing
        table[key] = None  # type: ignore[assignment]
    else:  # the entry it already holds
        table[key] = table[key]
    return [change, None if key is None else [key[0], key[1].value]]


def run(seed: int, operations: int) -> dict[str, Any]:
    rng = random.Random(seed)
    metrics = MetricsSink()
    ended: list[Any] = []
    tracker = Tracker([metrics], epoch_ns=T0)
    tracker.add_sink(_Recorder(ended))
    contexts = [tracker.context(f"src{i}", "ctx") for i in range(3)]
    calls: list[Any] = []
    # one context counts its active transactions in a table of another type
    contexts[2].active_transactions = _CallLog(calls)
    wsis: list[Wsi] = []
    log: list[Any] = []
    now = T0
    for _ in range(operations):
        now += rng.choice((0, 1, 999, 1_000_000, 37 * NS, -5))
        op = rng.random()
        wsi = rng.choice(wsis) if wsis else None
        try:
            if rng.random() < 0.02:
                log.append(change_series(rng, metrics, calls))
            if wsi is not None and rng.random() < 0.01:  # a record of another type
                record = PyTransaction(wsi, 0, 0, now - rng.choice((0, 7)), now, None, "/", None)
                record.end_ns = now + rng.choice((0, 5, -3))
                record.status = rng.choice(STATUSES)
                metrics.transaction_ended(record)
            if wsi is None or op < 0.08:
                role = rng.choice((Role.H1_SERVER, Role.H1_CLIENT, Role.H2_STREAM))
                wsis.append(tracker.open(rng.choice(contexts), role, now))
                result: Any = wsis[-1].serial
            elif op < 0.45:
                arrived = rng.choice((None, now, now - 5_000_000, now + 3))
                args = (rng.choice(METHODS), rng.choice(PATHS), rng.choice((None, "00-ab")))
                if rng.random() < 0.3:
                    txn = tracker.bind(wsi, now, arrived=arrived, method=args[0], path=args[1])
                else:
                    txn = tracker.bind(wsi, now, arrived, *args)
                result = txn_digest(txn)
            elif op < 0.46:  # a producer bug: both paths end the transaction, then raise
                result = txn_digest(tracker.drop(wsi, now, "abc"))  # type: ignore[arg-type]
            elif op < 0.8:
                status = rng.choice(STATUSES)
                error = rng.choice(ERRORS)
                if rng.random() < 0.3:
                    txn = tracker.drop(wsi, now, status=status, error=error)
                else:
                    txn = tracker.drop(wsi, now, status, rng.choice((None, "/items/{id}")), error)
                result = txn_digest(txn)
            elif op < 0.85:
                tracker.upgrade(wsi, Role.WS_SERVER, now)
                result = wsi_digest(wsi)
            elif op < 0.93:
                result = tracker.destroy(wsi, now)
            elif op < 0.96:
                result = tracker.flag(wsi, now, rng.choice(list(LeakRule)))
            else:
                result = [w.serial for w in tracker.tick(now + rng.choice((0, 3600)) * NS)]
        except Exception as exc:  # both paths must fail the same way, then carry on
            result = ["error", type(exc).__name__]
        log.append(result)
    return {
        "fast": FASTCORE is not None and Transaction is FASTCORE.Transaction,
        "log": log,
        "ended": ended,
        "wsis": [wsi_digest(w) for w in wsis],
        "active": [
            sorted((r.value, n) for r, n in c.active_transactions.items()) for c in contexts
        ],
        "metrics": metrics_digest(metrics),
        "calls": calls,
        "serial": tracker._txn_serial,
    }


class _Recorder(BaseSink):
    """A second transaction sink: the order and content of every transaction_ended call."""

    def __init__(self, out: list[Any]) -> None:
        self.out = out

    def transaction_ended(self, txn: Transaction) -> None:
        self.out.append(txn_digest(txn))


if __name__ == "__main__":
    digest = run(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 3000)
    json.dump(digest, sys.stdout, sort_keys=True)
