"""Backend faults: the OTLP endpoint refuses, hangs, or is slow while lwsobs is under load.

A real `lwsobs serve` exports to a real loopback receiver that misbehaves in phases. Through
every phase: /healthz and /metrics answer every probe, the span queue never exceeds its bound,
what cannot be exported is counted in lwsobs_spans_dropped_total, and export resumes as soon
as the endpoint is back. At the end every span is accounted for: exported, dropped, or still
queued. Each phase lasts 3 s here; LWSOBS_SOAK_S=600 makes each one last ten minutes.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import aiohttp

from tests.conftest import eventually
from tests.reliability.faulty_otlp import Fault, faulty_otlp
from tests.reliability.figures import latency_summary, record
from tests.reliability.service_proc import LwsProducer, Samples, lwsobs_serve, total

PHASE_S = float(os.environ.get("LWSOBS_SOAK_S", "3"))
QUEUE = 2000
TIMEOUT_MS = 1500
PHASES: list[Fault] = ["ok", "refuse", "ok", "hang", "ok", "slow", "ok"]


def facts(s: Samples) -> float:
    """Spans lwsobs produced so far: transactions, and connection spans (ended, or flagged)."""
    return (
        total(s, "lwsobs_transactions_total")
        + total(s, "lwsobs_wsi_destroyed_total")
        + total(s, "lwsobs_wsi_leaked_total")
        - total(s, "lwsobs_wsi_suspects_resolved_total")
    )


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return total(after, name, **labels) - total(before, name, **labels)


def accounted(s: Samples) -> float:
    return (
        total(s, "lwsobs_spans_exported_total")
        + total(s, "lwsobs_spans_sampled_out_total")
        + total(s, "lwsobs_spans_dropped_total")
        + total(s, "lwsobs_span_queue_size")
    )


async def run_phase(
    session: aiohttp.ClientSession, url: str, producer: LwsProducer, seconds: float
) -> tuple[list[float], list[float]]:
    """Load (200 lws connections every 0.1 s, ~4,000 spans/s) and probes for `seconds`.

    Returns the probe latencies and every span_queue_size /metrics showed."""
    latencies: list[float] = []
    queue_sizes: list[float] = []

    async def load() -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            producer.send([line for _ in range(200) for line in producer.connection()])
            await asyncio.sleep(0.1)

    async def probe() -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for path in ("/healthz", "/metrics"):
                started = time.perf_counter()
                async with session.get(url + path) as resp:
                    assert resp.status == 200
                    text = await resp.text()
                latencies.append(time.perf_counter() - started)
                if path == "/metrics":
                    for line in text.splitlines():
                        if line.startswith("lwsobs_span_queue_size "):
                            queue_sizes.append(float(line.split()[1]))
            await asyncio.sleep(0.1)

    await asyncio.gather(load(), probe())
    return latencies, queue_sizes


async def test_the_service_keeps_serving_and_counts_what_a_failing_backend_costs(
    tmp_path: Path,
) -> None:
    async with faulty_otlp(delay_s=0.25) as otlp:
        env = {
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": otlp.endpoint,
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": str(TIMEOUT_MS),
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "256",
            "LWSOBS_SPAN_QUEUE": str(QUEUE),
        }
        async with lwsobs_serve(tmp_path, env) as svc, aiohttp.ClientSession() as session:
            producer = LwsProducer("faults@test:1", svc.udp_port)
            producer.send(producer.hello())
            report: list[str] = []
            before = await svc.scrape(session)
            for phase in PHASES:
                await otlp.set_mode(phase)
                received = otlp.spans
                latencies, queue_sizes = await run_phase(session, svc.url, producer, PHASE_S)
                after = await svc.scrape(session)
                assert queue_sizes and max(queue_sizes) <= QUEUE, (phase, queue_sizes)

                failed = delta(before, after, "lwsobs_spans_dropped_total", reason="export_failed")
                full = delta(before, after, "lwsobs_spans_dropped_total", reason="queue_full")
                exported = delta(before, after, "lwsobs_spans_exported_total")
                if phase in ("refuse", "hang"):
                    assert failed > 0 and full > 0, (phase, failed, full)
                if phase in ("ok", "slow"):  # export goes on (resumes after a fault)
                    assert otlp.spans > received and exported > 0, phase
                report.append(
                    f"phase {len(report) + 1} {phase}: exported {exported:.0f}, "
                    f"export_failed {failed:.0f}, queue_full {full:.0f}, "
                    f"queue max {max(queue_sizes):.0f}/{QUEUE}, "
                    f"rss {svc.rss() / 2**20:.0f} MiB, probes {latency_summary(latencies)}"
                )
                before = after
            producer.close()
            await otlp.set_mode("ok")
            # every span produced is exported, dropped (by reason) or still queued
            final: list[Samples] = []

            async def settled() -> bool:
                final[:] = [await svc.scrape(session)]
                s = final[0]
                return total(s, "lwsobs_span_queue_size") == 0 and facts(s) == accounted(s)

            deadline = time.monotonic() + 20
            while not await settled():
                assert time.monotonic() < deadline, (facts(final[0]), accounted(final[0]))
                await asyncio.sleep(0.1)
            s = final[0]
            assert otlp.spans >= total(s, "lwsobs_spans_exported_total") > 0
            await eventually(lambda: otlp.hanging == 0)
    for line in report:
        name, _, rest = line.partition(": ")
        record(f"backend faults: {name}", rest)
    record(
        "backend faults: spans produced / exported / dropped",
        f"{facts(s):,.0f} / {total(s, 'lwsobs_spans_exported_total'):,.0f} / "
        f"{total(s, 'lwsobs_spans_dropped_total'):,.0f} (queue_full "
        f"{total(s, 'lwsobs_spans_dropped_total', reason='queue_full'):,.0f}, export_failed "
        f"{total(s, 'lwsobs_spans_dropped_total', reason='export_failed'):,.0f}); "
        f"received {otlp.spans:,}",
    )
