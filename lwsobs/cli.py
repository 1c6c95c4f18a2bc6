"""The `lwsobs` command: `serve` (optionally with `--demo`) and `demo`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from aiohttp import web

from lwsobs.config import Config, ConfigError
from lwsobs.core.policy import parse_idle_limits
from lwsobs.core.roles import Role
from lwsobs.demo import DEMO_IDLE_LIMIT_S, attach_demo
from lwsobs.observer import Observer
from lwsobs.service import build_app

log = logging.getLogger("lwsobs")


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
            help="drive realistic traffic at the service itself",
        )
        cmd.add_argument(
            "--idle",
            metavar="ROLE=SECONDS,...",
            default=None,
            help="idle limits per role, e.g. h1-server=30,ws-server=off",
        )
        cmd.add_argument("--log-level", default=os.environ.get("LWSOBS_LOG_LEVEL", "INFO"))
    return parser


def make_config(args: argparse.Namespace) -> Config:
    config = Config.from_env()
    if args.demo and Role.H1_SERVER not in config.idle_limits:
        config.idle_limits[Role.H1_SERVER] = DEMO_IDLE_LIMIT_S
    if args.idle:
        try:
            config.idle_limits.update(parse_idle_limits(args.idle))
        except ValueError as exc:
            raise ConfigError(f"--idle: {exc}") from None
    return config


def serve(args: argparse.Namespace, config: Config) -> None:
    observer = Observer(config)
    app = build_app(observer)
    if args.demo:
        attach_demo(app, args.host, args.port)
    try:
        web.run_app(
            app,
            host=args.host,
            port=args.port,
            access_log=None,
            print=lambda msg: log.info(
                "lwsobs on http://%s:%d (metrics /metrics, api /api/wsis /api/leaks /api/traces)%s",
                args.host,
                args.port,
                ", demo traffic on" if args.demo else "",
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
    if args.command in ("serve", "demo"):
        try:
            serve(args, config)
        except OSError as exc:
            print(f"lwsobs: error: {exc}", file=sys.stderr)
            return 1
    return 0
