"""The fast /metrics renderer writes exactly what prometheus_client writes, much sooner."""

from __future__ import annotations

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

from lwsobs.config import Config
from lwsobs.core.roles import LeakRule, Role
from lwsobs.observer import Observer
from lwsobs.sinks.metrics.exposition import render

T0 = 1_800_000_000_000_000_000


@pytest.fixture
def busy_observer() -> Observer:
    """Three sources, every role, every status class, exemplars, suspects and leaks."""
    observer = Observer(Config(spans=True, recent_traces=10))
    tracker = observer.tracker
    for source in ("app-a", 'we"ird\\src', "lwsobs"):
        ctx = tracker.context(source, "ctx")
        for role in Role:
            for k in range(12):
                wsi = tracker.open(ctx, role, T0 + k, peer=("127.0.0.1", 1))
                txn = tracker.bind(wsi, T0 + 10 + k, T0 + 5, "GET", "/x", None)
                assert txn is not None
                tracker.drop(wsi, T0 + 10**6 * k + 20, [200, 404, 500, 101, None][k % 5], "/x")
                sampling = observer.collector.sampling
                assert sampling is not None
                sampling.record_decision(txn, k % 2 == 0)
                sampling.record_decision(wsi, k % 3 != 1)
                if k % 3 == 0:
                    tracker.destroy(wsi, T0 + 10**9 * k)
                elif k % 5 == 1:
                    tracker.flag(wsi, T0 + 10**9, LeakRule.IDLE)
                elif k % 7 == 2:
                    tracker.flag(wsi, T0 + 10**9, LeakRule.FINALIZED)
        tracker.upgrade(tracker.open(ctx, Role.H1_SERVER, T0), Role.WS_SERVER, T0 + 1)
    observer.close()
    return observer


def test_text_format_is_byte_identical(busy_observer: Observer) -> None:
    assert (
        render(busy_observer.collector, False) == generate_latest(busy_observer.registry).decode()
    )


def test_openmetrics_is_byte_identical_exemplars_included(busy_observer: Observer) -> None:
    ours = render(busy_observer.collector, True)
    assert ours == openmetrics_latest(busy_observer.registry).decode()
    assert ' # {span_id="' in ours and ours.endswith("# EOF\n")


def test_an_empty_observer_renders_the_same_too() -> None:
    observer = Observer(Config(spans=False))
    assert render(observer.collector, False) == generate_latest(observer.registry).decode()
    assert render(observer.collector, True) == openmetrics_latest(observer.registry).decode()
