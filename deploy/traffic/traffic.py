"""Traffic for the docker-compose stack: exercises lws-demo and lwsobs so every panel has data.

Each round: keep-alive requests, a raw HTTP/1.1 pipelined burst and h2load pipelining
(`--h1 -m8`), HTTP/2 over TLS with h2load, websocket echo sessions, the lws test app in client
mode (HTTP and websocket, preloaded with the shim so lws client wsis show up), 404s and 500s.
Every few rounds a connection is opened and left idle past lwsobs' idle limit, so it is flagged
as a leak suspect, then closed (the suspicion is resolved).

Standard library only; configured by the environment (see `Settings.from_env`). Every request
has a timeout and every round is bounded; `--rounds N` stops after N rounds.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import ipaddress
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Target:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Target:
        url = urlsplit(text if "//" in text else f"//{text}")
        if url.hostname is None or url.port is None:
            raise ValueError(f"need HOST:PORT, got {text!r}")
        return cls(url.hostname, url.port)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Settings:
    lwsobs: Target  # the lwsobs service (aiohttp): its own wsis
    lws_http: Target  # lws-demo, HTTP/1.1 + ws "echo"
    lws_tls: Target  # lws-demo, TLS with ALPN h2,http/1.1
    lws_app: str | None  # the lws test app binary, for its client mode
    lws_shim: str | None  # liblwsobs.so, preloaded into the client
    endpoint: str  # LWSOBS_ENDPOINT for the preloaded client
    client_source: str  # LWSOBS_SOURCE of the preloaded client
    round_s: float
    idle_every: int  # rounds between idle connections (0: never)
    idle_hold_s: float  # longer than lwsobs' idle limit for h1-server

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        return cls(
            lwsobs=Target.parse(env.get("TRAFFIC_LWSOBS", "lwsobs:8080")),
            lws_http=Target.parse(env.get("TRAFFIC_LWS_HTTP", "127.0.0.1:7681")),
            lws_tls=Target.parse(env.get("TRAFFIC_LWS_TLS", "127.0.0.1:7443")),
            lws_app=env.get("LWS_DEMO_APP") or None,
            lws_shim=env.get("LWS_DEMO_SHIM") or None,
            endpoint=env.get("LWSOBS_ENDPOINT", "udp://127.0.0.1:7682"),
            client_source=env.get("TRAFFIC_CLIENT_SOURCE", "lws-client"),
            round_s=float(env.get("TRAFFIC_ROUND_SECONDS", "2")),
            idle_every=int(env.get("TRAFFIC_IDLE_EVERY", "10")),
            idle_hold_s=float(env.get("TRAFFIC_IDLE_HOLD_SECONDS", "30")),
        )


# -- HTTP/1.1 ------------------------------------------------------------------------------------


def keep_alive(target: Target, paths: Sequence[str]) -> list[int]:
    """Several requests on one connection; returns their statuses."""
    conn = http.client.HTTPConnection(target.host, target.port, timeout=TIMEOUT_S)
    try:
        statuses = []
        for path in paths:
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            statuses.append(resp.status)
        return statuses
    finally:
        conn.close()


def pipelined(target: Target, paths: Sequence[str]) -> bytes:
    """All requests in one write; the last asks to close. Returns every byte of the replies."""
    parts = []
    for i, path in enumerate(paths):
        close = "Connection: close\r\n" if i == len(paths) - 1 else ""
        parts.append(f"GET {path} HTTP/1.1\r\nHost: {target}\r\n{close}\r\n")
    with socket.create_connection((target.host, target.port), timeout=TIMEOUT_S) as sock:
        sock.sendall("".join(parts).encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


# -- websocket -----------------------------------------------------------------------------------


def _frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (payloads under 126 bytes are all this script sends)."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


def _read_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("websocket closed early")
        data += chunk
    return data


def _read_frame(sock: socket.socket) -> tuple[int, bytes]:
    head = _read_exact(sock, 2)
    size = head[1] & 0x7F
    if size == 126:
        size = int.from_bytes(_read_exact(sock, 2), "big")
    elif size == 127:
        size = int.from_bytes(_read_exact(sock, 8), "big")
    return head[0] & 0x0F, _read_exact(sock, size)


def websocket_echo(
    target: Target, path: str, messages: Sequence[str], protocol: str | None = None
) -> list[str]:
    """Open a websocket, send each message, collect the echoes, close cleanly."""
    key = base64.b64encode(os.urandom(16)).decode()
    extra = f"Sec-WebSocket-Protocol: {protocol}\r\n" if protocol else ""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {target}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        f"Sec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
    with socket.create_connection((target.host, target.port), timeout=TIMEOUT_S) as sock:
        sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(1)
            if not chunk:
                raise ConnectionError("no websocket handshake reply")
            head += chunk
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"websocket refused: {head.splitlines()[0]!r}")
        echoes = []
        for message in messages:
            sock.sendall(_frame(0x1, message.encode()))
            opcode, payload = _read_frame(sock)
            while opcode != 0x1:  # skip pings and the like
                opcode, payload = _read_frame(sock)
            echoes.append(payload.decode())
        sock.sendall(_frame(0x8, (1000).to_bytes(2, "big")))
        try:
            while _read_frame(sock)[0] != 0x8:
                pass
        except (ConnectionError, TimeoutError):
            pass
    return echoes


# -- tools ---------------------------------------------------------------------------------------


def h2load(args: Sequence[str]) -> bool:
    """Run h2load (nghttp2-client); True when it exited 0 having every request answered."""
    if shutil.which("h2load") is None:
        raise OSError("h2load not found (apt-get install nghttp2-client)")
    done = subprocess.run(
        ["h2load", *args], capture_output=True, text=True, timeout=30, check=False
    )
    return done.returncode == 0 and " 0 failed, 0 errored" in done.stdout


def resolve_endpoint(endpoint: str) -> str:
    """`udp://NAME:PORT` with NAME resolved: the shim takes addresses, never names."""
    if not endpoint.startswith("udp://"):
        return endpoint
    url = urlsplit(endpoint)
    host = url.hostname or ""
    try:
        ipaddress.ip_address(host)
        return endpoint
    except ValueError:
        addr = socket.getaddrinfo(host, url.port, socket.AF_INET, socket.SOCK_DGRAM)[0][4][0]
        return f"udp://{addr}:{url.port}"


def lws_client(settings: Settings, target: Target, mode: str, path: str = "/") -> bool:
    """The lws test app in client mode, with the shim preloaded; True when it got its answers."""
    if not settings.lws_app:
        raise OSError("LWS_DEMO_APP is not set: no lws client")
    env = dict(os.environ)
    if settings.lws_shim:
        env["LD_PRELOAD"] = settings.lws_shim
    env["LWSOBS_ENDPOINT"] = resolve_endpoint(settings.endpoint)
    env["LWSOBS_SOURCE"] = settings.client_source
    done = subprocess.run(
        [
            settings.lws_app,
            "--port",
            "0",
            "--client-host",
            target.host,
            "--client-port",
            str(target.port),
            "--client-path",
            path,
            "--client-mode",
            mode,
            "--seconds",
            "2",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    http_ok = mode == "ws" or "CLIENT http status=200" in done.stdout
    ws_ok = mode == "http" or "CLIENT ws echo ok" in done.stdout
    return http_ok and ws_ok


def hold_idle(target: Target, seconds: float) -> None:
    """A connection that sends nothing: lwsobs flags it once its idle limit passes."""
    try:
        with socket.create_connection((target.host, target.port), timeout=TIMEOUT_S):
            time.sleep(seconds)
    except OSError as exc:
        print(f"traffic: idle connection to {target}: {exc}", file=sys.stderr)


# -- rounds --------------------------------------------------------------------------------------


def one_round(settings: Settings, number: int, idle: list[threading.Thread]) -> list[str]:
    """Everything once; returns the steps that failed (a failed step never stops the rest).

    Idle connections started this round are appended to `idle` (they outlive the round).
    """
    obs, http1, tls = settings.lwsobs, settings.lws_http, settings.lws_tls
    steps: dict[str, Callable[[], object]] = {
        "lwsobs keep-alive": lambda: keep_alive(
            obs, ["/demo/hello", "/demo/slow", "/demo/hello", "/demo/missing", "/demo/error"]
        ),
        "lwsobs pipelined": lambda: pipelined(obs, ["/demo/hello", "/demo/hello", "/nope"]),
        "lwsobs h2load --h1 -m8": lambda: h2load(
            ["--h1", "-n", "32", "-c", "2", "-m", "8", f"http://{obs}/demo/hello"]
        ),
        "lwsobs websocket": lambda: websocket_echo(obs, "/demo/ws", ["a", "b", "c"]),
        "lws keep-alive": lambda: keep_alive(http1, ["/", "/hello", "/missing", "/"]),
        "lws pipelined": lambda: pipelined(http1, ["/", "/hello", "/", "/missing"]),
        "lws h2load --h1 -m8": lambda: h2load(
            ["--h1", "-n", "32", "-c", "2", "-m", "8", f"http://{http1}/"]
        ),
        "lws h2 over TLS": lambda: h2load(["-n", "40", "-c", "2", "-m", "10", f"https://{tls}/"]),
        "lws websocket": lambda: websocket_echo(http1, "/", ["ping", "pong"], protocol="echo"),
        "lws client mode": lambda: lws_client(settings, http1, "both"),
        "lws client to lwsobs": lambda: lws_client(settings, obs, "http", "/demo/hello"),
    }
    failed = []
    for name, step in steps.items():
        try:
            if step() is False:
                failed.append(name)
        except (OSError, subprocess.SubprocessError, http.client.HTTPException):
            failed.append(name)
    if settings.idle_every and number % settings.idle_every == 0:
        for target in (obs, http1):
            thread = threading.Thread(
                target=hold_idle, args=(target, settings.idle_hold_s), daemon=True
            )
            thread.start()
            idle.append(thread)
    return failed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=0, help="stop after N rounds (0: never)")
    args = parser.parse_args(argv)
    settings = Settings.from_env(os.environ)
    idle: list[threading.Thread] = []
    number = 0
    failures = 0
    while not args.rounds or number < args.rounds:
        failed = one_round(settings, number, idle)
        if failed:
            failures += 1
            print(f"traffic: round {number}: failed: {', '.join(failed)}", file=sys.stderr)
        else:
            print(f"traffic: round {number}: ok", flush=True)
        idle = [thread for thread in idle if thread.is_alive()]
        number += 1
        if not args.rounds or number < args.rounds:
            time.sleep(settings.round_s)
    for thread in idle:  # a bounded run waits for its idle connections to close
        thread.join()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
