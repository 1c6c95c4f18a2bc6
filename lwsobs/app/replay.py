"""`lwsobs replay FILE`: run a recorded wire-v1 event stream through the decoder, offline.

The same pipeline as live ingest (validation, sequence checks, the lws decoder, the Tracker),
fed from a file of NDJSON lines, then a lifecycle report per source and role and a table of the
flagged wsis. Wsis still live when the recording ends are reported as such, not as leaks: the
recording simply stopped. Wsis of a process that is gone (a crash, or a restart of the program
that found the old run quiet) are abandoned, apart from leaks.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from lwsobs.clock import now_ns
from lwsobs.core.policy import NS
from lwsobs.observer import Observer
from lwsobs.sinks.live import format_peer
from lwsobs.sources.lws.decoder import LwsDecoder
from lwsobs.sources.lws.pipeline import IngestPipeline

CHUNK = 1 << 20


def chunks(stream: BinaryIO) -> Iterator[bytes]:
    """Whole lines, about a megabyte at a time (a partial last line is kept for the next)."""
    tail = b""
    while block := stream.read(CHUNK):
        block = tail + block
        cut = block.rfind(b"\n")
        if cut < 0:
            tail = block
            continue
        yield block[: cut + 1]
        tail = block[cut + 1 :]
    if tail:
        yield tail


@dataclass
class ReplayResult:
    observer: Observer
    pipeline: IngestPipeline
    decoder: LwsDecoder


def replay(path: Path, observer: Observer) -> ReplayResult:
    decoder = LwsDecoder(observer.tracker)
    pipeline = IngestPipeline(decoder)
    observer.collector.extra.append(pipeline.families)
    with path.open("rb") as stream:
        for block in chunks(stream):
            pipeline.feed_lines(block, "file", now_ns())
    return ReplayResult(observer, pipeline, decoder)


def report(result: ReplayResult) -> dict[str, Any]:
    """The lifecycle per source and role, the flagged wsis, and the ingest counts."""
    metrics = result.observer.metrics
    rows: dict[tuple[str, str], dict[str, int]] = {}

    def row(source: str, role: str) -> dict[str, int]:
        return rows.setdefault(
            (source, role),
            {
                "created": 0,
                "destroyed": 0,
                "live_at_end": 0,
                "transactions": 0,
                "leaked": 0,
                "abandoned": 0,
            },
        )

    for (source, role), n in metrics.created.items():
        row(source, role.value)["created"] += n
    for (source, role), n in metrics.destroyed.items():
        row(source, role.value)["destroyed"] += n
    for (source, role, _), n in metrics.transactions.items():
        row(source, role.value)["transactions"] += n
    for (source, role, _), n in metrics.leaked.items():
        row(source, role.value)["leaked"] += n
    for (source, role, _), n in metrics.abandoned.items():
        row(source, role.value)["abandoned"] += n
    for wsi in result.observer.tracker.live_wsis():
        row(wsi.context.source, wsi.role.value)["live_at_end"] += 1
    leaks = []
    for wsi in result.observer.live.leaks:
        end = wsi.span_end_ns or wsi.created_ns
        leaks.append(
            {
                "id": wsi.id,
                "role": wsi.role.value,
                "rule": wsi.leak,
                "age_s": round((end - wsi.created_ns) / NS, 3),
                "transactions": wsi.transactions,
                "peer": format_peer(wsi.peer),
                "uncertain": bool(wsi.attrs and wsi.attrs.get("lws.leak.uncertain")),
            }
        )
    pipeline = result.pipeline
    return {
        "sources": [
            {"source": source, "role": role, **counts}
            for (source, role), counts in sorted(rows.items())
        ],
        "leaks": leaks,
        "ingest": {
            "lines": sum(pipeline.lines.values()),
            "rejected": {str(reason): n for (_, reason), n in pipeline.rejected.items()},
            "lost": pipeline.lost_total,
            "duplicates": pipeline.duplicates_total,
        },
        "decoder": dict(result.decoder.stats),
    }


def format_report(data: dict[str, Any]) -> str:
    lines = ["lifecycle per source and role:"]
    header = f"  {'source':<20} {'role':<10} {'created':>8} {'destroyed':>9} {'live@end':>8}"
    lines.append(header + f" {'txns':>8} {'leaked':>6} {'abandoned':>9}")
    for r in data["sources"]:
        lines.append(
            f"  {r['source']:<20} {r['role']:<10} {r['created']:>8} {r['destroyed']:>9} "
            f"{r['live_at_end']:>8} {r['transactions']:>8} {r['leaked']:>6} {r['abandoned']:>9}"
        )
    lines.append(f"flagged wsis: {len(data['leaks'])}")
    for leak in data["leaks"]:
        mark = " (uncertain: lines were lost)" if leak["uncertain"] else ""
        lines.append(
            f"  {leak['id']:<28} {leak['role']:<10} {leak['rule']:<18} age {leak['age_s']}s "
            f"txns {leak['transactions']} peer {leak['peer']}{mark}"
        )
    ingest = data["ingest"]
    lines.append(
        f"ingest: {ingest['lines']} lines, rejected {sum(ingest['rejected'].values())} "
        f"{json.dumps(ingest['rejected'], sort_keys=True)}, lost {ingest['lost']}, "
        f"duplicates {ingest['duplicates']}"
    )
    return "\n".join(lines) + "\n"
