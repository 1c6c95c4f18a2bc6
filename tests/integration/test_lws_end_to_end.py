"""A real libwebsockets app, preloaded with the shim, observed by lwsobs end to end.

The events the shim sends go through the live service path (UDP receiver -> IngestPipeline ->
LwsDecoder -> Tracker) and the assertions are on what a user sees: wsis by role, transactions,
leak flags and /metrics.
"""

from __future__ import annotations

import aiohttp

from lwsobs.config import Config, HostPort
from lwsobs.observer import Observer
from lwsobs.service import build_app
from tests.conftest import eventually, free_port
from tests.conftest import run_app as run_service
from tests.integration.test_shim import (
    APP_PLAIN,
    SHIM,
    built,  # noqa: F401 - the fixture that builds the shim and the test app
    drive,
    run_app,
)


def roles(observer: Observer, counter: str) -> dict[str, int]:
    sink = observer.metrics
    counts = sink.created if counter == "created" else sink.destroyed
    out: dict[str, int] = {}
    for (source, role), n in counts.items():
        if source == "lws_testapp_plain":
            out[role.value] = out.get(role.value, 0) + n
    return out


async def test_preloaded_lws_app_is_observed_through_the_service(built: None) -> None:  # noqa: F811
    udp = free_port()
    observer = Observer(Config(spans=True, udp=HostPort("127.0.0.1", udp)))
    async with run_service(build_app(observer)) as srv:
        import asyncio

        loop = asyncio.get_running_loop()

        def traffic() -> None:
            with run_app(
                APP_PLAIN, f"udp://127.0.0.1:{udp}", preload=SHIM, client_self=True
            ) as app:
                drive(app)

        await loop.run_in_executor(None, traffic)
        await eventually(lambda: roles(observer, "destroyed").get("listen", 0) >= 1, timeout=10)
        async with aiohttp.ClientSession() as session, session.get(srv.url + "/metrics") as resp:
            metrics = await resp.text()
    created = roles(observer, "created")
    destroyed = roles(observer, "destroyed")
    # accepted connections: keep-alive pair, close, 404, two raw GETs, a websocket, lws' clients
    assert created.get("h1-server", 0) >= 6, created
    assert created.get("listen") == 1 and destroyed.get("listen") == 1
    assert destroyed.get("ws-server", 0) >= 1, destroyed
    assert created.get("h1-client", 0) >= 1, created
    transactions = {
        (role.value, code_class): n
        for (source, role, code_class), n in observer.metrics.transactions.items()
        if source == "lws_testapp_plain"
    }
    assert (
        transactions.get(("h1-server", "none"), 0) + transactions.get(("h1-server", "2xx"), 0) >= 4
    )
    # a clean shutdown: every wsi got its WSI_DESTROY before the context went
    flagged = [(w.role.value, w.leak) for w in observer.live.leaks]
    assert flagged == [], flagged
    assert 'lwsobs_wsi_live{role="h1-server",source="lws_testapp_plain"} 0.0' in metrics
    assert 'lwsobs_ingest_rejected_total{reason="not_json",transport="udp"} 0.0' in metrics
    observer.close()
