"""The C shim (shim/) inside a real libwebsockets app, linked and LD_PRELOADed.

Builds shim/build/liblwsobs.so and tests/lws/lws_testapp (plus their -fsanitize=address twins),
runs the app as a server on a free loopback port with LWSOBS_ENDPOINT pointing at a UDP socket
of this test, drives it with curl and a raw websocket handshake, stops it with SIGTERM, and
holds every datagram to wire-v1 (lwsobs.sources.lws.wire.parse_datagram): no rejection, seq from 0
without a gap, HELLO first, BYE last, and the callback orders of
docs/lws-lifecycle.md with consistent wsi pointers.

Needs gcc, make, pkg-config, libwebsockets-dev and curl (scripts/system-deps installs them).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lwsobs.sources.lws.wire import (
    BYE,
    CONTEXT_DESTROY_BEGIN,
    CONTEXT_DESTROYED,
    HEARTBEAT,
    HELLO,
    Event,
    Rejection,
    parse_datagram,
)

ROOT = Path(__file__).resolve().parents[2]
SHIM_DIR = ROOT / "shim"
APP_DIR = ROOT / "tests" / "lws"
SHIM = SHIM_DIR / "build" / "liblwsobs.so"
APP_LINKED = APP_DIR / "build" / "lws_testapp"
APP_PLAIN = APP_DIR / "build" / "lws_testapp_plain"
APP_ASAN = APP_DIR / "build-asan" / "lws_testapp"

# lws callback reasons (include/libwebsockets/lws-callbacks.h, 4.1.6)
ESTABLISHED = 0
HTTP = 12
FILTER_NETWORK_CONNECTION = 17
FILTER_HTTP_CONNECTION = 18
SERVER_NEW_CLIENT_INSTANTIATED = 19
FILTER_PROTOCOL_CONNECTION = 20
PROTOCOL_DESTROY = 28
WSI_CREATE = 29
WSI_DESTROY = 30
ESTABLISHED_CLIENT_HTTP = 44
COMPLETED_CLIENT_HTTP = 47
CLIENT_CLOSED = 75
HTTP_BIND_PROTOCOL = 49
HTTP_DROP_PROTOCOL = 50
WS_SERVER_DROP_PROTOCOL = 78
CLIENT_HTTP_BIND_PROTOCOL = 85
HTTP_CONFIRM_UPGRADE = 86
FAKE_WSI_REASONS = frozenset({27, 28, 71, 72, 74, 21, 22, 31})
NOISE_REASONS = frozenset({31, 32, 33, 34, 35, 36})
TXN_COMPLETED = "lws_http_transaction_completed"

HOSTILE_PATH = "/x%22%ff%c3%a9%01y%5c"  # lws url-decodes it to / x " \xff é \x01 y \
HOSTILE_URI = '/x"\\xffé\x01y\\'  # \xff is not UTF-8: the shim writes it as the text \xff
LONG_PATH = "/" + "é" * 1500  # 3001 bytes: cut at 1 KiB, on a character boundary

BUILD_TIMEOUT_S = 240
APP_TIMEOUT_S = 10.0
ASAN_MARKERS = ("AddressSanitizer", "LeakSanitizer", "runtime error:")


# -- building -----------------------------------------------------------------------------------


def _run(cmd: Sequence[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False)
    if proc.returncode != 0:
        pytest.fail(f"{what} failed ({' '.join(cmd)}):\n{proc.stdout}\n{proc.stderr}")


@pytest.fixture(scope="module")
def built() -> None:
    build_all()


def build_all() -> None:
    """Build the shim and the test app (plain and ASan); fail, never skip, when tools lack."""
    missing = [tool for tool in ("make", "cc", "pkg-config", "curl") if not shutil.which(tool)]
    if missing:
        pytest.fail(
            f"missing {', '.join(missing)}: run scripts/system-deps "
            "(apt-get install gcc make pkg-config libwebsockets-dev curl)"
        )
    probe = subprocess.run(
        ["pkg-config", "--exists", "libwebsockets"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        pytest.fail(
            "libwebsockets-dev is missing (pkg-config cannot find libwebsockets): "
            "run scripts/system-deps or apt-get install libwebsockets-dev pkg-config"
        )
    _run(["make", "-C", str(SHIM_DIR)], "building the shim")
    _run(["make", "-C", str(SHIM_DIR), "asan"], "building the ASan shim")
    _run(["make", "-C", str(APP_DIR), "all", "asan"], "building the lws test app")


# -- collecting -----------------------------------------------------------------------------


class Collector:
    """A datagram socket (UDP on a free loopback port, or unix) that keeps all it receives."""

    def __init__(self, unix_path: Path | None = None) -> None:
        if unix_path is None:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind(("127.0.0.1", 0))
            self.endpoint = f"udp://127.0.0.1:{self.sock.getsockname()[1]}"
        else:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.sock.bind(str(unix_path))
            self.endpoint = f"unix:{unix_path}"
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.settimeout(0.05)
        self.datagrams: list[bytes] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            with self._lock:
                self.datagrams.append(data)

    def events(self) -> list[Event]:
        """Every line received so far; fails the test on the first rejected line."""
        with self._lock:
            datagrams = list(self.datagrams)
        events: list[Event] = []
        rejections: list[tuple[Rejection, bytes]] = []
        for data in datagrams:
            ok, bad = parse_datagram(data)
            events.extend(ok)
            rejections.extend((r, data[:200]) for r in bad)
        assert not rejections, f"wire-v1 rejected lines: {rejections[:5]}"
        return events

    def wait_for(self, check: Callable[[list[Event]], bool], timeout: float) -> list[Event]:
        deadline = time.monotonic() + timeout
        while True:
            events = self.events()
            if check(events) or time.monotonic() > deadline:
                return events
            time.sleep(0.02)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    yield c
    c.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def closed_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the app --------------------------------------------------------------------------------


@dataclass
class App:
    proc: subprocess.Popen[bytes]
    port: int
    stdout: list[str] = field(default_factory=list)
    stderr: str = ""
    returncode: int | None = None
    stop_s: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _readline(proc: subprocess.Popen[bytes], timeout: float) -> str:
    """One line of stdout, read byte by byte: nothing may stay in a buffer communicate() skips."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    line = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                break
            chunk = os.read(fd, 1)
            if not chunk:
                break
            line += chunk
    return line.decode(errors="replace")


@contextmanager
def run_app(
    binary: Path,
    endpoint: str,
    *args: str,
    preload: Path | None = None,
    extra_env: dict[str, str] | None = None,
    client_self: bool = False,
) -> Iterator[App]:
    """Start the app as a server on a free port; on exit stop it with SIGTERM and reap it.

    client_self: the app also runs lws's client (http GET, ws echo) against its own server.
    """
    port = free_port()
    if client_self:
        args = (*args, "--client-port", str(port))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LD_PRELOAD", "LWSOBS_"))}
    env.update({"LWSOBS_ENDPOINT": endpoint, "LWSOBS_DEBUG": "1", **(extra_env or {})})
    if preload is not None:
        env["LD_PRELOAD"] = str(preload)
    proc = subprocess.Popen(
        [str(binary), "--port", str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
        env=env,
    )
    app = App(proc, port)
    try:
        line = _readline(proc, APP_TIMEOUT_S)
        if not line.startswith("READY"):
            proc.kill()
            _, err = proc.communicate(timeout=APP_TIMEOUT_S)
            pytest.fail(f"{binary.name} did not start: {line!r}\n{err.decode(errors='replace')}")
        app.stdout.append(line.strip())
        yield app
    finally:
        if proc.poll() is None:
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                out, err = proc.communicate(timeout=APP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
            app.stop_s = time.monotonic() - started
        else:
            out, err = proc.communicate()
        app.stdout.extend(out.decode(errors="replace").splitlines())
        app.stderr = err.decode(errors="replace")
        app.returncode = proc.returncode


# -- traffic --------------------------------------------------------------------------------


def curl(*args: str) -> str:
    proc = subprocess.run(
        ["curl", "-sS", "--max-time", "5", *args],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert proc.returncode == 0, f"curl {args}: {proc.stderr}"
    return proc.stdout


def raw_get(port: int, path: str) -> bytes:
    """One GET with Connection: close, the path sent byte for byte (curl would normalize it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        reply = b""
        while chunk := s.recv(4096):
            reply += chunk
    return reply


def _recv_exact(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        assert chunk, "connection closed early"
        data += chunk
    return data


def _ws_frame(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert len(payload) < 126
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


def _ws_read(s: socket.socket) -> tuple[int, bytes]:
    head = _recv_exact(s, 2)
    assert not head[1] & 0x80, "server frames are never masked"
    size = head[1] & 0x7F
    if size == 126:
        size = int.from_bytes(_recv_exact(s, 2), "big")
    return head[0] & 0x0F, _recv_exact(s, size)


def websocket_echo(port: int, message: bytes = b"ping") -> None:
    """Handshake with subprotocol "echo", one text message and its echo, then a clean close."""
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(
            (
                "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: echo\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(1)
            assert chunk, f"handshake cut: {head!r}"
            head += chunk
        accept = base64.b64encode(
            hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
        ).decode()
        assert head.startswith(b"HTTP/1.1 101"), head
        assert accept.encode() in head, head
        s.sendall(_ws_frame(0x1, message))
        assert _ws_read(s) == (0x1, message)
        s.sendall(_ws_frame(0x8, (1000).to_bytes(2, "big")))
        opcode, _ = _ws_read(s)
        assert opcode == 0x8


def drive(app: App) -> None:
    """The standard traffic: keep-alive pair, Connection: close, 404, hostile URIs, websocket."""
    assert curl(f"{app.url}/", f"{app.url}/") == "hello\nhello\n"  # one connection, 2 requests
    assert curl("-H", "Connection: close", f"{app.url}/hello") == "hello\n"
    assert curl("-o", "/dev/null", "-w", "%{http_code}", f"{app.url}/missing") == "404"
    assert raw_get(app.port, HOSTILE_PATH).startswith(b"HTTP/1.1 404")
    assert raw_get(app.port, LONG_PATH).startswith(b"HTTP/1.1 404")
    websocket_echo(app.port)


# -- checks ---------------------------------------------------------------------------------


@dataclass
class Conn:
    """One accepted server wsi, from its WSI_CREATE to its WSI_DESTROY."""

    wsi: str
    afd: int
    peer: str | None
    events: list[Event] = field(default_factory=list)

    @property
    def reasons(self) -> list[int]:
        return [e.r for e in self.events]

    def has(self, r: int, **fields: object) -> bool:
        return any(e.r == r and all(getattr(e, k) == v for k, v in fields.items()) for e in self)

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events)


def is_subsequence(needle: Sequence[int], hay: Sequence[int]) -> bool:
    it = iter(hay)
    return all(any(x == y for y in it) for x in needle)


def server_connections(events: list[Event]) -> list[Conn]:
    """Split the server side into connections: 17 (listen wsi, afd), 29 (new wsi, fd -1) .. 30.

    lws adopts synchronously, so an accepted wsi's WSI_CREATE directly follows its
    FILTER_NETWORK_CONNECTION; pointers are reused at once, so a connection ends at its 30.
    """
    conns: list[Conn] = []
    live: dict[str, Conn] = {}
    accept: Event | None = None
    for e in events:
        if e.r == FILTER_NETWORK_CONNECTION:
            accept = e
            continue
        if e.r == WSI_CREATE and accept is not None:
            assert e.wsi is not None and e.wsi != accept.wsi, "the new wsi is not the listener"
            assert e.fd == -1, "an accepted wsi has no fd yet at WSI_CREATE"
            assert e.wsi not in live, f"WSI_CREATE on live wsi {e.wsi}"
            assert accept.afd is not None
            conn = Conn(e.wsi, accept.afd, accept.peer)
            live[e.wsi] = conn
            conns.append(conn)
        accept = None
        if e.wsi in live:
            live[e.wsi].events.append(e)
            if e.r == WSI_DESTROY:
                del live[e.wsi]
    assert not live, f"server wsis never destroyed: {sorted(live)}"
    return conns


def check_stream(events: list[Event], pid: int, src: str | None = None) -> list[Conn]:
    """Everything the brief and wire-v1 ask of one producer's run; returns its server conns.

    src: the expected source name; by default the shim's <program>@<host>:<pid>.
    """
    assert events, "no datagram received"
    assert len({e.src for e in events}) == 1, "one process, one src"
    if src is None:
        pattern = r"lws_testapp(_plain)?@[A-Za-z0-9._:@-]+:" + str(pid)
        assert re.fullmatch(pattern, events[0].src), events[0].src
    else:
        assert events[0].src == src
    assert [e.seq for e in events] == list(range(len(events))), "seq contiguous from 0, in order"
    assert all(e.drop == 0 for e in events), "nothing dropped"
    assert all(e.v == 1 and e.t > 1_600_000_000 * 10**9 and e.mono for e in events)
    monos = [e.mono or 0 for e in events]
    assert monos == sorted(monos), "mono never goes back within one src"

    hello, bye = events[0], events[-1]
    assert hello.r == HELLO and hello.pid == pid and hello.host
    assert hello.lws and hello.lws.startswith("4.")
    assert bye.r == BYE
    assert [e.r for e in events].count(HELLO) == 1 and [e.r for e in events].count(BYE) == 1

    callbacks = [e for e in events if e.r >= 0]
    contexts = {e.ctx for e in callbacks}
    assert len(contexts) == 1 and None not in contexts, "every callback carries its ctx"
    (ctx,) = contexts
    begin = [i for i, e in enumerate(events) if e.r == CONTEXT_DESTROY_BEGIN]
    done = [i for i, e in enumerate(events) if e.r == CONTEXT_DESTROYED]
    assert len(begin) == 1 and len(done) == 1, "one CONTEXT_DESTROY_BEGIN and DESTROYED"
    assert events[begin[0]].ctx == ctx and events[done[0]].ctx == ctx
    last_callback = max(i for i, e in enumerate(events) if e.r >= 0)
    assert begin[0] < done[0] and last_callback < done[0] < len(events) - 1
    assert events[last_callback].r == PROTOCOL_DESTROY, "a context's last callback"

    reasons = {e.r for e in callbacks}
    assert not reasons & NOISE_REASONS, "poll/lock noise is never forwarded"
    for r in (17, 29, 19, 18, 49, 50, 30, 12, 16, 86, 20, 0, 6, 11, 78, 4, 5, 27, 28):
        assert r in reasons, f"reason {r} missing"
    for e in callbacks:
        if e.r in FAKE_WSI_REASONS:
            assert e.fake is True and e.wsi is None and e.fd is None, e
            assert e.nwsi is None and e.parent is None and e.ssl is None, e
        else:
            assert e.fake is None and e.wsi is not None and e.fd is not None, e
            assert e.ssl is False and e.vh == "lwsobs-test" and e.pcol, e
    assert any(e.r == HTTP_DROP_PROTOCOL and e.why == TXN_COMPLETED for e in callbacks)

    conns = server_connections(events)
    listeners = {e.wsi for e in callbacks if e.r == FILTER_NETWORK_CONNECTION}
    assert len(listeners) == 1
    # the listen wsi has no WSI_CREATE and ends with a bare WSI_DESTROY during teardown
    listener_end = [i for i, e in enumerate(events) if e.r == WSI_DESTROY and e.wsi in listeners]
    assert len(listener_end) == 1 and begin[0] < listener_end[0] < done[0]
    for c in conns:
        instantiated = [e for e in c if e.r == SERVER_NEW_CLIENT_INSTANTIATED]
        assert len(instantiated) == 1 and instantiated[0].fd == c.afd, "19 gets the accepted fd"
        assert c.reasons[:2] == [WSI_CREATE, SERVER_NEW_CLIENT_INSTANTIATED]
        assert c.reasons[-1] == WSI_DESTROY and c.events[-1].fd == -1
        assert c.peer and re.fullmatch(r"127\.0\.0\.1:\d+", c.peer), c.peer
        assert instantiated[0].peer == "127.0.0.1"
        assert all(e.wsi == c.wsi and e.nwsi is None and e.parent is None for e in c)
        for e in c:
            if e.r in (FILTER_HTTP_CONNECTION, HTTP):
                assert e.method == "GET" and e.uri is not None
    return conns


def check_traffic(conns: list[Conn], ws_conns: int = 1) -> None:
    """The reference's callback orders (lws-lifecycle.md 2.1, 2.2) for the traffic of drive()."""
    keepalive = [c for c in conns if sum(e.r == FILTER_HTTP_CONNECTION for e in c) == 2]
    assert len(keepalive) == 1, [c.reasons for c in conns]
    turnaround = [18, 49, 12, 16, 50, 49, 18, 12, 16, 50, 49, 5, 30]
    assert is_subsequence(turnaround, keepalive[0].reasons), keepalive[0].reasons
    assert sum(e.r == HTTP_DROP_PROTOCOL and e.why == TXN_COMPLETED for e in keepalive[0]) == 2
    assert [e.uri for e in keepalive[0] if e.r == HTTP] == ["/", "/"]

    def only(uri: str) -> Conn:
        found = [c for c in conns if c.has(FILTER_HTTP_CONNECTION, uri=uri)]
        assert len(found) == 1, uri
        return found[0]

    close = only("/hello")  # Connection: close: no turnaround, the transaction closes the wsi
    assert is_subsequence([18, 49, 12, 16, 50, 5, 30], close.reasons), close.reasons
    assert not close.has(HTTP_DROP_PROTOCOL, why=TXN_COMPLETED)
    assert close.has(HTTP_DROP_PROTOCOL, why="__lws_close_free_wsi")
    assert only("/missing").has(HTTP, uri="/missing")
    assert only(HOSTILE_URI).has(HTTP, uri=HOSTILE_URI)

    long_uri = [e.uri for c in conns for e in c if e.r == FILTER_HTTP_CONNECTION and e.uri]
    cut = [u for u in long_uri if u.startswith("/é")]
    assert len(cut) == 1 and cut[0] == "/" + "é" * 511, "cut at 1 KiB on a character boundary"

    ws = [c for c in conns if c.has(HTTP_CONFIRM_UPGRADE, upg="websocket")]
    assert len(ws) == ws_conns
    for c in ws:
        assert is_subsequence([86, 49, 20, 0, 6, 11, 78, 4, 30], c.reasons), c.reasons
        assert c.has(FILTER_PROTOCOL_CONNECTION, sub="echo")
        assert c.has(ESTABLISHED, pcol="echo") and c.has(HTTP_BIND_PROTOCOL, pcol="echo")
        assert not c.has(FILTER_HTTP_CONNECTION), "no 18 for an upgrade request"
        assert c.events[-1].pcol == "http", "WSI_DESTROY goes to protocols[0]"


def check_clean_exit(app: App) -> None:
    assert app.returncode == 0, f"exit {app.returncode}\n{app.stderr}"
    assert "EXIT" in app.stdout, app.stdout
    assert app.stop_s < 3.0, f"SIGTERM took {app.stop_s:.2f} s"


def summary(stderr: str) -> tuple[int, int]:
    """(lines, dropped) from the shim's LWSOBS_DEBUG exit line."""
    m = re.search(r"lwsobs: exit: (\d+) lines, \d+ sent in \d+ datagrams, (\d+) dropped", stderr)
    assert m, f"no lwsobs exit summary in stderr:\n{stderr}"
    return int(m.group(1)), int(m.group(2))


def has_bye(events: list[Event]) -> bool:
    return bool(events) and events[-1].r == BYE


# -- tests ----------------------------------------------------------------------------------


def test_linked_mode(built: None, collector: Collector) -> None:
    with run_app(APP_LINKED, collector.endpoint, "--linked") as app:
        drive(app)
        # the 20 ms timer sends while the app idles: the traffic arrives before any shutdown
        ws_gone = collector.wait_for(
            lambda ev: (
                any(e.r == WS_SERVER_DROP_PROTOCOL for e in ev)
                and sum(e.r == WSI_DESTROY for e in ev) >= 6
            ),
            timeout=2.0,
        )
        assert sum(e.r == WSI_DESTROY for e in ws_gone) >= 6, "batch not flushed while idle"
        # nothing sent for 2 s: a heartbeat
        beat = collector.wait_for(lambda ev: any(e.r == HEARTBEAT for e in ev), timeout=3.5)
        assert any(e.r == HEARTBEAT for e in beat), "no heartbeat after 2 s idle"
    check_clean_exit(app)
    assert "lwsobs_wrap_protocols: 3" in app.stderr
    events = collector.wait_for(has_bye, timeout=2.0)
    check_traffic(check_stream(events, app.proc.pid))
    assert summary(app.stderr) == (len(events), 0)


def test_preload_mode(built: None, collector: Collector) -> None:
    with run_app(APP_PLAIN, collector.endpoint, preload=SHIM) as app:
        drive(app)
    check_clean_exit(app)
    events = collector.wait_for(has_bye, timeout=2.0)
    check_traffic(check_stream(events, app.proc.pid))
    assert summary(app.stderr) == (len(events), 0)


def test_preload_off_is_transparent(built: None, collector: Collector) -> None:
    with run_app(APP_PLAIN, "off", preload=SHIM) as app:
        assert curl(f"{app.url}/", f"{app.url}/") == "hello\nhello\n"
        websocket_echo(app.port)
    check_clean_exit(app)
    assert "lwsobs:" not in app.stderr
    time.sleep(0.1)
    assert collector.events() == []


def test_unix_endpoint_and_source_name(built: None, tmp_path: Path) -> None:
    """A unix datagram collector; LWSOBS_SOURCE sanitized to the src charset, the program name
    cut at 32 characters, then `@host:pid` (test_shim_lws.py has the naming rules)."""
    collector = Collector(tmp_path / "collector.sock")
    name = "my app/ü:" + "x" * 80
    try:
        with run_app(
            APP_PLAIN, collector.endpoint, preload=SHIM, extra_env={"LWSOBS_SOURCE": name}
        ) as app:
            drive(app)
        check_clean_exit(app)
        events = collector.wait_for(has_bye, timeout=2.0)
    finally:
        collector.close()
    host = re.sub(r"[^A-Za-z0-9._:@-]", "_", socket.gethostname())
    pid = f":{app.proc.pid}"
    src = (("my_app___:" + "x" * 80)[:32] + "@" + host)[: 64 - len(pid)] + pid
    check_traffic(check_stream(events, app.proc.pid, src=src))


def test_unix_collector_started_late(built: None, tmp_path: Path) -> None:
    """No socket at the path yet: lines are dropped and counted, then the shim reconnects."""
    path = tmp_path / "late.sock"
    with run_app(APP_PLAIN, f"unix:{path}", preload=SHIM) as app:
        assert curl(f"{app.url}/") == "hello\n"  # while nobody listens
        time.sleep(0.1)
        collector = Collector(path)
        try:
            time.sleep(1.1)  # the shim retries connect() at most once a second
            assert curl(f"{app.url}/hello") == "hello\n"
            collector.wait_for(lambda ev: any(e.r == WSI_DESTROY for e in ev), timeout=2.0)
            app.proc.send_signal(signal.SIGTERM)
            events = collector.wait_for(has_bye, timeout=APP_TIMEOUT_S)
        finally:
            collector.close()
    check_clean_exit(app)
    assert events and events[-1].r == BYE
    first = events[0].seq
    assert first > 0 and events[0].drop == first, "everything before the collector: dropped"
    assert [e.seq for e in events] == list(range(first, first + len(events)))
    assert {e.drop for e in events} == {first}
    assert any(e.r == FILTER_HTTP_CONNECTION and e.uri == "/hello" for e in events)
    assert summary(app.stderr) == (first + len(events), first)


def test_asan_linked_server_and_client(built: None, collector: Collector) -> None:
    """Shim and app under -fsanitize=address (leaks too); lws's own client joins the traffic."""
    asan = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:exitcode=23"}
    with run_app(APP_ASAN, collector.endpoint, "--linked", extra_env=asan, client_self=True) as app:
        drive(app)
        collector.wait_for(
            lambda ev: {COMPLETED_CLIENT_HTTP, CLIENT_CLOSED} <= {e.r for e in ev}, timeout=3.0
        )
    check_clean_exit(app)
    for marker in ASAN_MARKERS:
        assert marker not in app.stderr, app.stderr
    assert "CLIENT http status=200 bytes=6" in app.stdout, app.stdout
    assert "CLIENT ws echo ok" in app.stdout, app.stdout
    events = collector.wait_for(has_bye, timeout=2.0)
    check_traffic(check_stream(events, app.proc.pid), ws_conns=2)

    # the client side (reference 2.3): 85 first, 29 once connected, status and peer at 44
    clients = {e.wsi for e in events if e.r == CLIENT_HTTP_BIND_PROTOCOL}
    assert len(clients) == 2
    for wsi in clients:
        mine = [e for e in events if e.wsi == wsi]
        mine = mine[: next(i for i, e in enumerate(mine) if e.r == WSI_DESTROY) + 1]
        assert mine[0].r == CLIENT_HTTP_BIND_PROTOCOL and mine[0].fd == -1
        assert all(e.pcol == "client" for e in mine[:-1]) and mine[-1].pcol == "http"
        status = [e for e in mine if e.r == ESTABLISHED_CLIENT_HTTP]
        assert len(status) == 1 and status[0].status in (200, 101)
        assert status[0].peer == "127.0.0.1"
        if status[0].status == 101:
            assert is_subsequence(
                [85, 19, 29, 24, 44, 2, 3, 10, 8, 80, 75, 30], [e.r for e in mine]
            )
        else:
            assert is_subsequence(
                [85, 19, 29, 24, 2, 44, 46, 48, 47, 76, 45, 30], [e.r for e in mine]
            )


@pytest.mark.parametrize("kind", ["udp", "unix"])
def test_nothing_listening_never_blocks(built: None, tmp_path: Path, kind: str) -> None:
    """A closed UDP port or a missing unix path: the app serves as usual, lines are dropped."""
    if kind == "udp":
        endpoint = f"udp://127.0.0.1:{closed_udp_port()}"
    else:
        endpoint = f"unix:{tmp_path / 'nobody-listens.sock'}"
    with run_app(APP_PLAIN, endpoint, preload=SHIM) as app:
        started = time.monotonic()
        for _ in range(10):
            assert curl(f"{app.url}/", f"{app.url}/missing") == "hello\nnot found\n"
            time.sleep(0.03)  # spread over several 20 ms batches
        websocket_echo(app.port)
        assert time.monotonic() - started < 5.0
    check_clean_exit(app)
    lines, dropped = summary(app.stderr)
    assert lines > 100
    if kind == "unix":
        assert dropped == lines, "no socket to send to: every line is dropped"
    else:
        assert 0 < dropped < lines, "ICMP port unreachable fails every other send"
