"""Shutdown: SIGTERM under load, and SIGKILL then restart of a producing lws app.

SIGTERM: a real `lwsobs serve` exporting to a loopback OTLP receiver, with lws wsis open (one
of them in the middle of a transaction), idle keep-alive HTTP connections, requests in flight
and a UDP flood still arriving. It exits (code 0; the time is printed), every open span ends as
`shutdown` and reaches the receiver, nothing is flagged as a leak.

SIGKILL: the lws test app under the shim is killed; its wsis become suspects after the silence
limit; the app restarts under the same source name and its new wsis are new wsis: the old
suspects are not resolved by the new process's events, the new ones end cleanly.
"""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import sys
import time
from pathlib import Path

import aiohttp

from lwsobs.app.service import build_app
from lwsobs.config import Config, HostPort
from lwsobs.core.roles import Role
from lwsobs.observer import Observer
from tests.conftest import eventually, free_port
from tests.conftest import run_app as run_service
from tests.integration.test_shim import (
    APP_PLAIN,
    SHIM,
    built,  # noqa: F401 - the fixture that builds the shim and the test app
    curl,
    run_app,
)
from tests.otlp_receiver import OtlpReceiver, serve_otlp_receiver
from tests.reliability.faulty_otlp import faulty_otlp
from tests.reliability.figures import record
from tests.reliability.service_proc import LwsProducer, Service, lwsobs_serve, total

ROOT = Path(__file__).resolve().parents[2]
OPEN_LWS = 50
IDLE_HTTP = 5
IN_FLIGHT = 3


async def sigterm(svc: Service, guard_s: float) -> tuple[int | None, float]:
    """SIGTERM, then wait for the exit (at most `guard_s`: a hang guard, not a threshold)."""
    started = time.monotonic()
    svc.proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(svc.proc.wait(), guard_s)
    except TimeoutError:
        return None, time.monotonic() - started
    return svc.proc.returncode, time.monotonic() - started


async def test_sigterm_under_load_ends_open_spans_as_shutdown_flushes_and_exits(
    tmp_path: Path,
) -> None:
    async with serve_otlp_receiver() as otlp:
        env = {
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": otlp.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "200",
        }
        async with lwsobs_serve(tmp_path, env) as svc, aiohttp.ClientSession() as session:
            producer = LwsProducer("stopping@test:1", svc.udp_port)
            lines = producer.hello()
            for _ in range(300):
                lines += producer.connection()
            for _ in range(OPEN_LWS - 1):
                lines += producer.connection(close=False)
            in_txn = producer.connection(close=False)[:-1]  # its transaction is still running
            producer.send(lines + in_txn)
            await until(
                session,
                svc,
                lambda s: total(s, "lwsobs_wsi_live", source="stopping") >= OPEN_LWS + 1,
            )
            idle = []
            for _ in range(IDLE_HTTP):  # keep-alive connections after one request each
                reader, writer = await asyncio.open_connection("127.0.0.1", svc.port)
                writer.write(b"GET /demo/hello HTTP/1.1\r\nHost: t\r\n\r\n")
                await reader.readuntil(b"hello from lwsobs\n")
                idle.append((reader, writer))
            slow = [
                asyncio.ensure_future(session.get(svc.url + "/demo/slow?ms=1000"))
                for _ in range(IN_FLIGHT)
            ]
            flooder = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tests.reliability.flood", str(svc.udp_port), "3",
                "loaded@test:2", cwd=ROOT, stdout=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            await asyncio.sleep(0.5)  # the flood and the slow requests are under way
            returncode, took = await sigterm(svc, guard_s=30)
            answered = [await (await r).text() for r in slow]
            await flooder.wait()
            for _, writer in idle:
                writer.close()
        assert returncode == 0, svc.log()
        assert all(a.startswith("slept") for a in answered)  # in-flight requests completed
        log = svc.log()
        assert " leaked wsi " not in log and "leak suspect" not in log, log
        assert "span export did not finish" not in log, log
        await check_spans(otlp)
    record("shutdown: SIGTERM under load, exit after", f"{took:.2f} s (exit code 0)")


async def until(session: aiohttp.ClientSession, svc: Service, check: object) -> None:
    deadline = time.monotonic() + 15
    while not check(await svc.scrape(session)):  # type: ignore[operator]
        assert time.monotonic() < deadline, "the service did not reach the state in time"
        await asyncio.sleep(0.05)


async def check_spans(otlp: OtlpReceiver) -> None:
    spans = otlp.spans
    conns = [s for s in spans if s.name.startswith("wsi ")]
    assert conns and not [s for s in conns if s.attributes.get("lws.leaked")]
    reasons = {s.attributes["lws.end.reason"] for s in conns}
    assert reasons <= {"destroyed", "shutdown"}, reasons
    lws_open = [
        s
        for s in conns
        if s.attributes.get("lws.src") == "stopping@test:1"
        and s.attributes["lws.end.reason"] == "shutdown"
    ]
    assert len(lws_open) == OPEN_LWS + 1  # the open connections and the listen wsi
    own = [
        s
        for s in conns
        if s.attributes.get("lws.source", "lwsobs") == "lwsobs"
        and s.name == "wsi h1-server"
        and s.attributes["lws.end.reason"] == "shutdown"
    ]
    assert len(own) >= IDLE_HTTP
    aborted = [s for s in spans if s.attributes.get("error.type") == "aborted"]
    assert aborted  # the lws transaction cut short by the shutdown is there, ended
    record(
        "shutdown: spans flushed at SIGTERM",
        f"{len(spans):,} received; open at the signal: {len(lws_open)} lws + "
        f"{len(own)} http connections, all ended as shutdown, none leaked",
    )


async def test_sigterm_with_a_hanging_backend_exits_and_counts_the_loss(tmp_path: Path) -> None:
    """The OTLP endpoint accepts and never answers (default 10 s timeout): the span worker is
    stuck in a send when SIGTERM comes. lwsobs gives up on it after its shutdown timeout,
    aborts the send, logs how much it dropped, and exits 0."""
    async with faulty_otlp() as otlp:
        await otlp.set_mode("hang")
        env = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": otlp.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "50"}
        async with lwsobs_serve(tmp_path, env) as svc:
            producer = LwsProducer("hung@test:1", svc.udp_port)
            lines = producer.hello()
            for _ in range(2000):
                lines += producer.connection()
            producer.send(lines)
            producer.close()
            while otlp.hanging == 0:  # the worker is now stuck in a send
                await asyncio.sleep(0.02)
            returncode, took = await sigterm(svc, guard_s=30)
    assert returncode == 0, svc.log()
    assert "span export did not finish within 2.0 s of shutdown" in svc.log()
    record("shutdown: SIGTERM with a hanging OTLP backend, exit after", f"{took:.2f} s")


async def test_sigterm_with_an_open_websocket_exits_promptly(tmp_path: Path) -> None:
    async with lwsobs_serve(tmp_path) as svc, aiohttp.ClientSession() as session:
        ws = await session.ws_connect(svc.url + "/demo/ws")
        await ws.send_str("ping")
        assert (await ws.receive()).data == "ping"
        returncode, took = await sigterm(svc, guard_s=8)
        if returncode is None:
            svc.proc.kill()  # do not wait out aiohttp's shutdown timeout
            await svc.proc.wait()
        await ws.close()
        assert returncode == 0, f"no exit {took:.1f} s after SIGTERM"


# -- SIGKILL and restart of a producing lws app -----------------------------------------------


async def test_a_killed_then_restarted_app_keeps_its_identities_apart(built: None) -> None:  # noqa: F811
    udp = free_port()
    # no /proc check: the silence path (another host's producer); test_lws_service_lifecycle.py
    # covers a local kill, abandoned at once
    config = Config(
        spans=False,
        udp=HostPort("127.0.0.1", udp),
        silence_s=1.5,
        tick_s=0.1,
        process_check=False,
    )
    observer = Observer(config)
    source = "restartapp@reliability"
    env = {"LWSOBS_SOURCE": source}
    endpoint = f"udp://127.0.0.1:{udp}"
    async with run_service(build_app(observer)):
        loop = asyncio.get_running_loop()
        held: list[socket.socket] = []

        def first_life() -> None:
            with run_app(APP_PLAIN, endpoint, preload=SHIM, extra_env=env) as app:
                held.append(socket.create_connection(("127.0.0.1", app.port)))
                time.sleep(0.5)  # accepted and announced
                app.proc.send_signal(signal.SIGKILL)
                app.proc.wait(timeout=5)

        await loop.run_in_executor(None, first_life)
        ours = {"restartapp"}
        await eventually(
            lambda: (
                {(w.role.value, w.leak) for w in observer.live.leaks if w.context.source in ours}
                >= {("listen", "source_lost"), ("h1-server", "source_lost")}
            ),
            timeout=10,
        )
        first = [w for w in observer.live.leaks if w.context.source in ours]
        for sock in held:
            sock.close()

        def second_life() -> None:
            with run_app(APP_PLAIN, endpoint, preload=SHIM, extra_env=env) as app:
                for _ in range(3):  # new connections: lws may hand out the old pointers again
                    assert curl("-H", "Connection: close", f"{app.url}/hello") == "hello\n"

        await loop.run_in_executor(None, second_life)
        await eventually(
            lambda: observer.metrics.destroyed.get(("restartapp", Role.LISTEN), 0) >= 1
        )
    flagged = [w for w in observer.live.leaks if w.context.source in ours]
    assert flagged == first  # the restart flagged nothing new
    assert all(w.leak == "source_lost" and not w.live for w in first)
    assert not any(observer.metrics.resolved.values())  # no new event resolved an old suspect
    created = observer.metrics.created
    destroyed = observer.metrics.destroyed
    assert created[("restartapp", Role.H1_SERVER)] == 1 + 3
    assert destroyed.get(("restartapp", Role.H1_SERVER), 0) == 3  # the new ones, not the old
    assert destroyed.get(("restartapp", Role.LISTEN), 0) == 1
    assert not [w for w in observer.tracker.live_wsis() if w.context.source in ours]
    contexts = {w.context.name for w in first}
    # the shim names each process instance: LWSOBS_SOURCE + ":<pid>"
    assert len(contexts) == 1 and re.match(re.escape(source) + r":\d+/", next(iter(contexts)))
    observer.close()
    record(
        "shutdown: SIGKILL then restart under the same source",
        f"{len(first)} suspects after the silence limit, kept apart from the 3 new connections "
        "of the restarted app (none resolved, none new flagged)",
    )
