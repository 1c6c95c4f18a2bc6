"""The lws demo replayer's pure parts: gaps, names, rebasing, renumbering, datagram batching."""

from __future__ import annotations

import copy
import json
from typing import Any

from lwsobs.app.demo_lws import (
    BATCH_NS,
    MAX_GAP_NS,
    datagrams,
    offsets,
    rebase,
    source_names,
)
from lwsobs.sources.lws.pipeline import IngestPipeline
from lwsobs.sources.lws.wire import BYE, CONTEXT_DESTROYED, HELLO, Event, parse_datagram

MS = 1_000_000
T_REC = 1_600_000_000_000_000_000  # when the recording was made
MONO_REC = 9_000_000_000
T0 = 1_800_000_000_000_000_000  # when a pass starts
MONO0 = 50_000_000_000


def rec(src: str, seq: int, t_ms: float, r: int, **fields: Any) -> dict[str, Any]:
    t = T_REC + round(t_ms * MS)
    return {"v": 1, "src": src, "seq": seq, "t": t, "mono": t - T_REC + MONO_REC, "r": r, **fields}


def recording() -> list[dict[str, Any]]:
    """Two producers interleaved; the server's seq has a hole where a line was cut out."""
    return [
        rec("app@server", 0, 0, HELLO, pid=7, host="h", lws="4.1.6"),
        rec("app@server", 1, 1, 17, wsi="a0", afd=9, peer="127.0.0.1:4000"),
        rec("app@server", 2, 1.5, 29, wsi="b0"),
        rec("app@client", 0, 2, HELLO, pid=8, host="h", lws="4.1.6"),
        rec("app@client", 1, 3, 85, wsi="c0"),
        rec("app@server", 3, 4, 18, wsi="b0", uri="/"),
        rec("app@server", 5, 3000, 30, wsi="b0"),  # 3 s later, after a removed line
        rec("app@client", 2, 2999, 30, wsi="c0"),  # a clock a little behind the server's
        rec("app@client", 3, 3001, BYE),
        rec("app@server", 6, 3002, CONTEXT_DESTROYED, ctx="1"),
        rec("app@server", 7, 3003, BYE),
    ]


# -- offsets -------------------------------------------------------------------------------------


def test_offsets_keep_short_gaps_and_cut_long_ones() -> None:
    got = offsets(recording())
    assert got[:6] == [0, 1 * MS, 1_500_000, 2 * MS, 3 * MS, 4 * MS]
    assert got[6] == 4 * MS + MAX_GAP_NS  # 2996 ms of pause cut to half a second
    assert got[7] == got[6]  # one ms backwards across two producers: no gap, never negative
    assert got[8:] == [got[7] + 2 * MS, got[7] + 3 * MS, got[7] + 4 * MS]


def test_offsets_of_a_custom_gap_limit() -> None:
    assert offsets(recording(), 2 * MS)[:7] == [0, MS, 1_500_000, 2 * MS, 3 * MS, 4 * MS, 6 * MS]


# -- names ---------------------------------------------------------------------------------------


def test_source_names_keep_the_instance_and_never_clash() -> None:
    names = source_names(["app@server", "other@server", "bare", "app@server", "x@" + "y" * 80])
    assert names["app@server"] == "lws-demo@server"
    assert names["other@server"] == "lws-demo@server.2"
    assert names["bare"] == "lws-demo@bare"
    assert len(names) == 4 and len(set(names.values())) == 4
    assert all(len(n) <= 64 for n in names.values())
    for new in names.values():  # every new name is a valid wire-v1 src
        (event,), bad = parse_datagram(
            json.dumps({"v": 1, "src": new, "seq": 0, "t": 1, "r": -2}).encode()
        )
        assert not bad and event.src == new


# -- rebasing ------------------------------------------------------------------------------------


def test_rebase_renames_renumbers_and_moves_time_to_now() -> None:
    original = recording()
    kept = copy.deepcopy(original)
    schedule = rebase(original, T0, MONO0)
    assert original == kept  # the recording itself is never modified
    at = [a for a, _ in schedule]
    assert at == offsets(original)
    lines = [line for _, line in schedule]
    assert [(x["src"], x["seq"]) for x in lines] == [
        ("lws-demo@server", 0),
        ("lws-demo@server", 1),
        ("lws-demo@server", 2),
        ("lws-demo@client", 0),
        ("lws-demo@client", 1),
        ("lws-demo@server", 3),
        ("lws-demo@server", 4),  # no gap where the recorded seq jumped from 3 to 5
        ("lws-demo@client", 2),
        ("lws-demo@client", 3),
        ("lws-demo@server", 5),
        ("lws-demo@server", 6),
    ]
    assert [x["t"] for x in lines] == [T0 + a for a in at]
    assert [x["mono"] for x in lines] == [MONO0 + a for a in at]
    # everything else is what the producer sent
    strip = ("src", "seq", "t", "mono")
    assert [{k: v for k, v in x.items() if k not in strip} for x in lines] == [
        {k: v for k, v in x.items() if k not in strip} for x in original
    ]


def test_rebase_restarts_seq_at_every_hello_and_leaves_absent_mono_absent() -> None:
    lines = [
        {"v": 1, "src": "a@1", "seq": 40, "t": T_REC, "r": HELLO},
        {"v": 1, "src": "a@1", "seq": 41, "t": T_REC + 1, "r": 29, "wsi": "1"},
        {"v": 1, "src": "a@1", "seq": 0, "t": T_REC + 2, "r": HELLO},  # restarted in the file
        {"v": 1, "src": "a@1", "seq": 1, "t": T_REC + 3, "r": 30, "wsi": "1"},
    ]
    sent = [line for _, line in rebase(lines, T0, MONO0, name="demo")]
    assert [(x["src"], x["seq"]) for x in sent] == [("demo@1", 0), ("demo@1", 1)] * 2
    assert all("mono" not in x for x in sent)


def test_two_passes_are_two_clean_producer_runs_for_the_pipeline() -> None:
    """Each pass is a restart (a new HELLO), so nothing is lost or taken for a duplicate."""
    fed: list[tuple[str, int, int]] = []

    class Consumer:
        def feed(self, event: Event) -> None:
            fed.append((event.src, event.seq, event.r))

        def lines_lost(self, src: str, count: int) -> None:
            raise AssertionError(f"{count} lines lost for {src}")

        def source_silent(self, src: str, now_ns: int) -> None:
            raise AssertionError(f"{src} silent")

    pipeline = IngestPipeline(Consumer())
    for n in range(2):
        start = T0 + n * 15_000_000_000
        for at, data in datagrams(rebase(recording(), start, MONO0 + n * 15_000_000_000)):
            pipeline.feed_datagram(data, "udp", start + at)
    assert len(fed) == 2 * len(recording())
    assert pipeline.lost_total == 0 and pipeline.duplicates_total == 0
    assert pipeline.live_sources == 0  # every producer said BYE


# -- datagrams -----------------------------------------------------------------------------------


def test_datagrams_batch_per_source_like_the_shim() -> None:
    schedule = rebase(recording(), T0, MONO0)
    sent = datagrams(schedule)
    assert [at for at, _ in sent] == sorted(at for at, _ in sent)
    per_src: dict[str, list[int]] = {}
    for at, data in sent:
        events, bad = parse_datagram(data)
        assert not bad and events
        assert len({e.src for e in events}) == 1  # one producer per datagram
        assert all(e.t <= T0 + at for e in events)  # never sent before a line was made
        assert all(T0 + at - e.t <= BATCH_NS for e in events)  # nor held past the batch age
        per_src.setdefault(events[0].src, []).extend(e.seq for e in events)
        if any(e.r in (CONTEXT_DESTROYED, BYE) for e in events):
            assert events[-1].r in (CONTEXT_DESTROYED, BYE)  # these leave at once
    assert per_src == {"lws-demo@server": list(range(7)), "lws-demo@client": list(range(4))}
    # the server's first four lines (4 ms) left together when the batch was 20 ms old
    first = parse_datagram(sent[0][1])[0]
    assert [e.seq for e in first] == [0, 1, 2, 3] and sent[0][0] == BATCH_NS


def test_datagrams_stay_under_the_size_limit() -> None:
    lines = [
        {"v": 1, "src": "a@1", "seq": i, "t": T_REC + i, "r": 12, "uri": "/" + "x" * 300}
        for i in range(40)
    ]
    sent = datagrams(rebase(lines, T0, MONO0), max_bytes=1024)
    assert len(sent) > 1
    assert all(len(data) <= 1024 for _, data in sent)
    seqs = [e.seq for _, data in sent for e in parse_datagram(data)[0]]
    assert seqs == list(range(40))
