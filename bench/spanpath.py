"""Instructions per transaction of the span export path, under callgrind (noise-free).

The whole path runs in one process, as in the service: a Tracker binds and drops transactions
on a few keep-alive connections, the real SpanSink queues each one and its worker thread samples
(parentbased_always_on, the default) and hands batches of 512 to the exporters, the OtlpExporter
POSTing to a loopback receiver (bench/otlp_sink.py, a separate process that decodes every body
and counts spans, so a run that loses a span fails). Each part runs under
`valgrind --tool=callgrind` for N and 3N transactions; the difference divided by 2N is the cost
of one transaction, start-up and shutdown cancelled out.

Parts: `base` (Tracker only: the bind/drop every part pays), `none` (SpanSink without
exporters: queueing and sampling), `recent` (RecentConnections only), `encode` (the OTLP encoder,
nothing sent), `otlp` (OtlpExporter only), `all` (RecentConnections + OtlpExporter, the
service's default with an OTLP endpoint). It measures the build this interpreter imports
(compiled or interpreted: `lwsobs.build_kind()`); run it from each build to compare them.

Usage: python bench/spanpath.py [--parts all,base] [-n 2048]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from run import PYTHON, ROOT, Pinning, Sink, clean_env

PARTS = ("base", "none", "recent", "encode", "otlp", "all")
MODES = ("build",)  # what this interpreter imports; a build is chosen when installing
CONNECTIONS = 10
T0 = 1_795_713_864_949_553_093
_TOTAL = re.compile(rb"^summary:\s+(\d+)", re.MULTILINE)


def child(part: str, count: int, endpoint: str) -> int:
    """Run `count` transactions through the span path; print what the sink saw as JSON."""
    sys.path.insert(0, str(ROOT))
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased

    from lwsobs.core.ids import Ids
    from lwsobs.core.roles import Role
    from lwsobs.core.tracker import Tracker
    from lwsobs.sinks.spans.builder import SpanBuilder
    from lwsobs.sinks.spans.otlp_exporter import OtlpExporter
    from lwsobs.sinks.spans.otlp_http import OtlpHttpConfig
    from lwsobs.sinks.spans.recent_connections import RecentConnections
    from lwsobs.sinks.spans.sink import Fact, FactExporter, SpanSink

    class EncodeOnly:
        """The OTLP exporter's encoder, with nothing sent."""

        def __init__(self, otlp: OtlpExporter) -> None:
            self.encoder = otlp.encoder
            self.bytes = 0

        def export(self, facts: Sequence[Fact]) -> bool:
            self.bytes += len(self.encoder.encode(facts))
            return True

        def shutdown(self) -> None:
            pass

    builder = SpanBuilder(Ids(0x5EED), ParentBased(ALWAYS_ON))
    otlp = OtlpExporter(builder, {"service.name": "spanpath"}, OtlpHttpConfig(endpoint=endpoint))
    exporters: list[FactExporter] = []
    if part in ("recent", "all"):
        exporters.append(RecentConnections())
    if part in ("otlp", "all"):
        exporters.append(otlp)
    if part == "encode":
        exporters.append(EncodeOnly(otlp))
    tracker = Tracker(epoch_ns=T0)
    spans = None
    if part != "base":
        # no timer wake-ups under valgrind's slowness: full batches only, then the final flush
        spans = SpanSink(builder, exporters, delay_s=3600.0)
        tracker.add_sink(spans)
        spans.start()
    ctx = tracker.context("spanpath", "server")
    wsis = [
        tracker.open(ctx, Role.H1_SERVER, T0 + c, peer=("127.0.0.1", 40000 + c))
        for c in range(CONNECTIONS)
    ]
    now = T0 + 1000
    for i in range(count):
        wsi = wsis[i % CONNECTIONS]
        tracker.bind(wsi, now + 500, now, "GET", "/")
        tracker.drop(wsi, now + 900, 200, "/")
        now += 1000
    for wsi in wsis:
        tracker.destroy(wsi, now)
    stats = {}
    if spans is not None:
        spans.shutdown(timeout_s=600.0)
        stats = spans.stats()
    print(json.dumps(stats))
    return 0


def measure(part: str, mode: str, count: int, sink: Sink) -> int:
    """Total instructions of one child run; checks every span reached the receiver."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        env = clean_env()
        argv = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            PYTHON,
            str(Path(__file__).resolve()),
            "--child",
            part,
            "-n",
            str(count),
            "--endpoint",
            sink.endpoint,
        ]
        sink.reset()
        done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{part}/{mode} failed:\n{done.stderr.decode()[-3000:]}")
        stats = json.loads(done.stdout.decode().strip().splitlines()[-1] or "{}")
        expected = count + CONNECTIONS
        if part != "base" and (
            stats["exported"] != expected or stats["dropped"] or stats["sampled_out"]
        ):
            raise RuntimeError(f"{part}/{mode}: expected {expected} exported, got {stats}")
        if part in ("otlp", "all"):
            received = sink.count()
            if received["spans"] != expected or received["rejected"]:
                raise RuntimeError(f"{part}/{mode}: receiver got {received}, not {expected}")
        match = _TOTAL.search(out.read_bytes())
        if match is None:
            raise RuntimeError(f"no callgrind summary for {part}/{mode}")
        return int(match.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="base,all")
    parser.add_argument("--modes", default="build")
    parser.add_argument("-n", type=int, default=2048, help="N (the runs are N and 3N)")
    parser.add_argument("--child", choices=PARTS, help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.n, args.endpoint)
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is needed (Debian: valgrind)")
    parts = [p for p in args.parts.split(",") if p]
    modes = [m for m in args.modes.split(",") if m]
    unknown = sorted(set(parts) - set(PARTS)) + sorted(set(modes) - set(MODES))
    if unknown:
        sys.exit(f"unknown parts or modes: {unknown} (parts: {PARTS}, modes: {MODES})")
    sink = Sink(Pinning(None, None))
    results: dict[tuple[str, str], float] = {}
    try:
        for mode in modes:
            for part in parts:
                small = measure(part, mode, args.n, sink)
                large = measure(part, mode, 3 * args.n, sink)
                results[(part, mode)] = (large - small) / (2 * args.n)
                print(f"  {part}/{mode}: {results[(part, mode)]:,.0f}", file=sys.stderr)
    finally:
        sink.close()
    print(f"\ninstructions per transaction (callgrind, {args.n} vs {3 * args.n} transactions)")
    print(f"{'part':<10} {'mode':<6} {'Ir/txn':>10} {'over base':>10}")
    for (part, mode), value in results.items():
        base = results.get(("base", mode))
        extra = "" if base is None or part == "base" else f"{value - base:>10,.0f}"
        print(f"{part:<10} {mode:<6} {value:>10,.0f} {extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
