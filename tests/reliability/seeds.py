"""Real wire-v1 lines to mutate: a recording of the lws test app under the C shim.

`data/lws-recording.ndjson` was made by `python -m tests.reliability.seeds` (run from the
repository root after `make -C shim && make -C tests/lws`): the plain test app, preloaded with
the shim, pointed at a loopback UDP socket, driven by the standard traffic of the shim tests
(keep-alive pair, Connection: close, 404, hostile and 3 KB URIs, a websocket echo, and lws' own
http and websocket clients against itself), then stopped with SIGTERM. Every line is exactly
as the shim sent it.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

RECORDING = Path(__file__).with_name("data") / "lws-recording.ndjson"


@cache
def recorded_lines() -> tuple[bytes, ...]:
    """The recording, one line per item, without newlines."""
    return tuple(line for line in RECORDING.read_bytes().split(b"\n") if line)


def recorded_events() -> list[dict[str, Any]]:
    """The recording as JSON objects (fresh copies: callers may edit them)."""
    return [json.loads(line) for line in recorded_lines()]


def record(path: Path = RECORDING) -> int:
    """Run the test app under the shim and write what it sends; returns the number of lines."""
    from tests.integration.test_shim import APP_PLAIN, SHIM, Collector, drive, run_app

    collector = Collector()
    try:
        with run_app(APP_PLAIN, collector.endpoint, preload=SHIM, client_self=True) as app:
            drive(app)
        events = collector.wait_for(lambda evs: bool(evs) and evs[-1].r == -5, timeout=10)
        assert events and events[-1].r == -5, "no BYE from the app"
        with collector._lock:
            datagrams = list(collector.datagrams)
    finally:
        collector.close()
    lines = [line for data in datagrams for line in data.split(b"\n") if line]
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return len(lines)


if __name__ == "__main__":
    print(f"{record()} lines written to {RECORDING}")
