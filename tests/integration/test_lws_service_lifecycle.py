"""What a user of lws sees in lwsobs when apps crash, restart, refuse, serve files, or pass through.

Real Debian lws 4.1.6 test apps under the shim, the live service path (UDP -> pipeline ->
decoder -> Tracker -> /metrics); every assertion is on what the service shows:

- a crash (SIGSEGV) or kill -9 ends the app's wsis as abandoned, never as leaks, and the live
  counts return to zero; a restart under the same LWSOBS_SOURCE starts a new run beside it;
- two instances with the same LWSOBS_SOURCE at once are kept apart;
- a request lws refuses itself in a pipelined burst is a transaction of its own (403, refused);
- an lws file server's listen sockets are live before they accept, statuses are on its
  transactions, and created, upgrades and ended balance the live count per role;
- a shim that passes through (an lws it does not know) shows as unobserved, with its reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp

from lwsobs.app.service import build_app
from lwsobs.config import Config, HostPort
from lwsobs.observer import Observer
from tests.conftest import eventually, free_port
from tests.conftest import run_app as run_service
from tests.integration.test_shim import (
    APP_DIR,
    APP_PLAIN,
    APP_TIMEOUT_S,
    SHIM,
    built,  # noqa: F401 - the fixture that builds the shim and the test app
    curl,
    run_app,
)

SOURCE = "lws_testapp_plain"
FAKE_VERSION = APP_DIR / "build" / "libfakever.so"


@contextlib.asynccontextmanager
async def service(**config: Any) -> AsyncIterator[tuple[Observer, int, str]]:
    """The lwsobs service on free ports: (observer, its UDP port, its URL)."""
    udp = free_port()
    observer = Observer(Config(spans=False, udp=HostPort("127.0.0.1", udp), **config))
    try:
        async with run_service(build_app(observer)) as srv:
            yield observer, udp, srv.url
    finally:
        observer.close()


async def in_thread(work: Callable[[asyncio.AbstractEventLoop], Any]) -> Any:
    """Run blocking app traffic off the loop; `work` gets the loop for `on_loop`."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, work, loop)


def on_loop(loop: asyncio.AbstractEventLoop, read: Callable[[], Any]) -> Any:
    """Read the service's state from the traffic thread, on the loop that writes it."""

    async def call() -> Any:
        return read()

    return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout=10)


async def scrape(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as resp:
        return await resp.text()


def sample(metrics: str, name: str, **labels: str) -> float:
    """The value of one sample of the exposition (0 when absent)."""
    for line in metrics.splitlines():
        if not line.startswith(name + "{"):
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def app_wsis(observer: Observer, source: str = SOURCE) -> list[Any]:
    return [w for w in observer.tracker.live_wsis() if w.context.source == source]


def abandoned(observer: Observer, source: str = SOURCE) -> dict[tuple[str, str], int]:
    return {
        (role.value, reason): n
        for (src, role, reason), n in observer.metrics.abandoned.items()
        if src == source
    }


def crash_request(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /crash HTTP/1.1\r\nHost: x\r\n\r\n")
        with contextlib.suppress(OSError):
            s.recv(100)


async def test_a_crashed_app_is_abandoned_not_leaking(built: None) -> None:  # noqa: F811
    async with service(silence_s=30.0) as (observer, udp, url):
        held: list[socket.socket] = []

        def crash(loop: asyncio.AbstractEventLoop) -> int | None:
            with run_app(APP_PLAIN, f"udp://127.0.0.1:{udp}", "--crashable", preload=SHIM) as app:
                held.append(socket.create_connection(("127.0.0.1", app.port)))  # keep-alive
                time.sleep(0.3)
                crash_request(app.port)
                app.proc.wait(timeout=APP_TIMEOUT_S)
            return app.returncode

        assert await in_thread(crash) == -signal.SIGSEGV
        await eventually(lambda: abandoned(observer).get(("listen", "crashed")) == 1, 10)
        metrics = await scrape(url)
        for sock in held:
            sock.close()
    assert app_wsis(observer) == []  # at once: not after the 30 s silence limit
    assert abandoned(observer) == {("listen", "crashed"): 1, ("h1-server", "crashed"): 2}
    assert not observer.live.leaks
    assert sample(metrics, "lwsobs_wsi_abandoned_total", reason="crashed", role="h1-server") == 2
    assert sample(metrics, "lwsobs_lws_processes_gone_total", reason="crashed") == 1
    assert sample(metrics, "lwsobs_wsi_live", source=SOURCE, role="h1-server") == 0


async def test_kill_9_and_a_quick_restart_under_the_same_source(built: None) -> None:  # noqa: F811
    """The dead run's wsis end as exited (its pid is gone); the new run is observed beside."""
    async with service(silence_s=30.0, tick_s=0.2) as (observer, udp, url):
        env = {"LWSOBS_SOURCE": "shop"}
        endpoint = f"udp://127.0.0.1:{udp}"
        held: list[socket.socket] = []

        def kill_and_restart(loop: asyncio.AbstractEventLoop) -> None:
            with run_app(APP_PLAIN, endpoint, preload=SHIM, extra_env=env) as first:
                held.append(socket.create_connection(("127.0.0.1", first.port)))
                time.sleep(0.3)
                first.proc.send_signal(signal.SIGKILL)
                first.proc.wait(timeout=5)
            with run_app(APP_PLAIN, endpoint, preload=SHIM, extra_env=env) as second:
                assert curl(f"{second.url}/hello") == "hello\n"
                time.sleep(0.3)
                live.append(on_loop(loop, lambda: len(app_wsis(observer, "shop"))))

        live: list[int] = []
        await in_thread(kill_and_restart)
        await eventually(lambda: abandoned(observer, "shop").get(("listen", "exited")) == 1, 10)
        metrics = await scrape(url)
        for sock in held:
            sock.close()
    assert abandoned(observer, "shop") == {("listen", "exited"): 1, ("h1-server", "exited"): 1}
    assert live == [1], "only the second run's listen socket while it ran"
    assert not observer.live.leaks, [(w.role, w.leak) for w in observer.live.leaks]
    assert sample(metrics, "lwsobs_lws_processes_gone_total", reason="exited") == 1


async def test_two_instances_with_one_source_name_are_kept_apart(built: None) -> None:  # noqa: F811
    async with service() as (observer, udp, _):
        env = {"LWSOBS_SOURCE": "twin"}
        endpoint = f"udp://127.0.0.1:{udp}"
        seen: dict[str, int] = {}

        def both(loop: asyncio.AbstractEventLoop) -> None:
            with run_app(APP_PLAIN, endpoint, preload=SHIM, extra_env=env) as a:
                with run_app(APP_PLAIN, endpoint, preload=SHIM, extra_env=env) as b:
                    held = socket.create_connection(("127.0.0.1", a.port))
                    assert curl(f"{b.url}/hello") == "hello\n"
                    time.sleep(0.3)
                    seen["both"] = on_loop(loop, lambda: len(app_wsis(observer, "twin")))
                    seen["contexts"] = on_loop(loop, lambda: twin_contexts(observer))
                time.sleep(0.3)  # b stopped cleanly: its context is gone, a's is not
                seen["a"] = on_loop(loop, lambda: len(app_wsis(observer, "twin")))
                held.close()

        await in_thread(both)
        await eventually(lambda: not app_wsis(observer, "twin"), 10)
    # two listen sockets and a's open connection, in a context of each process
    assert seen == {"both": 3, "contexts": 2, "a": 2}, seen
    assert not observer.live.leaks and abandoned(observer, "twin") == {}


def twin_contexts(observer: Observer) -> int:
    return len(
        {ctx.name.split("/")[0] for ctx in observer.tracker.contexts if ctx.source == "twin"}
    )


async def test_a_request_lws_refuses_in_a_pipelined_burst(built: None) -> None:  # noqa: F811
    async with service() as (observer, udp, url):
        replies: list[bytes] = []

        def burst(loop: asyncio.AbstractEventLoop) -> None:
            with run_app(APP_PLAIN, f"udp://127.0.0.1:{udp}", preload=SHIM) as app:
                with socket.create_connection(("127.0.0.1", app.port), timeout=5) as s:
                    s.sendall(
                        b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\nFOO / HTTP/1.1\r\nHost: x\r\n\r\n"
                    )
                    data = b""
                    with contextlib.suppress(OSError):
                        while chunk := s.recv(4096):
                            data += chunk
                replies.append(data)

        await in_thread(burst)
        await eventually(lambda: sample_refused(observer) == 1, 10)
        metrics = await scrape(url)
    assert re.findall(rb"HTTP/1\.1 (\d+)", replies[0]) == [b"200", b"403"]
    txns = {
        (role.value, code): n
        for (src, role, code), n in observer.metrics.transactions.items()
        if src == SOURCE
    }
    assert txns == {("h1-server", "2xx"): 1, ("h1-server", "4xx"): 1}, txns
    assert sample(metrics, "lwsobs_transactions_refused_total", source=SOURCE) == 1
    assert not observer.live.leaks


def sample_refused(observer: Observer) -> int:
    return sum(n for (src, _), n in observer.metrics.refused.items() if src == SOURCE)


async def test_a_file_server_is_seen_whole_and_balances(built: None, tmp_path: Path) -> None:  # noqa: F811
    (tmp_path / "index.html").write_text("<p>hi</p>\n")
    second = free_port()
    async with service() as (observer, udp, url):
        before: list[str] = []

        def serve(loop: asyncio.AbstractEventLoop) -> None:
            with run_app(
                APP_PLAIN,
                f"udp://127.0.0.1:{udp}",
                "--mount",
                str(tmp_path),
                "--second-port",
                str(second),
                preload=SHIM,
            ) as app:
                time.sleep(0.3)
                before.append(asyncio.run(scrape(url)))
                assert curl(f"{app.url}/") == "<p>hi</p>\n"
                assert curl("-o", "/dev/null", "-w", "%{http_code}", f"{app.url}/nope") == "404"

        await in_thread(serve)
        await eventually(lambda: not app_wsis(observer), 10)
        after = await scrape(url)
    # both listen sockets, before either accepted anything; the second never does
    assert sample(before[0], "lwsobs_wsi_live", source=SOURCE, role="listen") == 2
    txns = {
        code: n
        for (src, _, code), n in observer.metrics.transactions.items()
        if src == SOURCE and n
    }
    assert txns == {"2xx": 1, "4xx": 1}, txns
    assert not observer.live.leaks
    # per role: created + upgrades in - upgrades out - ended = live, in the exposition itself
    for role in ("listen", "h1-server"):
        created = sample(after, "lwsobs_wsi_created_total", source=SOURCE, role=role)
        ended = sum(
            sample(after, "lwsobs_wsi_ended_total", source=SOURCE, role=role, end=end)
            for end in ("destroyed", "shutdown", "leaked", "abandoned")
        )
        live = sample(after, "lwsobs_wsi_live", source=SOURCE, role=role)
        assert created > 0 and created - ended == live == 0, (role, created, ended, live)


async def test_a_shim_passing_through_shows_as_unobserved(built: None) -> None:  # noqa: F811
    async with service() as (observer, udp, url):
        during: list[str] = []

        def run(loop: asyncio.AbstractEventLoop) -> None:
            preload = Path(f"{FAKE_VERSION}:{SHIM}")
            with run_app(APP_PLAIN, f"udp://127.0.0.1:{udp}", preload=preload) as app:
                assert curl(f"{app.url}/hello") == "hello\n"
                time.sleep(0.3)
                during.append(asyncio.run(scrape(url)))

        await in_thread(run)
        await asyncio.sleep(0.3)
        after = await scrape(url)
    labels = {"source": SOURCE, "reason": "version_mismatch"}
    assert sample(during[0], "lwsobs_lws_sources_unobserved", **labels) == 1
    assert sample(after, "lwsobs_lws_sources_unobserved", **labels) == 0  # it said BYE
    assert app_wsis(observer) == []
