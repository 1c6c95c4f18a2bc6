"""Unix datagram socket ingest: same lines as UDP, reachable only by the same user.

The socket file is created with mode 0600 (only its owner, normally the producer's user, may
send), a stale file from a crashed run is replaced, and the file is removed on close, but only
if it is still ours. Unix datagrams may be larger than a UDP payload; anything above the wire's
datagram limit is dropped whole and counted as oversize.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import stat

from lwsobs.sources.lws.pipeline import IngestPipeline
from lwsobs.sources.lws.udp import (
    BATCH,
    BUDGET_S,
    MAX_DATAGRAM,
    RCVBUF_BYTES,
    DatagramReceiver,
    set_receive_buffer,
)

log = logging.getLogger("lwsobs.ingest")

SOCKET_MODE = 0o600


class UnixReceiver(DatagramReceiver):
    """A DatagramReceiver that owns its socket file."""

    def __init__(
        self,
        sock: socket.socket,
        pipeline: IngestPipeline,
        path: str,
        *,
        max_datagram: int = MAX_DATAGRAM,
        batch: int = BATCH,
        budget_s: float = BUDGET_S,
    ) -> None:
        super().__init__(
            sock, pipeline, "unix", max_datagram=max_datagram, batch=batch, budget_s=budget_s
        )
        self.path = path
        st = os.stat(path)
        self._identity = (st.st_dev, st.st_ino)

    def close(self) -> None:
        super().close()
        with contextlib.suppress(FileNotFoundError):
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) == self._identity:  # another run may have taken the path
                os.unlink(self.path)


def remove_stale_socket(path: str) -> None:
    """Remove a socket file nobody receives on; refuse to touch anything else."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise FileExistsError(errno.EEXIST, "exists and is not a socket", path)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:  # nobody bound to it: left by a run that died
        os.unlink(path)
        return
    except FileNotFoundError:
        return
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, "another process receives on this socket", path)


def bind_private(sock: socket.socket, path: str) -> None:
    """Bind with mode 0600 from the start (umask), and chmod in case the umask was ignored."""
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    os.chmod(path, SOCKET_MODE)


async def start_unix(
    pipeline: IngestPipeline,
    path: str,
    *,
    rcvbuf: int = RCVBUF_BYTES,
    max_datagram: int = MAX_DATAGRAM,
    batch: int = BATCH,
    budget_s: float = BUDGET_S,
) -> UnixReceiver:
    """Bind a unix datagram socket at `path` (mode 0600) and start draining it."""
    remove_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        granted = set_receive_buffer(sock, rcvbuf)
        bind_private(sock, path)
    except BaseException:
        sock.close()
        raise
    try:
        receiver = UnixReceiver(
            sock, pipeline, path, max_datagram=max_datagram, batch=batch, budget_s=budget_s
        )
        receiver.start(asyncio.get_running_loop())
    except BaseException:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    log.info(
        "lwsobs ingest: unix datagrams on %s (receive buffer %d bytes), mode %04o: this user only",
        path,
        granted,
        SOCKET_MODE,
    )
    return receiver
