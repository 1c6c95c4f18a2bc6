"""The `lwsobs` command as a user runs it: a real process on a free loopback port."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port

LWSOBS = [sys.executable, "-m", "lwsobs"]


@asynccontextmanager
async def lwsobs_process(
    *args: str, env: dict[str, str] | None = None
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        *LWSOBS,
        *args,
        "--port",
        str(port),
        "--udp",
        f"127.0.0.1:{free_port()}",
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                try:
                    async with session.get(url + "/healthz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)
            else:
                raise AssertionError("lwsobs did not start")
        yield proc, url
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as resp:
        text = await resp.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return sum(
        v
        for (n, lbl), v in samples.items()
        if n == name and all(dict(lbl).get(k) == val for k, val in labels.items())
    )


async def test_demo_exercises_every_role_and_flags_a_leak() -> None:
    async with lwsobs_process("serve", "--demo", "--idle", "h1-server=1") as (proc, url):
        samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for _ in range(150):
            samples = await scrape(url)
            if (
                total(samples, "lwsobs_wsi_leaked_total", rule="idle") >= 1
                and total(samples, "lwsobs_wsi_upgrades_total", to_role="ws-server") >= 1
                and total(samples, "lwsobs_transactions_total", code_class="4xx") >= 1
            ):
                break
            await asyncio.sleep(0.1)
        assert total(samples, "lwsobs_wsi_created_total", role="listen", source="lwsobs") == 1
        assert total(samples, "lwsobs_wsi_created_total", role="h1-server", source="lwsobs") > 3
        assert total(samples, "lwsobs_wsi_upgrades_total", to_role="ws-server") >= 1
        assert ("lwsobs_wsi_live", (("role", "ws-server"), ("source", "lwsobs"))) in samples
        for code_class in ("1xx", "2xx", "4xx", "5xx"):
            assert total(samples, "lwsobs_transactions_total", code_class=code_class) >= 1
        assert total(samples, "lwsobs_wsi_leaked_total", rule="idle", role="h1-server") >= 1
        async with aiohttp.ClientSession() as session:
            async with session.get(url + "/api/leaks") as resp:
                leaks = (await resp.json())["leaks"]
            async with session.get(url + "/api/traces?limit=200") as resp:
                traces = (await resp.json())["traces"]
            async with session.get(url + "/api/wsis") as resp:
                wsis = (await resp.json())["wsis"]
        assert any(x["rule"] == "idle" and x["role"] == "h1-server" for x in leaks)
        spans = [s for t in traces for s in t["spans"]]
        pipelined = [s for s in spans if s["attributes"].get("lws.pipeline.index") == 3]
        assert pipelined, "the pipelined burst of four requests shows its fourth transaction"
        assert any(w["role"] == "listen" for w in wsis)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0


async def test_bad_configuration_is_a_clear_error() -> None:
    proc = await asyncio.create_subprocess_exec(
        *LWSOBS,
        "serve",
        "--idle",
        "h9-server=3",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 2
    assert b"unknown role 'h9-server'" in err
