"""The service with ingest on: lws events over UDP and HTTP reach the decoder and /metrics."""

from __future__ import annotations

import json
import socket

import aiohttp

from lwsobs.app.service import build_app
from lwsobs.config import Config, HostPort
from lwsobs.observer import Observer
from tests.conftest import eventually, free_port, run_app
from tests.integration.test_replay import recording


def ndjson(lines: list[dict[str, object]]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


async def test_udp_events_become_wsis_metrics_and_leaks() -> None:
    udp_port = free_port()
    observer = Observer(Config(spans=False, udp=HostPort("127.0.0.1", udp_port)))
    async with run_app(build_app(observer)) as srv:
        lines = recording("udpapp@host:1")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for start in range(0, len(lines), 5):  # several lines per datagram, as the shim does
                sock.sendto(ndjson(lines[start : start + 5]), ("127.0.0.1", udp_port))
        await eventually(
            lambda: any(
                x["rule"] == "context_destroyed" for x in observer.live.leak_list(0)["leaks"]
            )
        )
        async with aiohttp.ClientSession() as session, session.get(srv.url + "/metrics") as resp:
            text = await resp.text()
    assert (
        'lwsobs_wsi_leaked_total{role="h1-server",rule="context_destroyed",source="udpapp"} 1.0'
        in text
    )
    assert 'lwsobs_wsi_created_total{role="ws-server"' not in text  # upgraded, not created as ws
    assert (
        'lwsobs_wsi_upgrades_total{from_role="h1-server",source="udpapp",to_role="ws-server"} 1.0'
        in text
    )
    assert 'lwsobs_ingest_lines_total{transport="udp"}' in text
    observer.close()


async def test_post_events_reports_counts_per_body() -> None:
    observer = Observer(Config(spans=False, udp=None))
    async with run_app(build_app(observer)) as srv, aiohttp.ClientSession() as session:
        body = ndjson(recording("httpapp@host:2")) + b"not json\n"
        headers = {"Content-Type": "application/x-ndjson"}
        async with session.post(srv.url + "/v1/events", data=body, headers=headers) as resp:
            assert resp.status == 200
            counts = await resp.json()
        assert counts["rejected"] == 1 and counts["accepted"] == len(recording())
        async with session.post(srv.url + "/v1/events", data=b"{}", headers={}) as resp:
            assert resp.status == 415
    leaks = observer.live.leak_list(0)["leaks"]
    assert [(x["source"], x["rule"]) for x in leaks] == [("httpapp", "context_destroyed")]
    observer.close()
