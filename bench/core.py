"""Core benchmarks: memory per live wsi, /metrics render time, idle-check cost.

Targets (core, no network): <= 300 bytes per live wsi at 1,000,000 live; /metrics render <= 5 ms
at 1,000,000 live and independent of the wsi count; an idle tick costs O(due wsis), never a scan.
The machine is noisy, so every number is printed next to a baseline or a ratio measured in the same
run; nothing here asserts. Each measurement runs in a fresh subprocess so RSS and the GC heap of
one do not leak into the next.

    .venv/bin/python bench/core.py [--quick]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import itertools
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

N_LIVE = 1_000_000
T0 = 1_700_000_000 * 1_000_000_000  # a whole second, so wheel-slot arithmetic is exact
PEER = ("192.0.2.10", 443)  # one shared tuple: per-wsi cost must not include the peer address
TARGET_BYTES = 300
TARGET_RENDER_MS = 5.0
RESULT = "RESULT "

Result = dict[str, Any]


# -- helpers shared by the children ------------------------------------------------------------


def rss_bytes() -> int:
    """Current resident set size (statm), not the peak ru_maxrss, so deltas are meaningful."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def malloc_trim() -> bool:
    """Hand freed heap pages back to the OS, to separate live cost from build-time garbage."""
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


def alloc_size(n: int) -> int:
    """What pymalloc really hands out for an object of n bytes (16-byte classes up to 512)."""
    return (n + 15) // 16 * 16 if n <= 512 else n


@contextmanager
def gc_paused() -> Iterator[None]:
    """Keep a full collection of the 1M-object heap out of a timed call (it is not core cost)."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def quiet_leak_log() -> None:
    """The LeakLog sink writes one warning per flagged wsi: I/O, not core cost, and noise here."""
    logging.getLogger("lwsobs").setLevel(logging.ERROR)


def emit(result: Result) -> None:
    print(RESULT + json.dumps(result), flush=True)


# -- child: baseline -------------------------------------------------------------------------------


class _Small:
    __slots__ = ("a", "b")

    def __init__(self, a: int, b: int) -> None:
        self.a = a
        self.b = b


def child_baseline(n: int) -> Result:
    """A plain dict of n two-field slotted objects: the yardstick for this machine's speed now.

    Built twice: with GC paused (compare with timed ticks and renders, which pause it too) and
    with GC on (compare with the wsi build loop, which runs with GC on like a real producer).
    """
    timings: dict[str, float] = {}
    bytes_per_entry = 0.0
    for mode in ("paused", "on"):
        gc.collect()
        rss0 = rss_bytes()
        if mode == "paused":
            gc.disable()
        t0 = time.perf_counter_ns()
        table: dict[int, _Small] = {}
        for i in range(n):
            table[i] = _Small(i, T0 + i)
        timings[mode] = (time.perf_counter_ns() - t0) / n
        gc.enable()
        gc.collect()
        if mode == "paused":  # the second pass reuses the first one's freed arenas
            bytes_per_entry = (rss_bytes() - rss0) / n
        del table
    return {
        "ns_per_entry": timings["paused"],
        "ns_per_entry_gc": timings["on"],
        "bytes_per_entry": bytes_per_entry,
    }


# -- child: memory per live wsi ----------------------------------------------------------------


def _slot_names(obj: object) -> list[str]:
    names: list[str] = []
    for klass in type(obj).__mro__:
        slots = klass.__dict__.get("__slots__", ())
        names.extend([slots] if isinstance(slots, str) else slots)
    names = [n for n in names if n not in ("__weakref__", "__dict__")]
    if hasattr(obj, "__dict__"):
        names.extend(vars(obj))
    return names


def _fields_breakdown(sample: list[Any]) -> Result:
    """Bytes each wsi owns through its fields (ints and other unshared objects), per wsi."""
    seen: dict[int, int] = {}  # id -> how many sampled wsis reference it
    values: list[tuple[str, Any]] = []
    for wsi in sample:
        for name in _slot_names(wsi):
            value = getattr(wsi, name, None)
            if value is None or isinstance(value, bool):
                continue
            seen[id(value)] = seen.get(id(value), 0) + 1
            values.append((name, value))
    int_bytes: dict[str, int] = {}
    other_bytes: dict[str, int] = {}
    counted: set[int] = set()
    for name, value in values:
        if id(value) in counted or seen[id(value)] > 1:
            continue  # shared (context, role, peer tuple, cached small ints): not per wsi
        counted.add(id(value))
        target = int_bytes if type(value) is int else other_bytes
        target[name] = target.get(name, 0) + alloc_size(sys.getsizeof(value))
    n = len(sample)
    own_dict = sum(alloc_size(sys.getsizeof(vars(w))) for w in sample if hasattr(w, "__dict__"))
    return {
        "ints": {k: v / n for k, v in sorted(int_bytes.items())},
        "other": {k: v / n for k, v in sorted(other_bytes.items())},
        "instance_dict": own_dict / n,
    }


def _containers_breakdown(wsi: Any, exclude: set[int]) -> list[tuple[str, float]]:
    """Per-entry cost of every container that holds a wsi (found by gc, so layout-agnostic).

    A big container (live set, wheel bucket, index dict) is charged len-normalized; a small
    per-wsi object that holds it (a (deadline, wsi) tuple, say) is charged whole, and then its
    own containers are followed one level up.
    """
    out: list[tuple[str, float]] = []

    def visit(obj: Any, depth: int) -> None:
        for ref in gc.get_referrers(obj):
            if id(ref) in exclude or isinstance(ref, types.FrameType):
                continue
            exclude.add(id(ref))
            size = sys.getsizeof(ref)
            try:
                length = len(ref)
            except TypeError:
                length = 0
            kind = type(ref).__name__
            if length > 64:
                out.append((f"{kind} of {length:,} entries", size / length))
            elif depth == 0:
                out.append((f"own {kind}", float(alloc_size(size))))
                visit(ref, depth + 1)

    visit(wsi, 0)
    return out


def child_memory(variant: str, n: int) -> Result:
    """RSS delta of n live keep-alive wsis (one transaction bound and dropped on each)."""
    from lwsobs.config import Config
    from lwsobs.core.roles import Role
    from lwsobs.core.tracker import Tracker
    from lwsobs.observer import Observer

    quiet_leak_log()
    if variant == "observer":
        observer = Observer(Config(spans=False))
        tracker = observer.tracker
    else:
        # epoch_ns as the Observer sets it: wsi times are stored relative to it
        tracker = Tracker(epoch_ns=T0 - 1_000_000_000)
    ctx = tracker.context("bench", "c1")
    # Warm every lazily created structure (histograms, counters) before the baseline reading.
    for i in range(10):
        w = tracker.open(ctx, Role.H1_SERVER, T0 - 100 + i, peer=PEER)
        tracker.bind(w, T0 - 100 + i)
        tracker.drop(w, T0 - 99 + i, status=200)
        tracker.destroy(w, T0 - 99 + i)
    open_ = tracker.open
    bind = tracker.bind
    drop = tracker.drop
    role = Role.H1_SERVER
    gc.collect()
    malloc_trim()
    rss0 = rss_bytes()
    handles: list[Any] = [None] * n
    t0 = time.perf_counter_ns()
    for i in range(n):
        now = T0 + i
        w = open_(ctx, role, now, peer=PEER)
        bind(w, now)
        drop(w, now + 1, status=200)
        handles[i] = w
    elapsed = time.perf_counter_ns() - t0
    del w
    gc.collect()
    rss1 = rss_bytes()
    trimmed = malloc_trim()
    rss1_trim = rss_bytes()
    list_bytes = sys.getsizeof(handles)
    step = max(1, n // 1000)
    sample = handles[::step]
    probe = handles[n // 2]
    breakdown = {
        "wsi_type": type(probe).__name__,
        "wsi_getsizeof": sys.getsizeof(probe),
        "fields": _fields_breakdown(sample),
        "containers": _containers_breakdown(probe, {id(handles), id(sample)}),
        "handle_list_per_entry": list_bytes / n,
        "txn_state": {"transactions": probe.transactions, "txn": repr(probe.txn)},
    }
    return {
        "variant": variant,
        "n": n,
        "live": tracker.live_count(),
        "rss_delta": rss1 - rss0,
        "rss_delta_trimmed": rss1_trim - rss0 if trimmed else None,
        "list_bytes": list_bytes,
        "ns_per_wsi": elapsed / n,
        "breakdown": breakdown,
    }


# -- child: /metrics render ------------------------------------------------------------------------


def child_render(sizes: list[int], runs: int) -> Result:
    """Grow one Observer to each size in turn and time both exposition formats at each."""
    from prometheus_client.exposition import generate_latest as text_latest
    from prometheus_client.openmetrics.exposition import generate_latest as om_latest

    from lwsobs.config import Config
    from lwsobs.core.roles import LeakRule, Role
    from lwsobs.observer import Observer
    from lwsobs.sinks.metrics.exposition import render as fast_render

    quiet_leak_log()
    observer = Observer(Config(spans=False))
    tracker = observer.tracker
    roles = list(Role)

    def served_text(_: object) -> bytes:
        """What GET /metrics serves: lwsobs' own renderer (byte-identical to the baseline)."""
        return fast_render(observer.collector, False).encode()

    def served_openmetrics(_: object) -> bytes:
        return fast_render(observer.collector, True).encode()

    ctxs = [tracker.context(source, "c1") for source in ("lws", "aiohttp", "bench")]
    statuses = (200, 204, 301, 404, 500, None)
    registry = observer.registry
    results: list[Result] = []
    built = 0

    def collect_only(_: object) -> bytes:
        """The lwsobs side alone: build the metric families, format nothing."""
        return b"\n" * sum(1 for _ in observer.collector.collect())  # one line per family

    for size in sorted(sizes):
        for i in range(built, size):
            now = T0 + i * 1000
            ctx = ctxs[i % 3]
            role = roles[i % len(roles)]
            w = tracker.open(ctx, role, now, peer=PEER)
            tracker.bind(w, now, arrived=now - 7)
            if i % 10 != 9:  # 1 in 10 keeps a transaction open: transactions_active > 0
                tracker.drop(w, now + (i % 997) * 1_000_000, status=statuses[i % 6])
            if i % 100 == 3:
                tracker.flag(w, now, LeakRule.IDLE)  # a suspect stays live
            if role is Role.H1_SERVER and i % 1000 == 1:
                tracker.upgrade(w, Role.WS_SERVER, now)
            if i % 50 == 7:  # churn that stays out of the live table, for lifetime histograms
                gone = tracker.open(ctx, role, now, peer=PEER)
                tracker.bind(gone, now)
                tracker.drop(gone, now + 5_000_000, status=200)
                tracker.destroy(gone, now + (i % 9973) * 1_000_000)
            if i % 200 == 11:
                gone = tracker.open(ctx, role, now, peer=PEER)
                tracker.flag(gone, now, LeakRule.IDENTITY_REUSED)  # certain: leaves the table
        built = size
        row: Result = {"n": size, "live": tracker.live_count()}
        renders = (
            ("text", served_text),
            ("openmetrics", served_openmetrics),
            ("pc_text", text_latest),
            ("pc_openmetrics", om_latest),
            ("collect", collect_only),
        )
        for fmt, render in renders:
            for _ in range(3):
                render(registry)
            times: list[int] = []
            with gc_paused():
                for _ in range(runs):
                    t0 = time.perf_counter_ns()
                    body = render(registry)
                    times.append(time.perf_counter_ns() - t0)
            row[fmt] = {
                "median_ms": statistics.median(times) / 1e6,
                "min_ms": min(times) / 1e6,
                "bytes": len(body),
                "lines": body.count(b"\n"),
            }
        results.append(row)
    return {"runs": runs, "rows": results}


# -- child: idle ticks -----------------------------------------------------------------------------


def child_idle(n: int, ks: list[int], reps: int) -> Result:
    """n live idle-limited wsis; groups of K made due one tick at a time, the rest far later.

    'idle' groups are flagged by their tick; 'active' groups had activity after their deadline
    was set, so their tick only reschedules them (a drain tick, not timed, flags them later so
    they never land in another group's timed tick).
    """
    from lwsobs.core.policy import NS, LeakPolicy
    from lwsobs.core.roles import Role
    from lwsobs.core.tracker import Tracker
    from lwsobs.sinks.metrics.sink import MetricsSink

    limit_s = 60
    idle_roles = [Role.H1_SERVER, Role.H2_SERVER, Role.H2_STREAM, Role.H1_CLIENT, Role.H2_CLIENT]
    limits: dict[Role, float | None] = dict.fromkeys(Role, None)
    limits.update(dict.fromkeys(idle_roles, float(limit_s)))
    tracker = Tracker(sinks=[MetricsSink()], policy=LeakPolicy(limits))
    ctx = tracker.context("bench", "c1")
    groups = [(k, kind) for _ in range(reps) for k in ks for kind in ("idle", "active")]
    spacing = 200 * NS  # > limit + the active groups' reschedule, so groups never overlap
    rest_at = T0 + (len(groups) * 200 + 1000) * NS
    handles: list[Any] = []

    def build(start: int, count: int, touch_at: int | None) -> None:
        for j in range(count):
            w = tracker.open(ctx, idle_roles[j % 5], start + j, peer=PEER)
            if touch_at is not None:
                tracker.touch(w, touch_at)
            handles.append(w)

    def time_tick(now: int) -> tuple[int, float, int]:
        """Wall ns, kernel ms (page faults for new memory show up here) and wsis flagged."""
        with gc_paused():
            sys0 = resource.getrusage(resource.RUSAGE_SELF).ru_stime
            t0 = time.perf_counter_ns()
            flagged = tracker.tick(now)
            elapsed = time.perf_counter_ns() - t0
            sys_ms = (resource.getrusage(resource.RUSAGE_SELF).ru_stime - sys0) * 1e3
        return elapsed, sys_ms, len(flagged)

    def zero_due(now: int, runs: int = 2000) -> float:
        times = []
        with gc_paused():
            for _ in range(100):
                tracker.tick(now)  # warm-up
            for _ in range(runs):
                t0 = time.perf_counter_ns()
                tracker.tick(now)
                times.append(time.perf_counter_ns() - t0)
        return statistics.median(times) / 1e3

    starts = [T0 + g * spacing for g in range(len(groups))]
    k0, kind0 = groups[0]
    build(starts[0], k0, None if kind0 == "idle" else starts[0] + 30 * NS)
    zero_small = zero_due(T0 + NS, runs=2000)
    live_small = tracker.live_count()
    for (k, kind), start in zip(groups[1:], starts[1:], strict=True):
        build(start, k, None if kind == "idle" else start + 30 * NS)
    build(rest_at, n - len(handles), None)
    live = tracker.live_count()
    zero_big = zero_due(T0 + NS, runs=2000)

    timings: dict[str, dict[int, list[float]]] = {"idle": {}, "active": {}}
    kernel: dict[str, dict[int, list[float]]] = {"idle": {}, "active": {}}
    checks: list[Result] = []
    for (k, kind), start in zip(groups, starts, strict=True):
        elapsed, sys_ms, flagged = time_tick(start + (limit_s + 1) * NS)
        timings[kind].setdefault(k, []).append(elapsed)
        kernel[kind].setdefault(k, []).append(sys_ms)
        checks.append({"k": k, "kind": kind, "flagged": flagged, "live": tracker.live_count()})
        if kind == "active":
            tracker.tick(start + (limit_s + 31) * NS)  # drain: flag them outside timed ticks
    zero_after = zero_due(starts[-1] + (limit_s + 32) * NS, runs=2000)
    return {
        "n": n,
        "live": live,
        "live_small": live_small,
        "zero_due_us_small": zero_small,
        "zero_due_us_1m": zero_big,
        "zero_due_us_after": zero_after,
        "ticks": {kind: {str(k): v for k, v in by_k.items()} for kind, by_k in timings.items()},
        "sys_ms": {kind: {str(k): v for k, v in by_k.items()} for kind, by_k in kernel.items()},
        "checks": checks,
    }


# -- parent ----------------------------------------------------------------------------------------


def run_child(name: str, **kwargs: Any) -> Result:
    """Run one measurement in a fresh interpreter and parse the JSON it prints last."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", name, json.dumps(kwargs)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT)]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"child {name} failed (exit {proc.returncode})")
    result: Result = json.loads(lines[-1][len(RESULT) :])
    return result


Row = tuple[str, str, str, str]


def fmt_ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x" if base else "n/a"


def memory_rows(mem: Result, base_bytes: float, base_ns: float, detail: bool) -> list[Row]:
    n = mem["n"]
    label = "Observer(spans=False)" if mem["variant"] == "observer" else "bare Tracker(epoch)"
    incl = mem["rss_delta"] / n
    excl = (mem["rss_delta"] - mem["list_bytes"]) / n
    target = f"target <= {TARGET_BYTES}: {'OK' if excl <= TARGET_BYTES else 'OVER'}"
    rows: list[Row] = [
        ("memory", f"{label}: live wsis", f"{mem['live']:,}", "keep-alive: 1 txn bound+dropped"),
        ("", "  RSS delta / wsi, incl. handle list", f"{incl:.1f} B", f"{base_bytes:.1f} B base"),
        ("", "  RSS delta / wsi, excl. handle list", f"{excl:.1f} B", target),
    ]
    if mem["rss_delta_trimmed"] is not None:
        trimmed = (mem["rss_delta_trimmed"] - mem["list_bytes"]) / n
        rows.append(("", "  same after malloc_trim(0)", f"{trimmed:.1f} B", "build garbage freed"))
    rows.append(
        (
            "",
            "  open+bind+drop per wsi (gc on)",
            f"{mem['ns_per_wsi'] / 1000:.2f} us",
            f"{fmt_ratio(mem['ns_per_wsi'], base_ns)} base entry (GC on)",
        )
    )
    if not detail:
        return rows
    bd = mem["breakdown"]
    wsi = bd["wsi_getsizeof"]
    rows.append(("", f"  breakdown: one {bd['wsi_type']} (getsizeof)", f"{wsi} B", "incl GC head"))
    accounted = float(alloc_size(wsi))
    fields = bd["fields"]
    ints = fields["ints"]
    if ints:
        each = " + ".join(f"{k} {v:.0f}" for k, v in ints.items())
        total = sum(ints.values())
        accounted += total
        rows.append(("", f"  unshared int fields ({len(ints)})", f"{total:.1f} B", each))
    for name, size in fields["other"].items():
        accounted += size
        rows.append(("", f"  owned object in .{name}", f"{size:.1f} B", "alloc-rounded"))
    if fields["instance_dict"]:
        accounted += fields["instance_dict"]
        rows.append(("", "  instance __dict__", f"{fields['instance_dict']:.1f} B", ""))
    for desc, per_entry in bd["containers"]:
        accounted += per_entry
        rows.append(("", f"  holder: {desc}", f"{per_entry:.1f} B", "getsizeof / len"))
    rows.append(("", "  handle list (bench's own)", f"{bd['handle_list_per_entry']:.1f} B", ""))
    accounted += bd["handle_list_per_entry"]
    rows.append(
        (
            "",
            "  accounted / measured (incl. list)",
            f"{accounted:.1f} / {incl:.1f} B",
            f"rest {incl - accounted:+.1f} B: allocator",
        )
    )
    state = bd["txn_state"]
    rows.append(("", "  probe wsi state", f"txns={state['transactions']}", f"txn={state['txn']}"))
    return rows


def render_rows(render: Result) -> list[Row]:
    rows: list[Row] = []
    by_n = {r["n"]: r for r in render["rows"]}
    small, big = min(by_n), max(by_n)
    for _, r in sorted(by_n.items()):
        for fmt in ("text", "openmetrics", "pc_text", "pc_openmetrics", "collect"):
            m = r[fmt]
            if fmt == "collect":
                label = f"  baseline: collector.collect(), {r['live']:,} live"
                note = f"min {m['min_ms']:.2f} ms, {m['lines']} families"
            elif fmt.startswith("pc_"):
                label = f"  baseline: prometheus_client {fmt[3:]}, {r['live']:,} live"
                note = f"min {m['min_ms']:.2f} ms, same bytes as lwsobs' renderer"
            else:
                label = f"{fmt} /metrics, {r['live']:,} live"
                note = f"min {m['min_ms']:.2f} ms, {m['bytes']:,} B, {m['lines']} lines"
            rows.append(
                (
                    "render" if not rows else "",
                    label,
                    f"{m['median_ms']:.3f} ms",
                    note,
                )
            )
    for fmt in ("text", "openmetrics", "collect"):
        at_big = by_n[big][fmt]["median_ms"]
        ok = "OK" if at_big <= TARGET_RENDER_MS else "OVER"
        on_min = fmt_ratio(by_n[big][fmt]["min_ms"], by_n[small][fmt]["min_ms"])
        rows.append(
            (
                "",
                f"{fmt} t({big:,}) / t({small:,})",
                fmt_ratio(at_big, by_n[small][fmt]["median_ms"]),
                f"target ~1 (on min times {on_min})"
                + ("" if fmt == "collect" else f"; <= {TARGET_RENDER_MS} ms: {ok}"),
            )
        )
    rows.append(("", "  (median of runs, GC paused)", f"{render['runs']} runs", "spans off"))
    return rows


def idle_rows(idle: Result, base_ns: float) -> list[Row]:
    rows: list[Row] = [
        (
            "idle tick",
            "tick, 0 due",
            f"{idle['zero_due_us_small']:.2f} us",
            f"{idle['live_small']:,} live",
        ),
        ("", "tick, 0 due", f"{idle['zero_due_us_1m']:.2f} us", f"{idle['live']:,} live"),
        ("", "tick, 0 due, after all groups", f"{idle['zero_due_us_after']:.2f} us", "1M live"),
        (
            "",
            "zero-due t(1M live) / t(small)",
            fmt_ratio(idle["zero_due_us_1m"], idle["zero_due_us_small"]),
            "target ~1",
        ),
    ]
    for kind, verb in (("idle", "flagged"), ("active", "rescheduled")):
        all_ticks = {int(k): v for k, v in idle["ticks"][kind].items()}
        ticks = {k: statistics.median(v) for k, v in all_ticks.items()}
        for k, ns in sorted(ticks.items()):
            per = ns / k
            spread = "/".join(f"{t / 1e6:.1f}" for t in all_ticks[k])
            kern = "/".join(f"{t:.0f}" for t in idle["sys_ms"][kind][str(k)])
            rows.append(
                (
                    "",
                    f"tick, {k:,} due ({verb}), {idle['live']:,} live",
                    f"{ns / 1e6:.2f} ms",
                    f"{per / 1000:.2f} us/due = {fmt_ratio(per, base_ns)} base; "
                    f"runs {spread} ms, sys {kern}",
                )
            )
        ks = sorted(ticks)
        for lo, hi in itertools.pairwise(ks):
            rows.append(
                (
                    "",
                    f"  {verb}: t({hi:,}) / t({lo:,})",
                    fmt_ratio(ticks[hi], ticks[lo]),
                    f"~{hi / lo:.0f} if O(due); on min times "
                    + fmt_ratio(min(all_ticks[hi]), min(all_ticks[lo])),
                )
            )
    bad = [c for c in idle["checks"] if c["flagged"] != (c["k"] if c["kind"] == "idle" else 0)]
    rows.append(
        (
            "",
            "  sanity: flagged == K (idle), 0 (active)",
            "yes" if not bad else f"NO x{len(bad)}",
            "GC paused in timed ticks; sys = kernel ms per run",
        )
    )
    return rows


def print_table(rows: list[Row]) -> None:
    header: Row = ("section", "measurement", "value", "baseline / target / note")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    line = "  ".join("-" * w for w in widths)
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    print(line)
    for r in rows:
        if r[0] and r is not rows[0]:
            print(line)
        cells = [r[0].ljust(widths[0]), r[1].ljust(widths[1]), r[2].rjust(widths[2]), r[3]]
        print("  ".join(cells).rstrip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repetitions")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("args", nargs="?", default="{}", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.child:
        children: dict[str, Callable[..., Result]] = {
            "baseline": child_baseline,
            "memory": child_memory,
            "render": child_render,
            "idle": child_idle,
        }
        emit(children[opts.child](**json.loads(opts.args)))
        return

    started = time.perf_counter()
    load0 = os.getloadavg()
    print(
        f"lwsobs core bench{' (quick)' if opts.quick else ''}: python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs, loadavg {load0[0]:.2f} at start",
        flush=True,
    )
    base_a = run_child("baseline", n=N_LIVE)
    mem_obs = run_child("memory", variant="observer", n=N_LIVE)
    mem_bare = run_child("memory", variant="tracker", n=N_LIVE)
    sizes = [1_000, N_LIVE] if opts.quick else [1_000, 100_000, N_LIVE]
    render = run_child("render", sizes=sizes, runs=50)
    idle = run_child("idle", n=N_LIVE, ks=[1_000, 10_000, 100_000], reps=1 if opts.quick else 3)
    base_b = run_child("baseline", n=N_LIVE)

    base_ns = (base_a["ns_per_entry"] + base_b["ns_per_entry"]) / 2
    base_ns_gc = (base_a["ns_per_entry_gc"] + base_b["ns_per_entry_gc"]) / 2
    base_bytes = (base_a["bytes_per_entry"] + base_b["bytes_per_entry"]) / 2
    rows: list[Row] = [
        (
            "baseline",
            "dict of 1M 2-slot objects: create/entry",
            f"{base_ns:.0f} ns",
            f"GC paused; start {base_a['ns_per_entry']:.0f}, end {base_b['ns_per_entry']:.0f} ns",
        ),
        (
            "",
            "  same with GC on",
            f"{base_ns_gc:.0f} ns",
            f"start {base_a['ns_per_entry_gc']:.0f}, end {base_b['ns_per_entry_gc']:.0f} ns",
        ),
        ("", "  same: RSS delta / entry", f"{base_bytes:.1f} B", "dict slot + object + 1 int"),
    ]
    rows += memory_rows(mem_obs, base_bytes, base_ns_gc, detail=True)
    rows += memory_rows(mem_bare, base_bytes, base_ns_gc, detail=False)
    rows += render_rows(render)
    rows += idle_rows(idle, base_ns)
    print()
    print_table(rows)
    load1 = os.getloadavg()
    print(
        f"\nwall time {time.perf_counter() - started:.1f} s; loadavg {load1[0]:.2f} at end",
        flush=True,
    )


if __name__ == "__main__":
    main()
