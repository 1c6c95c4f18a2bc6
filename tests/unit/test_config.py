"""Config.from_env with an explicit env mapping: every variable it reads, valid and invalid."""

from __future__ import annotations

import pytest

from lwsobs.config import Config, ConfigError
from lwsobs.core.policy import NS
from lwsobs.core.roles import Role
from lwsobs.sinks.spans.otlp_http import OtlpHttpConfig


def test_defaults() -> None:
    cfg = Config.from_env({})
    assert cfg == Config()
    assert cfg.spans is True
    assert cfg.otlp is False
    assert cfg.join_traceparent is True
    assert cfg.idle_limits == {}
    assert cfg.recent_traces == 500
    assert cfg.span_queue == 65536
    assert cfg.span_batch == 512
    assert cfg.span_delay_s == 0.5
    assert cfg.tick_s == 1.0
    assert cfg.service_name == "lwsobs"


def test_unrelated_variables_are_ignored() -> None:
    assert Config.from_env({"PATH": "/bin", "LWSOBS_UNKNOWN": "x", "OTEL_FOO": "y"}) == Config()


def test_empty_values_mean_unset() -> None:
    env = {
        "LWSOBS_SPANS": "",
        "LWSOBS_RECENT_TRACES": "",
        "LWSOBS_SPAN_QUEUE": "",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "",
        "OTEL_BSP_SCHEDULE_DELAY": "",
        "LWSOBS_TICK_SECONDS": "",
        "LWSOBS_IDLE_LIMITS": "",
        "OTEL_TRACES_SAMPLER": "",
        "OTEL_TRACES_EXPORTER": "",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "",
    }
    assert Config.from_env(env) == Config()


def test_empty_traceparent_mode_means_unset() -> None:
    """Every other variable treats '' as unset (OTel's rule too); LWSOBS_TRACEPARENT should."""
    assert Config.from_env({"LWSOBS_TRACEPARENT": ""}).join_traceparent is True


# -- LWSOBS_SPANS and OTEL_TRACES_SAMPLER ----------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("true", True),
        ("TRUE", True),
        (" on ", True),
        ("yes", True),
        ("0", False),
        ("false", False),
        ("Off", False),
        ("no", False),
    ],
)
def test_lwsobs_spans(raw: str, expected: bool) -> None:
    assert Config.from_env({"LWSOBS_SPANS": raw}).spans is expected


@pytest.mark.parametrize("raw", ["2", "enabled", "y", "-"])
def test_lwsobs_spans_invalid(raw: str) -> None:
    with pytest.raises(ConfigError, match=f"^LWSOBS_SPANS must be on or off, got '{raw}'$"):
        Config.from_env({"LWSOBS_SPANS": raw})


@pytest.mark.parametrize(
    ("sampler", "spans", "expected"),
    [
        ("always_off", None, False),
        (" ALWAYS_OFF ", None, False),
        ("always_on", None, True),
        ("parentbased_traceidratio", None, True),
        ("always_off", "on", True),  # an explicit LWSOBS_SPANS wins
        ("always_on", "off", False),
    ],
)
def test_sampler_sets_the_default_for_spans(
    sampler: str, spans: str | None, expected: bool
) -> None:
    env = {"OTEL_TRACES_SAMPLER": sampler}
    if spans is not None:
        env["LWSOBS_SPANS"] = spans
    assert Config.from_env(env).spans is expected


# -- OTEL_TRACES_EXPORTER and the OTLP endpoints ---------------------------------------------------


@pytest.mark.parametrize(
    ("env", "otlp"),
    [
        ({}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": " OTLP "}, True),
        ({"OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, True),
    ],
)
def test_otlp(env: dict[str, str], otlp: bool) -> None:
    assert Config.from_env(env).otlp is otlp


@pytest.mark.parametrize("raw", ["console", "jaeger", "zipkin", "otlp,console"])
def test_otel_traces_exporter_invalid(raw: str) -> None:
    with pytest.raises(ConfigError, match=r"^OTEL_TRACES_EXPORTER must be otlp or none, got "):
        Config.from_env({"OTEL_TRACES_EXPORTER": raw})


# -- LWSOBS_TRACEPARENT ----------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "join"), [("join", True), ("JOIN", True), (" nest ", False)])
def test_lwsobs_traceparent(raw: str, join: bool) -> None:
    assert Config.from_env({"LWSOBS_TRACEPARENT": raw}).join_traceparent is join


@pytest.mark.parametrize("raw", ["link", "off", "joined"])
def test_lwsobs_traceparent_invalid(raw: str) -> None:
    with pytest.raises(
        ConfigError, match=f"^LWSOBS_TRACEPARENT must be join or nest, got '{raw}'$"
    ):
        Config.from_env({"LWSOBS_TRACEPARENT": raw})


# -- LWSOBS_IDLE_LIMITS ----------------------------------------------------------------------------


def test_lwsobs_idle_limits() -> None:
    cfg = Config.from_env({"LWSOBS_IDLE_LIMITS": "h1-server=10, ws-server=120,listen=off"})
    assert cfg.idle_limits == {Role.H1_SERVER: 10.0, Role.WS_SERVER: 120.0, Role.LISTEN: None}
    policy = cfg.policy
    assert policy.idle_limit_ns(Role.H1_SERVER) == 10 * NS
    assert policy.idle_limit_ns(Role.WS_SERVER) == 120 * NS
    assert policy.idle_limit_ns(Role.LISTEN) is None
    assert policy.idle_limit_ns(Role.H2_STREAM) == 600 * NS  # defaults kept


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        ("h1-server", "idle limit 'h1-server' is not ROLE=SECONDS"),
        ("tcp=10", "unknown role 'tcp'"),
        ("h1-server=soon", "idle limit for h1-server must be seconds or 'off', got 'soon'"),
        ("h1-server=0", "idle limit for h1-server must be positive, got 0.0"),
        ("h1-server=-1", "idle limit for h1-server must be positive, got -1.0"),
        ("h1-server=inf", "idle limit for h1-server must be finite, got inf"),
    ],
)
def test_lwsobs_idle_limits_invalid(raw: str, detail: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_env({"LWSOBS_IDLE_LIMITS": raw})
    assert str(info.value).startswith(f"LWSOBS_IDLE_LIMITS: {detail}")
    assert info.value.__cause__ is None and info.value.__suppress_context__


# -- integers --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "attr", "minimum"),
    [
        ("LWSOBS_RECENT_TRACES", "recent_traces", 0),
        ("LWSOBS_SPAN_QUEUE", "span_queue", 1),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "span_batch", 1),
    ],
)
def test_integer_settings(name: str, attr: str, minimum: int) -> None:
    assert getattr(Config.from_env({name: "42"}), attr) == 42
    assert getattr(Config.from_env({name: " 7 "}), attr) == 7
    assert getattr(Config.from_env({name: str(minimum)}), attr) == minimum
    with pytest.raises(
        ConfigError, match=f"^{name} must be at least {minimum}, got {minimum - 1}$"
    ):
        Config.from_env({name: str(minimum - 1)})
    for bad in ("ten", "1.5", "0x10", "1e3"):
        with pytest.raises(ConfigError, match=f"^{name} must be an integer, got '{bad}'$"):
            Config.from_env({name: bad})


def test_otel_bsp_schedule_delay_is_milliseconds() -> None:
    assert Config.from_env({"OTEL_BSP_SCHEDULE_DELAY": "5000"}).span_delay_s == 5.0
    assert Config.from_env({"OTEL_BSP_SCHEDULE_DELAY": "1"}).span_delay_s == 0.001
    with pytest.raises(ConfigError, match=r"^OTEL_BSP_SCHEDULE_DELAY must be at least 1, got 0$"):
        Config.from_env({"OTEL_BSP_SCHEDULE_DELAY": "0"})
    with pytest.raises(
        ConfigError, match=r"^OTEL_BSP_SCHEDULE_DELAY must be an integer, got 'fast'$"
    ):
        Config.from_env({"OTEL_BSP_SCHEDULE_DELAY": "fast"})


# -- LWSOBS_TICK_SECONDS ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "value"), [("1", 1.0), ("0.25", 0.25), (" 5 ", 5.0), ("1e1", 10.0)]
)
def test_lwsobs_tick_seconds(raw: str, value: float) -> None:
    assert Config.from_env({"LWSOBS_TICK_SECONDS": raw}).tick_s == value


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("soon", "LWSOBS_TICK_SECONDS must be a number, got 'soon'"),
        ("0", "LWSOBS_TICK_SECONDS must be a positive finite number, got 0.0"),
        ("-1", "LWSOBS_TICK_SECONDS must be a positive finite number, got -1.0"),
        ("nan", "LWSOBS_TICK_SECONDS must be a positive finite number, got nan"),
        ("inf", "LWSOBS_TICK_SECONDS must be a positive finite number, got inf"),
    ],
)
def test_lwsobs_tick_seconds_invalid(raw: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_env({"LWSOBS_TICK_SECONDS": raw})
    assert str(info.value) == message


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_everything_at_once() -> None:
    env = {
        "OTEL_TRACES_SAMPLER": "always_off",
        "LWSOBS_SPANS": "on",
        "OTEL_TRACES_EXPORTER": "otlp",
        "LWSOBS_TRACEPARENT": "nest",
        "LWSOBS_IDLE_LIMITS": "h2-stream=30",
        "LWSOBS_RECENT_TRACES": "0",
        "LWSOBS_SPAN_QUEUE": "1024",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "64",
        "OTEL_BSP_SCHEDULE_DELAY": "250",
        "LWSOBS_TICK_SECONDS": "0.5",
    }
    assert Config.from_env(env) == Config(
        spans=True,
        otlp=True,
        otlp_config=OtlpHttpConfig(),
        join_traceparent=False,
        idle_limits={Role.H2_STREAM: 30.0},
        recent_traces=0,
        span_queue=1024,
        span_batch=64,
        span_delay_s=0.25,
        tick_s=0.5,
    )


def test_recent_traces_default_to_off_when_an_otlp_backend_takes_the_spans() -> None:
    assert Config.from_env({}).recent_traces == 500
    otlp = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    assert Config.from_env(otlp).recent_traces == 0
    assert Config.from_env({**otlp, "LWSOBS_RECENT_TRACES": "20"}).recent_traces == 20


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "ftp://x"}, "is not an http(s) URL"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "nohost"}, "is not an http(s) URL"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TIMEOUT": "soon"}, "milliseconds"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_COMPRESSION": "zstd"}, "gzip or"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_HEADERS": "novalue"}, "key=value"),
    ],
)
def test_bad_otlp_settings_are_config_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Config.from_env(env)
