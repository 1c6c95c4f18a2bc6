"""Shim benchmark: what liblwsobs costs a real libwebsockets app, per forwarded callback.

The lws test app (tests/lws, built here) serves `GET /` -> `hello` on 127.0.0.1. It runs three
ways, interleaved over several repetitions (the order rotates each repetition, so a shared
machine's drift falls on every configuration alike):

- `no-shim`  the plain build, nothing preloaded: the baseline;
- `preload`  the same binary with LD_PRELOAD=shim/build/liblwsobs.so;
- `linked`   the build linked with the shim, `--linked` (lwsobs_wrap_protocols()).

With the shim, LWSOBS_ENDPOINT points at a UDP socket of this process that drains and counts
what arrives (the highest `seq` seen gives the lines the shim produced, even if the kernel
dropped some). wrk drives the app with keep-alive connections for a fixed time, pinned to
another core than the app when there are two. The app's CPU time is read from
/proc/PID/stat (utime + stime) around the measured window.

    shim us/callback = (CPU us/request with the shim - without, same repetition)
                       / (lines the shim sent per request)

Then the idle figure: each configuration started and left alone for a few seconds, its CPU
time and its number of times on a CPU (all threads, from /proc/PID/task/*/schedstat, in ns)
compared with the no-shim app of the same repetition: an idle observed app must cost what an
idle unobserved one does (the shim's own sender thread wakes once every 2 s for a heartbeat).
And the throughput figure as a ratio: requests (and so callbacks) per second with the shim
over without, under the same wrk load.

Prints a table and asserts nothing. Targets: well under 1 us per callback (issue 4); idle CPU
and wake-ups x1.0 of the unobserved app, throughput ratio as close to 1 as the cost allows.

    .venv/bin/python bench/shim.py --quick      # < 1 min
    .venv/bin/python bench/shim.py              # ~2 min: 5 repetitions x 5 s
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
SHIM_DIR = ROOT / "shim"
APP_DIR = ROOT / "tests" / "lws"
SHIM = SHIM_DIR / "build" / "liblwsobs.so"
APP_PLAIN = APP_DIR / "build" / "lws_testapp_plain"
APP_LINKED = APP_DIR / "build" / "lws_testapp"
CONFIGS = ("no-shim", "preload", "linked")
BASELINE = "no-shim"
MODES = {"quick": (2.0, 3), "full": (5.0, 5)}  # (seconds per wrk run, repetitions)
IDLE_S = {"quick": 3.0, "full": 6.0}  # seconds an idle app is watched
CONNECTIONS = 20
WARMUP_S = 1.0  # wrk takes whole seconds
SETTLE_S = 0.1  # longer than the shim's 20 ms batch timer: the window's lines have arrived
CLK_TCK = os.sysconf("SC_CLK_TCK")
TARGET_US = 1.0


# -- the draining receiver ------------------------------------------------------------------


class Drain:
    """A UDP socket on 127.0.0.1 that reads datagrams as fast as they come and counts lines.

    The highest `seq` seen is the number of lines the shim produced so far (minus one): it
    counts lines the kernel dropped too, which only `received` would miss.
    """

    _SEQ = re.compile(rb'"seq":(\d+)')

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.endpoint = f"udp://127.0.0.1:{self.sock.getsockname()[1]}"
        self.received = 0
        self.max_seq = -1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        buf = bytearray(65536)
        while not self._stop.is_set():
            try:
                n = self.sock.recv_into(buf)
            except TimeoutError:
                continue
            self.received += buf.count(b"\n", 0, n)
            last = buf.rfind(b'"seq":', 0, n)  # lines leave in seq order: the last is highest
            if last >= 0:
                m = self._SEQ.match(buf, last)
                if m is not None:
                    self.max_seq = max(self.max_seq, int(m.group(1)))

    def lines(self) -> int:
        return self.max_seq + 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


# -- one run --------------------------------------------------------------------------------


@dataclass
class Run:
    config: str
    rep: int
    requests: int
    seconds: float
    rps: float
    cpu_s: float
    lines: int  # shim lines in the measured window (0 without the shim)
    received: int
    errors: str

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_s * 1e6 / self.requests if self.requests else float("nan")

    @property
    def callbacks_per_request(self) -> float:
        return self.lines / self.requests if self.requests else float("nan")


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (all threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    fields = stat[stat.rindex(b")") + 2 :].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of proc(5)


def sched_totals(pid: int) -> tuple[int, int]:
    """(ns on a CPU, times scheduled on a CPU) summed over the process's threads."""
    on_cpu = slices = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "schedstat").read_text().split()
        except OSError:
            continue  # a thread that just ended
        on_cpu += int(fields[0])
        slices += int(fields[2])
    return on_cpu, slices


@dataclass
class Idle:
    config: str
    rep: int
    cpu_ns: int
    wakeups: int


def idle_run(config: str, rep: int, seconds: float, core: int | None) -> Idle:
    """The app started and left alone: what it costs while nothing happens."""
    drain = Drain()
    with tempfile.NamedTemporaryFile(prefix="lwsobs-bench-idle-") as log:
        proc = start_app(config, free_port(), drain.endpoint, core, log)
        try:
            time.sleep(WARMUP_S)
            cpu0, n0 = sched_totals(proc.pid)
            time.sleep(seconds)
            cpu1, n1 = sched_totals(proc.pid)
        finally:
            stop_app(proc, log)
            drain.close()
    return Idle(config, rep, cpu1 - cpu0, n1 - n0)


def idle_report(idles: list[Idle], configs: list[str], seconds: float) -> None:
    base = {i.rep: i for i in idles if i.config == BASELINE}
    print(f"\nidle app, {seconds:g} s with no traffic (ratios against no-shim, same repetition)")
    print(f"{'configuration':<13} {'cpu us median':>14} {'cpu ratio':>22} {'wake-up ratio':>22}")
    for config in configs:
        mine = [i for i in idles if i.config == config]
        cpu = [i.cpu_ns / 1e3 for i in mine]
        ratios = [i.cpu_ns / base[i.rep].cpu_ns for i in mine if base[i.rep].cpu_ns]
        wakes = [i.wakeups / base[i.rep].wakeups for i in mine if base[i.rep].wakeups]
        print(
            f"{config:<13} {statistics.median(cpu):>14,.0f} "
            f"{spread(ratios, '.2f'):>22} {spread(wakes, '.2f'):>22}"
        )


def throughput_report(runs: list[Run], configs: list[str]) -> None:
    base = {r.rep: r for r in runs if r.config == BASELINE}
    print("\nthroughput ratio under load (req/s and so callbacks/s, with the shim / without)")
    for config in configs:
        if config == BASELINE:
            continue
        mine = [r for r in runs if r.config == config and r.rep in base]
        ratios = [r.rps / base[r.rep].rps for r in mine]
        cbs = [r.lines / r.seconds for r in mine]
        print(
            f"{config:<13} x{spread(ratios, '.2f')}   callbacks forwarded/s {spread(cbs, ',.0f')}"
        )


def pinned(cmd: list[str], core: int | None) -> list[str]:
    return cmd if core is None else ["taskset", "-c", str(core), *cmd]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wrk(port: int, seconds: float, core: int | None, conns: int) -> tuple[int, float, str]:
    """(requests, seconds, problems) of one keep-alive wrk run against GET /."""
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{max(1, round(seconds))}s"]
    done = subprocess.run(
        pinned([*cmd, f"http://127.0.0.1:{port}/"], core),
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=False,
    )
    m = re.search(r"(\d+) requests in ([\d.]+)(m?s)", done.stdout)
    if done.returncode != 0 or m is None:
        raise RuntimeError(f"wrk failed: {done.stdout}\n{done.stderr}")
    took = float(m.group(2)) / (1000 if m.group(3) == "ms" else 1)
    problems = " ".join(
        line.strip() for line in done.stdout.splitlines() if "errors" in line or "Non-2xx" in line
    )
    return int(m.group(1)), took, problems


def start_app(
    config: str,
    port: int,
    endpoint: str,
    core: int | None,
    log: IO[bytes],
) -> subprocess.Popen[bytes]:
    """The app, READY on `port`; its stderr goes to `log` (a pipe nobody reads could fill)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LD_PRELOAD", "LWSOBS_"))}
    args = ["--port", str(port)]
    if config == "no-shim":
        binary = APP_PLAIN
    elif config == "preload":
        binary = APP_PLAIN
        env.update(LD_PRELOAD=str(SHIM), LWSOBS_ENDPOINT=endpoint, LWSOBS_DEBUG="1")
    else:
        binary = APP_LINKED
        args.append("--linked")
        env.update(LWSOBS_ENDPOINT=endpoint, LWSOBS_DEBUG="1")
    proc = subprocess.Popen(
        pinned([str(binary), *args], core),
        stdout=subprocess.PIPE,
        stderr=log,
        env=env,
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 10.0)
    line = proc.stdout.readline() if ready else b""
    if not line.startswith(b"READY"):
        proc.kill()
        proc.communicate()
        log.seek(0)
        err = log.read().decode(errors="replace")[-500:]
        raise RuntimeError(f"{config}: the app did not start: {line!r} {err}")
    return proc


def stop_app(proc: subprocess.Popen[bytes], log: IO[bytes]) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
    log.seek(0)
    return log.read().decode(errors="replace")


def one_run(
    config: str, rep: int, seconds: float, cores: tuple[int | None, int | None], conns: int
) -> Run:
    app_core, load_core = cores
    drain = Drain()
    port = free_port()
    with tempfile.NamedTemporaryFile(prefix="lwsobs-bench-shim-") as log:
        proc = start_app(config, port, drain.endpoint, app_core, log)
        try:
            wrk(port, WARMUP_S, load_core, conns)
            time.sleep(SETTLE_S)
            cpu0, lines0, recv0 = cpu_seconds(proc.pid), drain.lines(), drain.received
            requests, took, problems = wrk(port, seconds, load_core, conns)
            time.sleep(SETTLE_S)
            cpu1, lines1, recv1 = cpu_seconds(proc.pid), drain.lines(), drain.received
        finally:
            err = stop_app(proc, log)
            drain.close()
    dropped = re.search(r"lwsobs: exit: \d+ lines, .* (\d+) dropped", err)
    if dropped is not None and int(dropped.group(1)):
        problems += f" shim dropped {dropped.group(1)} lines"
    lines = lines1 - lines0 if config != BASELINE else 0
    return Run(
        config,
        rep,
        requests,
        took,
        requests / took,
        cpu1 - cpu0,
        lines,
        recv1 - recv0,
        problems.strip(),
    )


# -- the table ------------------------------------------------------------------------------


def spread(values: list[float], fmt: str) -> str:
    if not values:
        return "-"
    med = statistics.median(values)
    return f"{med:{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def shim_cost(runs: list[Run], config: str) -> list[float]:
    """us per callback, each repetition against the baseline of the same repetition."""
    base = {r.rep: r for r in runs if r.config == BASELINE}
    out: list[float] = []
    for r in runs:
        if r.config == config and r.rep in base and r.lines:
            extra = r.cpu_us_per_request - base[r.rep].cpu_us_per_request
            out.append(extra / r.callbacks_per_request)
    return out


def report(
    runs: list[Run], configs: list[str], seconds: float, conns: int
) -> list[dict[str, object]]:
    head = (
        f"{'configuration':<13} {'req/s median (min-max)':<26} {'app cpu':>8} "
        f"{'cpu us/req':>22} {'callbacks/req':>14} {'shim us/callback':>24}"
    )
    print(head)
    print("-" * len(head))
    rows: list[dict[str, object]] = []
    for config in configs:
        mine = [r for r in runs if r.config == config]
        cost = shim_cost(runs, config) if config != BASELINE else []
        share = statistics.median(r.cpu_s / r.seconds for r in mine) if mine else 0.0
        print(
            f"{config:<13} {spread([r.rps for r in mine], ',.0f'):<26} {share:>8.0%} "
            f"{spread([r.cpu_us_per_request for r in mine], '.2f'):>22} "
            f"{(spread([r.callbacks_per_request for r in mine], '.2f') if cost else '-'):>14} "
            f"{(spread(cost, '.3f') if cost else '-'):>24}"
        )
        rows.append(
            {
                "config": config,
                "rps_median": statistics.median(r.rps for r in mine) if mine else None,
                "cpu_us_per_request_median": (
                    statistics.median(r.cpu_us_per_request for r in mine) if mine else None
                ),
                "callbacks_per_request_median": (
                    statistics.median(r.callbacks_per_request for r in mine) if cost else None
                ),
                "shim_us_per_callback": cost,
            }
        )
    print(
        f"\n{len(runs) // max(1, len(configs))} repetitions x {seconds:g} s of "
        f"wrk -t1 -c{conns} (keep-alive GET /) per configuration; app cpu = share of "
        "one core the app used while wrk ran (near 100%: the app was the bottleneck)."
    )
    base = [r.cpu_us_per_request for r in runs if r.config == BASELINE]
    for config in configs:
        cost = shim_cost(runs, config)
        if cost and base:
            mine = [r for r in runs if r.config == config]
            # the same from the medians over all repetitions: less hurt by one disturbed baseline
            overall = (
                statistics.median(r.cpu_us_per_request for r in mine) - statistics.median(base)
            ) / statistics.median(r.callbacks_per_request for r in mine)
            verdict = "meets" if statistics.median(cost) < TARGET_US else "MISSES"
            print(
                f"{config}: {statistics.median(cost):.3f} us/callback (paired median), "
                f"{overall:.3f} (from medians): {verdict} the target of < {TARGET_US:g} us"
            )
    for r in runs:
        if r.errors:
            print(f"note: {r.config} rep {r.rep}: {r.errors}")
        if r.lines and r.received < r.lines:
            print(f"note: {r.config} rep {r.rep}: receiver got {r.received} of {r.lines} lines")
    return rows


# -- main -----------------------------------------------------------------------------------


def build() -> None:
    for cmd in (["make", "-s", "-C", str(SHIM_DIR)], ["make", "-s", "-C", str(APP_DIR), "all"]):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        if done.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")


def choose_cores() -> tuple[int | None, int | None]:
    """(app core, wrk + receiver core), or (None, None) when there are not two cores to use."""
    usable = sorted(os.sched_getaffinity(0))
    if len(usable) < 2 or not shutil.which("taskset"):
        print("note: fewer than two usable cores (or no taskset): running unpinned")
        return None, None
    app, load = usable[0], usable[1]
    os.sched_setaffinity(0, {load})  # this process (the receiver) shares wrk's core
    return app, load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 s x 3 repetitions (< 1 min)")
    parser.add_argument("--duration", type=float, help="seconds per wrk run")
    parser.add_argument("--reps", type=int, help="repetitions")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated")
    parser.add_argument("--connections", type=int, default=CONNECTIONS, help="wrk -c")
    parser.add_argument("--json", type=Path, help="also write every run and the table here")
    opts = parser.parse_args()
    seconds, reps = MODES["quick" if opts.quick else "full"]
    seconds = opts.duration or seconds
    reps = opts.reps or reps
    configs = [c for c in opts.configs.split(",") if c]
    unknown = set(configs) - set(CONFIGS)
    if unknown or BASELINE not in configs:
        sys.exit(f"configs: choose from {', '.join(CONFIGS)}; {BASELINE} is required")
    for tool in ("wrk", "make", "cc"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: run scripts/system-deps")
    build()
    cores = choose_cores()
    print(f"shim benchmark: app on core {cores[0]}, wrk + receiver on core {cores[1]}\n")
    runs: list[Run] = []
    for rep in range(reps):
        shift = rep % len(configs)
        for config in configs[shift:] + configs[:shift]:
            runs.append(one_run(config, rep, seconds, cores, opts.connections))
    rows = report(runs, configs, seconds, opts.connections)
    throughput_report(runs, configs)
    idle_s = IDLE_S["quick" if opts.quick else "full"]
    idles: list[Idle] = []
    for rep in range(reps):
        shift = rep % len(configs)
        for config in configs[shift:] + configs[:shift]:
            idles.append(idle_run(config, rep, idle_s, cores[0]))
    idle_report(idles, configs, idle_s)
    if opts.json:
        opts.json.write_text(
            json.dumps(
                {
                    "table": rows,
                    "runs": [asdict(r) for r in runs],
                    "idle": [asdict(i) for i in idles],
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
