"""`lwsobs serve` as a real process on loopback, and a producer of lws events over UDP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port
from tests.reliability.figures import rss_bytes

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Service:
    proc: asyncio.subprocess.Process
    port: int
    udp_port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def rss(self) -> int:
        return rss_bytes(self.proc.pid)

    async def scrape(self, session: aiohttp.ClientSession) -> Samples:
        async with session.get(self.url + "/metrics") as resp:
            assert resp.status == 200
            return parse(await resp.text())


def parse(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(
        v
        for (n, lbl), v in samples.items()
        if n == name and all(dict(lbl).get(k) == val for k, val in labels.items())
    )


@asynccontextmanager
async def lwsobs_serve(
    tmp_path: Path, env: dict[str, str] | None = None, *args: str
) -> AsyncIterator[Service]:
    """Start `python -m lwsobs serve` on free ports with a clean environment; wait for
    /healthz; on exit SIGTERM it (SIGKILL after 10 s) and reap it."""
    port, udp = free_port(), udp_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LWSOBS_"))}
    clean.update({"NO_PROXY": "127.0.0.1,localhost", **(env or {})})
    log_path = tmp_path / f"lwsobs-{port}.log"
    with log_path.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "lwsobs",
            "serve",
            "--port",
            str(port),
            "--udp",
            f"127.0.0.1:{udp}",
            *args,
            env=clean,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
        )
    service = Service(proc, port, udp, log_path)
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 20
            while True:
                assert proc.returncode is None, service.log()
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(service.url + "/healthz") as resp:
                        if resp.status == 200:
                            break
                assert time.monotonic() < deadline, "lwsobs did not start:\n" + service.log()
                await asyncio.sleep(0.05)
        yield service
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


@dataclass
class LwsProducer:
    """Speaks wire-v1 like the shim: one src, seq +1 per line, accepted keep-alive connections."""

    src: str
    port: int
    seq: int = 0
    conns: int = 0
    t0: int = field(default_factory=time.time_ns)
    sock: socket.socket = field(
        default_factory=lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    )

    def line(self, r: int, wsi: str | None = None, **fields: object) -> bytes:
        event: dict[str, object] = {
            "v": 1,
            "src": self.src,
            "seq": self.seq,
            "t": self.t0 + self.seq * 1000,
            "mono": self.seq * 1000,
            "r": r,
            "ctx": "5500",
        }
        if wsi is not None:
            event["wsi"] = wsi
        event.update(fields)
        self.seq += 1
        return json.dumps(event, separators=(",", ":")).encode()

    def hello(self) -> list[bytes]:
        return [self.line(-1, lws="4.1.6", pid=os.getpid(), host="test")]

    def connection(self, *, close: bool = True, requests: int = 1) -> list[bytes]:
        """An accepted connection with `requests` keep-alive transactions, destroyed or not."""
        self.conns += 1
        wsi = f"a{self.conns:x}"
        out = [
            self.line(17, "10", afd=9, peer="127.0.0.1:40000"),
            self.line(29, wsi, fd=-1),
            self.line(19, wsi, fd=9, peer="127.0.0.1"),
        ]
        for _ in range(requests):
            out += [
                self.line(18, wsi, uri="/x", method="GET"),
                self.line(12, wsi, uri="/x"),
                self.line(50, wsi, why="lws_http_transaction_completed", status=200),
            ]
        if close:
            out += [self.line(5, wsi), self.line(30, wsi)]
        return out

    def send(self, lines: list[bytes], per_datagram: int = 20) -> None:
        for start in range(0, len(lines), per_datagram):
            self.sock.sendto(
                b"\n".join(lines[start : start + per_datagram]), ("127.0.0.1", self.port)
            )

    def close(self) -> None:
        self.sock.close()
