"""The `lwsobs` command: `serve` (optionally with `--demo`), `demo`, and `replay FILE`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from lwsobs.app.demo import DEMO_IDLE_LIMIT_S, attach_demo
from lwsobs.app.demo_lws import DEFAULT_PERIOD_S, attach_lws_demo
from lwsobs.app.replay import format_report, replay, report
from lwsobs.app.service import PIPELINE, build_app
from lwsobs.config import Config, ConfigError, check_unix_path, parse_udp
from lwsobs.core.policy import parse_idle_limits
from lwsobs.core.roles import Role
from lwsobs.observer import Observer

log = logging.getLogger("lwsobs")
# How long a SIGTERM waits for handlers still running (aiohttp's default is 60 s): an
# observability service must get out of the way quickly and still end its spans as shutdown.
SHUTDOWN_TIMEOUT_S = 3.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lwsobs", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, helptext in (
        ("serve", "run the lwsobs service"),
        ("demo", "run the service with demo traffic (same as serve --demo)"),
    ):
        cmd = sub.add_parser(name, help=helptext)
        cmd.add_argument("--host", default=os.environ.get("LWSOBS_HOST", "127.0.0.1"))
        cmd.add_argument("--port", type=int, default=int(os.environ.get("LWSOBS_PORT", "8080")))
        cmd.add_argument(
            "--demo",
            action="store_true",
            default=name == "demo",
            help="drive realistic traffic at the service itself and replay a recorded lws app",
        )
        cmd.add_argument(
            "--demo-lws-period",
            metavar="SECONDS",
            type=_period,
            default=DEFAULT_PERIOD_S,
            help="with --demo: start a pass of the recorded lws traffic this often "
            f"(default {DEFAULT_PERIOD_S:g})",
        )
        cmd.add_argument(
            "--idle",
            metavar="ROLE=SECONDS,...",
            default=None,
            help="idle limits per role, e.g. h1-server=30,ws-server=off",
        )
        cmd.add_argument(
            "--udp",
            metavar="HOST:PORT|off",
            default=None,
            help="where producers send wire-v1 datagrams (LWSOBS_UDP, default 127.0.0.1:7682)",
        )
        cmd.add_argument(
            "--unix",
            metavar="PATH",
            default=None,
            help="a unix datagram socket for producers, mode 0600 (LWSOBS_UNIX, default none)",
        )
        cmd.add_argument("--log-level", default=os.environ.get("LWSOBS_LOG_LEVEL", "INFO"))
    cmd = sub.add_parser(
        "replay", help="run a recorded wire-v1 event file through the decoder and report"
    )
    cmd.add_argument("file", type=Path, help="NDJSON lines as producers send them")
    cmd.add_argument("--json", action="store_true", help="print the report as JSON")
    cmd.add_argument("--serve", action="store_true", help="then serve the result (/metrics, /api)")
    cmd.add_argument("--host", default=os.environ.get("LWSOBS_HOST", "127.0.0.1"))
    cmd.add_argument("--port", type=int, default=int(os.environ.get("LWSOBS_PORT", "8080")))
    cmd.add_argument("--log-level", default=os.environ.get("LWSOBS_LOG_LEVEL", "WARNING"))
    return parser


def _period(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be seconds, got {raw!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be positive and finite, got {raw!r}")
    return value


def make_config(args: argparse.Namespace) -> Config:
    config = Config.from_env()
    if getattr(args, "demo", False) and Role.H1_SERVER not in config.idle_limits:
        config.idle_limits[Role.H1_SERVER] = DEMO_IDLE_LIMIT_S
    if getattr(args, "idle", None):
        try:
            config.idle_limits.update(parse_idle_limits(args.idle))
        except ValueError as exc:
            raise ConfigError(f"--idle: {exc}") from None
    udp, unix = getattr(args, "udp", None), getattr(args, "unix", None)  # serve and demo only
    if udp is not None:
        config.udp = parse_udp(udp, "--udp")
    if unix is not None:
        config.unix = check_unix_path(unix, "--unix")
    return config


def serve(args: argparse.Namespace, config: Config, observer: Observer | None = None) -> None:
    replayed = observer is not None
    observer = observer or Observer(config)
    app = build_app(observer, ingest=not replayed)
    if getattr(args, "demo", False):
        attach_demo(app, args.host, args.port, observer)
        attach_lws_demo(app, observer.config, app.get(PIPELINE), period_s=args.demo_lws_period)
    try:
        web.run_app(
            app,
            host=args.host,
            port=args.port,
            access_log=None,
            shutdown_timeout=SHUTDOWN_TIMEOUT_S,
            print=lambda msg: log.info(
                "lwsobs on http://%s:%d (metrics /metrics, api /api/wsis /api/leaks /api/traces)%s",
                args.host,
                args.port,
                ", demo traffic on" if getattr(args, "demo", False) else "",
            ),
        )
    finally:
        observer.close()
        log.info("lwsobs stopped")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = make_config(args)
    except ConfigError as exc:
        print(f"lwsobs: error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "replay":
            return run_replay(args, config)
        serve(args, config)
    except OSError as exc:
        print(f"lwsobs: error: {exc}", file=sys.stderr)
        return 1
    return 0


def run_replay(args: argparse.Namespace, config: Config) -> int:
    if not args.file.is_file():
        print(f"lwsobs: error: no such file: {args.file}", file=sys.stderr)
        return 2
    observer = Observer(config)
    result = replay(args.file, observer)
    data = report(result)
    print(
        json.dumps(data, indent=2) if args.json else format_report(data),
        end="\n" if args.json else "",
    )
    if args.serve:
        serve(args, config, observer)
    else:
        observer.close()
    return 0
