"""The status page's settings: the Jaeger UI base URL and the size of the connection ring."""

from __future__ import annotations

import pytest

from lwsobs.config import Config, ConfigError


def test_defaults() -> None:
    cfg = Config.from_env({})
    assert cfg.jaeger_ui is None
    assert cfg.recent_connections == 200


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("http://127.0.0.1:16686", "http://127.0.0.1:16686"),
        ("https://jaeger.example/ui/", "https://jaeger.example/ui"),
        ("  http://[::1]:16686// ", "http://[::1]:16686"),
        ("", None),
    ],
)
def test_jaeger_ui_is_a_base_url(raw: str, expected: str | None) -> None:
    assert Config.from_env({"LWSOBS_JAEGER_UI": raw}).jaeger_ui == expected


@pytest.mark.parametrize(
    "raw",
    [
        "javascript:alert(1)",
        "jaeger:16686",
        "ftp://jaeger.example",
        "http://",
        "http://jaeger.example/?q=1",
        "http://jaeger.example/#x",
        'http://jaeger.example/"><b>',
    ],
)
def test_jaeger_ui_rejects_what_is_no_plain_http_url(raw: str) -> None:
    with pytest.raises(ConfigError, match="LWSOBS_JAEGER_UI"):
        Config.from_env({"LWSOBS_JAEGER_UI": raw})


def test_recent_connections() -> None:
    assert Config.from_env({"LWSOBS_RECENT_CONNECTIONS": "0"}).recent_connections == 0
    assert Config.from_env({"LWSOBS_RECENT_CONNECTIONS": "50"}).recent_connections == 50
    with pytest.raises(ConfigError, match="LWSOBS_RECENT_CONNECTIONS"):
        Config.from_env({"LWSOBS_RECENT_CONNECTIONS": "-1"})
