"""The lws client on real libwebsockets 4.1.6: an unresolvable host and a followed redirect.

Both observed end to end through the lwsobs service, with a tee keeping the raw callbacks:

- DNS failure: 4.1.6 resolves with a blocking getaddrinfo() inside lws_client_connect_via_info()
  (no async DNS in Debian's build). `nonexistent.invalid` fails at once here (no outside DNS;
  getaddrinfo answers in milliseconds). lws sends CLIENT_HTTP_BIND_PROTOCOL (85) and nothing
  else: no CONNECTION_ERROR, no WSI_DESTROY; the next connect reuses the pointer (the
  reference's "lone 85"). The decoder counts both failures and tracks neither.
- Redirect: a loopback aiohttp server answers 302 to its second port; lws follows it on the
  same wsi: 85 19 29 24 104 76("lws_client_reset") 85 29 24 2 44 ... 47, then at teardown
  76 45 30. A second WSI_CREATE on the same pointer, one h1-client with two transactions.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

from aiohttp import web

from lwsobs.app.service import PIPELINE, build_app
from lwsobs.config import Config, HostPort
from lwsobs.observer import Observer
from lwsobs.sources.lws.decoder import LwsDecoder
from lwsobs.sources.lws.wire import Event
from tests.conftest import free_port
from tests.conftest import run_app as run_service
from tests.integration.test_lws_h2 import Tee, counts, spans_of, until_context_gone
from tests.integration.test_shim import (
    APP_PLAIN,
    SHIM,
    built,  # noqa: F401 - the fixture that builds the shim and the test app
    check_clean_exit,
    has_bye,
    is_subsequence,
    run_app,
)

LABEL = APP_PLAIN.name
CLIENT_HTTP_BIND_PROTOCOL, WSI_CREATE, WSI_DESTROY = 85, 29, 30
COMPLETED_CLIENT_HTTP, CLIENT_HTTP_DROP_PROTOCOL = 47, 76
REDIRECT_ORDER = [85, 19, 29, 24, 104, 76, 85, 29, 24, 2, 44, 46, 48, 47, 76, 45, 30]


def decoder(app: web.Application) -> LwsDecoder:
    return cast(LwsDecoder, app[PIPELINE].consumer)


def client_events(events: list[Event]) -> list[Event]:
    """The callbacks of the client pointers: those that got a CLIENT_HTTP_BIND_PROTOCOL."""
    pointers = {e.wsi for e in events if e.r == CLIENT_HTTP_BIND_PROTOCOL}
    return [e for e in events if e.r >= 0 and e.wsi in pointers]


def service_view(observer: Observer) -> dict[str, Any]:
    """What a user sees of the app in the service: wsis by role, transactions, leaks."""
    return {
        "created": counts(observer, LABEL, "created"),
        "destroyed": counts(observer, LABEL, "destroyed"),
        "transactions": {
            (role.value, code_class): n
            for (source, role, code_class), n in observer.metrics.transactions.items()
            if source == LABEL and n
        },
        "live": [w.role.value for w in observer.tracker.live_wsis() if w.context.source == LABEL],
        "leaks": [(w.role.value, w.leak) for w in observer.live.leaks],
    }


async def test_unresolvable_host_is_two_lone_85s_and_no_leak(built: None) -> None:  # noqa: F811
    udp = free_port()
    observer = Observer(Config(spans=False, udp=HostPort("127.0.0.1", udp)))
    tee = Tee(udp)
    try:
        async with run_service(build_app(observer)) as srv:

            def traffic() -> list[str]:
                args = ("--client-port", "80", "--client-host", "nonexistent.invalid")
                with run_app(APP_PLAIN, tee.endpoint, *args, preload=SHIM) as app:
                    tee.wait_for(
                        lambda ev: sum(e.r == CLIENT_HTTP_BIND_PROTOCOL for e in ev) >= 2,
                        timeout=5.0,
                    )
                check_clean_exit(app)
                return app.stdout

            stdout = await asyncio.get_running_loop().run_in_executor(None, traffic)
            await until_context_gone(observer, LABEL)
            stats = dict(decoder(srv.app).stats)
        raw = tee.wait_for(has_bye, timeout=2.0)
    finally:
        tee.close()

    # lws_client_connect_via_info() returned NULL for both (the http GET, then the ws)
    assert "CLIENT connect http failed" in stdout and "CLIENT connect ws failed" in stdout
    assert not [line for line in stdout if line.startswith("CLIENT error")]
    # the reference's lone 85: nothing else for the pointer, which the second connect reuses
    mine = client_events(raw)
    assert [e.r for e in mine] == [CLIENT_HTTP_BIND_PROTOCOL] * 2, [e.r for e in mine]
    assert mine[0].wsi == mine[1].wsi and {e.fd for e in mine} == {-1}
    assert {e.pcol for e in mine} == {"client"}

    assert service_view(observer) == {
        "created": {"listen": 1},  # the listen wsi, at its bare WSI_DESTROY
        "destroyed": {"listen": 1},
        "transactions": {},
        "live": [],
        "leaks": [],
    }
    assert stats["client_connect_failed_silently"] == 2
    assert stats.get("client_connection_errors", 0) == 0
    observer.close()


@asynccontextmanager
async def redirecting_server() -> AsyncIterator[tuple[int, int, list[tuple[str, int]]]]:
    """Two loopback ports: GET /start on the first answers 302 to /end on the second.

    Yields both ports and the (path, client port) of every request, to show the reconnect.
    """
    seen: list[tuple[str, int]] = []
    first, second = free_port(), free_port()

    async def start(request: web.Request) -> web.Response:
        seen.append((request.path, request.transport.get_extra_info("peername")[1]))  # type: ignore[union-attr]
        raise web.HTTPFound(f"http://127.0.0.1:{second}/end")

    async def end(request: web.Request) -> web.Response:
        seen.append((request.path, request.transport.get_extra_info("peername")[1]))  # type: ignore[union-attr]
        return web.Response(text="landed\n")

    app = web.Application()
    app.router.add_get("/start", start)
    app.router.add_get("/end", end)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        for port in (first, second):
            await web.TCPSite(runner, "127.0.0.1", port).start()
        yield first, second, seen
    finally:
        await runner.cleanup()


async def test_followed_redirect_is_one_client_wsi_with_two_transactions(
    built: None,  # noqa: F811
) -> None:
    udp = free_port()
    observer = Observer(Config(spans=True, udp=HostPort("127.0.0.1", udp)))
    tee = Tee(udp)
    try:
        async with run_service(build_app(observer)) as srv, redirecting_server() as redir:
            first, second, seen = redir

            def traffic() -> list[str]:
                args = ("--client-port", str(first), "--client-path", "/start")
                with run_app(
                    APP_PLAIN, tee.endpoint, *args, "--client-mode", "http", preload=SHIM
                ) as app:
                    tee.wait_for(
                        lambda ev: any(e.r == COMPLETED_CLIENT_HTTP for e in ev), timeout=5.0
                    )
                check_clean_exit(app)
                return app.stdout

            stdout = await asyncio.get_running_loop().run_in_executor(None, traffic)
            await until_context_gone(observer, LABEL)
            stats = dict(decoder(srv.app).stats)
        raw = tee.wait_for(has_bye, timeout=2.0)
    finally:
        tee.close()

    assert f"CLIENT redirect 302 http://127.0.0.1:{second}/end" in stdout, stdout
    assert "CLIENT http status=200 bytes=7" in stdout, stdout
    # the server saw the request, then the redirected one on a new connection
    assert [path for path, _ in seen] == ["/start", "/end"]
    assert seen[0][1] != seen[1][1]

    mine = client_events(raw)
    reasons = [e.r for e in mine]
    assert len({e.wsi for e in mine}) == 1, "one pointer from the first bind to the destroy"
    assert is_subsequence(REDIRECT_ORDER, reasons), reasons
    assert reasons.count(WSI_CREATE) == 2 and reasons.count(WSI_DESTROY) == 1
    drops = [e.why for e in mine if e.r == CLIENT_HTTP_DROP_PROTOCOL]
    # 4.1.6 names lws_client_reset() itself; the reference expected "client_reset"
    assert drops == ["lws_client_reset", "__lws_close_free_wsi"], drops

    assert service_view(observer) == {
        "created": {"listen": 1, "h1-client": 1},
        "destroyed": {"listen": 1, "h1-client": 1},
        # the 302 ends the first transaction: its status comes on CLIENT_HTTP_REDIRECT (104)
        "transactions": {("h1-client", "3xx"): 1, ("h1-client", "2xx"): 1},
        "live": [],
        "leaks": [],
    }
    assert stats.get("client_recreated", 0) == stats.get("client_connect_failed_silently", 0) == 0

    spans = spans_of(observer, LABEL)
    (conn,) = [sp for sp in spans if sp["name"] == "wsi h1-client"]
    txns = sorted(
        (sp for sp in spans if sp["parent_span_id"] == conn["span_id"]),
        key=lambda sp: sp["start_ns"],
    )
    assert [sp["attributes"].get("http.response.status_code") for sp in txns] == [302, 200]
    assert conn["attributes"]["lws.transactions"] == 2
    assert conn["attributes"]["network.peer.address"] == "127.0.0.1"
    for txn in txns:
        assert conn["start_ns"] <= txn["start_ns"] <= txn["end_ns"] <= conn["end_ns"]
        assert txn["trace_id"] == conn["trace_id"]
    observer.close()
