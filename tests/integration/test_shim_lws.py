"""The shim against what lws users run: file servers, every response status, crashes, versions.

These tests hold the raw NDJSON the shim sends (as dicts, so they check the wire itself, not
the service's parser), from the Debian libwebsockets 4.1.6 test app under LD_PRELOAD:

- a vhost with mounts and no protocols (an lws file server) is seen through lws's default
  protocol, and every listen socket is announced (LISTEN) before it accepts anything;
- every response status reaches the wire (HTTP_STATUS), lws's own file server's included;
- the request of a client connection, and the path of a websocket upgrade, are on the wire;
- a crash sends what was batched and a FATAL line, then the app dies by the same signal;
- an lws version the shim does not know is passed through (HELLO says why, nothing else);
- a process without libwebsockets is left alone; an idle app polls as it would without us;
- LWSOBS_SOURCE names the program; each process instance keeps a src of its own.

Other lws versions (4.3 to 5.0) are verified by hand against real builds: see shim/README.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_shim import (
    APP_DIR,
    APP_PLAIN,
    APP_TIMEOUT_S,
    SHIM,
    Collector,
    build_all,
    check_clean_exit,
    curl,
    run_app,
    websocket_echo,
)

FAKE_VERSION = APP_DIR / "build" / "libfakever.so"

HELLO, HEARTBEAT, BYE, LISTEN, HTTP_STATUS, FATAL = -1, -2, -5, -6, -7, -8
FILTER_NETWORK_CONNECTION, FILTER_HTTP_CONNECTION, SERVER_NEW_CLIENT_INSTANTIATED = 17, 18, 19
WSI_CREATE, WSI_DESTROY, HTTP_FILE_COMPLETION = 29, 30, 15
CLIENT_HTTP_BIND_PROTOCOL, HTTP_CONFIRM_UPGRADE = 85, 86

Line = dict[str, Any]


@pytest.fixture(scope="module")
def built() -> None:
    build_all()


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    yield c
    c.close()


def lines(c: Collector) -> list[Line]:
    """Every line received, in order, as the JSON objects the shim wrote."""
    with c._lock:
        datagrams = list(c.datagrams)
    return [json.loads(raw) for data in datagrams for raw in data.split(b"\n") if raw]


def wait_lines(c: Collector, until: Any, timeout: float = 3.0) -> list[Line]:
    deadline = time.monotonic() + timeout
    while True:
        got = lines(c)
        if until(got) or time.monotonic() > deadline:
            return got
        time.sleep(0.02)


def ends_with_bye(got: list[Line]) -> bool:
    return bool(got) and got[-1]["r"] == BYE


def check_sequence(got: list[Line]) -> None:
    assert got and got[0]["r"] == HELLO
    assert [x["seq"] for x in got] == list(range(len(got))), "a gap or a reorder"
    assert len({x["src"] for x in got}) == 1


def statuses(got: list[Line], req: Line) -> list[int]:
    """The statuses written on the request's wsi from the request to that wsi's WSI_DESTROY
    (lws reuses a freed wsi's address at once: the next connection may have the same one)."""
    found: list[int] = []
    for x in got:
        if x["seq"] <= req["seq"] or x.get("wsi") != req["wsi"]:
            continue
        if x["r"] == WSI_DESTROY:
            break
        if x["r"] == HTTP_STATUS:
            found.append(x["status"])
    return found


def test_file_server_without_protocols(built: None, collector: Collector, tmp_path: Path) -> None:
    """minimal-http-server's shape: mounts only. Every wsi, transaction and status is seen."""
    (tmp_path / "index.html").write_text("<p>hi</p>\n")
    second = socket.socket()
    second.bind(("127.0.0.1", 0))
    second_port = second.getsockname()[1]
    second.close()
    with run_app(
        APP_PLAIN,
        collector.endpoint,
        "--mount",
        str(tmp_path),
        "--second-port",
        str(second_port),
        preload=SHIM,
    ) as app:
        got = wait_lines(collector, lambda g: sum(x["r"] == LISTEN for x in g) >= 2)
        listens = [x for x in got if x["r"] == LISTEN]
        # both listen sockets, before any accept: the second one never accepts at all
        assert sorted(x["port"] for x in listens) == sorted([app.port, second_port])
        assert {x["vh"] for x in listens} == {"lwsobs-test", "lwsobs-second"}
        assert curl(f"{app.url}/") == "<p>hi</p>\n"
        assert curl("-o", "/dev/null", "-w", "%{http_code}", f"{app.url}/nope") == "404"
    check_clean_exit(app)
    got = wait_lines(collector, ends_with_bye)
    check_sequence(got)
    accepted = [x for x in got if x["r"] == FILTER_NETWORK_CONNECTION]
    assert len(accepted) == 2 and all(x["port"] == app.port for x in accepted)
    requests = [x for x in got if x["r"] == FILTER_HTTP_CONNECTION]
    assert [x["uri"] for x in requests] == ["/", "/nope"]
    assert all(x["method"] == "GET" and x["pcol"] == "http-only" for x in requests)
    for req, code in zip(requests, (200, 404), strict=True):
        assert statuses(got, req) == [code]
        mine = [x["r"] for x in got if x.get("wsi") == req["wsi"] and x["seq"] >= req["seq"]]
        assert WSI_DESTROY in mine
    creates = [x for x in got if x["r"] == WSI_CREATE]
    destroys = [x for x in got if x["r"] == WSI_DESTROY]
    # two accepted wsis, and two listen sockets that end with a bare WSI_DESTROY
    assert len(creates) == 2 and len(destroys) == 4
    assert sorted(x["port"] for x in destroys) == sorted([app.port] * 3 + [second_port])
    assert any(x["r"] == HTTP_FILE_COMPLETION for x in got), "lws served the file itself"


def test_every_response_status_and_upgrade_path(built: None, collector: Collector) -> None:
    """The app's own replies (200, 404) and the websocket upgrade's path reach the wire."""
    with run_app(APP_PLAIN, collector.endpoint, preload=SHIM) as app:
        assert curl(f"{app.url}/hello") == "hello\n"
        assert curl("-o", "/dev/null", "-w", "%{http_code}", f"{app.url}/missing") == "404"
        websocket_echo(app.port)
    check_clean_exit(app)
    got = wait_lines(collector, ends_with_bye)
    check_sequence(got)
    requests = {x["uri"]: x for x in got if x["r"] == FILTER_HTTP_CONNECTION}
    assert statuses(got, requests["/hello"]) == [200]
    assert statuses(got, requests["/missing"]) == [404]
    upgrade = [x for x in got if x["r"] == HTTP_CONFIRM_UPGRADE]
    assert len(upgrade) == 1 and upgrade[0]["upg"] == "websocket" and upgrade[0]["uri"] == "/"
    # each HTTP_STATUS comes after its request's 18 and before the wsi's WSI_DESTROY
    for x in (x for x in got if x["r"] == HTTP_STATUS):
        seqs = [y["seq"] for y in got if y.get("wsi") == x["wsi"] and y["r"] >= 0]
        assert min(seqs) < x["seq"] < max(seqs)


def test_client_request_on_the_first_client_line(built: None, collector: Collector) -> None:
    """lws_client_connect_via_info(): method, path, address and port on the client's 85."""
    with run_app(APP_PLAIN, collector.endpoint, preload=SHIM, client_self=True) as app:
        wait_lines(collector, lambda g: sum(x["r"] == 75 for x in g) >= 1, timeout=4.0)
    check_clean_exit(app)
    got = wait_lines(collector, ends_with_bye)
    firsts = [x for x in got if x["r"] == CLIENT_HTTP_BIND_PROTOCOL]
    assert len(firsts) == 2, "one http GET, one websocket"
    for x in firsts:
        assert (x["method"], x["uri"], x["addr"], x["port"]) == ("GET", "/", "127.0.0.1", app.port)
    # only the first line of each connect call carries them
    assert sum("addr" in x for x in got) == 2


def test_crash_sends_last_lines_and_dies_the_same(built: None, collector: Collector) -> None:
    """SIGSEGV inside a callback: the batch and a FATAL line leave, then the app dies by it."""
    with run_app(APP_PLAIN, collector.endpoint, "--crashable", preload=SHIM) as app:
        with socket.create_connection(("127.0.0.1", app.port), timeout=5) as s:
            s.sendall(b"GET /crash HTTP/1.1\r\nHost: x\r\n\r\n")
            with contextlib.suppress(OSError):
                s.recv(100)
        app.proc.wait(timeout=APP_TIMEOUT_S)
    assert app.returncode == -signal.SIGSEGV, app.stderr
    got = wait_lines(collector, lambda g: bool(g) and g[-1]["r"] == FATAL)
    check_sequence(got)
    assert got[-1] == {**got[-1], "r": FATAL, "sig": signal.SIGSEGV}
    crash = [x for x in got if x["r"] in (FILTER_HTTP_CONNECTION, 12) and x["uri"] == "/crash"]
    assert len(crash) == 2, "the request that crashed the app is on the wire"
    assert not any(x["r"] == BYE for x in got)


def test_crash_handler_leaves_the_apps_own_alone(built: None, collector: Collector) -> None:
    """LWSOBS_CRASH_HANDLER=0: no handler of ours; the app still dies by its signal."""
    with run_app(
        APP_PLAIN,
        collector.endpoint,
        "--crashable",
        preload=SHIM,
        extra_env={"LWSOBS_CRASH_HANDLER": "0"},
    ) as app:
        with socket.create_connection(("127.0.0.1", app.port), timeout=5) as s:
            s.sendall(b"GET /crash HTTP/1.1\r\nHost: x\r\n\r\n")
            with contextlib.suppress(OSError):
                s.recv(100)
        app.proc.wait(timeout=APP_TIMEOUT_S)
    assert app.returncode == -signal.SIGSEGV
    time.sleep(0.1)
    assert not any(x["r"] == FATAL for x in lines(collector))


def test_unknown_lws_version_passes_through(built: None, collector: Collector) -> None:
    """An lws that says 3.2.0: nothing wrapped or sent but HELLO (with why) and BYE."""
    preload = f"{FAKE_VERSION}:{SHIM}"
    with run_app(APP_PLAIN, collector.endpoint, preload=Path(preload)) as app:
        assert curl(f"{app.url}/", f"{app.url}/missing") == "hello\nnot found\n"
        websocket_echo(app.port)
    check_clean_exit(app)
    got = wait_lines(collector, ends_with_bye)
    assert [x["r"] for x in got] == [HELLO, BYE]
    assert got[0]["lws"] == "3.2.0-fake"
    assert "3.2.0-fake not supported" in got[0]["unobserved"]
    assert app.stderr.count("lwsobs:") == 1 + 1, app.stderr  # the warning, and the exit summary


def test_process_without_lws_is_left_alone(built: None, collector: Collector) -> None:
    """LD_PRELOAD is inherited by children (sh, curl...): no output, no datagram, no error."""
    env = {**os.environ, "LD_PRELOAD": str(SHIM), "LWSOBS_ENDPOINT": collector.endpoint}
    env["LWSOBS_DEBUG"] = "1"
    proc = subprocess.run(
        ["sh", "-c", "echo ok"], env=env, capture_output=True, text=True, timeout=10, check=False
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "ok\n", "")
    time.sleep(0.1)
    assert lines(collector) == []


def _poll_calls(preload: Path | None, endpoint: str) -> tuple[int, int]:
    """(poll calls, those with a zero timeout) of the idle test app over 1.5 s."""
    strace = shutil.which("strace")
    assert strace, "strace is missing: apt-get install strace"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LD_PRELOAD", "LWSOBS_"))}
    env["LWSOBS_ENDPOINT"] = endpoint
    if preload is not None:
        env["LD_PRELOAD"] = str(preload)
    app = [str(APP_PLAIN), "--port", "0", "--seconds", "2"]
    trace = subprocess.run(
        [strace, "-f", "-e", "trace=poll", "-o", "/dev/stderr", *app],
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert trace.returncode == 0, trace.stderr[-2000:]
    polls = re.findall(r"poll\(\[.*\], \d+, (-?\d+)\)", trace.stderr)
    return len(polls), sum(t == "0" for t in polls)


def test_idle_app_polls_as_without_the_shim(built: None, collector: Collector) -> None:
    """No lws timer of ours: the event loop wakes as often as the app's own timers make it."""
    plain, plain_zero = _poll_calls(None, collector.endpoint)
    shimmed, shimmed_zero = _poll_calls(SHIM, collector.endpoint)
    assert plain > 10, "the app's own 50 ms tick"
    # the same timers, so the same timed wake-ups (a little slack for the run's own jitter). A
    # zero-timeout poll is a timer found already due, which a loaded machine makes more of in
    # either run: those are bounded on their own below, not counted as timers here.
    timed_plain, timed_shimmed = plain - plain_zero, shimmed - shimmed_zero
    assert timed_shimmed <= timed_plain * 1.1 + 3, (plain, plain_zero, shimmed, shimmed_zero)
    # no tight loop of zero-timeout polls (a loaded machine adds a few of its own either way)
    assert shimmed_zero <= plain_zero * 1.5 + 10, (plain_zero, shimmed_zero)
    got = wait_lines(collector, lambda g: sum(x["r"] == BYE for x in g) >= 1)
    assert any(x["r"] == HEARTBEAT for x in got), "the heartbeat comes from our own thread"


def test_source_names_are_instances_of_a_program(built: None, collector: Collector) -> None:
    """LWSOBS_SOURCE names the program: `@host:pid` keeps two processes apart; 32 chars kept."""
    host = re.sub(r"[^A-Za-z0-9._:@-]", "_", socket.gethostname())
    name = "my app/ü:" + "x" * 80
    env = {"LWSOBS_SOURCE": name}
    with (
        run_app(APP_PLAIN, collector.endpoint, preload=SHIM, extra_env=env) as one,
        run_app(APP_PLAIN, collector.endpoint, preload=SHIM, extra_env=env) as two,
    ):
        assert curl(f"{one.url}/") == curl(f"{two.url}/") == "hello\n"
    env = {"LWSOBS_SOURCE": "svc@rack7"}
    with run_app(APP_PLAIN, collector.endpoint, preload=SHIM, extra_env=env) as three:
        pass
    got = wait_lines(collector, lambda g: sum(x["r"] == BYE for x in g) >= 3)
    prog = ("my_app___:" + "x" * 80)[:32]
    expected = {
        f"{prog}@{host}"[: 64 - 1 - len(str(p.proc.pid))] + f":{p.proc.pid}" for p in (one, two)
    }
    expected.add(f"svc@rack7:{three.proc.pid}")
    assert {x["src"] for x in got} == expected
    for src in expected:
        mine = [x for x in got if x["src"] == src]
        assert [x["seq"] for x in mine] == list(range(len(mine))), src


def test_default_source_keeps_32_characters(
    built: None, collector: Collector, tmp_path: Path
) -> None:
    """The program name is no longer cut at 24 characters (the label keeps 32)."""
    program = "a" * 40
    binary = tmp_path / program
    shutil.copy(APP_PLAIN, binary)
    with run_app(binary, collector.endpoint, preload=SHIM) as app:
        pass
    got = wait_lines(collector, ends_with_bye)
    assert got[0]["src"].startswith(program[:32] + "@")
    assert got[0]["src"].endswith(f":{app.proc.pid}")
