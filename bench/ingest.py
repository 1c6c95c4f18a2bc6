"""Ingest benchmark: lws callbacks per second through the pipeline and through UDP.

A synthetic recording in the shape lws produces (accept, keep-alive transactions, close) is
built in memory; then:
- `pipeline`: IngestPipeline.feed_lines -> LwsDecoder -> Tracker -> metrics (and spans when on),
  in this process, no I/O: the decode cost alone;
- `udp`: the same lines, batched ~8 KiB per datagram as the shim does, sent from a second
  process on core 1 to the service's UDP receiver on core 0, counted as applied;
- `exported`: the pipeline with spans exported over OTLP/HTTP as the service does it (the
  export worker thread alongside, same core) to bench/otlp_sink.py on core 1, timed until the
  receiver holds every span, and checked: received == exported, nothing dropped;
- `json.loads` of the same lines as the baseline nothing can beat in Python;
- the parser alone (lines/s): judge_line, parse_line (msgspec), parse_datagram.
Targets (issue 4): >= 200,000 callbacks/s with metrics, >= 50,000 transactions/s with spans
exported.
Usage: .venv/bin/python bench/ingest.py [--lines N] [--repeat N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import sys
import time
from collections.abc import Callable

T0 = time.time_ns()
RATE = 250_000  # lines/s the UDP sender paces itself to (--rate; bursts of one datagram)
TARGET_CALLBACKS = 200_000  # over UDP into the service (the libwebsockets issue)
TARGET_PIPELINE = 300_000  # in process: pipeline + decoder + metrics (the one-source issue)
TARGET_TRANSACTIONS = 60_000


def recording(n_lines: int, src: str = "benchapp@host:1") -> tuple[list[bytes], int]:
    """NDJSON lines of connections with 4 keep-alive transactions each; and the transactions."""
    lines: list[bytes] = []
    seq = 0
    txns = 0

    def ev(r: int, wsi: str | None = None, **fields: object) -> None:
        nonlocal seq
        line: dict[str, object] = {
            "v": 1,
            "src": src,
            "seq": seq,
            "t": T0 + seq * 1000,
            "r": r,
            "ctx": "55aa00",
            "fd": 9,
            "vh": "default",
            "pcol": "http",
        }
        if wsi is not None:
            line["wsi"] = wsi
        line.update(fields)
        lines.append(json.dumps(line, separators=(",", ":")).encode())
        seq += 1

    ev(-1, lws="4.1.6", pid=1, host="host")
    conn = 0
    while len(lines) < n_lines:
        wsi = f"55d1c2{conn % 64:04x}"
        ev(17, "55d1c00001", afd=9, peer="127.0.0.1:40000")
        ev(29, wsi, fd=-1)
        ev(19, wsi)
        for i in range(4):
            ev(18, wsi, uri=f"/item/{i}", method="GET")
            ev(49, wsi)
            ev(12, wsi, uri=f"/item/{i}")
            ev(16, wsi)
            ev(50, wsi, why="lws_http_transaction_completed")
            txns += 1
        ev(5, wsi)
        ev(30, wsi)
        conn += 1
    return lines, txns


def datagrams(lines: list[bytes], limit: int = 8192) -> list[bytes]:
    out: list[bytes] = []
    batch: list[bytes] = []
    size = 0
    for line in lines:
        if size + len(line) + 1 > limit and batch:
            out.append(b"\n".join(batch) + b"\n")
            batch, size = [], 0
        batch.append(line)
        size += len(line) + 1
    if batch:
        out.append(b"\n".join(batch) + b"\n")
    return out


def bench_pipeline(lines: list[bytes], txns: int, spans: bool) -> dict[str, float]:
    from lwsobs.config import Config
    from lwsobs.observer import Observer
    from lwsobs.sources.lws.decoder import LwsDecoder
    from lwsobs.sources.lws.pipeline import IngestPipeline

    observer = Observer(Config(spans=spans, recent_traces=0, span_queue=1 << 30))
    pipeline = IngestPipeline(LwsDecoder(observer.tracker))
    bodies = datagrams(lines, 1 << 20)
    started = time.perf_counter()
    for body in bodies:
        pipeline.feed_lines(body, "file", T0)
    decoded = time.perf_counter() - started
    spent = decoded
    if observer.spans is not None:
        started = time.perf_counter()
        queued = len(observer.spans._queue)
        observer.spans._drain()  # the export worker's share: sampling (no exporter configured)
        spent += time.perf_counter() - started
        assert queued > 0
    observer.close()
    return {"callbacks_per_s": len(lines) / spent, "transactions_per_s": txns / spent}


def bench_exported(lines: list[bytes], txns: int) -> dict[str, float]:
    """Spans exported to a real OTLP receiver; the clock stops when it has every one."""
    from run import Pinning, Sink

    from lwsobs.config import Config
    from lwsobs.observer import Observer
    from lwsobs.sources.lws.decoder import LwsDecoder
    from lwsobs.sources.lws.pipeline import IngestPipeline

    sink = Sink(Pinning("0", "1") if (os.cpu_count() or 1) >= 2 else Pinning(None, None))
    try:
        env = {
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": sink.endpoint,
            "LWSOBS_RECENT_TRACES": "0",
            "LWSOBS_SPAN_QUEUE": str(1 << 22),  # the worker may lag the feed: keep everything
        }
        observer = Observer(Config.from_env(env))
        assert observer.spans is not None and observer.config.otlp
        observer.spans.start()
        pipeline = IngestPipeline(LwsDecoder(observer.tracker))
        bodies = datagrams(lines, 1 << 16)
        started = time.perf_counter()
        for body in bodies:
            pipeline.feed_lines(body, "file", T0)
        while not observer.spans.flush(timeout_s=5.0):
            if time.perf_counter() - started > 300:
                raise RuntimeError("the span export did not finish within 300 s")
        spent = time.perf_counter() - started
        observer.close()  # ends what is still open (the listen wsi) and exports it too
        exported = observer.spans.exported
        dropped = sum(observer.spans.dropped.values())
        received = sink.count()["spans"]
    finally:
        sink.close()
    return {
        "transactions_per_s": txns / spent,
        "callbacks_per_s": len(lines) / spent,
        "exported": float(exported),
        "received": float(received),
        "dropped": float(dropped),
    }


def bench_parse(lines: list[bytes]) -> dict[str, float]:
    """Lines/s of the parser alone: the judge and the msgspec path line by line, parse_datagram
    on shim-sized datagrams and on one body, and json.loads (no checks, dicts) for scale."""
    from lwsobs.sources.lws import wire

    body = b"\n".join(lines) + b"\n"
    small = datagrams(lines)

    def timed(run: Callable[[], object], n: int = len(lines)) -> float:
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - started)
        return n / best

    judge, parse_line = wire.judge_line, wire.parse_line
    sample = lines[: max(1, len(lines) // 10)]  # the judge is slow: a tenth of the lines
    return {
        "judge": timed(lambda: [judge(line) for line in sample], len(sample)),
        "line": timed(lambda: [parse_line(line) for line in lines]),
        "datagrams": timed(lambda: [wire.parse_datagram(d) for d in small]),
        "body": timed(lambda: wire.parse_datagram(body)),
        "json": timed(lambda: [json.loads(line) for line in lines]),
    }


def bench_json(lines: list[bytes]) -> float:
    started = time.perf_counter()
    for line in lines:
        json.loads(line)
    return len(lines) / (time.perf_counter() - started)


async def bench_udp(lines: list[bytes], rate: int) -> dict[str, float]:
    from lwsobs.config import Config, HostPort
    from lwsobs.observer import Observer
    from lwsobs.sources.lws.decoder import LwsDecoder
    from lwsobs.sources.lws.pipeline import IngestPipeline
    from lwsobs.sources.lws.receivers import run_ingest

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = Config(spans=False, udp=HostPort("127.0.0.1", port))
    observer = Observer(config)
    pipeline = IngestPipeline(LwsDecoder(observer.tracker))
    async with run_ingest(pipeline, config, tick_s=1.0):
        payload = b"\0".join(datagrams(lines))
        sender = await asyncio.create_subprocess_exec(
            "taskset",
            "-c",
            "1",
            sys.executable,
            __file__,
            "--send",
            str(port),
            "--rate",
            str(rate),
            stdin=asyncio.subprocess.PIPE,
        )
        started = time.perf_counter()
        await sender.communicate(payload)
        deadline = started + 60
        while pipeline.lines["udp"] + pipeline.lost_total < len(lines) - 1:
            if time.perf_counter() > deadline:
                break
            await asyncio.sleep(0.01)
        spent = time.perf_counter() - started
    applied = pipeline.lines["udp"]
    observer.close()
    return {
        "callbacks_per_s": applied / spent,
        "lost": float(pipeline.lost_total),
        "applied": float(applied),
    }


def send(port: int, rate: int) -> None:
    """Child: send the datagrams from stdin (NUL-separated) as fast as the socket takes them."""
    payload = sys.stdin.buffer.read()
    started = time.perf_counter()
    sent_lines = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for datagram in payload.split(b"\0"):
            sock.sendto(datagram, ("127.0.0.1", port))
            sent_lines += datagram.count(b"\n")
            ahead = sent_lines / rate - (time.perf_counter() - started)
            if ahead > 0:
                time.sleep(ahead)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=300_000)
    parser.add_argument("--rate", type=int, default=RATE, help="UDP sender pace, lines/s")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved runs per row")
    parser.add_argument("--send", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.send:
        send(args.send, args.rate)
        return
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {0})
    import logging

    logging.getLogger("lwsobs").setLevel(logging.ERROR)
    lines, txns = recording(args.lines)
    parse = bench_parse(lines)
    runs: dict[str, list[float]] = {}
    exports: list[dict[str, float]] = []
    udps: list[dict[str, float]] = []
    for _ in range(args.repeat):  # interleaved, so a noisy spell hits every row alike
        runs.setdefault("json", []).append(bench_json(lines))
        metrics = bench_pipeline(lines, txns, spans=False)
        runs.setdefault("metrics", []).append(metrics["callbacks_per_s"])
        spans = bench_pipeline(lines, txns, spans=True)
        runs.setdefault("spans", []).append(spans["transactions_per_s"])
        exports.append(bench_exported(lines, txns))
        runs.setdefault("exported", []).append(exports[-1]["transactions_per_s"])
        udps.append(asyncio.run(bench_udp(lines, args.rate)))
        runs.setdefault("udp", []).append(udps[-1]["callbacks_per_s"])
    print(
        f"lwsobs ingest bench: {len(lines):,} lws callback lines, {txns:,} transactions, "
        f"python {sys.version.split()[0]}, 2 CPUs (receiver on core 0, sender on core 1), "
        f"median of {args.repeat} interleaved runs (min-max)"
    )
    base = statistics.median(runs["json"])
    rows = [
        ("baseline: json.loads per line", "json", None),
        ("pipeline, metrics only", "metrics", TARGET_PIPELINE),
        ("pipeline, spans sampled (transactions/s)", "spans", None),
        ("spans exported over OTLP (transactions/s)", "exported", TARGET_TRANSACTIONS),
        (f"UDP into the service (sent at {args.rate:,}/s)", "udp", TARGET_CALLBACKS),
    ]
    for name, key, target in rows:
        rate = statistics.median(runs[key])
        spread = f"({min(runs[key]):,.0f}-{max(runs[key]):,.0f})"
        verdict = (
            ""
            if target is None
            else (
                f"target {target:,}/s: {'met' if rate >= target else 'NOT met'}; "
                f"{rate / base:.2f}x of json.loads"
            )
        )
        print(f"  {name:<42} {rate:>9,.0f}/s {spread:<19} {verdict}")
    for udp in udps:
        print(f"  UDP: applied {udp['applied']:,.0f}, lost (sequence gaps) {udp['lost']:,.0f}")
    verified = all(e["received"] == e["exported"] and not e["dropped"] for e in exports)
    for exported in exports:
        print(
            f"  OTLP: exported {exported['exported']:,.0f}, received "
            f"{exported['received']:,.0f}, dropped {exported['dropped']:,.0f}"
        )
    print(f"  OTLP delivery: {'VERIFIED' if verified else 'MISMATCH'} in every run")
    print(
        f"  parser alone, lines/s: judge_line {parse['judge']:,.0f}, parse_line (msgspec) "
        f"{parse['line']:,.0f}, parse_datagram {parse['datagrams']:,.0f} (8 KiB datagrams) "
        f"{parse['body']:,.0f} (one body); json.loads {parse['json']:,.0f}"
    )
    if not verified:
        sys.exit("the OTLP receiver did not get every exported span, or spans were dropped")


if __name__ == "__main__":
    main()
