"""Instructions per request under callgrind: the noise-free companion of `bench/run.py`.

Throughput on two shared cores moves by 10-20% from one run to the next; instruction counts do
not. Each configuration's server (bench/server.py, the same process the HTTP bench measures)
runs under `valgrind --tool=callgrind`, which counts every instruction of every thread (the span
exporter's worker included), for two request counts; the difference divided by the difference in
requests is the cost of one request with start-up, warm-up and shutdown cancelled out. The ratio
plain/config is what throughput would be if every instruction cost the same, a useful upper
bound for the throughput ratio (cache misses and IPC make the real one a little lower).

`--breakdown` adds lwsobs-metrics variants with parts switched off (LWSOBS_BENCH_DISABLE), to
say where lwsobs' instructions go: the aiohttp hooks themselves, or the core's bookkeeping.
`--keep DIR` keeps every callgrind output there; `bench/callgrind_diff.py` then says which C
functions (the interpreter's included) the extra instructions of a configuration are spent in.

Prints a table; asserts nothing. Usage: python bench/instructions.py [--configs a,b] [--breakdown]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from run import (
    CONFIGS,
    PYTHON,
    ROOT,
    Pinning,
    Sink,
    free_port,
    server_env,
    stop,
    wait_until_serving,
)

SMALL, LARGE = 1000, 4000
CONNECTIONS = 10
START_TIMEOUT_S = 120.0  # Python under valgrind starts about 50 times slower
BREAKDOWN = (
    ("lwsobs-metrics", "bookkeeping"),  # hooks installed, Tracker.bind/drop do nothing
    ("lwsobs-metrics", "hooks"),  # every per-request hook removed: connections only
)
_TOTAL = re.compile(rb"^summary:\s+(\d+)", re.MULTILINE)


def instructions(
    config: str, requests: int, sink: Sink, disable: str | None, keep: Path | None = None
) -> int:
    """Total instructions of one server process serving `requests` keep-alive GETs."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        port = free_port()
        env = server_env(config, sink, Path(tmp) / "stats.json")
        if disable:
            env["LWSOBS_BENCH_DISABLE"] = disable
        argv = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            PYTHON,
            str(ROOT / "bench" / "server.py"),
            config,
            str(port),
        ]
        proc = subprocess.Popen(
            argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            url = f"http://127.0.0.1:{port}/"
            if not wait_until_serving(url, proc, START_TIMEOUT_S):
                raise RuntimeError(f"{config} did not start under valgrind")
            load = subprocess.run(
                ["h2load", "--h1", "-n", str(requests), "-c", str(CONNECTIONS), url],
                capture_output=True,
                check=True,
            )
            if f"{requests} succeeded".encode() not in load.stdout:
                raise RuntimeError(f"h2load did not complete every request:\n{load.stdout!r}")
        finally:
            problem = stop(proc)
        if problem:
            raise RuntimeError(f"{config}: {problem}")
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(out, keep / f"{config}-{disable or 'all'}-{requests}.callgrind")
        match = _TOTAL.search(out.read_bytes())
        if match is None:
            raise RuntimeError(f"no callgrind summary for {config}")
        return int(match.group(1))


def per_request(
    config: str, sink: Sink, disable: str | None = None, keep: Path | None = None
) -> float:
    small = instructions(config, SMALL, sink, disable, keep)
    large = instructions(config, LARGE, sink, disable, keep)
    return (large - small) / (LARGE - SMALL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--breakdown", action="store_true")
    parser.add_argument("--keep", type=Path, help="keep the callgrind outputs in this directory")
    args = parser.parse_args()
    for tool in ("valgrind", "h2load"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is needed (Debian: valgrind, nghttp2-client)")
    configs = [c for c in args.configs.split(",") if c]
    unknown = sorted(set(configs) - set(CONFIGS))
    if unknown:
        sys.exit(f"unknown configurations: {unknown}")
    runs: list[tuple[str, str | None]] = [("plain", None)]
    runs += [(c, None) for c in configs if c != "plain"]
    if args.breakdown:
        runs += list(BREAKDOWN)
    sink = Sink(Pinning(None, None))
    try:
        results = {(c, d): per_request(c, sink, d, args.keep) for c, d in runs}
    finally:
        sink.close()
    plain = results[("plain", None)]
    print(f"\ninstructions per request (callgrind, {SMALL} vs {LARGE} requests, h2load --h1 -c10)")
    print(f"{'configuration':<40} {'Ir/request':>12} {'vs plain':>9} {'extra Ir':>9}")
    for (config, disable), value in results.items():
        name = config if disable is None else f"{config} without {disable}"
        print(f"{name:<40} {value:>12,.0f} {plain / value:>8.2f}x {value - plain:>9,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
