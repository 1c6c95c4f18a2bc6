"""OTLP/HTTP (protobuf) transport for encoded trace requests, configured like the OTel SDK.

The standard variables apply, per the OTLP exporter specification: the endpoint
(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as is, or OTEL_EXPORTER_OTLP_ENDPOINT plus /v1/traces),
headers, timeout (milliseconds), compression (gzip or none), and the TLS certificate, client key
and client certificate. Each export is one POST on a kept-alive connection; retryable answers
(429, 502, 503, 504) and connection errors are retried with backoff until the timeout.

`abort()` (from another thread, at shutdown) ends the export in progress at once: it cuts the
connection under a blocked read, wakes the backoff sleep, and every later send fails at once.
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

log = logging.getLogger("lwsobs.otlp")

DEFAULT_ENDPOINT = "http://localhost:4318/v1/traces"
RETRYABLE = frozenset({429, 502, 503, 504})


class OtlpConfigError(ValueError):
    """An OTEL_EXPORTER_OTLP_* variable has a value the exporter cannot use."""


def _pick(env: Mapping[str, str], name: str) -> str:
    """The traces-specific variable wins over the general one; empty means unset."""
    return (
        env.get(f"OTEL_EXPORTER_OTLP_TRACES_{name}", "").strip()
        or env.get(f"OTEL_EXPORTER_OTLP_{name}", "").strip()
    )


def parse_headers(raw: str) -> dict[str, str]:
    """W3C-baggage-like 'k1=v1,k2=v2' with percent-encoded values."""
    headers: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise OtlpConfigError(f"OTLP header {item!r} is not key=value")
        headers[unquote(key.strip())] = unquote(value.strip())
    return headers


@dataclass
class OtlpHttpConfig:
    endpoint: str = DEFAULT_ENDPOINT
    headers: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 10.0
    gzip: bool = False
    certificate: str | None = None
    client_key: str | None = None
    client_certificate: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OtlpHttpConfig:
        env = os.environ if env is None else env
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        if not endpoint:
            base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
            endpoint = base.rstrip("/") + "/v1/traces" if base else DEFAULT_ENDPOINT
        url = urlsplit(endpoint)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise OtlpConfigError(f"OTLP traces endpoint {endpoint!r} is not an http(s) URL")
        timeout_raw = _pick(env, "TIMEOUT")
        try:
            timeout_s = float(timeout_raw) / 1000 if timeout_raw else 10.0
        except ValueError:
            raise OtlpConfigError(
                f"OTLP timeout must be milliseconds, got {timeout_raw!r}"
            ) from None
        if not 0 < timeout_s < float("inf"):
            raise OtlpConfigError(f"OTLP timeout must be positive, got {timeout_raw!r}")
        compression = _pick(env, "COMPRESSION").lower() or "none"
        if compression not in ("gzip", "none"):
            raise OtlpConfigError(f"OTLP compression must be gzip or none, got {compression!r}")
        return cls(
            endpoint=endpoint,
            headers=parse_headers(_pick(env, "HEADERS")),
            timeout_s=timeout_s,
            gzip=compression == "gzip",
            certificate=_pick(env, "CERTIFICATE") or None,
            client_key=_pick(env, "CLIENT_KEY") or None,
            client_certificate=_pick(env, "CLIENT_CERTIFICATE") or None,
        )


class OtlpHttpSender:
    """Posts encoded ExportTraceServiceRequest bodies; used from the export worker thread only."""

    def __init__(self, config: OtlpHttpConfig) -> None:
        self.config = config
        url = urlsplit(config.endpoint)
        self._https = url.scheme == "https"
        self._host = url.hostname or "localhost"
        self._port = url.port or (443 if self._https else 80)
        self._path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        self._headers = {
            "Content-Type": "application/x-protobuf",
            "User-Agent": "lwsobs/0.1.0 (OTLP/HTTP)",
            **config.headers,
        }
        if config.gzip:
            self._headers["Content-Encoding"] = "gzip"
        self._conn: http.client.HTTPConnection | None = None
        self._aborted = threading.Event()
        self.failures = 0
        self.last_error: str | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            timeout = self.config.timeout_s
            if self._https:
                context = ssl.create_default_context(cafile=self.config.certificate)
                if self.config.client_certificate:
                    context.load_cert_chain(self.config.client_certificate, self.config.client_key)
                self._conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=timeout, context=context
                )
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def send(self, body: bytes) -> bool:
        """POST one request; True once the collector accepted it (2xx)."""
        if self._aborted.is_set():
            self.failures += 1
            self.last_error = "aborted at shutdown"
            return False
        if self.config.gzip:
            body = gzip.compress(body, compresslevel=5)
        deadline = time.monotonic() + self.config.timeout_s
        delay = 0.1
        while True:
            try:
                conn = self._connection()
                conn.request("POST", self._path, body, self._headers)
                response = conn.getresponse()
                response.read()
                status = response.status
                if response.will_close:
                    self._close()
                if 200 <= status < 300:
                    return True
                self.last_error = f"HTTP {status}"
                retry = status in RETRYABLE
            except (OSError, http.client.HTTPException) as exc:
                self._close()
                self.last_error = f"{type(exc).__name__}: {exc}"
                retry = True
            if self._aborted.is_set():
                self.failures += 1
                self.last_error = f"aborted at shutdown ({self.last_error})"
                return False
            if not retry or time.monotonic() + delay > deadline:
                self.failures += 1
                log.warning("OTLP export to %s failed: %s", self.config.endpoint, self.last_error)
                return False
            self._aborted.wait(delay)  # the backoff, cut short by abort()
            delay = min(delay * 2, 2.0)

    def abort(self) -> None:
        """Stop exporting now; safe from another thread while `send` blocks."""
        self._aborted.set()
        conn = self._conn
        sock = None if conn is None else conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a read blocked on a hanging backend

    def close(self) -> None:
        self._close()
