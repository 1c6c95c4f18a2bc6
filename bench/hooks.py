"""Instructions per request of lwsobs' aiohttp per-request hooks alone, under callgrind.

`bench/instructions.py --breakdown` weighs the hooks end to end (h2load, a server process, four
callgrind runs of a minute or more). This is the fast dev loop for the hooks themselves: one
process runs an aiohttp app on 127.0.0.1 under `valgrind --tool=callgrind` and h2load (not
traced) sends it N and then 3N GETs on one keep-alive connection; the difference divided by 2N
is the cost of one request with start-up cancelled out. aiohttp costs the same in every
configuration, so the difference between two configurations is what lwsobs adds:

  plain       aiohttp alone
  off         lwsobs installed, every per-request hook removed (what is left is per connection)
  on          the hooks as installed (compiled or interpreted, as this interpreter imports them)

The Tracker's bind/drop are replaced by no-ops (`--noop python`, bench/server.py's
`nothing(*args, **kwargs)`, or `--noop builtin`, a C callable) unless `--bookkeeping`: their cost
is the core's, not the hooks'. `--detail` turns spans on, so route and traceparent are looked up.
`--pipeline K` keeps K requests in flight (pipelined) instead of one.
Each number is the mean over a few PYTHONHASHSEED values (`--seeds`): CPython's type attribute
cache is indexed by name hashes, so one seed can make two hot lookups collide and evict each
other on every request, which moves a configuration by ~1,000 instructions for no reason of its
own. The start-up heap is frozen out of the cyclic GC (`gc.freeze()`; `--gc` does not): a full
collection over it costs millions of instructions and lands at another request in every run.
Prints a table; asserts nothing.

    .venv/bin/python bench/hooks.py [--configs plain,off,on] [--requests 500] [--detail]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ("plain", "off", "on")
_TOTAL = re.compile(rb"^summary:\s+(\d+)", re.MULTILINE)
TRACEPARENT = "traceparent: 00-" + "1" * 32 + "-" + "2" * 16 + "-01"


def nothing(*args: Any, **kwargs: Any) -> None:
    return None


def build_app(config: str, detail: bool, noop: str, bookkeeping: bool) -> Any:
    """The app of one configuration; lwsobs' switches are set before it is instrumented."""
    from aiohttp import web

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/", hello)
    if config == "plain":
        return app

    from server import remove_request_hooks  # bench/server.py, beside this script

    from lwsobs.config import Config
    from lwsobs.core.tracker import Tracker
    from lwsobs.instrument import instrument
    from lwsobs.observer import Observer

    if not bookkeeping:
        from lwsobs.build import build_kind

        if build_kind() != "interpreted":  # a compiled class cannot have methods replaced
            sys.exit("without --bookkeeping this needs the interpreted build")
        stub: Any = nothing if noop == "python" else "".format  # C: takes anything, cheap
        Tracker.bind = Tracker.drop = stub  # type: ignore[method-assign]
    if config == "off":
        remove_request_hooks()
    observer = Observer(Config(spans=detail, otlp=False, recent_traces=0, recent_connections=0))
    instrument(app, observer, metrics_path=None)
    return app


async def serve(app: Any, requests: int, pipeline: int) -> None:
    """Serve `requests` GETs from h2load on one keep-alive connection, `pipeline` in flight.

    h2load runs as a child process, which callgrind does not follow: only the server's
    instructions are counted, and no client code shares (and disturbs) the server's hot paths.
    """
    from aiohttp import web

    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    site = web.SockSite(runner, sock)
    await site.start()
    host, port = sock.getsockname()
    load = await asyncio.create_subprocess_exec(
        "h2load",
        "--h1",
        "-n",
        str(requests),
        "-c1",
        "-m",
        str(pipeline),
        "-H",
        TRACEPARENT,
        f"http://{host}:{port}/?a=1",
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await load.communicate()
    await runner.cleanup()
    if f"{requests} succeeded".encode() not in out:
        sys.exit(f"h2load did not complete every request:\n{out.decode()}")


def child(args: argparse.Namespace) -> None:
    app = build_app(args.child, args.detail, args.noop, args.bookkeeping)
    if not args.gc:
        gc.collect()
        gc.freeze()  # collections still run, over what the requests allocate, not over start-up
    asyncio.run(serve(app, args.requests, args.pipeline))


def instructions(args: argparse.Namespace, config: str, requests: int, seed: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        argv = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            __file__,
            "--child",
            config,
            "--requests",
            str(requests),
            "--pipeline",
            str(args.pipeline),
            "--noop",
            args.noop,
        ]
        argv += ["--detail"] * args.detail + ["--bookkeeping"] * args.bookkeeping
        argv += ["--gc"] * args.gc
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": seed}
        subprocess.run(argv, env=env, cwd=ROOT, check=True, capture_output=True)
        match = _TOTAL.search(out.read_bytes())
        if match is None:
            raise RuntimeError(f"no callgrind summary for {config}")
        return int(match.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--requests", type=int, default=500, help="N: runs N and 3N requests")
    parser.add_argument("--pipeline", type=int, default=1)
    parser.add_argument("--detail", action="store_true", help="spans on: route and traceparent")
    parser.add_argument("--bookkeeping", action="store_true", help="keep Tracker.bind/drop")
    parser.add_argument("--noop", choices=("python", "builtin"), default="python")
    parser.add_argument("--seeds", default="1,2", help="PYTHONHASHSEED values to average over")
    parser.add_argument("--gc", action="store_true", help="do not freeze the start-up heap")
    parser.add_argument("--child", choices=CONFIGS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return 0
    for tool in ("valgrind", "h2load"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is needed (Debian: valgrind, nghttp2-client)")
    configs = [c for c in args.configs.split(",") if c]
    if set(configs) - set(CONFIGS):
        sys.exit(f"unknown configurations: {sorted(set(configs) - set(CONFIGS))}")
    n = args.requests - args.requests % args.pipeline
    results: list[tuple[str, float]] = []
    seeds = args.seeds.split(",")
    for config in configs:  # a configuration named twice runs twice: a check on the noise
        per_seed = [
            instructions(args, config, 3 * n, seed) - instructions(args, config, n, seed)
            for seed in seeds
        ]
        results.append((config, sum(per_seed) / len(per_seed) / (2 * n)))
        print(config, "per seed:", ", ".join(f"{x / (2 * n):,.0f}" for x in per_seed), flush=True)
    named = dict(results)
    base = named.get("off", named.get("plain"))
    print(
        f"\ninstructions per request (callgrind, {n} vs {3 * n} requests, pipeline "
        f"{args.pipeline}, detail {args.detail}, bookkeeping {args.bookkeeping}, "
        f"noop {args.noop}, hash seeds {args.seeds}, gc {args.gc})"
    )
    print(f"{'configuration':<14} {'Ir/request':>12} {'vs off':>10}")
    for config, value in results:
        extra = "" if base is None else f"{value - base:>+10,.0f}"
        print(f"{config:<14} {value:>12,.0f} {extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
