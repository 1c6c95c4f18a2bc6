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
