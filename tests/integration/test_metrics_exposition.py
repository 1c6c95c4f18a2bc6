"""The real /metrics body passes `promtool check metrics` and the OpenMetrics parser."""

from __future__ import annotations

import asyncio
import shutil
import subprocess

import aiohttp
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from lwsobs.observer import Observer
from tests.conftest import eventually, hello_app, run_app

OPENMETRICS = {"Accept": "application/openmetrics-text; version=1.0.0"}


async def exercise(url: str, host: str, port: int, observer: Observer) -> None:
    """Traffic that fills every family: keep-alive, pipelining, websocket, 400, idle leak."""
    async with aiohttp.ClientSession() as session:
        for path in ("/hello", "/items/1", "/missing"):
            async with session.get(url + path) as resp:
                await resp.read()
        async with session.ws_connect(url + "/ws") as ws:
            await ws.send_str("x")
            await ws.receive()
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n" * 2 + b"BAD\r\n\r\n")
    await asyncio.wait_for(reader.read(), 5)
    writer.close()
    _, idle = await asyncio.open_connection(host, port)
    await eventually(lambda: observer.tracker.live_count() >= 2)
    wsi = max(observer.tracker.live_wsis(), key=lambda w: w.serial)
    limit = observer.tracker.policy.idle_limit_ns(wsi.role)
    assert limit is not None
    observer.tick(wsi.created_ns + limit + 2_000_000_000)
    idle.close()
    assert observer.spans is not None
    observer.spans.flush()


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is required (Debian package prometheus; .ci/run installs it)"
    return path


async def test_promtool_check_metrics_reports_nothing(observer: Observer) -> None:
    async with run_app(hello_app(observer)) as srv:
        await exercise(srv.url, srv.host, srv.port, observer)
        async with aiohttp.ClientSession() as session, session.get(srv.url + "/metrics") as resp:
            body = await resp.read()
    for family in (
        b"lwsobs_wsi_live",
        b"lwsobs_wsi_created_total",
        b"lwsobs_wsi_destroyed_total",
        b"lwsobs_wsi_lifetime_seconds_bucket",
        b"lwsobs_wsi_transactions_bucket",
        b"lwsobs_transactions_total",
        b"lwsobs_transaction_duration_seconds_bucket",
        b'lwsobs_wsi_leaked_total{role="h1-server",rule="idle",source="aiohttp"} 1.0',
    ):
        assert family in body
    result = subprocess.run(
        [promtool(), "check", "metrics"], input=body, capture_output=True, timeout=30
    )
    assert result.returncode == 0, result.stderr.decode() + result.stdout.decode()
    assert result.stdout == b"" and result.stderr == b""


async def test_openmetrics_exposition_parses_with_exemplars(observer: Observer) -> None:
    async with run_app(hello_app(observer)) as srv:
        await exercise(srv.url, srv.host, srv.port, observer)
        async with (
            aiohttp.ClientSession() as session,
            session.get(srv.url + "/metrics", headers=OPENMETRICS) as resp,
        ):
            text = await resp.text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["lwsobs_wsi_live"].type == "gauge"
    assert families["lwsobs_wsi_created"].type == "counter"
    duration = families["lwsobs_transaction_duration_seconds"]
    exemplars = [s.exemplar for s in duration.samples if s.exemplar is not None]
    assert exemplars, "sampled transactions must leave exemplars"
    for ex in exemplars:
        assert len(ex.labels["trace_id"]) == 32 and len(ex.labels["span_id"]) == 16
