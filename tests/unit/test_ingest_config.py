"""The ingest settings: LWSOBS_UDP, LWSOBS_UNIX, LWSOBS_INGEST_TOKEN, LWSOBS_SILENCE_SECONDS,
LWSOBS_INGEST_MAX_BODY, and the --udp / --unix flags of `lwsobs serve`."""

from __future__ import annotations

import pytest

from lwsobs.app.cli import _parser, make_config
from lwsobs.config import DEFAULT_UDP, Config, ConfigError, HostPort


def test_defaults() -> None:
    cfg = Config.from_env({})
    assert cfg.udp == HostPort("127.0.0.1", 7682) == DEFAULT_UDP
    assert str(cfg.udp) == "127.0.0.1:7682"
    assert cfg.unix is None
    assert cfg.ingest_token is None
    assert cfg.silence_s == 30.0
    assert cfg.ingest_max_body == 4 * 1024 * 1024


def test_empty_values_mean_unset() -> None:
    env = {
        "LWSOBS_UDP": " ",
        "LWSOBS_UNIX": "",
        "LWSOBS_INGEST_TOKEN": "",
        "LWSOBS_SILENCE_SECONDS": "",
        "LWSOBS_INGEST_MAX_BODY": "",
    }
    assert Config.from_env(env) == Config()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("127.0.0.1:9000", HostPort("127.0.0.1", 9000)),
        (" 0.0.0.0:7682 ", HostPort("0.0.0.0", 7682)),
        ("localhost:0", HostPort("localhost", 0)),
        ("[::1]:7682", HostPort("::1", 7682)),
        ("[fe80::1%lo]:65535", HostPort("fe80::1%lo", 65535)),
        ("off", None),
        ("OFF", None),
    ],
)
def test_lwsobs_udp(raw: str, expected: HostPort | None) -> None:
    assert Config.from_env({"LWSOBS_UDP": raw}).udp == expected


def test_ipv6_is_shown_in_brackets() -> None:
    assert str(HostPort("::1", 7682)) == "[::1]:7682"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("7682", "LWSOBS_UDP must be HOST:PORT or off, got '7682'"),
        (":7682", "LWSOBS_UDP must be HOST:PORT or off, got ':7682'"),
        ("[::1]7682", "LWSOBS_UDP must be HOST:PORT or off, got '[::1]7682'"),
        ("[::1", "LWSOBS_UDP must be HOST:PORT or off, got '[::1'"),
        ("::1:7682", "(write an IPv6 address in brackets: [::1]:7682)"),
        ("a b:1", "LWSOBS_UDP must be HOST:PORT or off, got 'a b:1'"),
        ("127.0.0.1:", "LWSOBS_UDP port must be 0 to 65535, got ''"),
        ("127.0.0.1:65536", "LWSOBS_UDP port must be 0 to 65535, got '65536'"),
        ("127.0.0.1:-1", "LWSOBS_UDP port must be 0 to 65535, got '-1'"),
        ("127.0.0.1:http", "LWSOBS_UDP port must be 0 to 65535, got 'http'"),
        ("127.0.0.1:\u0667", "LWSOBS_UDP port must be 0 to 65535, got '\u0667'"),  # a digit
        ("no", "LWSOBS_UDP must be HOST:PORT or off, got 'no'"),
    ],
)
def test_lwsobs_udp_invalid(raw: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_env({"LWSOBS_UDP": raw})
    assert message in str(info.value)


def test_lwsobs_unix() -> None:
    assert Config.from_env({"LWSOBS_UNIX": "/run/lwsobs.sock"}).unix == "/run/lwsobs.sock"
    assert Config.from_env({"LWSOBS_UNIX": "rel.sock"}).unix == "rel.sock"
    with pytest.raises(ConfigError, match=r"^LWSOBS_UNIX is 108 bytes long; .* at most 107$"):
        Config.from_env({"LWSOBS_UNIX": "/" + "x" * 107})
    assert Config.from_env({"LWSOBS_UNIX": "/" + "x" * 106}).unix == "/" + "x" * 106
    with pytest.raises(ConfigError, match=r"^LWSOBS_UNIX must not contain a NUL character$"):
        Config.from_env({"LWSOBS_UNIX": "/tmp/a\0b"})


def test_lwsobs_ingest_token_is_kept_out_of_repr() -> None:
    cfg = Config.from_env({"LWSOBS_INGEST_TOKEN": " s3cret "})
    assert cfg.ingest_token == "s3cret"
    assert "s3cret" not in repr(cfg)


def test_lwsobs_silence_seconds() -> None:
    assert Config.from_env({"LWSOBS_SILENCE_SECONDS": "2.5"}).silence_s == 2.5
    for bad, message in (
        ("soon", "LWSOBS_SILENCE_SECONDS must be a number, got 'soon'"),
        ("0", "LWSOBS_SILENCE_SECONDS must be a positive finite number, got 0.0"),
        ("inf", "LWSOBS_SILENCE_SECONDS must be a positive finite number, got inf"),
    ):
        with pytest.raises(ConfigError) as info:
            Config.from_env({"LWSOBS_SILENCE_SECONDS": bad})
        assert str(info.value) == message


def test_lwsobs_ingest_max_body() -> None:
    assert Config.from_env({"LWSOBS_INGEST_MAX_BODY": "1024"}).ingest_max_body == 1024
    with pytest.raises(ConfigError, match=r"^LWSOBS_INGEST_MAX_BODY must be at least 1, got 0$"):
        Config.from_env({"LWSOBS_INGEST_MAX_BODY": "0"})
    with pytest.raises(ConfigError, match=r"^LWSOBS_INGEST_MAX_BODY must be an integer, got '4M'$"):
        Config.from_env({"LWSOBS_INGEST_MAX_BODY": "4M"})


# -- the command line ------------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("LWSOBS_UDP", "LWSOBS_UNIX", "LWSOBS_INGEST_TOKEN", "LWSOBS_IDLE_LIMITS"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_cli_flags_override_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("LWSOBS_UDP", "127.0.0.1:9999")
    clean_env.setenv("LWSOBS_UNIX", "/tmp/from-env.sock")
    args = _parser().parse_args(["serve", "--udp", "[::1]:7000", "--unix", "/tmp/x.sock"])
    cfg = make_config(args)
    assert cfg.udp == HostPort("::1", 7000)
    assert cfg.unix == "/tmp/x.sock"
    args = _parser().parse_args(["serve", "--udp", "off", "--unix", ""])
    cfg = make_config(args)
    assert cfg.udp is None and cfg.unix is None
    cfg = make_config(_parser().parse_args(["serve"]))
    assert cfg.udp == HostPort("127.0.0.1", 9999)
    assert cfg.unix == "/tmp/from-env.sock"


def test_cli_defaults(clean_env: pytest.MonkeyPatch) -> None:
    cfg = make_config(_parser().parse_args(["demo"]))
    assert cfg.udp == DEFAULT_UDP and cfg.unix is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--udp", "7682"], "--udp must be HOST:PORT or off, got '7682'"),
        (["--udp", "h:99999"], "--udp port must be 0 to 65535, got '99999'"),
        (["--unix", "/" + "u" * 200], "--unix is 201 bytes long"),
    ],
)
def test_cli_flag_errors_name_the_flag(
    clean_env: pytest.MonkeyPatch, argv: list[str], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        make_config(_parser().parse_args(["serve", *argv]))
    assert str(info.value).startswith(message)
