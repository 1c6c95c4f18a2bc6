"""A UDP flood of wire-v1 lines, run as its own process: `python -m tests.reliability.flood`.

It sends accepted-connection cycles (9 lines each, 60 lines per datagram, as the shim packs
them) as fast as one core allows for the given time, numbering every line, and prints how many
lines it sent, so the service's counts can be checked against it: every line is either parsed
or counted as lost.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import time

CYCLE = (
    b'{"v":1,"src":"%s","seq":%d,"t":%d,"r":17,"ctx":"55","wsi":"10","afd":9,"peer":"127.0.0.1:1"}',
    b'{"v":1,"src":"%s","seq":%d,"t":%d,"r":29,"ctx":"55","wsi":"%x","fd":-1}',
    b'{"v":1,"src":"%s","seq":%d,"t":%d,"r":19,"ctx":"55","wsi":"%x","fd":9}',
    b'{"v":1,"src":"%s","seq":%d,"t":%d,"r":18,"ctx":"55","wsi":"%x","uri":"/flood"}',
    b'{"v":1,"src":"%s","seq":%d,"t":%d,"r":12,"ctx":"55","wsi":"%x","uri":"/flood"}',
    b'{"v":1,"src":"%s","seq":%d,"t":%d,"r":50,"ctx":"55","wsi":"%x",'
    b'"why":"lws_http_transaction_completed"}',
    b'{"v":1,"src":"%s","seq":%d,"t":%d,"r":-2,"ctx":"55"}',
    b'{"v":1,"src":"%s","seq":%d,"t":%d,"r":5,"ctx":"55","wsi":"%x"}',
    b'{"v":1,"src":"%s","seq":%d,"t":%d,"r":30,"ctx":"55","wsi":"%x"}',
)
LINES_PER_DATAGRAM = 60


def flood(port: int, seconds: float, src: bytes, first_seq: int = 0) -> int:
    """Send for `seconds`; returns the number of lines sent (their seqs follow `first_seq`)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    address = ("127.0.0.1", port)
    seq = first_seq
    t0 = time.time_ns()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        lines = []
        for _ in range(LINES_PER_DATAGRAM):
            template = CYCLE[seq % len(CYCLE)]
            wsi = 0x10000000 + seq // len(CYCLE)  # never the listen pointer "10"
            if b"%x" in template:
                lines.append(template % (src, seq, t0 + seq, wsi))
            else:
                lines.append(template % (src, seq, t0 + seq))
            seq += 1
        with contextlib.suppress(OSError):  # a full buffer: lost like any other datagram
            sock.sendto(b"\n".join(lines), address)
    sock.close()
    return seq - first_seq


if __name__ == "__main__":
    print(flood(int(sys.argv[1]), float(sys.argv[2]), sys.argv[3].encode()))
