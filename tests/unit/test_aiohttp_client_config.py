"""The client settings: LWSOBS_CLIENT_ACQUIRE_LIMIT and LWSOBS_INSTRUMENT_CLIENTS."""

from __future__ import annotations

import pytest

from lwsobs.config import Config, ConfigError


def test_defaults_match_aiohttps_default_total_timeout_and_leave_sessions_alone() -> None:
    cfg = Config.from_env({})
    assert cfg.client_acquire_limit_s == 300.0
    assert cfg.instrument_clients is False


@pytest.mark.parametrize(("raw", "limit"), [("2.5", 2.5), ("0.2", 0.2), ("off", None)])
def test_acquire_limit_is_seconds_or_off(raw: str, limit: float | None) -> None:
    assert Config.from_env({"LWSOBS_CLIENT_ACQUIRE_LIMIT": raw}).client_acquire_limit_s == limit


@pytest.mark.parametrize("raw", ["0", "-1", "soon", "inf"])
def test_a_bad_acquire_limit_names_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError, match="LWSOBS_CLIENT_ACQUIRE_LIMIT"):
        Config.from_env({"LWSOBS_CLIENT_ACQUIRE_LIMIT": raw})


@pytest.mark.parametrize(("raw", "on"), [("on", True), ("1", True), ("off", False)])
def test_instrument_clients_is_a_switch(raw: str, on: bool) -> None:
    assert Config.from_env({"LWSOBS_INSTRUMENT_CLIENTS": raw}).instrument_clients is on


def test_a_bad_switch_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="LWSOBS_INSTRUMENT_CLIENTS"):
        Config.from_env({"LWSOBS_INSTRUMENT_CLIENTS": "maybe"})
