"""Bad input: a million mutated lines, hypothesis, and a share over real UDP.

Every line a producer sends is judged exactly once: accepted, or rejected under the reason the
spec gives (tests/reliability/oracle.py, written from the spec alone, judges each distinct line
independently); every accepted line is applied to the real lws decoder once or counted as a
duplicate, never both; nothing raises anywhere (the decoder included: its errors would be
counted in consumer_errors).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lwsobs.sources.lws.pipeline import IngestPipeline
from lwsobs.sources.lws.udp import start_udp
from tests.conftest import eventually
from tests.reliability.consumers import CountingDecoder, table_is_consistent
from tests.reliability.figures import record
from tests.reliability.mutate import MUTATIONS, corpus, megabyte
from tests.reliability.oracle import judge
from tests.reliability.seeds import recorded_lines

TOTAL_LINES = 1_000_000
POOL = 50_000  # distinct mutated lines, sent 20 times under new producer names
LINES_PER_BODY = 32
T0 = 1_800_000_000 * 10**9
PROGRAM = b"lws_testapp_plain@"  # the recording's program name


def renamed(line: bytes, producer: int) -> bytes:
    """The line as producer number `producer` sends it: same length, same judgement.

    Each pass over the recording is a new producer (a new `src` and program name), so its
    lines are new lines to the pipeline, not duplicates, and the decoder sees them all.
    """
    return line.replace(PROGRAM, b"p%08d_testapp@" % producer)


def expected_rejections(lines: list[bytes], times: int = 1) -> Counter[str]:
    counts: Counter[str] = Counter()
    for line in lines:
        reason = judge(line)
        if reason is not None:
            counts[reason] += times
    return counts


def rejected_by_reason(pipeline: IngestPipeline) -> Counter[str]:
    counts: Counter[str] = Counter()
    for (_, reason), n in pipeline.rejected.items():
        counts[reason.value] += n
    return counts


def test_the_oracle_and_the_recording_agree_on_the_unmutated_lines() -> None:
    lines = recorded_lines()
    assert len(lines) > 100 and all(judge(line) is None for line in lines)


def test_a_million_mutated_lines_are_each_judged_once_and_applied_once() -> None:
    seeds = recorded_lines()
    pool = [line for _, line in corpus(seeds, POOL, seed=7)]
    pool[POOL // 2 : POOL // 2] = [megabyte(seeds[i]) for i in (5, 50, 120)]
    cycles = -(-TOTAL_LINES // len(pool))
    per_cycle = expected_rejections(pool)
    expected = Counter({reason: n * cycles for reason, n in per_cycle.items()})
    total = len(pool) * cycles
    consumer = CountingDecoder()
    pipeline = IngestPipeline(consumer)
    sampled: Counter[str] = Counter()  # the oracle on every 97th renamed line, as sent
    sampled_expected: Counter[str] = Counter()
    started = time.perf_counter()
    now = T0
    passes = -(-len(pool) // len(seeds))
    for cycle in range(cycles):
        lines = [renamed(line, cycle * passes + i // len(seeds)) for i, line in enumerate(pool)]
        for i in range(0, len(lines), 97):
            sampled[judge(lines[i]) or "accepted"] += 1
            sampled_expected[judge(pool[i]) or "accepted"] += 1
        for start in range(0, len(lines), LINES_PER_BODY):
            now += 1000
            pipeline.feed_lines(b"\n".join(lines[start : start + LINES_PER_BODY]), "file", now)
    elapsed = time.perf_counter() - started
    rejected = rejected_by_reason(pipeline)
    accepted = total - sum(rejected.values())
    assert total >= TOTAL_LINES
    assert pipeline.lines["file"] == total
    assert sampled == sampled_expected  # renaming the source never changes a judgement
    assert rejected == expected, (rejected, expected)
    assert consumer.fed + pipeline.duplicates_total == accepted
    assert pipeline.consumer_errors == 0, repr(pipeline.last_error)
    assert table_is_consistent(consumer.tracker)
    record("fuzz: lines through the pipeline (in-process)", f"{total:,} in {elapsed:.1f} s")
    record(
        "fuzz: rejections by reason",
        ", ".join(f"{reason} {n:,}" for reason, n in sorted(rejected.items())),
    )
    record(
        "fuzz: accepted lines",
        f"{accepted:,} ({consumer.fed:,} applied, {pipeline.duplicates_total:,} duplicates)",
    )
    record(
        "fuzz: producers (sources)",
        f"{cycles * passes:,}; label values {len(pipeline._labelled)} + other "
        f"({pipeline.folded:,} folded); wsi source labels folded "
        f"{consumer.tracker.sources_folded:,}",
    )
    record("fuzz: mutation operators", ", ".join(op.__name__ for op, _ in MUTATIONS))


# -- hypothesis ---------------------------------------------------------------------------------

_RECORDED = st.sampled_from(recorded_lines())
_OPERATORS = st.sampled_from([op for op, _ in MUTATIONS])
_MUTATED = st.builds(lambda op, line, rnd: op(line, rnd), _OPERATORS, _RECORDED, st.randoms())
_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
).map(lambda v: __import__("json").dumps(v).encode())
_LINE = st.one_of(_MUTATED, _RECORDED, _JSONISH, st.binary(min_size=1, max_size=300)).filter(
    lambda b: b"\n" not in b and bool(b)
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(_LINE, min_size=1, max_size=12), min_size=1, max_size=8))
def test_any_datagrams_are_counted_by_reason_and_applied_at_most_once(
    datagrams: list[list[bytes]],
) -> None:
    consumer = CountingDecoder(keep_pairs=True)
    pipeline = IngestPipeline(consumer)
    for i, lines in enumerate(datagrams):
        pipeline.feed_datagram(b"\n".join(lines), "unix", T0 + i)
    counted = [line for lines in datagrams for line in lines]  # none empty, none with \n
    rejected = rejected_by_reason(pipeline)
    assert pipeline.lines["unix"] == len(counted)
    assert rejected == expected_rejections(counted)
    accepted = len(counted) - sum(rejected.values())
    assert consumer.fed + pipeline.duplicates_total == accepted
    assert pipeline.consumer_errors == 0, repr(pipeline.last_error)
    assert table_is_consistent(consumer.tracker)


# -- over real UDP ------------------------------------------------------------------------------

UDP_LINES = 30_000
DATAGRAM_BYTES = 8_000  # about what the shim packs per datagram
WINDOW = 64  # datagrams in flight at most: nothing is lost in the kernel


def pack(lines: list[bytes]) -> list[bytes]:
    datagrams: list[bytes] = []
    current: list[bytes] = []
    size = 0
    for line in lines:
        if current and size + len(line) + 1 > DATAGRAM_BYTES:
            datagrams.append(b"\n".join(current))
            current, size = [], 0
        current.append(line)
        size += len(line) + 1
    if current:
        datagrams.append(b"\n".join(current))
    return datagrams


async def test_mutated_lines_over_real_udp_are_all_accounted_for() -> None:
    pool = [line for _, line in corpus(recorded_lines(), UDP_LINES, seed=11)]
    lines = [line for line in pool if len(line) < 60_000]  # a UDP payload holds 65,507 bytes
    datagrams = pack(lines)
    consumer = CountingDecoder()
    pipeline = IngestPipeline(consumer)
    # no time budget: shedding is the overload test's subject; here every line must be judged
    receiver = await start_udp(pipeline, "127.0.0.1", 0, budget_s=3600)
    started = time.perf_counter()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            for start in range(0, len(datagrams), WINDOW):
                for data in datagrams[start : start + WINDOW]:
                    sock.sendto(data, receiver.address)
                sent = min(start + WINDOW, len(datagrams))

                def caught_up(sent: int = sent) -> bool:
                    return receiver.datagrams >= sent

                await eventually(caught_up, timeout=30)
                await asyncio.sleep(0)
    finally:
        receiver.close()
    elapsed = time.perf_counter() - started
    rejected = rejected_by_reason(pipeline)
    assert receiver.datagrams == len(datagrams)
    assert pipeline.lines["udp"] == len(lines)
    assert rejected == expected_rejections(lines)
    accepted = len(lines) - sum(rejected.values())
    assert consumer.fed + pipeline.duplicates_total == accepted
    assert pipeline.consumer_errors == 0, repr(pipeline.last_error)
    assert sum(pipeline.dropped.values()) == 0
    record(
        "fuzz: lines over real UDP",
        f"{len(lines):,} in {len(datagrams):,} datagrams, {elapsed:.1f} s, none lost",
    )
