"""`lwsobs serve --demo` replays the shipped lws recording through its own ingest, pass after pass.

The expectations per pass come from the recording itself, replayed offline (`lwsobs.app.replay`):
the live service must show exactly that many wsis, transactions and leaks per completed pass,
and every line must arrive (none rejected, lost or duplicated).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from lwsobs.app.demo_lws import DEMO_NAME, RECORDING, attach_lws_demo, load_recording
from lwsobs.app.replay import replay, report
from lwsobs.app.service import PIPELINE, build_app
from lwsobs.config import Config
from lwsobs.observer import Observer
from lwsobs.sources.lws.wire import BYE, HELLO, Event, parse_line
from tests.conftest import eventually, free_port, run_app

LWS_ROLES = {"listen", "h1-server", "ws-server", "h1-client", "ws-client", "h2-server", "h2-stream"}
CERTAIN = ("identity_reused", "context_destroyed")
WAIT_S = 60.0  # bound on waiting for two passes (each lasts a few seconds)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def recording_path() -> Path:
    return Path(str(resources.files("lwsobs").joinpath("data", RECORDING)))


def per_pass() -> dict[str, Any]:
    """What one pass of the recording amounts to, by the offline replay."""
    data = report(replay(recording_path(), Observer(Config(spans=False))))
    return {
        "rows": {r["role"]: r for r in data["sources"]},
        "leaks": Counter((x["role"], x["rule"]) for x in data["leaks"]),
        "lines": len(load_recording()),
    }


# -- the shipped recording ------------------------------------------------------------------------


def test_the_shipped_recording_is_wire_v1_and_replays_with_one_certain_leak() -> None:
    raw = recording_path().read_bytes()
    assert len(raw) < 300_000  # small enough to ship
    events: list[Event] = []
    for line in raw.splitlines():
        parsed = parse_line(line)
        assert isinstance(parsed, Event), (parsed, line[:200])
        events.append(parsed)
    by_src: dict[str, list[Event]] = {}
    for event in events:
        by_src.setdefault(event.src, []).append(event)
    assert len(by_src) >= 2
    for src, mine in by_src.items():
        assert src.startswith(f"{DEMO_NAME}@")
        assert [e.seq for e in mine] == list(range(len(mine))), src  # no gap left by the edit
        assert mine[0].r == HELLO and mine[-1].r == BYE, src
    data = report(replay(recording_path(), Observer(Config(spans=False))))
    rows = {r["role"]: r for r in data["sources"]}
    assert {r["source"] for r in data["sources"]} == {DEMO_NAME}
    assert set(rows) == LWS_ROLES
    assert all(r["live_at_end"] == 0 for r in rows.values())
    assert rows["listen"]["created"] == rows["listen"]["destroyed"] == 2  # server and h2 server
    assert rows["h2-stream"]["created"] == rows["h2-stream"]["destroyed"] > 0
    assert rows["ws-server"]["destroyed"] >= 1 and rows["ws-client"]["destroyed"] >= 1
    assert rows["h1-client"]["created"] >= 3  # the app's own client and two refused ones
    assert rows["h1-server"]["transactions"] > rows["h1-server"]["created"]  # keep-alive
    (leak,) = data["leaks"]
    assert leak["role"] == "h1-server" and leak["rule"] in CERTAIN and not leak["uncertain"]
    assert data["ingest"] == {"lines": len(events), "rejected": {}, "lost": 0, "duplicates": 0}


# -- the service ----------------------------------------------------------------------------------


@asynccontextmanager
async def serve_demo(logfile: Path) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    port = free_port()
    with logfile.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "lwsobs",
            "serve",
            "--demo",
            "--port",
            str(port),
            "--udp",
            f"127.0.0.1:{free_port()}",
            "--demo-lws-period",
            "1",
            env={k: v for k, v in os.environ.items() if not k.startswith(("LWSOBS_", "OTEL_"))},
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )
    try:
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def scrape(session: aiohttp.ClientSession, url: str) -> Samples:
    async with session.get(url + "/metrics") as resp:
        text = await resp.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def by(samples: Samples, name: str, key: str, **labels: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for (n, lbl), value in samples.items():
        found = dict(lbl)
        if n == name and all(found.get(k) == v for k, v in labels.items()):
            out[found[key]] = out.get(found[key], 0) + value
    return out


async def between_passes(url: str, logfile: Path, passes: int) -> Samples:
    """A scrape taken while no demo producer is live, after at least `passes` passes."""
    async with aiohttp.ClientSession() as session:
        deadline = asyncio.get_running_loop().time() + WAIT_S
        while True:
            try:
                samples = await scrape(session, url)
            except aiohttp.ClientError:
                samples = {}
            destroyed = by(samples, "lwsobs_wsi_destroyed_total", "role", source=DEMO_NAME)
            idle = samples.get(("lwsobs_ingest_sources", ())) == 0
            if idle and destroyed.get("listen", 0) >= 2 * passes:
                return samples
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"no {passes} passes: {logfile.read_text()[-3000:]}")
            await asyncio.sleep(0.05)


async def test_serve_demo_replays_the_recording_through_its_udp_ingest(tmp_path: Path) -> None:
    expected = per_pass()
    logfile = tmp_path / "lwsobs.log"
    async with serve_demo(logfile) as (proc, url):
        samples = await between_passes(url, logfile, passes=2)
        async with aiohttp.ClientSession() as session, session.get(url + "/api/leaks") as resp:
            leaks = (await resp.json())["leaks"]
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    rows = expected["rows"]
    destroyed = by(samples, "lwsobs_wsi_destroyed_total", "role", source=DEMO_NAME)
    passes = destroyed["listen"] / rows["listen"]["destroyed"]
    assert passes >= 2 and passes == int(passes)
    created = by(samples, "lwsobs_wsi_created_total", "role", source=DEMO_NAME)
    live = by(samples, "lwsobs_wsi_live", "role", source=DEMO_NAME)
    transactions = by(samples, "lwsobs_transactions_total", "role", source=DEMO_NAME)
    assert set(live) == LWS_ROLES and not any(live.values())  # every role, none left live
    for role, row in rows.items():
        assert created.get(role, 0) == passes * row["created"], role
        assert destroyed.get(role, 0) == passes * row["destroyed"], role
        assert transactions.get(role, 0) == passes * row["transactions"], role
    # exactly the deliberate leak, once per pass, by its rule
    leaked = {
        (dict(lbl)["role"], dict(lbl)["rule"]): value
        for (name, lbl), value in samples.items()
        if name == "lwsobs_wsi_leaked_total" and dict(lbl)["source"] == DEMO_NAME
    }
    assert leaked == {key: passes * n for key, n in expected["leaks"].items()}
    (role, rule), *_ = expected["leaks"]
    ours = [x for x in leaks if x["source"] == DEMO_NAME]
    assert len(ours) == passes
    assert all(
        (x["role"], x["rule"], x["certain"]) == (role, rule, True)
        and x["context"].startswith(f"{DEMO_NAME}@server/")
        for x in ours
    )
    # every line arrived over UDP: none rejected, lost or taken for a duplicate
    lines = by(samples, "lwsobs_ingest_lines_total", "transport")
    assert lines["udp"] == passes * expected["lines"]
    assert not any(by(samples, "lwsobs_ingest_rejected_total", "reason").values())
    assert not any(by(samples, "lwsobs_ingest_lost_total", "source").values())
    assert not any(by(samples, "lwsobs_ingest_duplicates_total", "source").values())
    assert samples[("lwsobs_ingest_dropped_total", (("reason", "overload"),))] == 0


async def test_with_udp_off_the_recording_is_fed_in_process() -> None:
    observer = Observer(Config(spans=False, udp=None))
    app = build_app(observer)
    pipeline = app[PIPELINE]
    attach_lws_demo(app, observer.config, pipeline, period_s=1.0)
    lines = len(load_recording())
    async with run_app(app):
        await eventually(
            lambda: pipeline.live_sources == 0 and pipeline.lines["file"] >= 2 * lines,
            timeout=WAIT_S,
        )
        fed = pipeline.lines["file"]
        leaks = [w for w in observer.live.leaks if w.context.source == DEMO_NAME]
    passes = fed // lines
    assert fed == passes * lines and passes >= 2
    assert pipeline.lines["udp"] == 0 and pipeline.lost_total == 0
    assert len(leaks) == passes
    assert all(w.role.value == "h1-server" and w.leak in CERTAIN for w in leaks)
    observer.close()
