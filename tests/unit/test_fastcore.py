"""The C core (lwsobs/core/_fastcore.c) against its pure-Python reference.

The core's choice is made once per process (lwsobs.core.fast), so the main comparison runs a
seeded scenario (tests/unit/fastcore_scenario.py) in two processes, one per path, and requires
identical digests. The rest drives the C types directly: argument handling, bad input, errors
that propagate instead of crashing, reference counts that stay flat. These tests fail (never
skip) when the extension is not built: CI tests the C path.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tracemalloc
from bisect import bisect_left
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from lwsobs.core import fast, hotpath, model
from lwsobs.core.model import Context, Wsi
from lwsobs.core.roles import Role
from lwsobs.sinks import metrics as metrics_module
from lwsobs.sinks.metrics import MetricsSink

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_732_630_000_000_000_000


def fastcore() -> ModuleType:
    try:
        from lwsobs.core import _fastcore
    except ImportError as exc:  # pragma: no cover - the failure this test exists for
        pytest.fail(f"lwsobs.core._fastcore is not built ({exc}): run pip install -e .")
    _fastcore.configure_core(Wsi, Context)
    return _fastcore


def scenario(seed: int, pure: bool, operations: int = 3000) -> dict[str, Any]:
    env = {**os.environ, "LWSOBS_PURE_PYTHON": "1" if pure else "0"}
    out = subprocess.run(
        [sys.executable, "-m", "tests.unit.fastcore_scenario", str(seed), str(operations)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    digest: dict[str, Any] = json.loads(out.stdout)
    return digest


class CTracker:
    """A bare C HotPath with the fields Tracker.__init__ would set, whatever this process uses."""

    def __new__(cls, sinks: list[Any]) -> Any:
        base = fastcore().HotPath
        tracker = type("BareTracker", (base,), {})()
        tracker.epoch_ns = T0
        tracker._txn_serial = 0
        tracker._on_txn = [s.transaction_ended for s in sinks]
        return tracker


class CMetrics:
    """A MetricsSink whose transaction_ended is the C one, whatever this process uses."""

    def __new__(cls) -> Any:
        module = fastcore()
        module.configure_metrics(metrics_module.TransactionSeries, metrics_module.Histogram)
        if module.MetricsHotPath in MetricsSink.__mro__:
            return MetricsSink()
        return type("CMetricsSink", (module.MetricsHotPath, MetricsSink), {})()


def new_wsi(role: Role = Role.H1_SERVER) -> Wsi:
    return Wsi(1, Context("app", "ctx", T0), role, T0, None, None, None, None)


# -- the extension is there, and the process uses it unless told otherwise --------------------


def test_c_core_is_built_and_in_use() -> None:
    module = fastcore()
    if fast.PURE_PYTHON:  # the suite was started with LWSOBS_PURE_PYTHON=1 on purpose
        assert model.FASTCORE is None
        return
    assert model.FASTCORE is module
    assert model.Transaction is module.Transaction
    assert hotpath.TrackerBase is module.HotPath
    assert MetricsSink.__mro__[1] is module.MetricsHotPath


def test_environment_switch_runs_the_pure_reference() -> None:
    code = (
        "from lwsobs.core import model, hotpath; from lwsobs.sinks.metrics import MetricsSink;"
        "print(model.FASTCORE, model.Transaction is model.PyTransaction,"
        " hotpath.TrackerBase is hotpath.HotPath, MetricsSink.__mro__[1].__name__)"
    )
    env = {**os.environ, "LWSOBS_PURE_PYTHON": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["None", "True", "True", "TransactionCounting"]


# -- the same results, call by call -----------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_seeded_scenario_gives_identical_digests(seed: int) -> None:
    fast_digest = scenario(seed, pure=False)
    pure_digest = scenario(seed, pure=True)
    assert fast_digest.pop("fast") is True
    assert pure_digest.pop("fast") is False
    # the scenario exercises what it claims: transactions ended, errors raised, every metric
    assert len(fast_digest["ended"]) > 300
    assert any(r[:1] == ["error"] for r in fast_digest["log"] if isinstance(r, list))
    assert fast_digest["metrics"] and fast_digest["serial"] > 300
    for key in pure_digest:
        assert fast_digest[key] == pure_digest[key], key


# -- the C types on their own -----------------------------------------------------------------


def test_transaction_constructor_fields_and_properties() -> None:
    txn_type = fastcore().Transaction
    wsi = new_wsi(Role.H1_CLIENT)
    txn = txn_type(wsi, 7, 2, T0 + 5, T0 + 9, "GET", "/x", None)
    assert (txn.wsi, txn.role, txn.serial, txn.index) == (wsi, Role.H1_CLIENT, 7, 2)
    assert (txn.arrived_ns, txn.start_ns, txn.method, txn.path) == (T0 + 5, T0 + 9, "GET", "/x")
    assert [txn.end_ns, txn.status, txn.route, txn.error, txn.sampled] == [None] * 5
    assert (txn.queue_ns, txn.duration_ns) == (4, 4)
    txn.end_ns = T0 + 20
    txn.sampled = True
    assert (txn.duration_ns, txn.sampled) == (15, True)
    txn.start_ns = T0  # started before it arrived: never a negative wait
    assert txn.queue_ns == 0
    with pytest.raises(AttributeError):
        txn.colour = "red"  # no __dict__, like the __slots__ class
    with pytest.raises(TypeError):
        txn_type(wsi, 1, 0)
    assert gc.is_tracked(txn) and wsi in gc.get_referents(txn)


def test_bind_drop_and_metrics_through_the_c_types() -> None:
    metrics = CMetrics()
    tracker = CTracker([metrics])
    wsi = new_wsi()
    txn = tracker.bind(wsi, T0 + 10, T0 + 4, "GET", "/a", None)
    assert (txn.serial, txn.index, txn.arrived_ns, txn.start_ns) == (1, 0, T0 + 4, T0 + 10)
    assert wsi.txn is txn and wsi.transactions == 1 and wsi.last_ns == T0 + 10
    assert wsi.context.active_transactions == {Role.H1_SERVER: 1}
    assert tracker.drop(wsi, T0 + 2_000_010, status=404) is txn
    assert (txn.end_ns, txn.status, wsi.txn) == (T0 + 2_000_010, 404, None)
    assert wsi.context.active_transactions == {Role.H1_SERVER: 0}
    series = metrics.series[("app", Role.H1_SERVER)]
    assert series.by_class == [0, 0, 0, 0, 1, 0]
    assert series.duration.sum == 2_000_006 / 1_000_000_000
    assert series.duration.exemplars[series.duration.counts.index(1)] == (txn, 0.002000006)
    assert series.queue_wait.sum == 6 / 1_000_000_000
    assert tracker.drop(wsi, T0 + 3) is None  # nothing open
    wsi.end_ns = T0 + 4
    assert tracker.bind(wsi, T0 + 5) is None  # an ended wsi takes no transaction


def test_keyword_arguments_are_checked_like_python_ones() -> None:
    tracker = CTracker([])
    wsi = new_wsi()
    txn = tracker.bind(wsi=wsi, now=T0, path="/k", traceparent="00-x")
    assert (txn.method, txn.path, txn.traceparent) == (None, "/k", "00-x")
    assert tracker.drop(wsi, T0, error="aborted").error == "aborted"
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        tracker.bind(wsi, T0, colour=1)
    with pytest.raises(TypeError, match="multiple values for argument 'now'"):
        tracker.bind(wsi, T0, now=T0)
    with pytest.raises(TypeError, match="missing required argument 'now'"):
        tracker.drop(wsi)
    with pytest.raises(TypeError, match="at most 6 arguments"):
        tracker.bind(wsi, T0, None, None, None, None, None)


def test_bad_input_raises_and_leaves_nothing_half_done() -> None:
    metrics = CMetrics()
    tracker = CTracker([metrics])
    wsi = new_wsi()
    with pytest.raises(TypeError):
        tracker.bind(wsi, "now")
    with pytest.raises(OverflowError):
        tracker.bind(wsi, 1 << 70)
    with pytest.raises(AttributeError):
        tracker.bind(object(), T0)
    assert wsi.txn is None and wsi.transactions == 0 and tracker._txn_serial == 0
    tracker.bind(wsi, T0)
    with pytest.raises(TypeError):  # the metrics sink refuses a status that is not an int
        tracker.drop(wsi, T0 + 1, "abc")
    assert wsi.txn is None  # the transaction ended before the sink complained, as in Python
    with pytest.raises(AttributeError, match="wsi"):  # not a transaction at all
        metrics.transaction_ended(object())


def test_any_wsi_class_works_through_attributes() -> None:
    class SubWsi(Wsi):
        __slots__ = ()

    metrics = CMetrics()
    tracker = CTracker([metrics])
    wsi = SubWsi(1, Context("app", "ctx", T0), Role.H1_SERVER, T0, None, None, None, None)
    txn = tracker.bind(wsi, T0 + 1)
    assert tracker.drop(wsi, T0 + 2, 200) is txn
    assert wsi.transactions == 1 and metrics.series[("app", Role.H1_SERVER)].by_class[2] == 1


def test_a_failing_sink_propagates_and_later_sinks_are_not_called() -> None:
    calls: list[str] = []

    class Failing:
        def transaction_ended(self, txn: Any) -> None:
            calls.append("failing")
            raise RuntimeError("sink bug")

    class Later:
        def transaction_ended(self, txn: Any) -> None:
            calls.append("later")

    tracker = CTracker([Failing(), Later()])
    wsi = new_wsi()
    tracker.bind(wsi, T0)
    with pytest.raises(RuntimeError, match="sink bug"):
        tracker.drop(wsi, T0 + 1, 200)
    assert calls == ["failing"]


def test_reference_counts_and_memory_stay_flat() -> None:
    metrics = CMetrics()
    tracker = CTracker([metrics])
    wsi = new_wsi()
    method, path, route = "GET", "/items/1", "/items/{id}"
    status = 1234  # not a cached small int: a leaked reference would show
    role = wsi.role

    def cycle(n: int) -> None:
        for i in range(n):
            now = T0 + i * 1000
            tracker.bind(wsi, now, now - 7, method, path, None)
            tracker.drop(wsi, now + 500, status, route, None)

    cycle(1000)  # warm-up: every series, exemplar and cache exists
    before = [sys.getrefcount(x) for x in (method, path, route, status, role, wsi, metrics)]
    tracemalloc.start()
    cycle(1000)
    start, _ = tracemalloc.get_traced_memory()
    cycle(50_000)
    end, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    after = [sys.getrefcount(x) for x in (method, path, route, status, role, wsi, metrics)]
    assert after == before
    assert end - start < 4096, f"{end - start} bytes more after 50,000 transactions"
    assert wsi.transactions == 52_000


@pytest.mark.parametrize(
    "now",
    [0, 1, -1, 2**30 - 1, 2**30, 2**60, 7 * 2**60, 2**63 - 1, -(2**63) + 5, T0, -T0],
)
def test_integers_are_read_exactly_across_digit_boundaries(now: int) -> None:
    tracker = CTracker([])
    tracker.epoch_ns = 0
    wsi = new_wsi()
    wsi._last = -(2**63)
    tracker.bind(wsi, now)
    assert wsi._last == now


@pytest.mark.parametrize("now", [2**63, 8 * 2**60, -(2**63) - 1, 2**70])
def test_integers_beyond_64_bits_are_refused(now: int) -> None:
    tracker = CTracker([])
    tracker.epoch_ns = 0
    wsi = new_wsi()
    with pytest.raises(OverflowError):
        tracker.bind(wsi, now)
    assert wsi.txn is None


# -- the shortcuts of the C path, each against the pure reference in this same process -------
# (The per-request path keeps a one-entry cache of the last series lookup, reads `series` from
# its own slot and rewrites numbers and exemplar tuples that nothing else references in place:
# whatever happens to the tables, records and numbers involved, the results must be the
# reference's. Every test below runs both paths with the same expectations.)

IMPLS = ("c", "pure")


def metrics_sink(impl: str) -> Any:
    """A MetricsSink with the C or the pure-Python transaction_ended."""
    if impl == "c":
        return CMetrics()
    if MetricsSink.__mro__[1] is metrics_module.TransactionCounting:  # a pure process
        return MetricsSink()
    return type("PureMetricsSink", (metrics_module.TransactionCounting, MetricsSink), {})()


def tracker_of(impl: str, sinks: list[Any]) -> Any:
    """A bare tracker whose bind/drop are the C or the pure-Python ones."""
    if impl == "c":
        return CTracker(sinks)
    tracker = type("PureTracker", (hotpath.HotPath,), {})()
    tracker.epoch_ns = T0
    tracker._txn_serial = 0
    tracker._on_txn = [s.transaction_ended for s in sinks]
    return tracker


def counted(metrics: Any) -> dict[tuple[str, str], list[int]]:
    """by_class of every series in the table, by (source, role value)."""
    return {(s, r.value): list(x.by_class) for (s, r), x in metrics.series.items()}


def one(tracker: Any, wsi: Wsi, status: int = 200, at: int = 0) -> Any:
    tracker.bind(wsi, T0 + at, None, "GET", "/", None)
    return tracker.drop(wsi, T0 + at + 1000, status, None, None)


@pytest.mark.parametrize("impl", IMPLS)
def test_series_follow_sources_and_roles_as_they_alternate(impl: str) -> None:
    metrics = metrics_sink(impl)
    tracker = tracker_of(impl, [metrics])
    a, b = Context("a", "ctx", T0), Context("b", "ctx", T0)
    a_server = Wsi(1, a, Role.H1_SERVER, T0, None, None, None, None)
    a_client = Wsi(2, a, Role.H1_CLIENT, T0, None, None, None, None)
    b_server = Wsi(3, b, Role.H1_SERVER, T0, None, None, None, None)
    # an equal source that is another object: the same series
    a_again = Wsi(4, Context("".join(["a"]), "ctx", T0), Role.H1_SERVER, T0, None, None, None, None)
    for wsi, status in (
        (a_server, 200),
        (b_server, 404),
        (a_server, 500),
        (a_client, 200),
        (a_server, 200),
        (a_again, 301),
        (b_server, 200),
    ):
        one(tracker, wsi, status)
    a_server.role = Role.WS_SERVER  # a role change mid-connection (Tracker.upgrade sets it)
    one(tracker, a_server, 101)
    a_server.role = Role.H1_SERVER
    one(tracker, a_server, 204)
    assert counted(metrics) == {
        ("a", "h1-server"): [0, 0, 3, 1, 0, 1],
        ("b", "h1-server"): [0, 0, 1, 0, 1, 0],
        ("a", "h1-client"): [0, 0, 1, 0, 0, 0],
        ("a", "ws-server"): [0, 1, 0, 0, 0, 0],
    }


@pytest.mark.parametrize("impl", IMPLS)
def test_series_table_changes_are_seen(impl: str) -> None:
    metrics = metrics_sink(impl)
    tracker = tracker_of(impl, [metrics])
    wsi = new_wsi()
    key = ("app", Role.H1_SERVER)
    one(tracker, wsi)
    first = metrics.series[key]
    metrics.series.clear()  # the entry removed: a new series
    one(tracker, wsi)
    second = metrics.series[key]
    assert second is not first and first.by_class[2] == 1 and second.by_class[2] == 1
    replacement = metrics_module.TransactionSeries()
    metrics.series[key] = replacement  # the entry replaced
    one(tracker, wsi)
    assert replacement.by_class[2] == 1 and second.by_class[2] == 1
    old_table = metrics.series
    metrics.series = {}  # the table replaced
    one(tracker, wsi)
    assert metrics.series[key].by_class[2] == 1 and old_table[key] is replacement
    assert replacement.by_class[2] == 1
    metrics.series = old_table  # the first table back, unchanged since: its series again
    one(tracker, wsi)
    assert replacement.by_class[2] == 2
    del metrics.series[key]
    metrics.series[key] = first  # removed, then another series under the same key
    one(tracker, wsi)
    assert first.by_class[2] == 2 and replacement.by_class[2] == 2
    metrics.series[key] = first  # the same series again: nothing changes
    one(tracker, wsi)
    assert first.by_class[2] == 3
    metrics.series[key] = None  # a None entry counts as missing
    one(tracker, wsi)
    assert metrics.series[key] not in (None, first) and first.by_class[2] == 3
    metrics.series[("other", Role.H1_SERVER)] = first  # another key added
    one(tracker, wsi)
    assert metrics.series[key].by_class[2] == 2 and first.by_class[2] == 3
    del metrics.series
    with pytest.raises(AttributeError, match="series"):
        one(tracker, wsi)


@pytest.mark.parametrize("impl", IMPLS)
def test_series_tables_of_other_types_are_used_through_their_methods(impl: str) -> None:
    calls: list[str] = []

    class Table(dict[Any, Any]):
        def get(self, key: Any, default: Any = None) -> Any:
            calls.append("get")
            return super().get(key, default)

        def __setitem__(self, key: Any, value: Any) -> None:
            calls.append("set")
            super().__setitem__(key, value)

    metrics = metrics_sink(impl)
    tracker = tracker_of(impl, [metrics])
    metrics.series = Table()
    wsi = new_wsi()
    for _ in range(3):
        one(tracker, wsi)
    assert calls == ["get", "set", "get", "get"]
    assert metrics.series[("app", Role.H1_SERVER)].by_class[2] == 3


@pytest.mark.parametrize("impl", IMPLS)
def test_a_subclass_may_redefine_series_even_after_use(impl: str) -> None:
    metrics = metrics_sink(impl)
    sub = type("Sub", (type(metrics),), {})
    metrics.__class__ = sub
    tracker = tracker_of(impl, [metrics])
    wsi = new_wsi()
    one(tracker, wsi)
    one(tracker, wsi)
    elsewhere: dict[Any, Any] = {}
    sub.series = property(lambda self: elsewhere)  # type: ignore[attr-defined]
    one(tracker, wsi)
    assert elsewhere[("app", Role.H1_SERVER)].by_class[2] == 1
    del sub.series  # type: ignore[attr-defined]
    one(tracker, wsi)
    assert metrics.series[("app", Role.H1_SERVER)].by_class[2] == 3


@pytest.mark.parametrize("impl", IMPLS)
def test_records_of_another_class_and_wsis_of_a_subclass(impl: str) -> None:
    class SubWsi(Wsi):
        __slots__ = ()

    metrics = metrics_sink(impl)
    tracker = tracker_of(impl, [metrics])
    plain = new_wsi()
    sub = SubWsi(2, Context("app", "ctx", T0), Role.H1_SERVER, T0, None, None, None, None)
    for n, wsi in enumerate((plain, sub, plain, sub)):
        one(tracker, wsi, at=5000 * n)
        assert wsi.last_ns == T0 + 5000 * n + 1000 and wsi.transactions == 1 + n // 2
    record = model.PyTransaction(sub, 99, 0, T0, T0 + 3, "GET", "/", None)
    record.end_ns, record.status = T0 + 2_000_000, 503
    metrics.transaction_ended(record)
    series = metrics.series[("app", Role.H1_SERVER)]
    assert series.by_class == [0, 0, 4, 0, 0, 1]
    assert (record, 0.002) in series.duration.exemplars
    assert series.queue_wait.sum == 3 / 1_000_000_000


@pytest.mark.parametrize("impl", IMPLS)
def test_active_transaction_tables_of_other_types(impl: str) -> None:
    calls: list[tuple[str, Any]] = []

    class Table(dict[Any, Any]):
        def get(self, key: Any, default: Any = None) -> Any:
            calls.append(("get", default))
            return super().get(key, default)

        def __getitem__(self, key: Any) -> Any:
            calls.append(("getitem", None))
            return super().__getitem__(key)

        def __missing__(self, key: Any) -> Any:
            return 10  # get() never consults it, [] does

    tracker = tracker_of(impl, [])
    wsi = new_wsi()
    wsi.context.active_transactions = Table()
    tracker.bind(wsi, T0)
    assert calls == [("get", 0)] and wsi.context.active_transactions == {Role.H1_SERVER: 1}
    wsi.context.active_transactions = Table()
    tracker.drop(wsi, T0 + 1)
    assert calls[1:] == [("getitem", None)]
    assert wsi.context.active_transactions == {Role.H1_SERVER: 9}
    # not an int: plain arithmetic
    wsi.context.active_transactions = {Role.H1_SERVER: 1.5}  # type: ignore[dict-item]
    tracker.bind(wsi, T0 + 2)
    assert wsi.context.active_transactions == {Role.H1_SERVER: 2.5}
    tracker.drop(wsi, T0 + 3)
    assert wsi.context.active_transactions == {Role.H1_SERVER: 1.5}
    wsi.context.active_transactions = {}
    tracker.bind(wsi, T0 + 4)
    wsi.context.active_transactions = {}  # a drop with no count: KeyError, as in Python
    with pytest.raises(KeyError):
        tracker.drop(wsi, T0 + 5)
    assert wsi.txn is None


@pytest.mark.parametrize("impl", IMPLS)
def test_numbers_someone_else_holds_are_never_rewritten(impl: str) -> None:
    metrics = metrics_sink(impl)
    tracker = tracker_of(impl, [metrics])
    wsi = new_wsi()
    for i in range(300):  # counts beyond the shared small ints
        one(tracker, wsi, at=i * 1000)
    series = metrics.series[("app", Role.H1_SERVER)]
    hist = series.duration
    i = hist.counts.index(300)
    count, total, pair, by_class, last = (
        hist.counts[i],
        hist.sum,
        hist.exemplars[i],
        series.by_class[2],
        wsi._last,
    )
    txn = one(tracker, wsi, at=300_000)
    assert (count, by_class, last, pair[1]) == (300, 300, 300_000, 1e-06)
    assert total == pytest.approx(300e-06) and pair[0] is not txn and pair[0].serial == 300
    assert (hist.counts[i], series.by_class[2], wsi._last) == (301, 301, 301_000)
    assert hist.exemplars[i] == (txn, 1e-06) and hist.sum == pytest.approx(301e-06)


@pytest.mark.parametrize("impl", IMPLS)
def test_numbers_nobody_else_holds_take_any_new_value(impl: str) -> None:
    """Rewritten in place or not, every value is right: across 30-bit digits, signs, and the
    small ints the interpreter shares (never written into another object)."""
    metrics = metrics_sink(impl)
    tracker = tracker_of(impl, [metrics])
    tracker.epoch_ns = 0
    wsi = new_wsi()
    one(tracker, wsi)
    series = metrics.series[("app", Role.H1_SERVER)]
    hist = series.duration
    i = hist.counts.index(1)
    for start, expected in ((2**30 - 1, 2**30), (2**60 - 1, 2**60), (-6, -5), (256, 257)):
        hist.counts[i] = int(str(start))  # an int only the list holds
        series.by_class[2] = int(str(start))
        one(tracker, wsi)
        assert (hist.counts[i], series.by_class[2]) == (expected, expected)
        if expected == -5:
            small = int("-5")
            assert hist.counts[i] is small and series.by_class[2] is small
    for last, now in ((-(2**63), 2**62), (-(2**30), 2**30), (-7, 5), (2**29, 2**30 + 1)):
        wsi._last = int(str(last))
        tracker.bind(wsi, now)
        assert wsi._last == now
        wsi._last = int(str(last))
        tracker.drop(wsi, now, 200)
        assert wsi._last == now
    hist.sum = float("1.5")
    one(tracker, wsi)
    assert hist.sum == 1.5 + 1e-06


@pytest.mark.parametrize("impl", IMPLS)
def test_a_rewritten_exemplar_is_seen_by_the_collector(impl: str) -> None:
    metrics = metrics_sink(impl)
    tracker = tracker_of(impl, [metrics])
    wsi = new_wsi()
    one(tracker, wsi)
    hist = metrics.series[("app", Role.H1_SERVER)].duration
    i = hist.counts.index(1)
    hist.exemplars[i] = tuple([1, float("0.5")])  # of atoms only, and held by nothing else:
    gc.collect()  # the collector stops tracking it ...
    assert not gc.is_tracked(hist.exemplars[i])
    txn = one(tracker, wsi)
    assert hist.exemplars[i] == (txn, 1e-06)
    assert gc.is_tracked(hist.exemplars[i])  # ... and must again, now that it holds a record
    hist.exemplars[i] = [None, None]  # not a tuple: replaced
    txn = one(tracker, wsi)
    assert hist.exemplars[i] == (txn, 1e-06)


def test_unshared_numbers_and_exemplars_are_reused_by_the_c_path() -> None:
    """The point of the rewriting: one object per count, sum and exemplar, whatever the
    number of transactions (the pure path makes new ones each time)."""
    metrics = CMetrics()
    tracker = CTracker([metrics])
    wsi = new_wsi()
    for i in range(300):
        one(tracker, wsi, at=i * 1000)
    series = metrics.series[("app", Role.H1_SERVER)]
    hist = series.duration
    i = hist.counts.index(300)

    def ids() -> list[int]:
        return [id(hist.counts[i]), id(hist.sum), id(hist.exemplars[i]), id(series.by_class[2])]

    before = ids()
    for n in range(5):
        one(tracker, wsi, at=(300 + n) * 1000)
    assert ids() == before and hist.counts[i] == 305


def test_transactions_made_from_freed_ones_start_clean() -> None:
    """The C path keeps a few freed records for reuse: each must come back as a new one."""
    tracker = CTracker([])
    wsi = new_wsi()
    for n in range(40):
        txn = tracker.bind(wsi, T0 + n, None, "GET", "/a", "00-t")
        assert gc.is_tracked(txn) and sys.getrefcount(txn) == 3  # txn, wsi.txn, the argument
        assert [txn.end_ns, txn.status, txn.route, txn.error, txn.sampled] == [None] * 5
        assert (txn.serial, txn.index, txn.method, txn.traceparent) == (n + 1, n, "GET", "00-t")
        tracker.drop(wsi, T0 + n + 1, 500, "/r", "boom")
        txn.sampled = True
        del txn  # freed: the next bind reuses it


@pytest.mark.parametrize("impl", IMPLS)
def test_histograms_with_other_bounds_and_lists(impl: str) -> None:
    writes: list[Any] = []

    class Recorded(list[Any]):
        def __setitem__(self, i: Any, value: Any) -> None:
            writes.append((i, value if not isinstance(value, tuple) else value[1]))
            super().__setitem__(i, value)

    metrics = metrics_sink(impl)
    tracker = tracker_of(impl, [metrics])
    wsi = new_wsi()
    one(tracker, wsi)
    series = metrics.series[("app", Role.H1_SERVER)]
    hist = series.duration
    every = ((0.005,), (0.001,), [0.001], (0.001, 10), (0.5, 0.001), (0.5,))
    for n, bounds in enumerate(every):
        hist.bounds = bounds  # not the bounds every series shares
        hist.counts = Recorded([0] * (len(bounds) + 1))
        hist.exemplars = Recorded([None] * (len(bounds) + 1))
        series.by_class = Recorded(series.by_class)
        i = bisect_left(bounds, 0.002)
        for k in (1, 2):  # the second finds an exemplar tuple to rewrite: still a list write
            tracker.bind(wsi, T0)
            tracker.drop(wsi, T0 + 2_000_000, 200)  # 2 ms
            assert hist.counts[i] == k
            assert writes == [(2, 2 * n + k + 1), (i, k), (i, 0.002)]
            writes.clear()
    assert hist.sum == pytest.approx(1e-06 + 2 * len(every) * 0.002)


@pytest.mark.parametrize("impl", IMPLS)
def test_statuses_beyond_64_bits_count_as_no_class(impl: str) -> None:
    metrics = metrics_sink(impl)
    tracker = tracker_of(impl, [metrics])
    wsi = new_wsi()
    for status in (2**70, -(2**70), True, 404):
        one(tracker, wsi, status)
    assert metrics.series[("app", Role.H1_SERVER)].by_class == [3, 0, 0, 0, 1, 0]
