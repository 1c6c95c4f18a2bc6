"""The stack's lws-demo and traffic containers, without Docker: their scripts run for real.

deploy/lws-demo/run.sh starts the lws test app twice under the shim (HTTP/1.1 + ws, and TLS
with h2) and deploy/traffic/traffic.py drives one round at it and at a real `lwsobs serve`,
all on 127.0.0.1 with free ports. lwsobs must then know every role the dashboards show for lws
sources, and flag the idle connection. Needs what tests/integration/test_shim.py needs, plus
openssl and h2load.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port
from tests.integration.test_shim import (
    APP_PLAIN,
    SHIM,
    built,  # noqa: F401 - the fixture that builds the shim and the test app
)
from tests.stack import ROOT

RUN_SH = ROOT / "deploy" / "lws-demo" / "run.sh"
TRAFFIC = ROOT / "deploy" / "traffic" / "traffic.py"
TIMEOUT_S = 30.0  # a guard against hanging, not a measure
IDLE_LIMIT_S = 2
IDLE_HOLD_S = 4


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not reached within {TIMEOUT_S:.0f} s")
        time.sleep(0.1)


def _stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def _metrics(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _roles(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> set[tuple[str, str]]:
    """(source, role) of every wsi created or upgraded to."""
    found = set()
    for (name, labels), value in metrics.items():
        label = dict(labels)
        if name == "lwsobs_wsi_created_total" and value > 0:
            found.add((label["source"], label["role"]))
        if name == "lwsobs_wsi_upgrades_total" and value > 0:
            found.add((label["source"], label["to_role"]))
    return found


@pytest.fixture
def lwsobs(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A real `lwsobs serve` (no demo traffic) with a short h1-server idle limit."""
    port, udp = free_port(), _free_udp_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LWSOBS_"))}
    env["LWSOBS_IDLE_LIMITS"] = f"h1-server={IDLE_LIMIT_S}"
    log = (tmp_path / "lwsobs.log").open("wb")
    listen = ["--host", "127.0.0.1", "--port", str(port), "--udp", f"127.0.0.1:{udp}"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "lwsobs", "serve", *listen],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as resp:
                return int(resp.status) == 200
        except OSError:
            return False

    try:
        _wait(up, "lwsobs up")
        yield url, udp
    finally:
        _stop(proc)
        log.close()


def test_lws_demo_and_traffic_scripts_feed_every_lws_role(
    built: None,  # noqa: F811
    lwsobs: tuple[str, int],
    tmp_path: Path,
) -> None:
    for tool in ("openssl", "h2load", "bash", "getent"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} not found (scripts/system-deps)")
    url, udp = lwsobs
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    self_signed = ["-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"]
    subprocess.run(
        ["openssl", "req", *self_signed, "-keyout", str(key), "-out", str(cert)],
        capture_output=True,
        check=True,
        timeout=60,
    )
    http_port, tls_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LWSOBS_"))}
    env.update(
        LWS_DEMO_APP=str(APP_PLAIN),
        LWS_DEMO_SHIM=str(SHIM),
        LWS_DEMO_TLS_CERT=str(cert),
        LWS_DEMO_TLS_KEY=str(key),
        LWS_DEMO_HTTP_PORT=str(http_port),
        LWS_DEMO_TLS_PORT=str(tls_port),
        # a name, as in docker-compose.yml (udp://lwsobs:7682): run.sh resolves it
        LWSOBS_ENDPOINT=f"udp://localhost:{udp}",
        LWSOBS_SOURCE="lws-demo",
    )
    demo_log = tmp_path / "lws-demo.log"
    with demo_log.open("wb") as out:
        demo = subprocess.Popen(["bash", str(RUN_SH)], env=env, stdout=out, stderr=out)
    try:
        _wait(lambda: demo_log.read_text().count("READY port=") == 2, "both lws apps ready")
        assert f"udp://127.0.0.1:{udp}" in demo_log.read_text()
        traffic_env = dict(
            env,
            TRAFFIC_LWSOBS=url.removeprefix("http://"),
            TRAFFIC_LWS_HTTP=f"127.0.0.1:{http_port}",
            TRAFFIC_LWS_TLS=f"127.0.0.1:{tls_port}",
            TRAFFIC_CLIENT_SOURCE="lws-client",
            TRAFFIC_IDLE_EVERY="1",
            TRAFFIC_IDLE_HOLD_SECONDS=str(IDLE_HOLD_S),
        )
        done = subprocess.run(
            [sys.executable, str(TRAFFIC), "--rounds", "1"],
            env=traffic_env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "round 0: ok" in done.stdout

        wanted = {
            ("lwsobs", "h1-server"),
            ("lwsobs", "ws-server"),
            ("lws-demo", "listen"),
            ("lws-demo", "h1-server"),
            ("lws-demo", "ws-server"),
            ("lws-demo-tls", "listen"),
            ("lws-demo-tls", "h2-stream"),
            ("lws-client", "h1-client"),
            ("lws-client", "ws-client"),
        }
        _wait(lambda: wanted <= _roles(_metrics(url)), "every role seen")
        resolved = (
            "lwsobs_wsi_suspects_resolved_total",
            (("role", "h1-server"), ("rule", "idle"), ("source", "lwsobs")),
        )
        _wait(lambda: _metrics(url).get(resolved, 0) >= 1, "the idle connection flagged, closed")
        metrics = _metrics(url)
        classes = {
            dict(labels)["code_class"]
            for (name, labels), value in metrics.items()
            if name == "lwsobs_transactions_total" and dict(labels)["source"] == "lwsobs"
        }
        assert {"2xx", "4xx", "5xx"} <= classes
        assert metrics[("lwsobs_ingest_lines_total", (("transport", "udp"),))] > 0
        rejected = [v for (name, _), v in metrics.items() if name == "lwsobs_ingest_rejected_total"]
        assert rejected and sum(rejected) == 0
    finally:
        status = _stop(demo)
    assert status == 0, demo_log.read_text()
    assert demo_log.read_text().count("EXIT") == 2  # both through lws_context_destroy()
