"""Configuration from the environment and the command line, read once at start-up.

Standard OTEL_* variables keep their meaning; LWSOBS_* variables cover what OTel does not.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from lwsobs.core.policy import LeakPolicy, parse_idle_limits
from lwsobs.core.roles import Role
from lwsobs.core.tracker import DEFAULT_MAX_SOURCES, DEFAULT_MAX_WSIS
from lwsobs.sinks.spans.otlp_http import OtlpConfigError, OtlpHttpConfig


class ConfigError(ValueError):
    """A setting has a value lwsobs cannot use; the message names the setting."""


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "on", "yes"):
        return True
    if value in ("0", "false", "off", "no"):
        return False
    raise ConfigError(f"{name} must be on or off, got {raw!r}")


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not 0 < value < float("inf"):
        raise ConfigError(f"{name} must be a positive finite number, got {value}")
    return value


def _seconds_or_off(env: Mapping[str, str], name: str, default: float) -> float | None:
    """A positive number of seconds, or `off` (None)."""
    if env.get(name, "").strip().lower() in ("off", "none", "never"):
        return None
    return _float(env, name, default)


class HostPort(NamedTuple):
    """Where a receiver binds; `str()` gives HOST:PORT back, with brackets for IPv6."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


DEFAULT_UDP: Final = HostPort("127.0.0.1", 7682)
DEFAULT_INGEST_MAX_BODY: Final = 4 * 1024 * 1024
MAX_UNIX_PATH: Final = 107  # sun_path is 108 bytes with its NUL


def parse_udp(raw: str, name: str) -> HostPort | None:
    """`HOST:PORT` (`[v6]:PORT` for IPv6) or `off`; port 0 picks a free port."""
    text = raw.strip()
    if text.lower() == "off":
        return None
    usage = f"{name} must be HOST:PORT or off, got {raw!r}"
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        sep, port_text = rest[:1], rest[1:]
        if not bracket or sep != ":":
            raise ConfigError(usage)
    else:
        host, sep, port_text = text.rpartition(":")
        if ":" in host:
            raise ConfigError(f"{usage} (write an IPv6 address in brackets: [::1]:7682)")
    if not sep or not host or any(c.isspace() for c in host):
        raise ConfigError(usage)
    if not port_text.isascii() or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(f"{name} port must be 0 to 65535, got {port_text!r}")
    return HostPort(host, int(port_text))


def check_unix_path(raw: str, name: str) -> str | None:
    """A filesystem path for the unix datagram socket, or None for empty (off)."""
    path = raw.strip()
    if not path:
        return None
    if "\0" in path:
        raise ConfigError(f"{name} must not contain a NUL character")
    size = len(os.fsencode(path))
    if size > MAX_UNIX_PATH:
        raise ConfigError(
            f"{name} is {size} bytes long; a unix socket path must be at most {MAX_UNIX_PATH}"
        )
    return path


def parse_jaeger_ui(raw: str, name: str) -> str | None:
    """An http(s) base URL of a Jaeger UI (links go to `{url}/trace/{id}`), or None if empty.

    Only http and https are accepted: the status page puts this URL into links.
    """
    text = raw.strip()
    if not text:
        return None
    url = urllib.parse.urlsplit(text)
    if url.scheme.lower() not in ("http", "https") or not url.netloc:
        raise ConfigError(f"{name} must be an http:// or https:// URL, got {raw!r}")
    if url.query or url.fragment or any(c.isspace() or c in "<>\"'`" for c in text):
        raise ConfigError(f"{name} must be a plain base URL without query or fragment")
    return text.rstrip("/")


@dataclass
class Config:
    spans: bool = True
    otlp: bool = False  # export over OTLP/HTTP (endpoint and headers from OTEL_EXPORTER_OTLP_*)
    otlp_config: OtlpHttpConfig | None = None  # None: read OTEL_EXPORTER_OTLP_* when exporting
    join_traceparent: bool = True  # transaction spans join an incoming trace, linking the wsi
    idle_limits: dict[Role, float | None] = field(default_factory=dict)
    recent_traces: int = 500
    recent_connections: int = 200  # finished connections kept for the status page's waterfall
    jaeger_ui: str | None = None  # base URL of a Jaeger UI: the status page links traces there
    span_queue: int = 65536
    span_batch: int = 512
    span_delay_s: float = 0.5
    tick_s: float = 1.0
    service_name: str = "lwsobs"
    # ingest of producer events (wire-v1)
    udp: HostPort | None = DEFAULT_UDP  # None: no UDP receiver
    unix: str | None = None  # path of a unix datagram socket, None: none
    # the bearer token POST /v1/events requires (None: open); kept out of repr and logs
    ingest_token: str | None = field(default=None, repr=False)
    silence_s: float = 30.0  # a source quiet for longer is declared lost
    # a source quiet for longer is presumed gone: its wsis are abandoned (expired)
    source_expiry_s: float = 300.0
    process_check: bool = True  # a producer on this host whose pid is gone has exited
    ingest_max_body: int = DEFAULT_INGEST_MAX_BODY  # bytes of one POST /v1/events body
    # aiohttp client sessions: a connection held by a request longer than this is a suspect
    # (rule `unreleased`); aiohttp's own default total timeout is 300 s. None: never.
    client_acquire_limit_s: float | None = 300.0
    instrument_clients: bool = False  # instrument(app) also instruments every ClientSession
    max_wsis: int = DEFAULT_MAX_WSIS  # live wsis at most; beyond it the oldest is evicted
    max_source_labels: int = DEFAULT_MAX_SOURCES  # source label values; the rest -> "other"

    @property
    def policy(self) -> LeakPolicy:
        return LeakPolicy().with_limits(self.idle_limits)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        sampler = env.get("OTEL_TRACES_SAMPLER", "").strip().lower()
        exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
        has_endpoint = bool(
            env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        )
        if exporter not in ("", "otlp", "none"):
            raise ConfigError(f"OTEL_TRACES_EXPORTER must be otlp or none, got {exporter!r}")
        mode = env.get("LWSOBS_TRACEPARENT", "").strip().lower() or "join"
        if mode not in ("join", "nest"):
            raise ConfigError(f"LWSOBS_TRACEPARENT must be join or nest, got {mode!r}")
        try:
            idle = parse_idle_limits(env.get("LWSOBS_IDLE_LIMITS", ""))
        except ValueError as exc:
            raise ConfigError(f"LWSOBS_IDLE_LIMITS: {exc}") from None
        otlp = exporter == "otlp" or (exporter == "" and has_endpoint)
        try:
            otlp_config = OtlpHttpConfig.from_env(env) if otlp else None
        except OtlpConfigError as exc:
            raise ConfigError(str(exc)) from None
        return cls(
            spans=_flag(env, "LWSOBS_SPANS", sampler != "always_off"),
            otlp=otlp,
            otlp_config=otlp_config,
            join_traceparent=mode == "join",
            idle_limits=idle,
            # with a real backend, memory for /api/traces is opt-in
            recent_traces=_int(env, "LWSOBS_RECENT_TRACES", 0 if otlp else 500, minimum=0),
            recent_connections=_int(env, "LWSOBS_RECENT_CONNECTIONS", 200, minimum=0),
            jaeger_ui=parse_jaeger_ui(env.get("LWSOBS_JAEGER_UI", ""), "LWSOBS_JAEGER_UI"),
            span_queue=_int(env, "LWSOBS_SPAN_QUEUE", 65536),
            span_batch=_int(env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512),
            span_delay_s=_int(env, "OTEL_BSP_SCHEDULE_DELAY", 500) / 1000,
            tick_s=_float(env, "LWSOBS_TICK_SECONDS", 1.0),
            udp=parse_udp(env.get("LWSOBS_UDP", "").strip() or str(DEFAULT_UDP), "LWSOBS_UDP"),
            unix=check_unix_path(env.get("LWSOBS_UNIX", ""), "LWSOBS_UNIX"),
            ingest_token=env.get("LWSOBS_INGEST_TOKEN", "").strip() or None,
            silence_s=_float(env, "LWSOBS_SILENCE_SECONDS", 30.0),
            source_expiry_s=_float(env, "LWSOBS_SOURCE_EXPIRY_SECONDS", 300.0),
            process_check=_flag(env, "LWSOBS_PROCESS_CHECK", True),
            ingest_max_body=_int(env, "LWSOBS_INGEST_MAX_BODY", DEFAULT_INGEST_MAX_BODY),
            client_acquire_limit_s=_seconds_or_off(env, "LWSOBS_CLIENT_ACQUIRE_LIMIT", 300.0),
            instrument_clients=_flag(env, "LWSOBS_INSTRUMENT_CLIENTS", False),
            max_wsis=_int(env, "LWSOBS_MAX_WSIS", DEFAULT_MAX_WSIS),
            max_source_labels=_int(env, "LWSOBS_MAX_SOURCE_LABELS", DEFAULT_MAX_SOURCES, minimum=0),
        )
