"""OtlpHttpSender against the loopback receiver: configuration, retries, failures."""

from __future__ import annotations

import asyncio
import time

import pytest

from lwsobs.sinks.spans import otlp_encode as enc
from lwsobs.sinks.spans.builder import SpanData
from lwsobs.sinks.spans.otlp_http import (
    OtlpConfigError,
    OtlpHttpConfig,
    OtlpHttpSender,
    parse_headers,
)
from tests.otlp_receiver import serve_otlp_receiver

BODY = enc.encode_spans(
    enc.encode_resource({"service.name": "t"}),
    enc.encode_scope("lwsobs", "0"),
    [SpanData(1, 2, 0, "s", 1, 10, 20, {"k": "v"})],
)


@pytest.mark.parametrize(
    ("env", "endpoint"),
    [
        ({}, "http://localhost:4318/v1/traces"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, "http://c:4318/v1/traces"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"}, "http://c:4318/v1/traces"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "https://c/base"}, "https://c/base/v1/traces"),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://a",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b/x",
            },
            "http://b/x",
        ),
    ],
)
def test_endpoint_follows_the_otlp_exporter_specification(
    env: dict[str, str], endpoint: str
) -> None:
    assert OtlpHttpConfig.from_env(env).endpoint == endpoint


def test_headers_timeout_and_compression_from_the_environment() -> None:
    config = OtlpHttpConfig.from_env(
        {
            "OTEL_EXPORTER_OTLP_HEADERS": "a=1,b=x%20y",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "api-key=s%3Dcret",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
            "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "gzip",
        }
    )
    assert config.headers == {"api-key": "s=cret"}  # the traces-specific variable wins
    assert config.timeout_s == 2.5 and config.gzip
    assert parse_headers(" a = 1 , b=2 ") == {"a": "1", "b": "2"}
    with pytest.raises(OtlpConfigError):
        parse_headers("=x")


async def send(sender: OtlpHttpSender, body: bytes = BODY) -> bool:
    return await asyncio.get_running_loop().run_in_executor(None, sender.send, body)


async def test_sends_with_headers_and_gzip_and_keeps_the_connection() -> None:
    async with serve_otlp_receiver() as receiver:
        config = OtlpHttpConfig.from_env(
            {
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.endpoint,
                "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
            }
        )
        sender = OtlpHttpSender(config)
        assert await send(sender) and await send(sender)
        assert len(receiver.spans) == 2
        assert [r.content_encoding for r in receiver.requests] == ["gzip", "gzip"]
        sender.close()


async def test_a_refusing_endpoint_fails_within_the_timeout_and_recovers() -> None:
    async with serve_otlp_receiver() as receiver:
        config = OtlpHttpConfig(endpoint=receiver.endpoint, timeout_s=0.5)
        sender = OtlpHttpSender(config)
        receiver.set_mode("unavailable")
        started = time.monotonic()
        assert not await send(sender)
        assert time.monotonic() - started < 5
        assert sender.failures == 1 and sender.last_error == "HTTP 503"
        receiver.set_mode("ok")
        assert await send(sender)
        assert len(receiver.spans) == 1


async def test_nothing_listening_is_a_counted_failure() -> None:
    async with serve_otlp_receiver() as receiver:
        endpoint = receiver.endpoint
    sender = OtlpHttpSender(OtlpHttpConfig(endpoint=endpoint, timeout_s=0.3))
    assert not await send(sender)
    assert sender.failures == 1 and "Connection" in (sender.last_error or "")
