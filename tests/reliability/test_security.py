"""Security: who may send events, where the receivers listen, what reaches a label or an API.

- POST /v1/events wants the bearer token when one is configured (tests/reliability/
  test_http_bad_input.py sends the wrong ones; the comparison is hmac.compare_digest);
- UDP binds to loopback and the unix socket is 0600 by default, and the start-up log says so;
- hostile text in every field of every event, and in requests to the service itself, never
  becomes a metric label value: every label value of /metrics is from a closed set, a number,
  or a bounded source name (at most 100 of them plus "other");
- the JSON APIs escape every string: hostile values round-trip exactly.
The container (non-root, read-only root filesystem) is the Dockerfile's business (docs/stack.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import subprocess
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from lwsobs.config import DEFAULT_UDP, Config
from lwsobs.core.roles import CODE_CLASSES, AbandonReason, EndReason, LeakRule, Role
from lwsobs.sources.lws.pipeline import TRANSPORTS, DropReason
from lwsobs.sources.lws.wire import RejectReason
from tests.reliability.figures import record
from tests.reliability.rawhttp import exchange, request, statuses
from tests.reliability.service_proc import LwsProducer, Service, lwsobs_serve, total

TOKEN = "t0ken"
MARK = "INJECTED"
HOSTILE = [
    f'a"}} 1\nlwsobs_{MARK}{{x="1',
    f"{MARK}\\",
    f"\n{MARK}\r\n",
    f"\u0000{MARK}\u001f",
    f"<script>alert('{MARK}')</script>",
    f"\u202e{MARK}\u2028",
    f"{MARK}" + "é" * 600,
    f'role="listen",{MARK}="1"',
    f"%s%n{MARK}${{jndi:x}}",
]
TEXT_FIELDS = (
    "uri",
    "method",
    "peer",
    "vh",
    "pcol",
    "why",
    "err",
    "sub",
    "upg",
    "host",
    "lws",
    "tag",
    "addr",
    "shim",
    "unobserved",
)
SPAN_REASONS = {"queue_full", "export_failed", "build_error", "shutdown"}
CLOSED: dict[str, set[str]] = {
    "role": {r.value for r in Role},
    "from_role": {r.value for r in Role},
    "to_role": {r.value for r in Role},
    "rule": {r.value for r in LeakRule},
    "code_class": set(CODE_CLASSES),
    "transport": set(TRANSPORTS),
    "reason": {r.value for r in RejectReason}
    | {r.value for r in DropReason}
    | SPAN_REASONS
    | {r.value for r in AbandonReason}
    | {"version_mismatch", "missing_function", "other"},  # lws_process.unobserved_reason
    "end": {r.value for r in EndReason},
}
SOURCE = re.compile(r"[A-Za-z0-9._:@-]{1,64}\Z")
OTHER_VALUE = re.compile(r"[A-Za-z0-9._:@+-]{0,64}\Z")
PROGRAMS = 150


def test_receivers_default_to_loopback_and_the_token_is_compared_in_constant_time() -> None:
    config = Config.from_env({})
    assert config.udp == DEFAULT_UDP and DEFAULT_UDP.host == "127.0.0.1"
    assert config.unix is None and config.ingest_token is None
    source = Path(__file__).resolve().parents[2] / "lwsobs" / "sources" / "lws" / "http.py"
    assert "hmac.compare_digest(" in source.read_text()


async def test_the_start_up_log_says_where_ingest_listens_and_who_may_send(
    tmp_path: Path,
) -> None:
    sock_dir = Path(os.environ.get("XDG_RUNTIME_DIR") or "/tmp") / f"lwsobs-sec-{os.getpid()}"
    sock_dir.mkdir(exist_ok=True)
    path = sock_dir / "in.sock"
    try:
        async with lwsobs_serve(tmp_path, {}, "--unix", str(path)) as svc:
            mode = stat.S_IMODE(path.stat().st_mode)
            log = svc.log()
        async with lwsobs_serve(
            tmp_path,
            {"LWSOBS_INGEST_TOKEN": TOKEN, "LWSOBS_UDP": "0.0.0.0:0"},
            "--udp",
            "0.0.0.0:0",
        ) as open_svc:
            open_log = open_svc.log()
    finally:
        path.unlink(missing_ok=True)
        sock_dir.rmdir()
    assert mode == 0o600
    assert f"udp on 127.0.0.1:{svc.udp_port} " in log and "loopback only" in log
    assert f"unix datagrams on {path}" in log and "mode 0600: this user only" in log
    assert "POST /v1/events is open" in log
    assert "POST /v1/events requires the bearer token" in open_log
    assert "is not loopback: anyone who reaches it can send events" in open_log
    record(
        "security: start-up log",
        "udp 'loopback only', unix 'mode 0600: this user only', POST /v1/events open/token "
        "stated; a non-loopback udp bind warns",
    )


def hostile_events(producer: LwsProducer, n: int) -> list[bytes]:
    """Every text field hostile, on every callback the decoder acts on, plus weird numbers."""
    lines = producer.hello()
    for i, reason in enumerate(
        (17, 29, 19, 18, 12, 86, 0, 44, 24, 85, 105, 50, 5, 30, 62, 999, -7)
    ):
        text = {name: HOSTILE[(i + k) % len(HOSTILE)] for k, name in enumerate(TEXT_FIELDS)}
        wsi = "1%x" % (n * 32 + i % 3)
        lines.append(producer.line(reason, wsi, nwsi="20", status=999 - i * 300, **text))
    return lines


async def test_hostile_values_in_every_field_never_become_label_values_and_apis_escape(
    tmp_path: Path,
) -> None:
    async with lwsobs_serve(tmp_path, {"LWSOBS_INGEST_TOKEN": TOKEN}) as svc:
        producers = [
            LwsProducer(f"{name}{i}@h:{i}", svc.udp_port)
            for i, name in enumerate(["..p", "-p-", "p:", "p@", "P_"] * (PROGRAMS // 5))
        ]
        sent = 0
        async with aiohttp.ClientSession() as session:
            for n, producer in enumerate(producers):
                lines = hostile_events(producer, n)
                producer.send(lines, per_datagram=5)
                sent += len(lines)
                if n % 10 == 9:  # paced: this test is about content, not about a flood
                    await lines_reach(svc, session, sent)
        # the same over POST /v1/events, with a token
        poster = LwsProducer("poster@h:1", 0)
        body = b"\n".join(hostile_events(poster, 999))
        raw = request(
            "POST",
            "/v1/events",
            {"Content-Type": "application/x-ndjson", "Authorization": f"Bearer {TOKEN}"},
            body,
        )
        assert statuses(await exchange(svc.port, raw, responses=1)) == [200]
        # hostile requests to the service itself: methods, paths, headers
        for i, value in enumerate(HOSTILE):
            path = "/x/" + "".join(f"%{b:02x}" for b in value.encode())
            headers = {"traceparent": f"00-{MARK}-{i}", "X-Hostile": value.encode().hex()}
            for method in ("GET", "FOO", "M-SEARCH", MARK):
                await exchange(svc.port, request(method, path, headers), responses=1)
        async with aiohttp.ClientSession() as session:
            await lines_reach(svc, session, sent + len(body.split(b"\n")))
            texts = []
            for accept in ("text/plain", "application/openmetrics-text; version=1.0.0"):
                async with session.get(svc.url + "/metrics", headers={"Accept": accept}) as resp:
                    texts.append(await resp.text())
            apis = {}
            for path in ("/api/wsis", "/api/leaks", "/api/traces?limit=1000"):
                async with session.get(svc.url + path) as resp:
                    assert resp.content_type == "application/json"
                    apis[path] = await resp.text()
    checked = check_labels(texts[0])
    assert MARK not in texts[0] and MARK not in texts[1]
    promtool = subprocess.run(
        ["promtool", "check", "metrics"], input=texts[0], capture_output=True, text=True, timeout=30
    )
    assert promtool.returncode == 0, promtool.stdout + promtool.stderr
    for path, text in apis.items():
        assert "\n" not in text.strip() and "\u0000" not in text, path  # all escaped
        json.loads(text)
    wsis = json.loads(apis["/api/wsis"])["wsis"]
    # hostile peers come back exactly as they were sent (JSON-escaped on the wire)
    assert {w["peer"] for w in wsis} & set(HOSTILE)
    spans = [s for t in json.loads(apis["/api/traces?limit=1000"])["traces"] for s in t["spans"]]
    paths = {s["attributes"].get("url.path") for s in spans}
    assert any(p and MARK in p for p in paths)  # hostile text is kept in spans, as data
    record(
        "security: hostile values",
        f"{len(HOSTILE)} hostile strings in all {len(TEXT_FIELDS)} text fields of "
        f"{PROGRAMS + 1} producers and in requests: {checked} label values checked, all from "
        "closed sets or bounded source names; promtool clean; APIs round-trip them as JSON",
    )


async def lines_reach(svc: Service, session: aiohttp.ClientSession, lines: int) -> None:
    deadline = asyncio.get_running_loop().time() + 15
    while (got := total(await svc.scrape(session), "lwsobs_ingest_lines_total")) < lines:
        assert asyncio.get_running_loop().time() < deadline, (got, lines)
        await asyncio.sleep(0.02)


def check_labels(text: str) -> int:
    """Every label value is closed-set, numeric or a bounded source; returns how many."""
    checked = 0
    sources: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        assert family.name.startswith("lwsobs_"), family.name
        for sample in family.samples:
            for name, value in sample.labels.items():
                checked += 1
                assert MARK not in value, (family.name, name, value)
                if name in CLOSED:
                    assert value in CLOSED[name], (family.name, name, value)
                elif name == "le":
                    float(value)
                elif name == "source":
                    assert SOURCE.match(value), (family.name, value)
                    sources.setdefault(family.name, set()).add(value)
                else:
                    assert OTHER_VALUE.match(value), (family.name, name, value)
    assert sources and all(len(v) <= 101 for v in sources.values()), {
        k: len(v) for k, v in sources.items()
    }
    assert any("other" in v for v in sources.values())  # the 151 producers were folded
    return checked
