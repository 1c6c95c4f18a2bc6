"""Any sequence of valid wire-v1 events, in any order, leaves the decoder and the table sound.

The wire only checks each line's shape; what the lines say may be impossible (a destroy before
a create, a stream whose network wsi never existed, a BYE in the middle, pointers reused across
contexts). Hypothesis drives such sequences through the real pipeline, decoder and Tracker:
no exception may reach the pipeline (it would count a consumer error), and the table must stay
consistent: the live counter equals the table, suspects are live, closed label sets only.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lwsobs.core.roles import SUSPECT_RULES, LeakRule, Role
from lwsobs.sources.lws.pipeline import IngestPipeline
from lwsobs.sources.lws.reasons import LwsReason
from tests.reliability.consumers import CountingDecoder, table_is_consistent

T0 = 1_800_000_000 * 10**9
REASONS = [int(r) for r in LwsReason] + [-1, -2, -3, -4, -5, -6, -7, -8, 9999, -77]
POINTERS = ["a1", "a2", "a3", "10", "0"]

_EVENT = st.fixed_dictionaries(
    {"r": st.sampled_from(REASONS)},
    optional={
        "src": st.sampled_from(["app@h:1", "app@h:2", "other@h:1"]),
        "ctx": st.sampled_from(["c1", "c2"]),
        "wsi": st.sampled_from(POINTERS),
        "nwsi": st.sampled_from(POINTERS),
        "parent": st.sampled_from(POINTERS),
        "child": st.sampled_from(POINTERS),
        "fd": st.integers(-1, 20),
        "afd": st.integers(-1, 20),
        "fake": st.booleans(),
        "ssl": st.booleans(),
        "status": st.sampled_from([None, 0, 101, 200, 302, 404, 999, -1, 2**63 - 1]),
        "uri": st.text(max_size=12),
        "method": st.sampled_from(["GET", "POST", "", "\u0000"]),
        "peer": st.sampled_from(
            ["127.0.0.1:1", "[::ffff:1.2.3.4]:5", "::1", "", "x:y:z", "[", "]"]
        ),
        "upg": st.sampled_from(["websocket", "h2c", "", "zz"]),
        "why": st.sampled_from(["lws_http_transaction_completed", "client_reset", "x"]),
        "pid": st.integers(0, 3),
        "port": st.sampled_from([None, -1, 0, 80, 7681]),
        "n": st.sampled_from([None, -5, 0, 1, 2, 10**6]),
        "vh": st.sampled_from(["default", "second", ""]),
        "tag": st.sampled_from(
            ["[wsicli|0|GET/h1]", "[wsi|0|listen|default||80]", "[wsi|1|pipe]", "[mux|2|x]", "["]
        ),
        "hb": st.sampled_from([None, 0, 2000, -1]),
        "host": st.sampled_from(["h", "x"]),
        "addr": st.sampled_from(["example.com", ""]),
        "unobserved": st.sampled_from([None, "libwebsockets 3.2 not supported"]),
        "t_step": st.integers(-(10**9), 10**12),
    },
)


def lines_of(events: list[dict[str, Any]]) -> bytes:
    seq: dict[str, int] = {}
    t = T0
    out = []
    for event in events:
        src = event.pop("src", "app@h:1")
        t += event.pop("t_step", 1000)
        seq[src] = seq.get(src, -1) + 1
        out.append(json.dumps({"v": 1, "src": src, "seq": seq[src], "t": t, **event}).encode())
    return b"\n".join(out)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_EVENT, min_size=1, max_size=60), st.integers(0, 3))
def test_any_event_sequence_keeps_the_decoder_and_table_sound(
    events: list[dict[str, Any]], silences: int
) -> None:
    consumer = CountingDecoder()
    pipeline = IngestPipeline(consumer, silence_limit_s=1.0)
    counts = pipeline.feed_lines(lines_of(events), "http", T0)
    for i in range(silences):  # the sources may also go silent in the middle of anything
        pipeline.tick(T0 + (i + 2) * 10**12)
    assert counts.rejected == 0 and counts.accepted == len(events)
    assert pipeline.consumer_errors == 0, repr(pipeline.last_error)
    tracker = consumer.tracker
    assert table_is_consistent(tracker)
    tracker.tick(T0 + 10**15)  # every idle limit passed: still sound
    tracker.shutdown(T0 + 10**15)
    assert tracker.live_total == 0 and table_is_consistent(tracker)
    labels = set(consumer.metrics.leaked)
    assert {rule for _, _, rule in labels} <= {r.value for r in LeakRule}
    assert {role for _, role, _ in labels} <= set(Role)
    assert all(wsi.leak in {r.value for r in SUSPECT_RULES} for wsi in tracker.suspect_wsis())
