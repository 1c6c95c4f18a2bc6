"""The status page at GET /, loaded by a real headless Chromium (Debian's `chromium`).

Chromium runs the page's script against a live lwsobs on loopback and prints the DOM it
rendered (`--dump-dom` after a virtual-time budget); the tests assert on that DOM. Traffic is
controlled by the test: raw sockets for keep-alive, idle and pipelined connections, and an
aiohttp client for the websocket. The observed app and the app serving the page share one
Observer but not a source, so the browser's own connections never touch the compared counts.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lwsobs.app.service import build_app
from lwsobs.app.status import render_page
from lwsobs.app.status.snapshot import live_counts
from lwsobs.config import Config
from lwsobs.core.model import Wsi
from lwsobs.core.roles import Role
from lwsobs.observer import Observer
from tests.conftest import Running, eventually, hello_app, run_app
from tests.integration.chromium import Node, devtools, parse, render
from tests.integration.test_cli import lwsobs_process

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
JAEGER = "http://jaeger.test:16686"
HOSTILE_PATH = (
    '/hello/<script>document.body.dataset.pwned=1</script>"><img/src/onerror='
    "document.body.dataset.pwned=2>"
)
HOSTILE_SOURCE = '<i id="src-x">app</i>'


def live_cell(dom: Node, role: str, source: str) -> int:
    return int(dom.one("td", data_role=role, data_source=source).text)


# -- traffic -------------------------------------------------------------------------------


async def scrape_live(url: str, source: str) -> dict[str, int]:
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as resp:
        text = await resp.text()
    return {
        s.labels["role"]: int(s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "lwsobs_wsi_live" and s.labels["source"] == source
    }


async def raw_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str
) -> bytes:
    """One keep-alive request on an open connection; returns the response body."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    match = re.search(rb"(?i)content-length: *(\d+)", head)
    assert match is not None, head
    return await reader.readexactly(int(match.group(1)))


async def send_and_close(app: Running, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(app.host, app.port)
    writer.write(payload)
    data = await reader.read()  # the server closes after the last request
    writer.close()
    await writer.wait_closed()
    return data


def wsi_by_local_port(port: int, wsis: list[Wsi]) -> Wsi | None:
    """The wsi whose peer is the client socket bound to `port`."""
    return next((w for w in wsis if isinstance(w.peer, tuple) and w.peer[1] == port), None)


def flagged(observer: Observer, port: int) -> Wsi | None:
    return wsi_by_local_port(port, list(observer.live.leaks))


def live_of(observer: Observer, source: str) -> dict[str, int]:
    """The source's non-zero live counts by role, straight from the Tracker's table."""
    counts = live_counts(observer)
    return {role: n for (src, role), (n, _) in counts.items() if src == source and n}


def finished(observer: Observer, wsi: Wsi | None) -> bool:
    ring = observer.connections
    return ring is not None and wsi is not None and any(r.wsi is wsi for r in ring.finished(200))


@asynccontextmanager
async def served(
    config: Config, source: str = "app"
) -> AsyncIterator[tuple[Observer, Running, Running]]:
    """An observer, the lwsobs service app (serving the page) and an observed app."""
    observer = Observer(config)
    try:
        async with (
            run_app(build_app(observer, ingest=False)) as service,
            run_app(hello_app(observer, source=source)) as app,
        ):
            yield observer, service, app
    finally:
        observer.close()


def fast_config(**kwargs: Any) -> Config:
    """In-memory spans exported every 50 ms, idle checks every 100 ms."""
    return Config(spans=True, otlp=False, span_delay_s=0.05, tick_s=0.1, **kwargs)


async def pipelined_connection(observer: Observer, app: Running) -> Wsi:
    """Three requests in one write behind a slow first one; returns the finished wsi."""
    burst = (
        b"GET /slow?s=0.2 HTTP/1.1\r\nHost: t\r\n\r\n"
        b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n"
        b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection(app.host, app.port)
    port = writer.get_extra_info("sockname")[1]
    writer.write(burst)
    assert (await reader.read()).count(b"HTTP/1.1 200") == 3
    writer.close()
    await writer.wait_closed()
    wsi: list[Wsi | None] = [None]

    def done() -> bool:
        ring = observer.connections
        assert ring is not None
        wsi[0] = wsi_by_local_port(port, [r.wsi for r in ring.finished(200)])
        return wsi[0] is not None

    await eventually(done)
    assert wsi[0] is not None
    return wsi[0]


# -- tests ---------------------------------------------------------------------------------


async def test_counts_match_metrics_and_leaks_and_waterfall_are_shown() -> None:
    config = fast_config(idle_limits={Role.H1_SERVER: 1.0}, jaeger_ui=JAEGER)
    async with served(config) as (observer, service, app):
        # an idle connection that never sends a byte: flagged as an idle suspect
        _, idle_writer = await asyncio.open_connection(app.host, app.port)
        idle_port = idle_writer.get_extra_info("sockname")[1]
        await eventually(lambda: flagged(observer, idle_port) is not None)
        idle = flagged(observer, idle_port)
        assert idle is not None and idle.leak == "idle"
        # three keep-alive connections with two requests each, held open
        held = [await asyncio.open_connection(app.host, app.port) for _ in range(3)]
        for reader, writer in held:
            assert await raw_request(reader, writer, "/hello") == b"hello"
            assert await raw_request(reader, writer, "/items/7") == b"hello"
        piped = await pipelined_connection(observer, app)
        async with aiohttp.ClientSession() as session, session.ws_connect(app.url + "/ws") as ws:
            await ws.send_str("ping")
            assert (await ws.receive()).data == "ping"
            expected = {"listen": 1, "h1-server": 4, "ws-server": 1}
            await eventually(lambda: live_of(observer, "app") == expected)
            await eventually(lambda: finished(observer, idle))
            dom = await render(service.url + "/")
            metrics = await scrape_live(service.url, "app")
        for _, writer in [*held, (None, idle_writer)]:
            writer.close()

    assert int(dom.one("body").attrs["data-refreshes"]) >= 1
    # counts by role: the page and /metrics agree, and both are what the test holds open
    for role, n in expected.items():
        assert metrics[role] == n
    for role, n in metrics.items():
        assert live_cell(dom, role, "app") == n, role
    # the idle leak is listed with its rule, and marked in the waterfall
    leak_row = dom.one("tbody", id="leaks-body").one("tr", data_wsi_id=idle.id)
    assert leak_row.attrs["data-rule"] == "idle"
    assert [td.text for td in leak_row.find_all("td")][3:5] == ["idle", "suspect"]
    leaked = dom.one("div", cls="wf-row", data_conn_id=idle.id)
    assert "leaked" in leaked.classes and leaked.attrs["data-leak"] == "idle"
    assert leaked.find_all(cls="wf-conn")[0].classes >= {"wf-conn", "leaked"}
    # the pipelined connection: three transaction bars, queue wait shown for the waiting ones
    row = dom.one("div", cls="wf-row", data_conn_id=piped.id)
    txns = row.find_all(cls="wf-txn")
    assert [t.attrs["data-index"] for t in txns] == ["0", "1", "2"]
    assert [bool(t.find_all(cls="wf-queue")) for t in txns] == [False, True, True]
    assert all(t.find_all(cls="wf-work") for t in txns)
    # held keep-alive connections are live rows with their two transactions each
    live_rows = [r for r in dom.find_all("div", cls="wf-row") if "live" in r.classes]
    assert sum(len(r.find_all(cls="wf-txn")) == 2 for r in live_rows) >= 3
    # each connection links to its trace in Jaeger
    link = row.one("a", cls="trace-link")
    assert link.attrs["href"] == f"{JAEGER}/trace/{observer.ids.wsi_trace_id(piped):032x}"
    # the live wsi table lists every live wsi of the observed app
    table = dom.one("tbody", id="wsis-body").find_all("tr")
    app_rows = [r for r in table if r.find_all("td")[2].text == "app"]
    assert len(app_rows) == sum(expected.values())


async def test_hostile_paths_and_names_are_shown_as_text() -> None:
    async with served(fast_config(), source=HOSTILE_SOURCE) as (observer, service, app):
        request = f"GET {HOSTILE_PATH} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        reply = await send_and_close(app, request.encode())
        assert reply.startswith(b"HTTP/1.1 404")
        ring = observer.connections
        assert ring is not None
        await eventually(lambda: any(r.txns for r in ring.finished(10)))
        [recorded] = [r for r in ring.finished(10) if r.txns]
        async with aiohttp.ClientSession() as session, session.get(service.url + "/") as resp:
            served_html = await resp.text()
            csp = resp.headers["Content-Security-Policy"]
        dom = await render(service.url + "/")

    # the server's own first view escapes the source name
    assert HOSTILE_SOURCE not in served_html
    assert "&lt;i id=&quot;src-x&quot;&gt;app&lt;/i&gt;" in served_html
    assert "default-src 'none'" in csp and "'unsafe-inline'" not in csp
    # after the script ran: the path and the name are text, no element was injected
    assert int(dom.one("body").attrs["data-refreshes"]) >= 1
    assert "data-pwned" not in dom.one("body").attrs
    assert dom.find_all("img") == [] and dom.find_all("i") == []
    assert len(dom.find_all("script")) == 1
    row = dom.one("div", cls="wf-row", data_conn_id=recorded.wsi.id)
    assert f"GET {HOSTILE_PATH} 404" in row.one("span", cls="wf-req").text
    assert HOSTILE_SOURCE in dom.one("tbody", id="wsis-body").text
    assert dom.find_all("td", data_source=HOSTILE_SOURCE)


@pytest.mark.parametrize("jaeger_ui", [JAEGER + "/", None], ids=["configured", "absent"])
async def test_jaeger_links_follow_the_configuration(jaeger_ui: str | None) -> None:
    config = fast_config(jaeger_ui=jaeger_ui and jaeger_ui.rstrip("/"))
    async with served(config) as (observer, service, app):
        piped = await pipelined_connection(observer, app)
        dom = await render(service.url + "/")
    links = dom.find_all("a", cls="trace-link")
    row = dom.one("div", cls="wf-row", data_conn_id=piped.id)
    if jaeger_ui is None:
        assert links == []
        assert not any("/trace/" in a.attrs.get("href", "") for a in dom.find_all("a"))
        return
    assert links and all(
        re.fullmatch(re.escape(JAEGER) + r"/trace/[0-9a-f]{32}", a.attrs["href"]) for a in links
    )
    trace_id = f"{observer.ids.wsi_trace_id(piped):032x}"
    assert row.one("a", cls="trace-link").attrs["href"] == f"{JAEGER}/trace/{trace_id}"
    assert all(a.attrs["target"] == "_blank" and "noopener" in a.attrs["rel"] for a in links)


async def test_demo_page_renders_every_section_and_is_saved_as_a_screenshot() -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "status-page-demo.png"
    shot.unlink(missing_ok=True)
    env = {"LWSOBS_JAEGER_UI": JAEGER}
    async with lwsobs_process("serve", "--demo", "--idle", "h1-server=1", env=env) as (proc, url):
        async with aiohttp.ClientSession() as session:

            async def get(path: str) -> Any:
                async with session.get(url + path) as resp:
                    return await resp.json()

            for _ in range(200):  # a leak needs the 1 s idle limit to pass once
                leaks, conns = await get("/api/leaks"), await get("/api/connections")
                idle = [x for x in leaks["leaks"] if x["rule"] == "idle"]
                if idle and conns["count"]:
                    break
                await asyncio.sleep(0.05)
        dom = await render(url + "/", budget_ms=5000, screenshot=shot)
        proc.terminate()
        await proc.wait()

    assert int(dom.one("body").attrs["data-refreshes"]) >= 2
    assert "offline" not in dom.one("body").classes
    cards = dom.one(id="roles").find_all("div", cls="role-card")
    assert any(c.attrs["data-role"] == "h1-server" for c in cards)
    assert all(c.find_all("polyline") for c in cards)  # every role has its sparkline
    assert dom.one("table", id="role-sources").find_all("td", data_source="lwsobs")
    assert dom.one("tbody", id="leaks-body").find_all("tr", data_rule="idle")
    rows = dom.one(id="waterfall").find_all("div", cls="wf-row")
    assert rows and any(r.find_all(cls="wf-txn") for r in rows)
    assert dom.one("tbody", id="wsis-body").find_all("tr", data_role="listen")
    assert dom.find_all("a", cls="trace-link")
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 20_000


SORT_SCRIPT = """
(async () => {
  for (let i = 0; i < 400 && !(Number(document.body.dataset.refreshes) >= 1); i++) {
    await new Promise((done) => setTimeout(done, 25));
  }
  const column = (key) => {
    const th = document.querySelector(`#wsis th[data-key="${key}"]`);
    const index = [...th.parentNode.children].indexOf(th);
    th.click();
    const rows = [...document.querySelectorAll("#wsis-body tr")];
    return { sort: th.getAttribute("aria-sort"), ids: rows.map((tr) => tr.dataset.wsiId),
      cells: rows.map((tr) => tr.children[index].textContent) };
  };
  return ["role", "role", "transactions", "transactions", "source", "peer", "age_s"].map(column);
})()
"""


async def test_the_live_table_sorts_by_the_clicked_header() -> None:
    async with served(fast_config(), source="sorted-app") as (observer, service, app):
        held = [await asyncio.open_connection(app.host, app.port) for _ in range(3)]
        for n, (reader, writer) in enumerate(held):
            for _ in range(n):  # 0, 1 and 2 transactions
                assert await raw_request(reader, writer, "/hello") == b"hello"
        async with aiohttp.ClientSession() as session, session.ws_connect(app.url + "/ws"):
            await eventually(lambda: observer.tracker.live_count() >= 6)
            async with devtools(service.url + "/") as page:
                role_up, role_down, txn_down, txn_up, source, peer, age = await page.evaluate(
                    SORT_SCRIPT
                )
        for _, writer in held:
            writer.close()

    roles = role_up["cells"]
    assert {"listen", "h1-server", "ws-server"} <= set(roles)
    assert role_up["sort"] == "ascending" and roles == sorted(roles)
    assert role_down["sort"] == "descending" and role_down["cells"] == sorted(roles, reverse=True)
    counts = [int(c) for c in txn_down["cells"]]
    assert txn_down["sort"] == "descending" and counts == sorted(counts, reverse=True)
    assert {0, 1, 2} <= set(counts)
    up = [int(c) for c in txn_up["cells"]]
    assert txn_up["sort"] == "ascending" and up == sorted(counts)
    assert source["cells"] == sorted(source["cells"]) and "sorted-app" in source["cells"]
    peers = [p for p in peer["cells"] if p != "\u2014"]  # the listen socket has no peer
    assert peers == sorted(peers) and len(peers) >= 4
    assert age["sort"] == "descending" and sorted(age["ids"]) == sorted(role_up["ids"])


def test_the_page_is_served_without_external_assets() -> None:
    observer = Observer(fast_config())
    try:
        html = render_page(observer, 0)
    finally:
        observer.close()
    dom = parse(html)
    assert not [n for n in dom.walk() if n.attrs.get("src")]
    assert not [n for n in dom.find_all("link")]
    hrefs = [a.attrs["href"] for a in dom.find_all("a")]
    assert hrefs and all(h.startswith("/") for h in hrefs)
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")
