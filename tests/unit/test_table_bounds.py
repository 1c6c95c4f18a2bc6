"""The Tracker's caps as the service is configured: LWSOBS_MAX_WSIS / LWSOBS_MAX_SOURCE_LABELS."""

from __future__ import annotations

import pytest
from prometheus_client.exposition import generate_latest

from lwsobs.config import Config, ConfigError
from lwsobs.core.roles import Role
from lwsobs.core.tracker import DEFAULT_MAX_SOURCES, DEFAULT_MAX_WSIS
from lwsobs.observer import Observer
from lwsobs.sinks.metrics.exposition import render


def test_defaults_and_environment() -> None:
    defaults = Config.from_env({})
    assert (defaults.max_wsis, defaults.max_source_labels) == (
        DEFAULT_MAX_WSIS,
        DEFAULT_MAX_SOURCES,
    )
    config = Config.from_env({"LWSOBS_MAX_WSIS": "3", "LWSOBS_MAX_SOURCE_LABELS": "1"})
    assert (config.max_wsis, config.max_source_labels) == (3, 1)
    with pytest.raises(ConfigError, match="LWSOBS_MAX_WSIS"):
        Config.from_env({"LWSOBS_MAX_WSIS": "0"})
    with pytest.raises(ConfigError, match="LWSOBS_MAX_SOURCE_LABELS"):
        Config.from_env({"LWSOBS_MAX_SOURCE_LABELS": "-1"})


def test_the_observer_applies_the_caps_and_counts_what_they_cost() -> None:
    config = Config.from_env({"LWSOBS_MAX_WSIS": "3", "LWSOBS_MAX_SOURCE_LABELS": "1"})
    config.spans = False
    observer = Observer(config)
    tracker = observer.tracker
    first, second = tracker.context("app", "c"), tracker.context("another", "c")
    assert (first.source, second.source) == ("app", "other")
    for now in range(5):
        tracker.open(first, Role.H1_SERVER, now)
    assert tracker.live_count() == 3

    text = render(observer.collector, False)
    assert text == generate_latest(observer.registry).decode()
    assert "lwsobs_wsi_evicted_total 2.0\n" in text
    assert "lwsobs_wsi_sources_folded_total 1.0\n" in text
    assert 'lwsobs_wsi_leaked_total{role="h1-server",rule="evicted",source="app"} 2.0\n' in text
    assert 'lwsobs_wsi_live{role="h1-server",source="app"} 3.0\n' in text
