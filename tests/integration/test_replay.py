"""`lwsobs replay FILE`: a recorded wire-v1 stream through the real pipeline and decoder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from lwsobs.app.replay import chunks, replay, report
from lwsobs.config import Config
from lwsobs.observer import Observer

T0 = 1_800_000_000_000_000_000


def recording(src: str = "demoapp@host:77") -> list[dict[str, object]]:
    """A server with one keep-alive connection (2 requests), one websocket, one connection
    still open when its context is destroyed, a lone client 85, and one bad line."""
    seq = 0
    lines: list[dict[str, object]] = []

    def ev(r: int, wsi: str | None = None, **fields: object) -> None:
        nonlocal seq
        line: dict[str, object] = {
            "v": 1,
            "src": src,
            "seq": seq,
            "t": T0 + seq * 1_000_000,
            "r": r,
            "ctx": "0x5500",
        }
        if wsi is not None:
            line["wsi"] = wsi
        line.update(fields)
        lines.append(line)
        seq += 1

    ev(-1, lws="4.1.6", pid=77, host="host")
    ev(27, fake=True)
    for wsi, fd in (("0xa1", 7), ("0xa2", 8), ("0xa3", 9)):
        ev(17, "0x10", afd=fd, peer=f"127.0.0.1:{40000 + fd}")
        ev(29, wsi, fd=-1)
        ev(19, wsi, fd=fd)
    for uri in ("/one", "/two"):
        ev(18, "0xa1", uri=uri)
        ev(49, "0xa1")
        ev(50, "0xa1", why="lws_http_transaction_completed")
    ev(86, "0xa2", upg="websocket")
    ev(0, "0xa2")
    ev(85, "0xc1")
    ev(5, "0xa1")
    ev(30, "0xa1")
    ev(78, "0xa2", why="__lws_close_free_wsi")
    ev(30, "0xa2")
    ev(-3)
    ev(30, "0x10")
    ev(-4)
    ev(-5)
    return lines


def write(path: Path, lines: list[dict[str, object]]) -> None:
    body = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    path.write_bytes(body + b'{"v": 1, "src": "broken"\n')


def test_replay_reports_lifecycle_and_the_leak(tmp_path: Path) -> None:
    path = tmp_path / "events.ndjson"
    write(path, recording())
    result = replay(path, Observer(Config(spans=False)))
    data = report(result)
    by_role = {r["role"]: r for r in data["sources"]}
    assert by_role["h1-server"]["created"] == 3
    assert by_role["h1-server"]["transactions"] == 3  # two requests and the upgrade (101)
    assert by_role["ws-server"]["destroyed"] == 1
    assert by_role["listen"]["destroyed"] == 1
    assert [(x["role"], x["rule"]) for x in data["leaks"]] == [("h1-server", "context_destroyed")]
    assert data["ingest"]["rejected"] == {"not_json": 1}
    assert data["ingest"]["lost"] == 0
    assert all(r["source"] == "demoapp" for r in data["sources"])


def test_chunks_keep_lines_whole(tmp_path: Path) -> None:
    path = tmp_path / "big.ndjson"
    line = b'{"k": "' + b"x" * 1000 + b'"}\n'
    path.write_bytes(line * 3000 + b"tail-without-newline")
    with path.open("rb") as stream:
        pieces = list(chunks(stream))
    assert b"".join(pieces) == line * 3000 + b"tail-without-newline"
    assert all(p.endswith(b"\n") for p in pieces[:-1]) and len(pieces) > 2


def test_the_replay_command_prints_the_report(tmp_path: Path) -> None:
    path = tmp_path / "events.ndjson"
    write(path, recording())
    done = subprocess.run(
        [sys.executable, "-m", "lwsobs", "replay", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "context_destroyed" in done.stdout and "demoapp" in done.stdout
    as_json = subprocess.run(
        [sys.executable, "-m", "lwsobs", "replay", "--json", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(as_json.stdout)["leaks"][0]["rule"] == "context_destroyed"
    missing = subprocess.run(
        [sys.executable, "-m", "lwsobs", "replay", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2 and "nope" in missing.stderr
