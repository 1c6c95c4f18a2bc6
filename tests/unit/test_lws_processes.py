"""A process that is gone did not leak: crashes, kills, restarts, expiry and pass-through shims.

The decoder abandons the wsis of a producer whose process is gone (AbandonReason) and never
flags them; a second instance of a program running at the same time is kept apart. /proc is
faked by a directory of pid entries, the real thing ProcessWatch reads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from lwsobs.core.model import Wsi
from lwsobs.core.policy import NS
from lwsobs.core.sink import BaseSink
from lwsobs.core.tracker import Tracker
from lwsobs.sinks.metrics.sink import MetricsSink
from lwsobs.sources.lws.decoder import LwsDecoder
from lwsobs.sources.lws.pipeline import IngestPipeline
from lwsobs.sources.lws.process import ProcessWatch, unobserved_reason
from lwsobs.sources.lws.wire import Event

T0 = 1_800_000_000_000_000_000
MS = 1_000_000


class Recorder(BaseSink):
    def __init__(self) -> None:
        self.flags: list[tuple[Wsi, str, bool]] = []
        self.abandoned: list[tuple[Wsi, str]] = []

    def wsi_flagged(self, wsi: Wsi, rule: str, certain: bool) -> None:
        self.flags.append((wsi, rule, certain))

    def wsi_abandoned(self, wsi: Wsi, reason: str) -> None:
        self.abandoned.append((wsi, reason))


class Producers:
    """Several producers feeding one decoder, each with its own seq; time is given per line."""

    def __init__(self, processes: ProcessWatch | None = None, expiry_s: float | None = None):
        self.rec = Recorder()
        self.metrics = MetricsSink()
        self.tracker = Tracker([self.rec, self.metrics])
        self.decoder = LwsDecoder(self.tracker, processes=processes, expiry_s=expiry_s)
        self.seqs: dict[str, int] = {}

    def __call__(self, src: str, t_ms: int, r: int, wsi: str | None = None, **f: Any) -> None:
        seq = self.seqs[src] = self.seqs.get(src, -1) + 1
        if r >= 0 or r in (-3, -4, -6, -7):
            f.setdefault("ctx", "c1")
        self.decoder.feed(Event(v=1, src=src, seq=seq, t=T0 + t_ms * MS, r=r, wsi=wsi, **f))

    def hello(self, src: str, t_ms: int, pid: int, **f: Any) -> None:
        self(src, t_ms, -1, lws="4.3.10", pid=pid, host="box", hb=2000, **f)

    def serve(self, src: str, t_ms: int, conn: str = "a1") -> None:
        """A listen socket and one keep-alive connection in the middle of a request."""
        self(src, t_ms, -6, vh="default", port=7681, n=1)
        self(src, t_ms + 1, 17, "l1", afd=7, vh="default", port=7681)
        self(src, t_ms + 2, 29, conn, fd=-1)
        self(src, t_ms + 3, 18, conn, uri="/", method="GET")

    def live(self) -> int:
        return self.tracker.live_count()


def fake_proc(tmp_path: Path, *pids: int) -> Path:
    for pid in pids:
        (tmp_path / str(pid)).mkdir()
    return tmp_path


def test_a_crash_abandons_its_wsis_and_is_no_leak() -> None:
    p = Producers()
    p.hello("app@box:10", 0, 10)
    p.serve("app@box:10", 1)
    p("app@box:10", 50, -8, sig=11)
    assert p.live() == 0 and p.rec.flags == []
    assert sorted((w.role.value, why) for w, why in p.rec.abandoned) == [
        ("h1-server", "crashed"),
        ("listen", "crashed"),
    ]
    assert p.metrics.abandoned[("app", p.rec.abandoned[0][0].role, "crashed")] == 1
    (conn,) = [w for w, _ in p.rec.abandoned if w.role.value == "h1-server"]
    assert conn.end_ns == T0 + 50 * MS  # it ended when the process did
    # its in-flight transaction ended with it
    assert conn.end_reason == "abandoned"


def test_lines_after_a_crash_are_ignored_until_a_new_hello() -> None:
    p = Producers()
    p.hello("app@box:10", 0, 10)
    p.serve("app@box:10", 1)
    p("app@box:10", 50, -8, sig=6)
    p("app@box:10", 51, 30, "a1")  # a line that was still on its way
    assert p.live() == 0 and p.decoder.stats["lines_after_exit"] == 1
    assert p.decoder.stats["listen_seen_at_destroy"] == 0


def test_a_quick_restart_while_the_old_pid_is_gone_abandons_the_old_run(tmp_path: Path) -> None:
    """kill -9, restart within a second: /proc says the old pid is gone."""
    p = Producers(ProcessWatch("box", str(fake_proc(tmp_path, 11))))
    p.hello("app@box:10", 0, 10)
    p.serve("app@box:10", 1)
    p.hello("app@box:11", 500, 11)  # 0.5 s later: not even one heartbeat missed
    assert p.rec.flags == []
    assert {why for _, why in p.rec.abandoned} == {"exited"}
    assert len(p.rec.abandoned) == 2
    p.serve("app@box:11", 501)
    assert p.live() == 2


def test_without_proc_a_restart_ends_a_run_quiet_for_three_heartbeats() -> None:
    """lwsobs replay (or another host): only the producers' own clock can tell."""
    p = Producers()
    p.hello("app@box:10", 0, 10)
    p.serve("app@box:10", 1)
    p.hello("app@box:11", 7000, 11)  # 7 s of nothing from pid 10: 3 heartbeats missed
    assert p.rec.flags == [] and len(p.rec.abandoned) == 2


def test_two_instances_at_once_are_kept_apart() -> None:
    """The same LWSOBS_SOURCE in two running processes: neither ends the other."""
    p = Producers()
    p.hello("app@box:10", 0, 10)
    p.serve("app@box:10", 1)
    p.hello("app@box:11", 1000, 11)  # pid 10 spoke a second ago: still running
    p.serve("app@box:11", 1001)
    assert p.live() == 4 and p.rec.abandoned == []
    p("app@box:11", 2000, -4)  # pid 11 destroys its context
    assert p.live() == 2  # pid 10's wsis are untouched
    assert [rule for _, rule, _ in p.rec.flags] == ["context_destroyed"] * 2


def test_a_local_process_whose_pid_is_gone_is_ended_by_the_tick(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, 10)
    p = Producers(ProcessWatch("box", str(proc)))
    p.hello("app@box:10", 0, 10)
    p.serve("app@box:10", 1)
    p.decoder.tick(T0 + NS)
    assert p.live() == 2
    (proc / "10").rmdir()  # kill -9: no BYE, no FATAL
    p.decoder.tick(T0 + 2 * NS)
    assert p.live() == 0 and p.rec.flags == []
    assert {why for _, why in p.rec.abandoned} == {"exited"}


def test_a_process_on_another_host_is_never_judged_by_this_proc(tmp_path: Path) -> None:
    p = Producers(ProcessWatch("here", str(tmp_path)))  # no pid exists in this "proc"
    p("app@there:10", 0, -1, lws="4.3.10", pid=10, host="there")
    p.serve("app@there:10", 1)
    p.decoder.tick(T0 + NS)
    assert p.live() == 2


def test_a_silent_source_expires() -> None:
    p = Producers(expiry_s=60)
    p.hello("app@there:10", 0, 10)
    p.serve("app@there:10", 1)
    p.decoder.source_silent("app@there:10", T0 + 30 * NS)
    assert [rule for _, rule, _ in p.rec.flags] == ["source_lost"] * 2  # suspects
    p.decoder.tick(T0 + 89 * NS)
    assert p.live() == 2
    p.decoder.tick(T0 + 90 * NS)
    assert p.live() == 0 and {why for _, why in p.rec.abandoned} == {"expired"}
    # an expired source that speaks again simply starts afresh
    p.serve("app@there:10", 100_000)
    assert p.live() == 2


def test_the_pipeline_tick_drives_the_decoder(tmp_path: Path) -> None:
    p = Producers(ProcessWatch("box", str(tmp_path)), expiry_s=0)  # pid 10 is not running
    pipeline = IngestPipeline(p.decoder, silence_limit_s=1)
    pipeline.feed_lines(
        b'{"v":1,"src":"app@box:10","seq":0,"t":1,"r":-1,"pid":10,"host":"box"}\n'
        b'{"v":1,"src":"app@box:10","seq":1,"t":2,"r":-6,"ctx":"c","vh":"d","port":80}\n',
        "udp",
        T0,
    )
    assert p.live() == 1
    pipeline.tick(T0 + NS // 2)
    assert p.live() == 0


def test_an_unobserved_shim_is_listed_with_its_reason() -> None:
    p = Producers()
    why = "libwebsockets 3.2.0 not supported (4.1 to 5.0 are)"
    p("old@box:10", 0, -1, lws="3.2.0", pid=10, host="box", unobserved=why)
    assert dict(p.decoder.unobserved()) == {("old", "version_mismatch"): 1}
    (family, _) = p.decoder.families()
    assert [(s.labels, s.value) for s in family.samples] == [
        ({"source": "old", "reason": "version_mismatch"}, 1)
    ]
    p("old@box:10", 5, -5)  # its BYE at exit
    assert dict(p.decoder.unobserved()) == {}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("libwebsockets 3.2.0 not supported (4.1 to 5.0 are)", "version_mismatch"),
        ("libwebsockets 4.3.0 lacks lws_get_vhost_name", "missing_function"),
        ("something else", "other"),
    ],
)
def test_unobserved_reasons_are_a_closed_set(text: str, reason: str) -> None:
    assert unobserved_reason(text) == reason


def test_process_watch_answers_only_for_its_own_host(tmp_path: Path) -> None:
    watch = ProcessWatch("box", str(fake_proc(tmp_path, 42)))
    assert watch.alive("box", 42) is True
    assert watch.alive("box", 43) is False
    assert watch.alive("elsewhere", 43) is None
    assert watch.alive("box", None) is None and watch.alive(None, 42) is None
    real = ProcessWatch()  # this host, the real /proc: this test's own process runs
    assert real.alive(real.host, os.getpid()) is True
